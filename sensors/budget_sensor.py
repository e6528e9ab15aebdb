"""The budget sensor: every minute, compare the window's spend with the cap and alert once per breach."""


import dagster as dg

from resources.budget import BudgetResource
from resources.ledger import LedgerResource

ALERTING, CLEAR = "alerting", "clear"


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def ai_budget_sensor(context: dg.SensorEvaluationContext, ledger: LedgerResource, budget: BudgetResource) -> dg.SkipReason:
    """Logs an alert when AI spend passes the cap (once per breach) and says so on every tick."""
    status = budget.status(ledger.store())
    state = ALERTING if status.exceeded else CLEAR
    if state != context.cursor:
        if status.exceeded:
            context.log.warning(f"BUDGET ALERT: {status.message}")
        elif context.cursor == ALERTING:
            context.log.info(f"budget back within cap: {status.message}")
        context.update_cursor(state)
    return dg.SkipReason(status.message)
