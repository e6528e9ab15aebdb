"""The compliance sensor: near-real-time watch over the ledger and the compliance checks.

Every minute it re-verifies the calls recorded since its last tick against the catalog
and the data policy (``resources.compliance.call_violations``) and reads the latest
results of the blocking compliance checks. On a violation it alerts on the budget
sensor's path (run log, webhook, an ``ai_compliance_alerts`` materialization) and puts
the workflow on hold in the ledger: its schedules skip, saying why, until someone lifts
the hold (``ai-orch compliance release WORKFLOW``). Alerts name items, models and rules,
never data.
"""


import json
from datetime import datetime, timedelta

import dagster as dg

from resources.budget import BudgetResource
from resources.compliance import call_violations
from resources.data_policy import active_policy
from resources.ledger import LedgerResource
from resources.model_gateway import ModelGatewayResource
from sensors.alerts import post_alert

ALERTS_KEY = dg.AssetKey("ai_compliance_alerts")
COMPLIANCE_ASSETS = [dg.AssetSpec(ALERTS_KEY, group_name="governance", kinds={"duckdb"},
                                  description="One materialization per compliance violation found by ai_compliance_sensor.")]
WATCHED_CHECKS = {  # blocking checks whose failure is a compliance violation, and the workflow they belong to
    dg.AssetCheckKey(dg.AssetKey("invoice_extractions"), "extraction_compliance"): "invoices",
    dg.AssetCheckKey(dg.AssetKey("invoice_extractions"), "extraction_no_pii"): "invoices",
}


def _failed_checks(instance: dg.DagsterInstance, seen: dict[str, int]) -> list[tuple[str, str, int, str]]:
    """(check, workflow, record id, run id) for each watched check whose newest execution failed and is new."""
    failed = []
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(WATCHED_CHECKS))
    for key, record in latest.items():
        name = key.to_user_string()
        if record.id <= seen.get(name, 0):
            continue
        seen[name] = record.id
        evaluation = record.event.dagster_event.event_specific_data.evaluation if record.event and record.event.dagster_event else None
        if evaluation is not None and not evaluation.passed:
            failed.append((name, WATCHED_CHECKS[key], record.id, record.run_id))
    return failed


LATE_ROWS = timedelta(hours=24)  # how late a row may reach the ledger and still be checked


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def ai_compliance_sensor(context: dg.SensorEvaluationContext, ledger: LedgerResource, models: ModelGatewayResource,
                         budget: BudgetResource) -> dg.SensorResult:
    """Alerts on and holds any workflow with a policy violation in the ledger or a failed compliance check."""
    state = json.loads(context.cursor) if context.cursor else {}
    since = datetime.fromisoformat(state["since"]) if state.get("since") else datetime(1970, 1, 1)
    seen: dict[str, int] = state.get("checks", {})
    reported: dict[str, str] = state.get("reported", {})  # call id -> when it was recorded, within the window
    store = ledger.store()
    calls = store.calls()
    # A row may reach the ledger after newer ones (the write-behind batches, another step's batch, a dead
    # worker's journal replayed by the next reconcile), carrying the time its call was made: rows recorded
    # within LATE_ROWS before the newest one seen are checked again, and a violation is reported once.
    # (A cursor written before violations were kept by call id has no "reported": its window starts at
    # ``since``, or the violations it already alerted on, some perhaps released since, would alert again.)
    window = since - LATE_ROWS if "reported" in state or not state.get("since") else since
    fresh = calls[calls["recorded_at"] > window] if len(calls) else calls
    findings = []
    for violation in call_violations(fresh, models.catalog(), active_policy()) if len(fresh) else []:
        if violation["call"] in reported:
            continue
        row = fresh.loc[fresh["call_id"] == violation["call"]]
        reported[violation["call"]] = row["recorded_at"].iloc[0].isoformat()
        workflow = row["workflow"].dropna()
        findings.append({"source": "ledger", "workflow": workflow.iloc[0] if len(workflow) else "invoices", **violation})
    for check, workflow, _, run_id in _failed_checks(context.instance, seen):
        findings.append({"source": "asset check", "workflow": workflow, "check": check, "run": run_id,
                         "why": f"blocking check {check} failed"})
    events = []
    held = store.holds()
    for workflow in sorted({f["workflow"] for f in findings}):
        mine = [f for f in findings if f["workflow"] == workflow]
        text = f"COMPLIANCE violation in workflow {workflow}: {mine[0]['why']} ({len(mine)} finding(s))"
        context.log.error(text)
        payload = {"alert": text, "workflow": workflow, "findings": mine[:50]}
        if budget.alert_webhook_url:
            post_alert(budget.alert_webhook_url, payload, context.log)
        if workflow not in held:
            store.hold_workflow(workflow, mine[0]["why"])
        events.append(dg.AssetMaterialization(ALERTS_KEY, description=text,
                                              metadata={"workflow": workflow, "findings": dg.MetadataValue.json(mine[:50])}))
    if len(calls):
        since = max(since, calls["recorded_at"].max().to_pydatetime())
    reported = {call: at for call, at in reported.items() if datetime.fromisoformat(at) > since - LATE_ROWS}
    holds = store.holds()
    summary = (f"{len(findings)} new violations; " if findings else "no new violations; ") + (
        "on hold: " + ", ".join(f"{w} ({h['reason']})" for w, h in holds.items()) if holds else "no workflow on hold")
    return dg.SensorResult(skip_reason=summary, asset_events=events,
                           cursor=json.dumps({"since": since.isoformat(), "checks": seen, "reported": reported}))
