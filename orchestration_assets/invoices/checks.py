"""Blocking checks on invoice_extractions: output quality (great-expectations) and compliance.

Both are blocking: a failure with ERROR severity stops ``approved_invoices`` in the same run.
"""


import warnings

import dagster as dg
import pandas as pd

from orchestration_assets.invoices.assets import REDACTED_COLUMNS, invoice_extractions, invoice_partitions
from orchestration_assets.invoices.quality import EXPECTED_COLUMNS, InvoiceQualityPolicy, invoice_rules, with_derived_columns
from resources.audit_log import AuditEntry, AuditLogResource
from resources.classification import DataClassification
from resources.compliance import call_violations, pii_violations
from resources.data_policy import active_policy
from resources.ledger import LedgerResource
from resources.model_gateway import ModelGatewayResource

# Per-partition check results need partitions_def on the check, which Dagster marks as preview.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)


@dg.asset_check(asset=invoice_extractions, blocking=True, partitions_def=invoice_partitions)
def extraction_quality(invoice_extractions: pd.DataFrame, quality: InvoiceQualityPolicy) -> dg.AssetCheckResult:
    """Schema, non-null fields, ISO dates and total = line items + tax, each for at least ``min_pass_rate`` of items."""
    import great_expectations as gx  # ~3 s to import: only when the check runs
    import great_expectations.expectations as gxe

    frame = with_derived_columns(invoice_extractions)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep the run's log readable
    batch = (
        context.data_sources.add_pandas("extractions")
        .add_dataframe_asset("invoice_extractions")
        .add_batch_definition_whole_dataframe("batch")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="invoice_extraction_quality")
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=list(EXPECTED_COLUMNS), exact_match=False))
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    rules = invoice_rules(quality.total_tolerance)
    for rule in rules:
        suite.add_expectation(rule.expectation(quality.min_pass_rate))
    validation = batch.validate(suite)

    names = ["columns_present", "has_rows", *(rule.name for rule in rules)]
    outcomes = {}
    for name, result in zip(names, validation.results):
        unexpected = result.result.get("unexpected_percent") if result.result else None
        outcomes[name] = {"passed": bool(result.success), "failing_percent": None if unexpected is None else round(unexpected, 1)}
    failed = [name for name, outcome in outcomes.items() if not outcome["passed"]]
    return dg.AssetCheckResult(
        passed=bool(validation.success),
        severity=dg.AssetCheckSeverity.ERROR,
        description="all rules pass" if not failed else "failing: " + ", ".join(failed),
        metadata={
            "rules": dg.MetadataValue.json(outcomes),
            "min_pass_rate": quality.min_pass_rate,
            "items": len(frame),
            "items_with_errors": int(frame["error"].notna().sum()),
        },
    )


@dg.asset_check(asset=invoice_extractions, blocking=True, partitions_def=invoice_partitions)
def extraction_compliance(
    context: dg.AssetCheckExecutionContext, invoice_extractions: pd.DataFrame, ledger: LedgerResource,
    models: ModelGatewayResource, audit: AuditLogResource,
) -> dg.AssetCheckResult:
    """Every call for these items (failed ones included) went to a model the catalog and the data policy allow,
    hosted calls were redacted where the policy says so, and sensitive raw inputs stayed off disk."""
    policy = active_policy()
    run_ids = [r for r in invoice_extractions["run_id"].dropna().unique()]
    # A re-execution reuses answers its earlier runs paid for: their calls are in the run group's ledger rows.
    group = _run_group(context.instance, run_ids)
    calls = pd.concat([ledger.store().calls(run_id=r) for r in group]) if group else pd.DataFrame()
    ids = set(invoice_extractions["id"])
    calls = calls[calls["item_id"].isin(ids)] if not calls.empty else calls
    violations = call_violations(calls, models.catalog(), policy) if not calls.empty else []
    routed = int(invoice_extractions["model"].notna().sum())
    unrecorded = routed - len(calls) if len(calls) < routed else 0
    if unrecorded:
        violations.append({"item": "*", "model": "*", "why": f"{unrecorded} routed items have no ledger record"})
    sensitive = sorted({c for c in invoice_extractions["classification"].dropna().unique()
                        if not policy.may_persist_raw(DataClassification.parse(c))})
    if sensitive:
        storage = _raw_storage(context, run_ids)
        if storage is not None and not storage.startswith("memory only"):
            violations.append({"item": "*", "model": "*", "why": f"raw {', '.join(sensitive)} inputs were stored: {storage}"})
    _audit_check(audit, context, run_ids, "extraction_compliance", not violations, len(violations))
    return dg.AssetCheckResult(
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(calls)} calls checked, {len(violations)} violations",
        metadata={
            "calls_checked": len(calls),
            "violations": dg.MetadataValue.json(violations[:100]),
            "models_by_classification": dg.MetadataValue.json(
                {} if calls.empty else {str(k): sorted(set(v)) for k, v in calls.groupby("classification")["model_id"]}
            ),
        },
    )


@dg.asset_check(asset=invoice_extractions, blocking=True, partitions_def=invoice_partitions)
def extraction_no_pii(context: dg.AssetCheckExecutionContext, invoice_extractions: pd.DataFrame,
                      audit: AuditLogResource) -> dg.AssetCheckResult:
    """Persisted extractions of data the policy forbids persisting raw carry no detectable PII."""
    violations = pii_violations(invoice_extractions, REDACTED_COLUMNS, active_policy())
    run_ids = [r for r in invoice_extractions["run_id"].dropna().unique()] if "run_id" in invoice_extractions else []
    _audit_check(audit, context, run_ids, "extraction_no_pii", not violations, len(violations))
    return dg.AssetCheckResult(
        passed=not violations, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(violations)} items with PII in persisted fields" if violations else "no PII in persisted fields",
        metadata={"violations": dg.MetadataValue.json(violations[:100]), "columns_scanned": REDACTED_COLUMNS},
    )


def _audit_check(audit: AuditLogResource, context: dg.AssetCheckExecutionContext, run_ids: list[str], name: str,
                 passed: bool, violations: int) -> None:
    """Check outcomes join the audit chain beside the calls they judged."""
    partition = context.partition_key if context.has_partition_key else None
    audit.log().append([AuditEntry(event="check", run_id=run_ids[0] if run_ids else context.run.run_id,
                                   asset_key="invoice_extractions", partition_key=partition,
                                   checks={name: passed, "violations": violations})])


def _run_group(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    """The runs and every run of their re-execution groups (the root and its re-executions), in order."""
    group: dict[str, None] = {}
    for run_id in run_ids:
        found = instance.get_run_group(run_id) if instance.has_run(run_id) else None
        for run in (found[1] if found else []):
            group[run.run_id] = None
        group[run_id] = None
    return list(group)


def _raw_storage(context: dg.AssetCheckExecutionContext, run_ids: list[str]) -> "str | None":
    """Where raw_invoices' value went in the run that produced these extractions, from its materialization."""
    for run_id in run_ids:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_invoices")), limit=20).records
        for record in records:
            if record.run_id == run_id:
                storage = record.asset_materialization.metadata.get("storage")
                return getattr(storage, "value", storage)
    return None
