"""A job whose steps all write the ledger at once, for the multiprocess-executor test.

It lives in its own module because Dagster's multiprocess executor re-imports the job
in each step's child process (``reconstructable``), which a test-local closure cannot be.
"""

import dagster as dg

from resources.budgets import BudgetRefusal, SpendScope
from resources.ledger import CallRecord, LedgerResource

WRITERS, CALLS_PER_STEP = 4, 25


def _writer_op(index: int) -> dg.OpDefinition:
    @dg.op(name=f"writer_{index}")
    def writer(context: dg.OpExecutionContext, ledger: LedgerResource) -> int:
        """Each call reserves its cost against the 'parallel' department's budgets, then settles."""
        store = ledger.store()
        settled = 0
        for i in range(CALLS_PER_STEP):
            try:
                reservation = store.reserve(SpendScope(department="parallel", model_id="m"), 0.01, run_id=context.run_id)
            except BudgetRefusal:
                continue
            store.settle(reservation, [CallRecord(
                run_id=context.run_id, step_key=context.op_handle.name, item_id=f"{index}-{i}", task="parallel",
                model_id="m", provider="p", residency="on_prem", classification="internal",
                input_tokens=3, output_tokens=2, cost_usd=0.01, outcome="ok", department="parallel",
            )])
            settled += 1
        return settled

    return writer


@dg.job(executor_def=dg.multiprocess_executor.configured({"max_concurrent": WRITERS}))
def parallel_ledger_job() -> None:
    for index in range(WRITERS):
        _writer_op(index)()


def parallel_ledger_job_def() -> dg.JobDefinition:
    """The job with the ledger resource bound; the target ``dg.reconstructable`` re-imports."""
    return dg.Definitions(jobs=[parallel_ledger_job], resources={"ledger": LedgerResource()}).get_job_def(
        "parallel_ledger_job"
    )
