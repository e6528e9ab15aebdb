"""The budget sensor: every minute, every budget's state; alert on each change, act at hard caps.

On a state change (``ok`` → ``soft`` → ``hard`` and back) it logs the alert, posts it to
the webhook when one is configured, and records it as a materialization of the
``ai_budget_alerts`` asset, which a user can hang any notifier on (an asset sensor, an
automation). Whenever spend moved it records ``ai_budget_status`` with each budget's
spent and remaining dollars as numeric metadata, which the UI plots over time. At a
refusing hard cap it can cancel the in-flight runs charged to the capped scope.
Starting new runs is the schedules' side: they ask ``BudgetResource.blocking`` first.
"""


import json
from typing import Optional

import dagster as dg
from resources.budget import DEPARTMENT_TAG, WORKFLOW_TAG, BudgetResource
from resources.budgets import BudgetStatus, OnHardCap, ScopeKind
from resources.ledger import LedgerResource
from sensors.alerts import post_alert

ALERTS_KEY, STATUS_KEY = dg.AssetKey("ai_budget_alerts"), dg.AssetKey("ai_budget_status")
BUDGET_ASSETS = [
    dg.AssetSpec(ALERTS_KEY, group_name="finops", kinds={"duckdb"},
                 description="One materialization per budget alert (state change), written by ai_budget_sensor."),
    dg.AssetSpec(STATUS_KEY, group_name="finops", kinds={"duckdb"},
                 description="Spend and remaining budget per budget, recorded by ai_budget_sensor when spend moves."),
]


def _metadata_key(status: BudgetStatus) -> str:
    return status.budget.budget_id.replace(":", "_").replace("/", "_")


def _alert_text(status: BudgetStatus, before: Optional[str]) -> str:
    verdicts = {"hard": "HARD CAP reached", "soft": "soft threshold passed", "ok": "back within budget"}
    return f"BUDGET {verdicts[status.state]} (was {before or 'unseen'}): {status.describe()}"


def _cancel_runs(context: dg.SensorEvaluationContext, status: BudgetStatus, budget: BudgetResource) -> list[str]:
    """Cancel started runs whose charges fall under the capped scope."""
    kind, value = status.budget.scope_kind, status.budget.scope_value
    if kind is ScopeKind.MODEL:
        return []  # a model cap downgrades or refuses per call; whole runs are not the model's to stop
    cancelled = []
    for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        department = run.tags.get(DEPARTMENT_TAG, budget.department)
        charged = (kind is ScopeKind.ALL or (kind is ScopeKind.DEPARTMENT and department == value)
                   or (kind is ScopeKind.WORKFLOW and run.tags.get(WORKFLOW_TAG) == value))
        if not charged:
            continue
        context.instance.run_coordinator.cancel_run(run.run_id)
        after = context.instance.get_run_by_id(run.run_id)
        if after is not None and after.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED):
            context.log.warning(f"cancelling run {run.run_id}: {status.budget.budget_id} is at its hard cap")
            cancelled.append(run.run_id)
    return cancelled


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def ai_budget_sensor(context: dg.SensorEvaluationContext, ledger: LedgerResource, budget: BudgetResource) -> dg.SensorResult:
    """Alerts once per budget state change, plots spend, and stops capped work when configured to."""
    store = ledger.store()
    reconciled = store.reconcile()
    statuses = budget.statuses(store)
    previous = json.loads(context.cursor) if context.cursor else {}
    states, spent = previous.get("states", {}), previous.get("spent", {})
    events: list[dg.AssetMaterialization] = []
    for status in statuses:
        budget_id, before = status.budget.budget_id, states.get(status.budget.budget_id)
        if status.state != before and (before is not None or status.state != "ok"):
            text = _alert_text(status, before)
            (context.log.warning if status.state != "ok" else context.log.info)(text)
            payload = {"alert": text, "previous_state": before, **status.as_dict()}
            if budget.alert_webhook_url:
                post_alert(budget.alert_webhook_url, payload, context.log)
            if status.state == "hard" and status.budget.on_hard is OnHardCap.REFUSE and budget.cancel_runs_at_hard_cap:
                payload["cancelled_runs"] = _cancel_runs(context, status, budget)
            events.append(dg.AssetMaterialization(ALERTS_KEY, description=text, metadata={
                "budget_id": budget_id, "state": status.state, "alert": dg.MetadataValue.json(payload)}))
        states[budget_id] = status.state
    moved = {s.budget.budget_id: round(s.spent_usd, 8) for s in statuses}
    if moved != spent and statuses:
        metadata: dict = {}
        for status in statuses:
            metadata[f"{_metadata_key(status)}_spent_usd"] = dg.MetadataValue.float(round(status.spent_usd, 8))
            if status.remaining_usd is not None:
                metadata[f"{_metadata_key(status)}_remaining_usd"] = dg.MetadataValue.float(round(status.remaining_usd, 8))
        events.append(dg.AssetMaterialization(STATUS_KEY, metadata=metadata))
    summary = "; ".join(s.describe() for s in statuses) or "no budgets set (ai-orch budgets set …)"
    if reconciled["expired"] or reconciled["settled"]:
        summary += f"; reconciled stale reservations: {reconciled}"
    return dg.SensorResult(skip_reason=summary, asset_events=events,
                           cursor=json.dumps({"states": states, "spent": moved}))
