"""`ai-orch demo` as a user runs it: a subprocess on a fresh DAGSTER_HOME, offline, no keys."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dagster as dg

REPO = Path(__file__).resolve().parents[1]


def _demo(tmp_path, *args, check_json=True):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration_assets.cli", "demo", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    summary = json.loads(proc.stdout) if check_json and proc.returncode == 0 else None
    return proc, summary


def test_demo_offline_uses_two_models_prices_every_call_and_shows_in_the_instance(tmp_path):
    output = tmp_path / "out.jsonl"
    proc, summary = _demo(tmp_path, "--count", "10", "--date", "2026-03-03", "--json", "--output", str(output))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["calls"] == 10
    assert set(summary["models"]) == {"rules-invoice", "local-gemma3-270m"}, summary["models"]
    assert sum(summary["models"].values()) == 10
    assert summary["cost_usd"] > 0
    assert set(summary["checks"]) == {"extraction_quality", "extraction_compliance", "extraction_no_pii"}
    assert summary["checks"]["extraction_compliance"] is True
    assert "items done" in proc.stderr  # progress in the run's logs

    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 10
    assert {"id", "vendor", "invoice_number", "date", "currency", "total", "model", "route", "cost_usd"} <= set(rows[0])
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(summary["cost_usd"], abs=1e-6)

    # The run is on the instance `dagster dev` would show.
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        run = instance.get_run_by_id(summary["run_id"])
        assert run is not None and run.tags.get("dagster/partition") == "2026-03-03"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--count", "0"], "--count must be at least 1"),
        (["--count", "99999999999999999999"], "--count must be at most 100,000"),  # refused, not filling memory
        (["--date", "03/03/2026"], "--date must be YYYY-MM-DD"),
        (["--date", "2020-01-01"], "before the first partition"),
        (["--classification", "secret"], "unknown data classification"),
        (["--input", "/nonexistent/docs.jsonl"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    proc, _ = _demo(tmp_path, *args, check_json=False)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_malformed_line_fails_its_item_naming_the_line_and_the_rest_runs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = "".join(json.dumps({"id": i, "text": f"ACME Ltd\nInvoice INV-{i}\n2026-03-01\nTOTAL EUR 12.00"}) + "\n"
                   for i in ("a", "b", "d", "e"))
    # A byte-order mark before the first row (Excel, Windows tools) is not part of it.
    bad.write_text("\ufeff" + good + 'not json\n{"id": "a", "text": "again"}\n{"id": "c", "text": 5}\n')
    output = tmp_path / "out.jsonl"
    proc, summary = _demo(tmp_path, "--input", str(bad), "--json", "--output", str(output))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["items"] == 7 and summary["failed_items"] == 3 and summary["calls"] == 4

    def strict(constant):
        raise AssertionError(f"{constant} is not JSON")

    rows = [json.loads(line, parse_constant=strict) for line in output.read_text().splitlines()]
    assert [row["model"] for row in rows if row.get("error")] == [None, None, None]
    errors = {row["id"]: row.get("error") for row in rows}
    assert errors["a"] is None
    assert errors["line-5"].startswith("unreadable input: bad.jsonl:5: not a JSON object")
    assert errors["a#line-6"] == "unreadable input: bad.jsonl:6: duplicate id 'a'"
    assert errors["c"] == 'unreadable input: bad.jsonl:7: expected an object with "id" and a string "text"'


def test_a_batch_past_its_failure_rate_fails_the_step_saying_so(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ACME Ltd\\nTOTAL EUR 12.00"}\nnot json\n{"id": "c"}\n')
    proc, _ = _demo(tmp_path, "--input", str(bad), check_json=False)
    assert proc.returncode != 0
    assert "2 of 3 items failed (67%), more than max_failure_rate 50%; first: line-2: unreadable input" in proc.stderr
    # The trace marks the step failed, with the same reason, not only its items.
    run_id = re.search(r"run ([0-9a-f-]{36}) could not complete", proc.stderr).group(1)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    trace = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "trace", run_id], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    step_line = trace.stdout.splitlines()[0]
    assert step_line.startswith("✗ step invoice_extractions") and "FAILED [Failure]: 2 of 3 items failed (67%)" in step_line


def test_input_without_a_single_document_exits_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("id,text\n1,hello\n")
    proc, _ = _demo(tmp_path, "--input", str(bad), check_json=False)
    assert proc.returncode == 2
    assert "holds no readable document (first problem: bad.jsonl:1: not a JSON object" in proc.stderr


def test_policy_flag_is_launch_config_and_fit_routing_learns_from_the_ledger(tmp_path):
    """`--policy cascade` is the run config the launchpad takes; `fit-routing` then fits on that ledger."""
    docs = tmp_path / "docs.jsonl"
    from orchestration_assets.invoices.generator import generate_invoices

    docs.write_text("".join(json.dumps({"id": g.id, "text": g.text}) + "\n" for g in generate_invoices(6, seed=5)))
    proc, summary = _demo(tmp_path, "--input", str(docs), "--policy", "cascade", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["calls"] >= 6
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        run = instance.get_run_by_id(summary["run_id"])
        assert run.run_config["resources"]["routing"]["config"]["policy"] == "cascade"
    from resources.ledger import DuckDBLedger

    calls = DuckDBLedger(tmp_path / "home" / "ai_orchestration" / "ledger.duckdb").calls(run_id=summary["run_id"])
    assert set(calls["policy"]) == {"cascade"} and calls["route_reason"].str.contains("cascade: rules-invoice").all()

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    fit = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "fit-routing", "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    fitted = json.loads(fit.stdout.strip().splitlines()[-1])
    assert fitted["training_items"] == 6 and "rules-invoice" in fitted["models"]
    assert (tmp_path / "home" / "ai_orchestration" / "routing_policy" / f"{fitted['version']}.pkl").is_file()


def test_fit_routing_before_any_outcome_says_what_to_run_first(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "fit-routing"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no judged outcomes in the ledger yet" in proc.stderr
    assert "Traceback" not in proc.stderr and "STEP_FAILURE" not in proc.stderr


def test_estimate_does_not_price_lines_that_will_fail_as_input_errors(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "ACME Ltd\\nTOTAL EUR 12.00"}\nnot json\n{"id": "a", "text": "dup"}\n'
                    '{"id": "e", "text": "   "}\n{"id": "b", "text": "Blue Ltd\\nTOTAL EUR 3.00"}\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "estimate", "--input", str(docs),
                           "--date", "2026-03-05", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert (summary["items"], summary["routed"], summary["unreadable_items"]) == (2, 2, 3)


def test_a_refused_json_command_prints_its_error_as_json_on_stdout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "fit-routing", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no judged outcomes in the ledger yet" in proc.stderr
    error = json.loads(proc.stdout.strip().splitlines()[-1])
    assert error["exit_code"] == 2 and error["error"].startswith("no judged outcomes in the ledger yet")


def test_arguments_refused_by_the_parser_or_an_unwritable_output_say_so_before_any_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "ACME Ltd\nTotal 1.00"}) + "\n")
    (tmp_path / "a-folder").mkdir()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "orchestration_assets.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    bad_count = cli("demo", "--count", "abc", "--json")
    assert bad_count.returncode == 2 and "--count must be a whole number, not 'abc'" in bad_count.stderr
    assert json.loads(bad_count.stdout) == {"error": "argument --count: --count must be a whole number, not 'abc'",
                                            "exit_code": 2}
    no_run = cli("trace", "--json")
    assert no_run.returncode == 2 and json.loads(no_run.stdout)["error"] == "the following arguments are required: run_id"
    folder = cli("demo", "--input", str(docs), "--output", str(tmp_path / "a-folder"), "--json")
    assert folder.returncode == 2 and "is a directory: give a file path" in folder.stderr
    assert "Traceback" not in folder.stderr and json.loads(folder.stdout)["exit_code"] == 2
    assert not (tmp_path / "home" / "storage").exists()  # refused before any run


def test_output_rows_name_the_checks_they_fail_even_when_the_batch_passes(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in [
        {"id": "ok", "text": "ACME Ltd\nInvoice INV-1\nDate: 2025-03-05\nWidget 10.00\nTotal USD 10.00"},
        {"id": "credit", "text": "Blue Ltd\nCREDIT NOTE CN-12\n2026-02-03\nReturned widget (40.00)\nTotal (GBP 40.00)"},
        {"id": "no-vendor", "text": "Invoice Q-1\nDate: 2025-02-10\nTotal PLN 300.00"},
    ]) + "\n")
    output = tmp_path / "out.jsonl"
    proc, _ = _demo(tmp_path, "--input", str(docs), "--output", str(output), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert "failed_checks" not in rows["ok"]
    assert rows["credit"]["total"] == -40.0 and rows["credit"]["failed_checks"] == ["total_not_negative"]
    assert rows["no-vendor"]["vendor"] is None and rows["no-vendor"]["failed_checks"] == ["vendor_present"]


def test_an_output_that_cannot_be_written_says_the_run_completed_and_where_its_results_are(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system to fill")
    proc, _ = _demo(tmp_path, "--count", "2", "--date", "2026-03-03", "--output", "/dev/full", check_json=False)
    assert proc.returncode == 3
    assert re.search(r"run [0-9a-f-]{36} completed .*could not be written to /dev/full: No space left on device", proc.stderr)


@pytest.mark.parametrize("name,value,message", [
    ("AI_ORCH_DAILY_BUDGET_USD", "abc", "AI_ORCH_DAILY_BUDGET_USD must be a number of 0 or more, not 'abc'"),
    ("AI_ORCH_DAILY_BUDGET_USD", "nan", "AI_ORCH_DAILY_BUDGET_USD must be a number of 0 or more, not 'nan'"),
    ("AI_ORCH_ROUTING_POLICY", "bogus", "AI_ORCH_ROUTING_POLICY must be one of rules, learned, cascade, not 'bogus'"),
])
def test_a_bad_environment_setting_is_named_with_what_it_takes_exit_2_no_traceback(tmp_path, name, value, message):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), name: value}
    proc = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "budgets", "status", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout) == {"error": message, "exit_code": 2}
