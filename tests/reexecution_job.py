"""The invoice job as a ``reconstructable`` target: Dagster's re-execution loads the job by reference."""

import dagster as dg


def invoice_batch_job() -> dg.JobDefinition:
    from orchestration_assets.definitions import build_definitions

    return build_definitions().resolve_job_def("invoice_batch")
