"""`ai-orch trace RUN_ID`: a failed workflow's trace names the model, step, input and error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
CATALOG = """models:
  - id: local-gemma3-270m
    enabled: false
  - id: rules-invoice
    callable: "tests.bad_models:fails_on_receipts"
"""


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    catalog = home.parent / "catalog.yaml"
    catalog.write_text(CATALOG)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(DAGSTER_HOME=str(home), AI_ORCH_CATALOG=str(catalog))
    return subprocess.run([sys.executable, "-m", "orchestration_assets.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_trace_of_a_run_with_failed_items_names_model_step_and_input(tmp_path):
    home = tmp_path / "home"
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "inv-1", "text": "Blue Ltd\nInvoice INV-7\n2026-02-03\nTotal GBP 99.00"}) + "\n"
        + json.dumps({"id": "rcpt-2", "text": "Kopi House\nRECEIPT 88\n03/02/2026\nTOTAL RM 12.50"}) + "\n"
        + json.dumps({"id": "inv-3", "text": "Green Ltd\nInvoice INV-8\n2026-02-04\nTotal GBP 10.00"}) + "\n"
        + json.dumps({"id": "inv-4", "text": "Red Ltd\nInvoice INV-9\n2026-02-05\nTotal GBP 11.00"}) + "\n"
        + "not json\n")  # an unreadable line: an item that never reaches a model, still in the trace
    demo = _cli(home, "demo", "--input", str(docs), "--date", "2026-03-03", "--json")
    assert demo.returncode == 0, demo.stderr[-3000:]
    run_id = json.loads(demo.stdout)["run_id"]

    trace = _cli(home, "trace", run_id)
    assert trace.returncode == 0, trace.stderr[-3000:]
    out = trace.stdout
    assert "✗" in out and "layout not understood" in out and "rules-invoice" in out
    assert "rcpt-2" in out and "invoice_extractions" in out
    as_json = json.loads(_cli(home, "trace", run_id, "--json").stdout)
    (model,) = [m for m in as_json["errors"]["by_model"] if m["model_id"] == "rules-invoice"]
    assert model["calls"] == 4 and model["errors"] == 1
    assert "✗ item line-5" in out and "docs.jsonl:5: not a JSON object" in out
    (items,) = as_json["errors"]["items_by_step"]
    assert (items["step_key"], items["items"], items["failed_items"]) == ("invoice_extractions", 5, 2)
    assert "items of invoice_extractions: 5, failed 2✗" in out

    # The UI shows a run id's first 8 characters: they are enough.
    short = _cli(home, "trace", run_id[:8])
    assert short.returncode == 0, short.stderr[-3000:]
    assert short.stdout == out

    unknown = _cli(home, "trace", "no-such-run")
    assert unknown.returncode == 2 and "no-such-run" in unknown.stderr

    # The same failure, in the materialization's metadata the UI shows.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        record = instance.fetch_materializations(dg.AssetKey("invoice_extractions"), limit=1).records[0]
        table = record.asset_materialization.metadata["failures"].value
    assert "rcpt-2" in table and "rules-invoice" in table and "layout not understood" in table


def test_a_run_id_prefix_names_one_run_or_the_error_lists_the_candidates(tmp_path):
    import pytest

    from orchestration_assets.cli_errors import CliError
    from orchestration_assets.trace_cli import _one_run
    from resources.tracing import TraceRecorder, TraceStore

    recorder = TraceRecorder(tmp_path / "traces.duckdb")
    for run_id in ("a1b2c3d4-0001", "a1b2c3d4-0002", "ffee0011-0003"):
        with recorder.run_span(run_id, "step", "asset"):
            pass
    recorder.force_flush()
    recorder.shutdown()
    store = TraceStore(tmp_path / "traces.duckdb")

    assert _one_run(store, "ffee") == "ffee0011-0003"
    assert _one_run(store, "a1b2c3d4-0002") == "a1b2c3d4-0002"
    with pytest.raises(CliError, match=r"begins several runs' ids \(a1b2c3d4-0001, a1b2c3d4-0002\)"):
        _one_run(store, "a1b2")
    with pytest.raises(CliError, match="no spans for run 'b0'"):
        _one_run(store, "b0")
    assert store.run_ids_starting("") == []
    # bytes the terminal could not decode (a surrogate escape) are no run id, not a damaged store
    with pytest.raises(CliError, match="is not a run id: Dagster run ids are letters, digits and dashes"):
        _one_run(store, "a1\udcff")
