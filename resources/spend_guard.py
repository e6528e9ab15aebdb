"""Budget enforcement around each model call: reserve the p95 estimate, call, settle to the actual.

The AI task loop asks the guard before every call (cascade escalations included). When a
hard cap refuses the reservation, the budget's ``on_hard`` decides: ``refuse`` ends the
item with an error naming the budget and the shortfall; ``downgrade`` sends the item to
the cheapest model of the same clearance whose p95 estimate still fits the headroom —
the "force the router onto cheaper routes" lever — and the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from resources.budgets import BudgetRefusal, ScopeKind, SpendScope
from resources.catalog import ModelSpec
from resources.estimation import CostHistory, estimate_item
from resources.ledger import CallRecord, LedgerStore


@dataclass
class SpendGuard:
    ledger: LedgerStore
    department: Optional[str] = None
    workflow: Optional[str] = None
    history: CostHistory = field(default_factory=CostHistory)
    expected_output_tokens: int = 300
    enforce: bool = True
    refusals: int = 0
    downgrades: int = 0

    def scope(self, model_id: Optional[str] = None) -> SpendScope:
        return SpendScope(department=self.department, workflow=self.workflow, model_id=model_id)

    def estimate_p95(self, spec: ModelSpec, task: str, characters: int) -> float:
        return estimate_item(spec, task, characters, self.history, self.expected_output_tokens).p95_usd

    def reserve(self, spec: ModelSpec, task: str, characters: int, *, run_id: Optional[str], item_id: str):
        """A reservation for one call, or ``None`` when enforcement is off; raises ``BudgetRefusal``."""
        if not self.enforce:
            return None
        try:
            return self.ledger.reserve(self.scope(spec.id), self.estimate_p95(spec, task, characters),
                                       run_id=run_id, item_id=item_id)
        except BudgetRefusal:
            self.refusals += 1
            raise

    def cheaper_routes(self, refusal: BudgetRefusal, pool: Sequence[ModelSpec], refused: ModelSpec, task: str,
                       characters: int) -> list[ModelSpec]:
        """Models of ``pool`` (already cleared for the item) cheaper than ``refused`` that could fit, cheapest first.

        Under a model's own cap any other model may fit; under a department, workflow or
        organisation cap only those whose p95 fits the headroom left. Each is reserved in
        turn, so its own budgets still have the last word.
        """
        if not refusal.downgrade:
            return []
        ceiling = self.estimate_p95(refused, task, characters)
        model_cap = refusal.status.budget.scope_kind is ScopeKind.MODEL
        priced = sorted(((self.estimate_p95(s, task, characters), s) for s in pool if s.id != refused.id),
                        key=lambda pair: pair[0])
        return [s for cost, s in priced if cost < ceiling and (model_cap or cost <= refusal.headroom_usd)]

    def settle(self, reservation, records: Sequence[CallRecord], writer=None,
               outputs: Sequence[tuple[str, str, str]] = ()) -> None:
        """Charge the calls to this guard's department and workflow and close the reservation: at once,
        or through a ``ledger_writer.LedgerWriter`` (journaled now, stored with its next batch).
        ``outputs``: (idempotency key, call id, answer JSON) kept for re-executions."""
        reservation_id = reservation.reservation_id if reservation is not None else None
        for record in records:
            record.department, record.workflow = self.department, self.workflow
            record.reservation_id = reservation_id
        if writer is not None:
            writer.settle(reservation_id, records, outputs)
        else:
            self.ledger.settle_batch([(reservation_id, records)], outputs)
