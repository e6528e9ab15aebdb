"""Budgets hold under concurrency: many processes race for one small hard cap.

Eight worker processes reserve and settle against one department budget (1,200 calls
attempted, more than the cap can pay for); one of them is SIGKILLed while it holds a
reservation. Afterwards: spend is under the cap by at most one call's estimate error,
the budget's spend equals the sum of the recorded calls to the cent, and once the
ledger reconciles, no reservation is left open (the dead one is expired, not lost).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from resources.budgets import Budget, SpendScope
from resources.ledger import DuckDBLedger
from tests.budget_race_worker import ESTIMATE_USD

WORKERS, CALLS_PER_WORKER, CAP_USD = 8, 150, 0.5
REPO = Path(__file__).resolve().parents[1]


def _worker(path: Path, index: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.budget_race_worker", str(path), str(index), str(CALLS_PER_WORKER), str(index), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_hard_cap_holds_across_processes_and_a_killed_one_leaves_no_reservation(tmp_path):
    path = tmp_path / "ledger.duckdb"
    ledger = DuckDBLedger(path)
    ledger.set_budget(Budget(scope_kind="department", scope_value="finance", period="day", hard_usd=CAP_USD))
    marker = tmp_path / "hung"
    victim = _worker(path, 0, "25", str(marker))
    others = [_worker(path, i) for i in range(1, WORKERS)]

    deadline = time.monotonic() + 120
    while not marker.exists():
        assert victim.poll() is None, victim.stderr.read()
        assert time.monotonic() < deadline, "the victim never reached its hang point"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    reports = []
    for proc in others:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    # The victim's reservation is still open until the ledger reconciles: its process is dead.
    held = marker.read_text()
    assert held in {r["reservation_id"] for r in ledger.open_reservations()}
    assert ledger.reconcile()["expired"] >= 1
    assert ledger.open_reservations() == []

    calls = ledger.calls()
    settled_calls = len(calls)
    attempted = sum(r["settled"] + r["refused"] for r in reports) + 26
    assert attempted > 1000 and settled_calls > 400
    assert sum(r["refused"] for r in reports) > 0, "the cap was never reached: the race was not tested"

    spent = float(calls["cost_usd"].sum())
    max_overrun = max(r["max_overrun_usd"] for r in reports)
    assert spent <= CAP_USD + max_overrun + 1e-9, f"spent ${spent:.6f} over cap ${CAP_USD} by more than one estimate error"
    assert spent > CAP_USD - 2 * ESTIMATE_USD * WORKERS, "the budget refused work it could have paid for"

    (status,) = ledger.budget_statuses(SpendScope(department="finance"))
    assert round(status.spent_usd, 2) == round(spent, 2) and abs(status.spent_usd - spent) < 1e-9
    assert status.reserved_usd == 0
    # Every settled reservation closed with exactly its call's cost; the killed one expired without a charge.
    expected_calls = {r["worker"]: r["settled"] for r in reports}
    by_worker = calls.groupby("run_id").size().to_dict()
    assert by_worker.get("worker-0", 0) == 25  # settled before the hang; the hung call never charged
    for worker, settled in expected_calls.items():
        assert by_worker.get(f"worker-{worker}", 0) == settled
    assert os.path.exists(path)
