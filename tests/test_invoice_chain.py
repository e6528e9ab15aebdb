"""long_invoice_extractions: long invoices chunked, extracted part by part and reconciled, on a real Dagster instance.

What is asserted is what a user relies on: the reconciled invoice equals the generator's truth,
one failed part fails its document (naming the chunk, the model, the step and the input hash)
and not the batch, ``ai-orch trace RUN_ID`` shows chunk → extract → reconcile with the failure
marked, and restricted chunk texts never reach the disk.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from orchestration_assets.invoices.assets import raw_invoices
from orchestration_assets.invoices.chain import ChunkingConfig, chunk_document, long_invoice_extractions
from orchestration_assets.invoices.generator import generate_invoices
from orchestration_assets.invoices.reconcile import PartAnswer, merge_parts
from orchestration_assets.invoices.schema import InvoiceExtraction, LineItem
from resources.audit_log import item_hash
from resources.chunking import split_text, token_budget
from resources.documents import Document
from resources.ledger import DuckDBLedger
from resources.tracing import TraceStore, TracingResource
from tests.bad_models import UNREADABLE_MARKER
from tests.pipeline_support import RULES_ONLY, isolated_resources

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-03-02"
ASSET = "long_invoice_extractions"
STEPS = [f"{ASSET}.chunk_invoices", f"{ASSET}.extract_invoice_chunks", f"{ASSET}.reconcile_invoice_chunks"]
LONG = dict(noise_rate=0.0, line_items=(40, 60))
CHUNK_TOKENS = 400
FAILING_PARTS = RULES_ONLY + """  - id: rules-invoice-part
    callable: "tests.bad_models:fails_on_unreadable_part"
"""


def _materialize(instance, resources, raw_config: dict, **chunking):
    return dg.materialize(
        [raw_invoices, long_invoice_extractions], instance=instance, resources=resources, partition_key=DAY,
        raise_on_error=False,
        run_config={"ops": {
            "raw_invoices": {"config": raw_config},
            ASSET: {"ops": {"chunk_invoices": {"config": {"max_chunk_tokens": CHUNK_TOKENS, **chunking}}}},
        }},
    )


def _write_jsonl(path: Path, documents: list[tuple[str, str]]) -> str:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in documents))
    return str(path)


def _chunks(document_id: str, text: str, **config):
    budget = token_budget({"rules-invoice-part": 1_000_000}, 0, cap=CHUNK_TOKENS)
    return chunk_document(Document(id=document_id, text=text), budget, ChunkingConfig(**config)).chunks


def _spans_by_step(store: TraceStore, run_id: str) -> dict[str, dict]:
    return {root["attributes"]["dagster.step_key"]: root for root in store.tree(run_id)}


def test_long_invoices_are_chunked_extracted_and_reconciled_to_the_generators_truth(tmp_path):
    truth = {inv.id: inv.truth for inv in generate_invoices(3, seed="chain", **LONG)}
    resources = isolated_resources(tmp_path)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources, {"count": 3, "seed": "chain", "min_line_items": 40,
                                                    "max_line_items": 60, "noise_rate": 0.0})
        assert result.success
        frame = result.asset_value(ASSET).set_index("id")
        metadata = instance.get_latest_materialization_event(dg.AssetKey(ASSET)).asset_materialization.metadata
        chunk_output = Path(instance.storage_directory(), result.run_id, STEPS[0], "result")
        assert chunk_output.exists()  # internal data: op outputs persist like Dagster's own (re-execution works)

    assert set(frame.index) == set(truth)
    for doc_id, expected in truth.items():
        row = frame.loc[doc_id]
        items = json.loads(row["line_items"])
        assert row["chunks"] > 1 and row["error"] is None and row["item_check"] is None
        assert (row["vendor"], row["invoice_number"], row["date"], row["currency"]) == (
            expected.vendor, expected.invoice_number, expected.date, expected.currency)
        tax = None if pd.isna(row["tax"]) else row["tax"]
        assert row["total"] == pytest.approx(expected.total) and tax == pytest.approx(expected.tax)
        assert len(items) == len(expected.line_items)
        assert [(i["description"], i["amount"]) for i in items] == [(i.description, i.amount) for i in expected.line_items]
        assert row["line_items_total"] == pytest.approx(sum(i.amount for i in expected.line_items))
        assert row["model"] == "rules-invoice-part" and row["attempts"] == row["chunks"]
    chunks = int(frame["chunks"].sum())
    assert metadata["documents"].value == 3 and metadata["split_documents"].value == 3
    assert metadata["chunks"].value == metadata["calls"].value == chunks
    assert metadata["failed_documents"].value == 0 and "failures" not in metadata
    assert metadata["models"].value == {"rules-invoice-part": chunks}

    # Every part is a ledger row of its own, charged to the chain's extract step.
    calls = DuckDBLedger(tmp_path / "ledger.duckdb").calls(run_id=result.run_id)
    expected_ids = {f"{d}#{k}/{n}" for d, n in frame["chunks"].items() for k in range(1, n + 1)}
    assert set(calls["item_id"]) == expected_ids and len(calls) == chunks
    assert set(calls["step_key"]) == {STEPS[1]} and set(calls["asset_key"]) == {ASSET}
    assert set(calls["task"]) == {"invoice_part_extraction"} and set(calls["partition_key"]) == {DAY}

    # One trace for the chain: three step spans, in order, each with its own work under it.
    store = TraceStore(tmp_path / "traces.duckdb")
    roots = store.tree(result.run_id)
    assert [r["attributes"]["dagster.step_key"] for r in roots] == STEPS
    chunk_step, extract_step, reconcile_step = roots
    assert {c["attributes"]["ai_orch.item_id"]: c["attributes"]["ai_orch.chunks"] for c in chunk_step["children"]} == \
        frame["chunks"].to_dict()
    assert {c["attributes"]["ai_orch.item_id"] for c in extract_step["children"]} == expected_ids
    assert all(len(c["children"]) == 1 and c["children"][0]["status"] == "UNSET" for c in extract_step["children"])
    for child in reconcile_step["children"]:  # counts and chunk ids, never a value read from the invoice
        doc_id, n = child["attributes"]["ai_orch.item_id"], frame.loc[child["attributes"]["ai_orch.item_id"], "chunks"]
        assert child["attributes"]["ai_orch.check.passed"] is True
        # the total comes from the part that holds it: the last, or the one before when the last holds only the terms
        assert re.fullmatch(rf"merged {n} parts: {len(truth[doc_id].line_items)} line items, total from "
                            rf"{re.escape(doc_id)}#({n}|{n - 1})/{n}; check passed", child["attributes"]["ai_orch.summary"])
    assert reconcile_step["attributes"]["ai_orch.summary"] == "3 documents reconciled, 0 failed, 0 failing the check"


def test_a_failed_part_fails_its_document_not_the_batch_and_the_trace_cli_shows_the_chain(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    short, marked, huge = generate_invoices(2, seed="chain-fail", **LONG) + generate_invoices(
        1, seed="chain-huge", noise_rate=0.0, line_items=(400, 400))
    lines = marked.text.splitlines(keepends=True)
    middle = len(lines) // 2
    marked_text = "".join(lines[:middle]) + UNREADABLE_MARKER + "\n" + "".join(lines[middle:])
    docs = _write_jsonl(tmp_path / "docs.jsonl", [(short.id, short.text), (marked.id, marked_text), (huge.id, huge.text)])
    (failing,) = [c for c in _chunks(marked.id, marked_text) if UNREADABLE_MARKER in c.text]
    assert failing.index > 1 and failing.count > 2  # a middle part: the document's other parts succeed

    resources = isolated_resources(tmp_path, FAILING_PARTS)
    resources["tracing"] = TracingResource(path=str(home / "ai_orchestration" / "traces.duckdb"))  # where the CLI reads
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = _materialize(instance, resources, {"input_path": docs}, max_chunks=12)
        assert result.success  # one bad part, one oversized document: the batch still completes
        frame = result.asset_value(ASSET).set_index("id")
        metadata = instance.get_latest_materialization_event(dg.AssetKey(ASSET)).asset_materialization.metadata

    assert pd.isna(frame.loc[short.id, "error"]) and frame.loc[short.id, "total"] == pytest.approx(short.truth.total)
    error = frame.loc[marked.id, "error"]
    assert error == (f"chunk {failing.id} failed on model rules-invoice-part in step {STEPS[1]} "
                     f"(input sha256 {item_hash(failing.text)[:12]}): ValueError: layout not understood: page scan unreadable")
    assert pd.isna(frame.loc[marked.id, "total"])  # a failed document reports no fields, like invoice_extractions
    assert frame.loc[marked.id, "chunks"] == failing.count
    oversized = frame.loc[huge.id, "error"]
    assert oversized.startswith(f"not chunked: document {huge.id} needs ") and "more than max_chunks 12" in oversized
    assert f"at most {CHUNK_TOKENS} tokens" in oversized and "rules-invoice-part's 1000000-token context" in oversized
    assert frame.loc[huge.id, "chunks"] == 0
    assert metadata["failed_documents"].value == 2 and metadata["failed_items"].value == 1
    table = metadata["failures"].value
    assert failing.id in table and "rules-invoice-part" in table and huge.id in table

    store = TraceStore(home / "ai_orchestration" / "traces.duckdb")
    steps = _spans_by_step(store, result.run_id)
    assert list(steps) == STEPS
    chunked = {c["attributes"]["ai_orch.item_id"]: c for c in steps[STEPS[0]]["children"]}
    assert chunked[huge.id]["status"] == "ERROR" and chunked[huge.id]["attributes"]["error.type"] == "ChunkingError"
    (failed_item,) = [c for c in steps[STEPS[1]]["children"] if c["attributes"]["ai_orch.item_id"] == failing.id]
    assert failed_item["attributes"]["ai_orch.input_hash"] == item_hash(failing.text)
    (call,) = failed_item["children"]
    assert call["status"] == "ERROR" and "layout not understood" in call["status_message"]
    assert call["attributes"]["gen_ai.request.model"] == "rules-invoice-part"
    reconciled = {c["attributes"]["ai_orch.item_id"]: c for c in steps[STEPS[2]]["children"]}
    assert reconciled[marked.id]["status"] == "ERROR" and failing.id in reconciled[marked.id]["status_message"]
    assert reconciled[short.id]["status"] == "UNSET"

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["DAGSTER_HOME"] = str(home)
    cli = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "trace", result.run_id], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-3000:]
    out = cli.stdout
    positions = [out.index(f"step {step} [{ASSET} {DAY}]") for step in STEPS]
    assert positions == sorted(positions)  # chunk → extract → reconcile, in the order they ran
    assert f"item {failing.id} (internal)" in out
    assert "✗ chat rules-invoice-part [rules]" in out and "FAILED [ValueError]: ValueError: layout not understood" in out
    assert f"✗ item {marked.id} (internal)" in out and f"FAILED [ChunkFailed]: chunk {failing.id} failed" in out
    assert f"✗ item {huge.id} (internal)" in out and "FAILED [ChunkingError]" in out
    step_rows = [line for line in out.splitlines() if line.startswith(STEPS[1])]
    assert len(step_rows) == 1 and step_rows[0].split()[1:3] == [str(metadata["calls"].value), "1✗"]  # calls, errors


CANARY_EMAIL = "quorra.chain7f3a@vexmarsh-mail.example"
CANARY_NAME = "Quorra Vexmarsh-Tillingham"


def _scan(root: Path) -> list[str]:
    """Every file under ``root`` (bytes, also lower-cased) and DuckDB text column holding a canary."""
    needles = [c.lower().encode() for c in (CANARY_EMAIL, CANARY_NAME)]
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes().lower()
        hits += [str(path) for needle in needles if needle in data]
        if path.suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as conn:
                for table, column in conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                                                  "WHERE data_type = 'VARCHAR'").fetchall():
                    for canary in (CANARY_EMAIL, CANARY_NAME):
                        (count,) = conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE lower("{column}") LIKE ?',
                                                [f"%{canary.lower()}%"]).fetchone()
                        if count:
                            hits.append(f"{path}::{table}.{column}")
    return hits


@pytest.mark.parametrize("classification", ["restricted", "internal"])
def test_restricted_chunk_texts_stay_in_memory(tmp_path_factory, classification):
    """The canaries sit in the header, so every chunk text carries them; the internal run shows the scan can find them."""
    inputs, work = tmp_path_factory.mktemp("input"), tmp_path_factory.mktemp("work")
    (work / "home").mkdir()
    documents = []
    for invoice in generate_invoices(2, seed="canary-chain", **LONG):
        first, rest = invoice.text.split("\n", 1)
        documents.append((invoice.id, f"{first}\nAccounts: {CANARY_EMAIL}\n{rest}\nApproved by {CANARY_NAME}\n"))
    docs = _write_jsonl(inputs / "docs.jsonl", documents)
    with dg.instance_for_test(temp_dir=str(work / "home")) as instance:
        result = _materialize(instance, isolated_resources(work), {"input_path": docs, "classification": classification})
        assert result.success
        frame = result.asset_value(ASSET)
        storage = [e.event_specific_data.metadata.get("storage") for e in result.all_events
                   if e.event_type_value == "HANDLED_OUTPUT" and e.step_key in STEPS[:2]]
    assert (frame["chunks"] > 1).all() and frame["error"].isna().all()
    hits = _scan(work)
    if classification == "restricted":
        assert hits == [] and [s.value for s in storage] == ["memory only (data policy: no raw persistence for restricted)"] * 2
    else:
        assert any("storage" in hit for hit in hits), hits


def test_merge_takes_header_fields_first_totals_last_and_drops_only_header_repeats():
    text = ("Acme Ltd\nInvoice No: A-1\n" + "".join(f"Line {i}\n" for i in range(40)))
    first, second, third = split_text("A-1", text, 30, header_lines=2)[:3]
    parts = [
        PartAnswer(third, InvoiceExtraction(invoice_number="A-2", total=30.0, tax=5.0, currency="EUR",
                                            line_items=[LineItem(description="Line 30", amount=10.0)])),
        PartAnswer(first, InvoiceExtraction(vendor="Acme Ltd", invoice_number="A-1", currency="USD",
                                            line_items=[LineItem(description="Line 1", amount=5.0)])),
        PartAnswer(second, InvoiceExtraction(
            vendor="Acme Ltd", total=99.0,  # a page subtotal earlier on: the closing total wins
            line_items=[LineItem(description="Acme Ltd", amount=1.0),  # read from the repeated header: dropped
                        LineItem(description="Line 20", amount=10.0)])),
    ]
    merged = merge_parts(parts)
    e = merged.extraction
    assert (e.vendor, e.invoice_number, e.total, e.tax, e.currency) == ("Acme Ltd", "A-1", 30.0, 5.0, "EUR")
    assert [i.description for i in e.line_items] == ["Line 1", "Line 20", "Line 30"]
    assert merged.header_items_dropped == 1 and merged.totals_from == third.id
    assert merged.conflicts == [f"invoice_number differs between {first.id} and {third.id}"]
    assert merged.check(0.02) == "failed: date_present"  # 5 + 10 + 10 + tax 5 = 30: the sum holds
    assert merged.describe() == (f"merged 3 parts: 3 line items, total from {third.id}, 1 header repeats dropped; "
                                 f"conflicts: invoice_number differs between {first.id} and {third.id}")
    parts[0] = PartAnswer(third, parts[0].output.model_copy(update={"total": 31.0, "date": "2026-03-02"}))
    assert merge_parts(parts).check(0.02) == (
        "failed: total_matches_line_items (line items 25.00 + tax 5.00 = 30.00 vs total 31.00)")


def test_long_invoices_from_the_generator_have_many_distinct_lines_and_no_receipts():
    invoices = generate_invoices(6, seed="pages", line_items=(70, 90))
    assert all(70 <= len(i.truth.line_items) <= 90 and i.layout != "receipt" for i in invoices)
    assert all(len({li.description for li in i.truth.line_items}) == len(i.truth.line_items) for i in invoices)
    with pytest.raises(ValueError, match="line_items must be"):
        generate_invoices(1, line_items=(0, 5))
