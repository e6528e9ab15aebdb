"""One process of the budget race: reserve a call's estimate, 'make' the call, settle, repeat.

Run as ``python -m tests.budget_race_worker LEDGER WORKER CALLS SEED [HANG_AT MARKER]``. With
``HANG_AT`` the worker, after reserving that call, writes ``MARKER`` and sleeps, so the
test can kill it while it holds an open reservation (a process dying mid-call).
Prints one JSON line: calls settled, refusals, and the largest overrun of an estimate.
"""

import json
import random
import sys
import time
from pathlib import Path

from resources.budgets import BudgetRefusal, SpendScope
from resources.ledger import CallRecord, DuckDBLedger

ESTIMATE_USD = 0.001  # every call reserves this p95 estimate


def main(argv: list[str]) -> None:
    path, worker, calls, seed = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    hang_at = int(argv[4]) if len(argv) > 4 else -1
    marker = Path(argv[5]) if len(argv) > 5 else None
    rng = random.Random(seed)
    ledger = DuckDBLedger(path)
    scope = SpendScope(department="finance", workflow="invoices", model_id="model-a")
    settled = refused = 0
    overrun = 0.0
    for i in range(calls):
        try:
            reservation = ledger.reserve(scope, ESTIMATE_USD, run_id=f"worker-{worker}", item_id=f"{worker}-{i}")
        except BudgetRefusal:
            refused += 1
            continue
        if i == hang_at and marker is not None:
            partial = marker.with_suffix(".partial")
            partial.write_text(reservation.reservation_id)
            partial.rename(marker)  # atomic: the test never reads a half-written marker
            time.sleep(600)  # killed here, holding the reservation
        # The actual cost: usually under the p95 estimate, sometimes over it.
        actual = round(ESTIMATE_USD * rng.uniform(0.5, 1.08), 9)
        overrun = max(overrun, actual - ESTIMATE_USD)
        ledger.settle(reservation, [CallRecord(
            run_id=f"worker-{worker}", item_id=f"{worker}-{i}", task="race", model_id=scope.model_id, provider="p",
            residency="on_prem", classification="internal", cost_usd=actual, estimated_cost_usd=ESTIMATE_USD,
            outcome="ok", department=scope.department, workflow=scope.workflow, reservation_id=reservation.reservation_id,
        )])
        settled += 1
    print(json.dumps({"worker": worker, "settled": settled, "refused": refused, "max_overrun_usd": overrun}))


if __name__ == "__main__":
    main(sys.argv[1:])
