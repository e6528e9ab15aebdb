"""The daily invoice batch: yesterday's partition at 06:00 UTC, unless a budget covering it is at its hard cap."""


from datetime import timedelta

import dagster as dg

from orchestration_assets.invoices.assets import invoice_partitions
from resources.budget import BudgetResource
from resources.ledger import LedgerResource

invoice_batch_job = dg.define_asset_job(
    "invoice_batch", selection=dg.AssetSelection.groups("invoices"), partitions_def=invoice_partitions
)


@dg.schedule(job=invoice_batch_job, cron_schedule="0 6 * * *", execution_timezone="UTC")
def invoice_daily_schedule(context: dg.ScheduleEvaluationContext, ledger: LedgerResource, budget: BudgetResource):
    store = ledger.store()
    hold = store.holds().get("invoices")
    if hold is not None:
        return dg.SkipReason(f"workflow invoices is on compliance hold since {hold['since']}: {hold['reason']} "
                             f"(lift it with: ai-orch compliance release invoices --note '…')")
    blocking = budget.blocking(store, budget.scope_for({}, "invoices"))
    if blocking is not None:
        over = blocking.spent_usd - (blocking.budget.hard_usd or 0.0)
        return dg.SkipReason(f"budget {blocking.budget.budget_id} is at its hard cap (over by ${over:.6f}): "
                             f"{blocking.describe()}")
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=day, partition_key=day)
