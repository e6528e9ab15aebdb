"""The daily invoice batch: yesterday's partition at 06:00 UTC, unless the budget cap is reached."""


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
    status = budget.status(ledger.store())
    if status.exceeded:
        return dg.SkipReason(status.message)
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=day, partition_key=day)
