"""The budget resource: who pays for a run's calls, and how budgets are enforced, alerted and reported.

Budgets and credits live in the ledger (``ai-orch budgets set``, ``ai-orch credits``), so
every process and every run sees the same numbers. This resource says which department
a run's calls are charged to (a run tag ``ai_orch/department`` overrides it; the
workflow is the run tag ``ai_orch/workflow`` or the asset's group), whether calls
reserve against budgets before they run, and what the budget sensor does at a cap. A
``daily_cap_usd`` declared in config is written to the ledger as the ``all/day`` budget,
so a deployment can pin a cap in code.
"""

from __future__ import annotations

from typing import Mapping, Optional

import dagster as dg
from pydantic import Field

from resources.budgets import Budget, BudgetStatus, OnHardCap, Period, ScopeKind, SpendScope
from resources.estimation import CostHistory
from resources.ledger import DuckDBLedger
from resources.spend_guard import SpendGuard

DEPARTMENT_TAG, WORKFLOW_TAG = "ai_orch/department", "ai_orch/workflow"


class BudgetResource(dg.ConfigurableResource):
    department: str = Field("operations", description="Department charged when a run has no ai_orch/department tag.")
    enforce: bool = Field(True, description="Reserve each call's p95 estimate against covering budgets before it runs.")
    daily_cap_usd: Optional[float] = Field(None, description="Declares an all/day hard cap (written to the ledger).")
    daily_cap_on_hard: str = Field("refuse", description="'refuse' or 'downgrade' for the declared daily cap.")
    alert_webhook_url: Optional[str] = Field(None, description="POSTed a JSON alert on every budget state change (EnvVar).")
    cancel_runs_at_hard_cap: bool = Field(False, description="The sensor cancels in-flight runs charged to a capped scope.")

    def declared(self) -> list[Budget]:
        if self.daily_cap_usd is None:
            return []
        return [Budget(scope_kind=ScopeKind.ALL, period=Period.DAY, hard_usd=self.daily_cap_usd,
                       soft_usd=0.8 * self.daily_cap_usd, on_hard=OnHardCap(self.daily_cap_on_hard))]

    def sync(self, store: DuckDBLedger) -> None:
        """Write declared budgets to the ledger when they differ from what it holds."""
        wanted = self.declared()
        if not wanted:
            return
        held = {s.budget.budget_id: s.budget for s in store.budget_statuses()}
        for budget in wanted:
            if held.get(budget.budget_id) != budget:
                store.set_budget(budget)

    def scope_for(self, tags: Mapping[str, str], workflow: Optional[str]) -> SpendScope:
        return SpendScope(department=tags.get(DEPARTMENT_TAG) or self.department,
                          workflow=tags.get(WORKFLOW_TAG) or workflow)

    def guard(self, store: DuckDBLedger, scope: SpendScope, history: CostHistory, expected_output_tokens: int) -> SpendGuard:
        self.sync(store)
        store.reconcile()  # reservations of dead processes do not hold budget hostage
        return SpendGuard(store, department=scope.department, workflow=scope.workflow, history=history,
                          expected_output_tokens=expected_output_tokens, enforce=self.enforce)

    def statuses(self, store: DuckDBLedger, scope: Optional[SpendScope] = None) -> list[BudgetStatus]:
        self.sync(store)
        return store.budget_statuses(scope)

    def blocking(self, store: DuckDBLedger, scope: SpendScope) -> Optional[BudgetStatus]:
        """The first refusing budget covering ``scope`` whose cap is reached: no new run should start."""
        for status in self.statuses(store, scope):
            if status.state == "hard" and status.budget.on_hard is OnHardCap.REFUSE:
                return status
        return None
