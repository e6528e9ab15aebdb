"""The invoice template's assets: raw_invoices → invoice_extractions → approved_invoices."""


import json
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from orchestration_assets.ai_task import (
    AITask, CallContext, ItemOutcome, batch_metadata,
)
from orchestration_assets.invoices.generator import generate_invoices
from orchestration_assets.invoices.quality import InvoiceQualityPolicy, invoice_item_check, passing_rows
from orchestration_assets.invoices.schema import INVOICE_INSTRUCTIONS, INVOICE_TASK, InvoiceExtraction
from orchestration_assets.ai_step import AIStepResources, run_ai_step
from orchestration_assets.placement_plan import placement_pool, placement_tags, task_placement
from resources.classification import DataClassification
from resources.documents import Document, read_documents_jsonl
from orchestration_assets.spend_metadata import budget_metadata
from resources.audit_log import AuditLogResource
from resources.budget import BudgetResource
from resources.estimation import estimate_run
from resources.ledger import LedgerResource
from resources.model_gateway import ModelGatewayResource
from resources.placement import HostCapabilities
from resources.routing import RoutingResource
from resources.sensitive_io import RAW_INPUT, redact_for_persistence
from resources.tracing import TracingResource
from resources.warehouse import DuckDBWarehouseResource

invoice_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)

INVOICE_EXTRACTION = AITask(
    name=INVOICE_TASK, instructions=INVOICE_INSTRUCTIONS, output_schema=InvoiceExtraction,
    check=invoice_item_check, attributes=(("domain", "invoices"),),
)

FIELDS = ["vendor", "invoice_number", "date", "currency", "total", "tax"]
# Text columns that may quote a document: redacted before a sensitive partition is persisted.
REDACTED_COLUMNS = ["vendor", "invoice_number", "line_items", "item_check", "error"]


class RawInvoicesConfig(dg.Config):
    """Generate ``count`` synthetic invoices for the partition, or read the user's own from ``input_path``.

    ``min_line_items``/``max_line_items`` make the generated invoices long, multi-page ones (the
    input of ``long_invoice_extractions``); ``noise_rate`` is the share with OCR-style noise.
    """

    count: int = 20
    input_path: Optional[str] = None
    classification: str = DataClassification.INTERNAL.value
    seed: Optional[str] = None
    min_line_items: Optional[int] = None
    max_line_items: Optional[int] = None
    noise_rate: float = 0.3


def invoice_documents(config: RawInvoicesConfig, partition_key: str) -> tuple[list[Document], str]:
    """The partition's documents and their source; ``ai-orch estimate`` builds exactly what the asset will."""
    classification = DataClassification.parse(config.classification)
    if config.input_path:
        return read_documents_jsonl(config.input_path, classification), "input file"
    if config.count < 1:
        raise ValueError(f"count must be at least 1, got {config.count}")
    line_items = None
    if config.min_line_items is not None or config.max_line_items is not None:
        low = config.min_line_items or 1
        line_items = (low, max(low, config.max_line_items or low))
    generated = generate_invoices(config.count, seed=config.seed or partition_key, noise_rate=config.noise_rate,
                                  line_items=line_items)
    return [
        Document(id=inv.id, text=inv.text, classification=classification, truth=inv.truth.model_dump())
        for inv in generated
    ], "generator"


@dg.asset(partitions_def=invoice_partitions, group_name="invoices", kinds={"python"}, metadata={RAW_INPUT: True})
def raw_invoices(context: dg.AssetExecutionContext, config: RawInvoicesConfig) -> dg.Output[list[Document]]:
    """The day's invoices: generated (seeded by the partition date) or read from a JSONL file."""
    classification = DataClassification.parse(config.classification)
    try:
        documents, source = invoice_documents(config, context.partition_key)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    return dg.Output(
        documents,
        metadata={
            "documents": len(documents),
            "source": source,
            "classification": classification.value,
            "characters": sum(len(d.text) for d in documents),
        },
    )


class ExtractionConfig(dg.Config):
    """``max_failure_rate``: the share of items that may fail (model errors, refusals, unreadable documents)
    before the step fails; below it, failed items are reported in the metadata and left out downstream."""

    max_failure_rate: float = Field(0.5, ge=0.0, le=1.0)


@dg.asset(partitions_def=invoice_partitions, group_name="invoices", kinds={"python", "ai"},
          op_tags=placement_tags(INVOICE_TASK), pool=placement_pool(INVOICE_TASK))
def invoice_extractions(
    context: dg.AssetExecutionContext,
    config: ExtractionConfig,
    raw_invoices: list[Document],
    routing: RoutingResource,
    models: ModelGatewayResource,
    ledger: LedgerResource,
    budget: BudgetResource,
    audit: AuditLogResource,
    tracing: TracingResource,
) -> dg.Output[pd.DataFrame]:
    """Each invoice routed to a model and extracted into vendor, number, date, currency, total, lines."""
    where = CallContext.from_asset(context)
    step = run_ai_step(context, INVOICE_EXTRACTION, raw_invoices, where,
                       AIStepResources(routing, models, ledger, budget, audit, tracing), workflow="invoices",
                       max_failure_rate=config.max_failure_rate)
    outcomes, history, guard, scope, store = step.outcomes, step.history, step.guard, step.scope, step.store
    frame, redacted = redact_for_persistence(extraction_frame(outcomes, context.run_id), REDACTED_COLUMNS,
                                             sources={o.document.id: o.document.text for o in outcomes})
    host = HostCapabilities.detect()
    placement = task_placement(INVOICE_TASK)
    estimate = estimate_run([o.decision for o in outcomes], [INVOICE_EXTRACTION.request_texts(d.text) for d in raw_invoices],
                            INVOICE_EXTRACTION.name, models.gateway().catalog, history, INVOICE_EXTRACTION.expected_output_tokens)
    actual = sum(r.cost_usd for o in outcomes for r in o.attempts)
    metadata = {
        **batch_metadata(outcomes),
        "estimated_cost_usd": dg.MetadataValue.float(round(estimate.p50_usd, 8)),
        "estimated_cost_p95_usd": dg.MetadataValue.float(round(estimate.p95_usd, 8)),
        "estimate_error_pct": dg.MetadataValue.float(round(100 * (estimate.p50_usd - actual) / actual, 1) if actual else 0.0),
        "redacted_values": dg.MetadataValue.int(redacted),
        # The audit chain's head after this step: `ai-orch audit verify --expect-head` checks the log still reaches it.
        "audit_head": dg.MetadataValue.text(str(audit.log().head())),
        "charged_to": dg.MetadataValue.json({"department": scope.department, "workflow": scope.workflow}),
        "budget_downgrades": dg.MetadataValue.int(guard.downgrades),
        **budget_metadata(budget.statuses(store, scope)),
        "placement": dg.MetadataValue.json(
            {"planned": placement.kind.value if placement else "unplaced", "reasons": placement.reasons if placement else [],
             "worker": {"cpu_cores": host.cpu_cores, "memory_gb": host.memory_gb, "gpu": host.gpu_probe}}
        ),
    }
    return dg.Output(frame, metadata=metadata)


def extraction_frame(outcomes: list[ItemOutcome], run_id: str) -> pd.DataFrame:
    rows = []
    for outcome in outcomes:
        output: Optional[InvoiceExtraction] = outcome.output  # type: ignore[assignment]
        result = outcome.result
        rows.append(
            {
                "id": outcome.document.id,
                "classification": outcome.document.classification.value,
                **{field: getattr(output, field) if output else None for field in FIELDS},
                "line_items_total": output.line_items_total() if output else None,
                "line_items": json.dumps([item.model_dump() for item in output.line_items]) if output else None,
                "model": result.model_id if result else outcome.decision.model_id,
                "attempts": len(outcome.attempts),
                "item_check": outcome.check_failure,
                "route_reason": outcome.decision.reason,
                "complexity": outcome.decision.complexity,
                "required_tier": outcome.decision.required_tier,
                "estimated_cost_usd": outcome.decision.estimated_cost_usd,
                "cost_usd": sum(r.cost_usd for r in outcome.attempts),
                "input_tokens": sum(r.input_tokens for r in outcome.attempts),
                "output_tokens": sum(r.output_tokens for r in outcome.attempts),
                "latency_s": sum(r.latency_s for r in outcome.attempts),
                "error": outcome.error,
                "run_id": run_id,
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("total", "tax", "line_items_total"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


@dg.asset(partitions_def=invoice_partitions, group_name="invoices", kinds={"duckdb"})
def approved_invoices(
    context: dg.AssetExecutionContext,
    invoice_extractions: pd.DataFrame,
    warehouse: DuckDBWarehouseResource,
    quality: InvoiceQualityPolicy,
) -> dg.MaterializeResult:
    """Extractions that pass every quality rule, as the DuckDB table ``approved_invoices``, one partition a day."""
    passing = passing_rows(invoice_extractions, quality.total_tolerance)
    approved = invoice_extractions.loc[passing, ["id", *FIELDS, "line_items", "model", "cost_usd"]].reset_index(drop=True)
    stored = warehouse.replace_partition("approved_invoices", "partition_date", context.partition_key, approved)
    return dg.MaterializeResult(
        metadata={
            "approved": stored,
            "rejected": int((~passing).sum()),
            "table": f"{warehouse.resolved_path()}::approved_invoices",
            "total_by_currency": dg.MetadataValue.json(
                {k: round(float(v), 2) for k, v in approved.groupby("currency", dropna=True)["total"].sum().items()}
            ),
        }
    )
