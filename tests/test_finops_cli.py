"""`ai-orch credits / budgets / spend` and a demo run stopped or downgraded by a hard cap, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG", "AI_ORCH_DAILY_BUDGET_USD")}
    env["DAGSTER_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "orchestration_assets.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hard_cap_refuses_a_demo_run_and_spend_shows_it(tmp_path):
    home = tmp_path / "home"
    assert _cli(home, "budgets", "set", "department:finance/day", "--hard", "0").returncode == 0
    summary = _json(_cli(home, "demo", "--count", "4", "--date", "2026-03-03", "--department", "finance", "--json"))
    assert summary["calls"] == 0 and summary["budget_refusals"] == 4 and summary["failed_items"] == 4

    # Another department is not covered by finance's cap: its run goes through and is charged to it.
    ok = _json(_cli(home, "demo", "--count", "4", "--date", "2026-03-03", "--department", "ops", "--policy", "cascade", "--json"))
    assert ok["calls"] >= 4 and ok["budget_refusals"] == 0
    spend = _json(_cli(home, "spend", "--by", "department", "--json"))
    assert [r["department"] for r in spend["rows"]] == ["ops"]
    assert spend["total_usd"] == pytest.approx(ok["cost_usd"], abs=1e-8)

    status = _json(_cli(home, "budgets", "status", "--json"))
    assert [(s["budget_id"], s["spent_usd"], s["state"]) for s in status] == [("department:finance/day", 0.0, "hard")]


def test_downgrade_cap_moves_items_to_a_cheaper_model(tmp_path):
    home = tmp_path / "home"
    # Gemma may not be paid for at all today; the cap downgrades its items to the rules extractor.
    assert _cli(home, "budgets", "set", "model:local-gemma3-270m/day", "--hard", "0", "--on-hard", "downgrade").returncode == 0
    summary = _json(_cli(home, "demo", "--count", "20", "--date", "2026-03-03", "--json"))
    assert summary["models"] == {"rules-invoice": 20}, summary["models"]
    assert summary["budget_downgrades"] >= 1 and summary["budget_refusals"] == 0


def test_credits_flow_org_to_department_to_workflow_and_bound_spend(tmp_path):
    home = tmp_path / "home"
    assert _cli(home, "credits", "buy", "1000", "--usd-per-credit", "0.001").returncode == 0
    assert _cli(home, "credits", "allocate", "department:ops", "200").returncode == 0
    assert _cli(home, "credits", "allocate", "workflow:invoices", "50", "--from", "department:ops").returncode == 0
    too_much = _cli(home, "credits", "allocate", "department:legal", "900")
    assert too_much.returncode == 2 and "org has $0.800000 unallocated" in too_much.stderr
    bad = _cli(home, "credits", "allocate", "team:x", "1")
    assert bad.returncode == 2 and "department:NAME" in bad.stderr

    run = _json(_cli(home, "demo", "--count", "3", "--date", "2026-03-03", "--department", "ops", "--policy", "cascade", "--json"))
    balance = _json(_cli(home, "credits", "balance", "--json"))
    accounts = balance["accounts"]
    assert balance["usd_per_credit"] == 0.001
    assert accounts["org"]["balance_usd"] == pytest.approx(0.8)
    assert accounts["department:ops"]["spent_usd"] == pytest.approx(run["cost_usd"], abs=1e-8)
    assert accounts["department:ops"]["balance_usd"] == pytest.approx(0.2 - run["cost_usd"], abs=1e-8)
    assert accounts["workflow:invoices"]["balance_usd"] == pytest.approx(0.05 - run["cost_usd"], abs=1e-8)


@pytest.mark.parametrize("args, message", [
    (["budgets", "set", "department:finance/week", "--hard", "1"], "period one of"),
    (["budgets", "set", "department:finance/month"], "a soft threshold, a hard cap, or both"),
    (["budgets", "set", "department:finance/month", "--soft", "5", "--hard", "1"], "above the hard cap"),
    (["budgets", "remove", "all/day"], "no budget"),
    (["budgets", "set", "model:gpt-4o-mni/day", "--hard", "5"], "no model 'gpt-4o-mni' in the catalog"),
    (["credits", "buy", "-5"], "0 or more"),
    (["credits", "buy", "nan"], "must be a finite number"),  # NaN would spoil the append-only ledger for good
    (["credits", "buy", "10", "--usd-per-credit", "inf"], "must be a finite number"),
    (["budgets", "set", "all/month", "--hard", "nan"], "--hard"),
    (["demo", "--department=", "--count", "1"], "--department must name a department"),
    (["spend", "--days", "0"], "--days must be at least 1"),
    (["credits", "allocate", "org", "5"], "credits go to a department or a workflow"),
])
def test_bad_finops_arguments_exit_2(tmp_path, args, message):
    proc = _cli(tmp_path / "home", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_second_rate_cannot_revalue_credits_and_a_name_with_a_slash_can_be_budgeted(tmp_path):
    home = tmp_path / "home"
    assert _cli(home, "credits", "buy", "1000", "--usd-per-credit", "0.001").returncode == 0
    refused = _cli(home, "credits", "buy", "1000", "--usd-per-credit", "0.002")
    assert refused.returncode == 2 and "set by the first purchase" in refused.stderr
    assert _cli(home, "credits", "buy", "1000").returncode == 0
    assert _json(_cli(home, "credits", "balance", "--json"))["accounts"]["org"]["received_usd"] == pytest.approx(2.0)
    assert _cli(home, "budgets", "set", "department:emea/finance/day", "--hard", "0").returncode == 0
    run = _json(_cli(home, "demo", "--count", "2", "--date", "2026-03-03", "--department", "emea/finance", "--json"))
    assert run["calls"] == 0 and run["budget_refusals"] == 2  # the cap covers the department its name says


def test_store_failures_and_numbers_out_of_range_are_messages_not_tracebacks(tmp_path):
    home = tmp_path / "home"
    data = home / "ai_orchestration"
    data.mkdir(parents=True)
    (data / "ledger.duckdb").write_bytes(b"")  # a damaged (here: empty) ledger file
    proc = _cli(home, "spend", "--json")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "damaged" in proc.stderr and json.loads(proc.stdout.strip().splitlines()[-1])["exit_code"] == 3
    (data / "ledger.duckdb").unlink()
    for args in (["spend", "--days", "99999999"], ["credits", "buy", "1e308", "--usd-per-credit", "10"]):
        proc = _cli(home, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
    assert "not a finite amount" in proc.stderr


def test_two_first_purchases_at_once_cannot_both_set_the_rate(tmp_path):
    import threading

    from resources.budget_store import ORG
    from resources.ledger import DuckDBLedger

    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    ledger.credit_balances()
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def buy(rate: float) -> None:
        start.wait()
        try:
            ledger.add_credits("purchase", ORG, 1000 * rate, usd_per_credit=rate, note="bought")
            outcomes.append(f"bought at {rate:g}")
        except ValueError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=buy, args=(rate,)) for rate in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(o.startswith("bought") for o in outcomes) == 1 and any("credits here are worth" in o for o in outcomes)
    balances, rate = ledger.credit_balances()
    assert balances[ORG]["received_usd"] / rate == pytest.approx(1000)  # 1000 credits bought, valued at one rate


def test_changing_a_budget_keeps_what_is_not_given_and_any_spelling_of_its_id_names_it(tmp_path):
    """`budgets set ID --soft 90` once dropped the hard cap and reset downgrading to refusing."""
    home = tmp_path / "home"
    assert _cli(home, "budgets", "set", "department:finance/month", "--soft", "80", "--hard", "100",
                "--on-hard", "downgrade").returncode == 0
    changed = _cli(home, "budgets", "set", "department:finance/month", "--soft", "90")
    assert changed.stdout.strip() == "set department:finance/month: soft 90.0, hard 100.0, downgrade at cap"
    respelled = _cli(home, "budgets", "set", "department:finance /month", "--hard", "120")
    assert respelled.stdout.strip() == "set department:finance/month: soft 90.0, hard 120.0, downgrade at cap"
    removed = _cli(home, "budgets", "remove", "department:finance /month")
    assert removed.returncode == 0 and removed.stdout.strip() == "removed department:finance/month"
    assert _json(_cli(home, "budgets", "list", "--json")) == []


def test_a_credit_account_spelled_with_spaces_is_the_same_account_not_a_second_cap(tmp_path):
    """"department:finance " had been a second account: its $10 cap refused finance's spending with 100 credits."""
    home = tmp_path / "home"
    assert _cli(home, "credits", "buy", "200").returncode == 0
    assert _cli(home, "credits", "allocate", "department:finance", "100").returncode == 0
    assert _cli(home, "credits", "allocate", "department:finance ", "10").returncode == 0
    accounts = _json(_cli(home, "credits", "balance", "--json"))["accounts"]
    assert "department:finance " not in accounts and accounts["department:finance"]["received_usd"] == 110.0
