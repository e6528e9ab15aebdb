"""Zero persistence, proven with canaries: restricted invoices leave no trace of their PII on disk.

Unique PII strings are planted in invoices. The template runs on them as a user runs it
(``ai-orch demo`` in a subprocess, on a fresh DAGSTER_HOME): once classified
``restricted`` to completion, once ``restricted`` with a model that kills its process
mid-batch. Afterwards every file under DAGSTER_HOME — Dagster's run and event storage,
compute logs, IO storage, the ledger, the warehouse, the audit log — is scanned as raw
bytes, and every text column of every DuckDB table is queried (DuckDB compresses strings,
so a byte scan alone could miss them). Zero hits. A control run classified ``internal``
(whose raw inputs the policy lets Dagster persist) must be found by the same scan, so the
scan is shown able to fail.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from orchestration_assets.invoices.generator import generate_invoices

REPO = Path(__file__).resolve().parents[1]
CANARY_NAME = "Quorra Vexmarsh-Tillingham"
CANARY_EMAIL = "quorra.canary7f3a@vexmarsh-mail.example"


def _iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


CANARY_IBAN = _iban("DE", "370400440532013077")
CANARIES = [CANARY_NAME, CANARY_EMAIL, CANARY_IBAN]

RULES_ONLY = "models:\n  - id: local-gemma3-270m\n    enabled: false\n"
CRASHING = RULES_ONLY + """  - id: rules-invoice
    callable: "tests.bad_models:crash_on_third_call"
"""


def _documents(path: Path) -> Path:
    rows = []
    for invoice in generate_invoices(5, seed="canary"):
        text = f"{invoice.text}\nCustomer name: {CANARY_NAME}\nEmail: {CANARY_EMAIL}\nIBAN: {CANARY_IBAN}\n"
        rows.append(json.dumps({"id": invoice.id, "text": text}))
    path.write_text("\n".join(rows) + "\n")
    return path


def _demo(home: Path, docs: Path, catalog: str, classification: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_DATA_POLICY")}
    catalog_path = home.parent / f"catalog-{home.name}.yaml"
    catalog_path.write_text(catalog)
    env.update(DAGSTER_HOME=str(home), AI_ORCH_CATALOG=str(catalog_path))
    return subprocess.run(
        [sys.executable, "-m", "orchestration_assets.cli", "demo", "--input", str(docs), "--classification", classification,
         "--date", "2026-03-03", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def scan(home: Path) -> dict[str, list[str]]:
    """Where each canary appears under ``home``: files (raw bytes, also lower-cased) and DuckDB text columns."""
    hits: dict[str, list[str]] = {}
    needles = {c: (c.encode(), c.lower().encode()) for c in CANARIES}
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        lowered = data.lower()
        for canary, (exact, lower) in needles.items():
            if exact in data or lower in lowered:
                hits.setdefault(canary, []).append(str(path.relative_to(home)))
        if path.suffix == ".duckdb":
            for where in _duckdb_hits(path):
                hits.setdefault(where[0], []).append(f"{path.relative_to(home)}::{where[1]}")
    return hits


def _duckdb_hits(path: Path) -> list[tuple[str, str]]:
    found = []
    with duckdb.connect(str(path), read_only=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'").fetchall()
        for table, column in columns:
            for canary in CANARIES:
                (count,) = conn.execute(
                    f'SELECT COUNT(*) FROM "{table}" WHERE lower("{column}") LIKE ?', [f"%{canary.lower()}%"]).fetchone()
                if count:
                    found.append((canary, f"{table}.{column}"))
    return found


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    return _documents(tmp_path_factory.mktemp("input") / "restricted.jsonl")


def test_the_scan_finds_canaries_where_the_policy_allows_persistence(tmp_path, documents):
    home = tmp_path / "internal"
    proc = _demo(home, documents, RULES_ONLY, "internal")
    assert proc.returncode == 0, proc.stderr[-3000:]
    hits = scan(home)
    assert CANARY_EMAIL in hits and any("storage" in where for where in hits[CANARY_EMAIL]), hits


def test_restricted_run_leaves_no_canary_on_disk(tmp_path, documents):
    home = tmp_path / "restricted"
    proc = _demo(home, documents, RULES_ONLY, "restricted")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["items"] == 5 and summary["calls"] == 5 and summary["approved_invoices_materialized"]
    assert scan(home) == {}
    assert CANARY_NAME not in proc.stdout + proc.stderr


def test_restricted_run_killed_mid_batch_leaves_no_canary_on_disk(tmp_path, documents):
    home = tmp_path / "crashed"
    proc = _demo(home, documents, CRASHING, "restricted")
    assert proc.returncode == 17, (proc.returncode, proc.stderr[-3000:])  # the model killed the process mid-batch
    assert (home / "ai_orchestration" / "ledger.duckdb").exists()  # two calls were recorded before the crash
    assert scan(home) == {}


def test_a_name_from_the_document_is_redacted_wherever_an_output_repeats_it():
    """A model that copies the customer into the vendor field: the bare name has no label to give it away."""
    import pandas as pd

    from resources.sensitive_io import redact_for_persistence

    document = "Bill to:\nLukas Schmidt\nHauptstrasse 5\n10115 Berlin\nTotal EUR 12.00"
    frame = pd.DataFrame([
        {"id": "a", "classification": "restricted", "vendor": "LUKAS  SCHMIDT", "error": None},
        {"id": "b", "classification": "restricted", "vendor": "Bakery Schmidtke", "error": None},
        {"id": "c", "classification": "public", "vendor": "Lukas Schmidt", "error": None},
    ])
    sources = {"a": document, "b": document, "c": document}
    assert redact_for_persistence(frame, ["vendor"])[0]["vendor"].tolist()[0] == "LUKAS  SCHMIDT"  # no context: missed
    redacted, changed = redact_for_persistence(frame, ["vendor"], sources=sources)
    assert redacted["vendor"].tolist() == ["PERSON", "Bakery Schmidtke", "Lukas Schmidt"] and changed == 1
