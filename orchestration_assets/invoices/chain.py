"""Long invoices as a multi-step chain: raw_invoices → long_invoice_extractions (chunk → extract → reconcile).

Why a graph-backed asset: an invoice longer than a model's context window cannot be one
call. The asset is three ops, each its own Dagster step with its own trace span, so a run's
trace (``ai-orch trace RUN_ID``) shows the whole chain and where it failed:

* ``chunk_invoices`` sizes chunks for the models that may serve a part (the smallest
  context window among them, minus instructions, schema and output; ``max_chunk_tokens``
  caps it) and splits each document with ``resources.chunking``; a document that cannot be
  split within the limits gets an error naming the limit, and the batch goes on;
* ``extract_invoice_chunks`` runs ``run_ai_task`` over every chunk with the resources the
  single-call asset uses (routing, models, ledger, budget, audit, tracing): every part is
  routed, priced, recorded and traced as an item of its own (``INV-7#2/3``);
* ``reconcile_invoice_chunks`` merges each document's parts (``invoices.reconcile``),
  applies the invoice item check to the merged answer, and turns a failed part into the
  document's error, naming the chunk, the model, the step and the input's hash.

The output has the columns of ``invoice_extractions`` (plus ``chunks``), so the same quality
rules and downstream code apply. Chunk texts are raw input: the ops' outputs carry the
``ai_orch/raw_input`` marker, so for classifications the data policy forbids persisting
(confidential, restricted) ``SensitiveIOManager`` keeps them in the run's memory only.
"""

import json
from dataclasses import dataclass
from typing import Optional

import dagster as dg
import pandas as pd
from opentelemetry.trace import Status, StatusCode

from orchestration_assets.ai_task import AITask, CallContext, ItemOutcome, batch_metadata
from orchestration_assets.invoices.assets import FIELDS, REDACTED_COLUMNS, invoice_partitions
from orchestration_assets.invoices.quality import InvoiceQualityPolicy
from orchestration_assets.invoices.reconcile import PartAnswer, merge_parts
from orchestration_assets.invoices.schema import INVOICE_PART_INSTRUCTIONS, INVOICE_PART_TASK, InvoiceExtraction
from orchestration_assets.ai_step import AIStepResources, run_ai_step
from orchestration_assets.placement_plan import placement_pool, placement_tags
from orchestration_assets.spend_metadata import budget_metadata
from resources.audit_log import AuditLogResource, item_hash
from resources.budget import BudgetResource
from resources.chunking import Chunk, ChunkingError, TokenBudget, split_text, token_budget
from resources.classification import DataClassification
from resources.complexity import context_tokens, estimate_tokens
from resources.data_policy import active_policy
from resources.documents import Document
from resources.ledger import LedgerResource
from resources.model_gateway import ModelGatewayResource
from resources.routing import RoutingResource, candidate_pool
from resources.sensitive_io import RAW_INPUT, redact_for_persistence
from resources.tracing import SUMMARY, TracingResource

CHAIN_ASSET = "long_invoice_extractions"
CHAIN_GROUP = "invoice_chains"

# A part's answer lists its line items: 2,000 output tokens hold about 60 of them as JSON.
INVOICE_PART_EXTRACTION = AITask(
    name=INVOICE_PART_TASK, instructions=INVOICE_PART_INSTRUCTIONS, output_schema=InvoiceExtraction,
    max_output_tokens=2000, expected_output_tokens=600, attributes=(("domain", "invoices"),),
)


class ChunkingConfig(dg.Config):
    """How documents are split. ``max_chunk_tokens`` caps a chunk below what the context windows allow:
    a chunk's line items must also fit the answer (``max_output_tokens``), and shorter parts are read
    more reliably. ``header_lines``: how many first lines every chunk repeats. ``max_chunks``: a
    document needing more parts fails with a message naming the limit instead of fanning out."""

    max_chunk_tokens: int = 1000
    header_lines: int = 8
    max_chunks: int = 40


@dataclass(frozen=True)
class ChunkedDocument:
    """A document as parts, or why it could not be split. Holds raw text: memory-only where policy says."""

    document_id: str
    classification: DataClassification
    input_hash: str
    chunks: tuple[Chunk, ...] = ()
    budget: Optional[TokenBudget] = None
    error: Optional[str] = None

    def documents(self) -> list[Document]:
        return [Document(id=c.id, text=c.text, classification=self.classification) for c in self.chunks]


@dataclass(frozen=True)
class ExtractedDocument:
    """A document's parts with the outcome of each part's call, in chunk order."""

    chunked: ChunkedDocument
    outcomes: tuple[ItemOutcome, ...]
    step_key: str  # the step that made the calls, named in errors

    @property
    def classification(self) -> DataClassification:  # read by SensitiveIOManager
        return self.chunked.classification


def part_reserved_tokens(task: AITask = INVOICE_PART_EXTRACTION) -> int:
    """What every part's call spends besides the part: instructions, the output schema as sent, the answer."""
    schema = json.dumps(task.output_schema.model_json_schema())
    return estimate_tokens(task.instructions) + estimate_tokens(schema) + task.max_output_tokens


def chunk_document(document: Document, budget: TokenBudget, config: ChunkingConfig) -> ChunkedDocument:
    """One document split for ``budget``, or an error naming the limit it exceeds."""
    base = dict(document_id=document.id, classification=document.classification, input_hash=item_hash(document.text),
                budget=budget)
    try:
        chunks = split_text(document.id, document.text, budget.tokens, header_lines=config.header_lines,
                            max_chunks=config.max_chunks, count_tokens=context_tokens)  # a part over the window fails
    except ChunkingError as exc:
        return ChunkedDocument(**base, error=f"{exc}; {budget.describe()}")
    return ChunkedDocument(**base, chunks=tuple(chunks))


def _where(context: dg.OpExecutionContext) -> CallContext:
    return CallContext(
        run_id=context.run_id, step_key=context.get_step_execution_context().step.key, asset_key=CHAIN_ASSET,
        partition_key=context.partition_key if context.has_partition_key else None, resumes_run=context.run.root_run_id,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fail(span, kind: str, message: str) -> None:
    """Mark a span failed the way the recorder marks calls: a type and a message with no document content."""
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message[:500]))


def _storable(message: str, classification: DataClassification) -> str:
    """A provider's error can quote the document: for data the policy keeps off disk, its PII is tokenised."""
    if active_policy().may_persist_raw(classification):
        return message
    from resources.pii import pseudonymize

    return pseudonymize(message)[0]


@dg.op(out=dg.Out(metadata={RAW_INPUT: True}))
def chunk_invoices(context: dg.OpExecutionContext, config: ChunkingConfig, raw_invoices: list[Document],
                   models: ModelGatewayResource, tracing: TracingResource) -> list[ChunkedDocument]:
    """Split each document into parts that fit every model that may serve a part of its classification."""
    gateway = models.gateway()
    availability = {spec.id: gateway.availability(spec) for spec in gateway.catalog}
    reserved = part_reserved_tokens()
    budgets: dict[DataClassification, "TokenBudget | str"] = {}
    for classification in sorted({d.classification for d in raw_invoices}, key=lambda c: c.rank):
        pool = candidate_pool(INVOICE_PART_TASK, classification, gateway.catalog, availability)
        try:
            budgets[classification] = token_budget({s.id: s.context_window for s in pool.usable}, reserved,
                                                   cap=config.max_chunk_tokens)
        except ChunkingError as exc:
            budgets[classification] = f"{exc}" + (f" ({'; '.join(pool.reasons)})" if pool.reasons else "")
    where = _where(context)
    tracer = tracing.recorder()
    chunked: list[ChunkedDocument] = []
    with tracer.run_span(where.run_id, where.step_key, where.asset_key, where.partition_key) as step:
        for document in raw_invoices:
            digest = item_hash(document.text)
            with tracer.item_span(document.id, digest, document.classification.value) as span:
                budget = budgets[document.classification]
                if isinstance(budget, str):
                    result = ChunkedDocument(document.id, document.classification, digest, error=budget)
                else:
                    result = chunk_document(document, budget, config)
                    span.set_attribute("ai_orch.chunk.budget_tokens", budget.tokens)
                span.set_attribute("ai_orch.chunks", len(result.chunks))
                if result.error:
                    _fail(span, "ChunkingError", result.error)
                else:
                    span.set_attribute(SUMMARY, f"{_count(len(result.chunks), 'chunk')}, {budget.describe()}")
            chunked.append(result)
        total = sum(len(c.chunks) for c in chunked)
        step.set_attribute(SUMMARY, f"{len(chunked)} documents → {total} chunks")
    tracer.force_flush()
    context.add_output_metadata({
        "documents": len(chunked),
        "chunks": total,
        "split_documents": sum(len(c.chunks) > 1 for c in chunked),
        "unsplittable_documents": sum(c.error is not None for c in chunked),
        "chunk_budgets": dg.MetadataValue.json(
            {c.value: (b if isinstance(b, str) else b.describe()) for c, b in budgets.items()}),
    })
    return chunked


@dg.op(out=dg.Out(metadata={RAW_INPUT: True}), tags=placement_tags(INVOICE_PART_TASK), pool=placement_pool(INVOICE_PART_TASK))
def extract_invoice_chunks(
    context: dg.OpExecutionContext,
    chunked: list[ChunkedDocument],
    routing: RoutingResource,
    models: ModelGatewayResource,
    ledger: LedgerResource,
    budget: BudgetResource,
    audit: AuditLogResource,
    tracing: TracingResource,
) -> list[ExtractedDocument]:
    """Every chunk of every document routed, called, priced, recorded and traced as one batch."""
    where = _where(context)
    documents = [part for document in chunked for part in document.documents()]
    step = run_ai_step(context, INVOICE_PART_EXTRACTION, documents, where,
                       AIStepResources(routing, models, ledger, budget, audit, tracing), workflow="invoices",
                       summary=lambda done: f"{len(done)} chunks extracted, {sum(o.error is not None for o in done)} failed")
    outcomes, guard = step.outcomes, step.guard
    by_id = {o.document.id: o for o in outcomes}
    context.add_output_metadata({**batch_metadata(outcomes), "budget_downgrades": guard.downgrades})
    return [ExtractedDocument(d, tuple(by_id[c.id] for c in d.chunks), where.step_key) for d in chunked]


def chunk_failures(document: ExtractedDocument) -> list[str]:
    """One sentence per failed part: chunk id, model, step, input hash and the (storable) error."""
    sentences = []
    for chunk, outcome in zip(document.chunked.chunks, document.outcomes):
        if outcome.error is None:
            continue
        model = outcome.result.model_id if outcome.result else (outcome.decision.model_id or "no model")
        error = _storable(outcome.error, document.classification).replace("\n", " ")[:300]
        sentences.append(f"chunk {chunk.id} failed on model {model} in step {document.step_key} "
                         f"(input sha256 {item_hash(chunk.text)[:12]}): {error}")
    return sentences


def reconcile_row(document: ExtractedDocument, run_id: str, total_tolerance: float) -> tuple[dict, Optional[str]]:
    """The document's row (``extraction_frame``'s columns plus ``chunks``) and a content-free summary of the merge."""
    chunked, outcomes = document.chunked, document.outcomes
    attempts = [r for o in outcomes for r in o.attempts]
    models = list(dict.fromkeys(r.model_id for r in attempts)) or [o.decision.model_id for o in outcomes
                                                                   if o.decision.model_id]
    row: dict = {
        "id": chunked.document_id,
        "classification": chunked.classification.value,
        **{field: None for field in FIELDS},
        "line_items_total": None,
        "line_items": None,
        "model": "+".join(models) if models else None,
        "attempts": len(attempts),
        "item_check": None,
        "route_reason": (f"{_count(len(outcomes), 'chunk')}, {chunked.budget.describe()}; "
                         f"first: {outcomes[0].decision.reason}"
                         if outcomes and chunked.budget else None),
        "complexity": max((o.decision.complexity for o in outcomes), default=None),
        "required_tier": max((o.decision.required_tier for o in outcomes), default=None),
        "estimated_cost_usd": sum((o.decision.estimated_cost_usd or 0.0 for o in outcomes), 0.0),
        "cost_usd": sum((r.cost_usd for r in attempts), 0.0),
        "input_tokens": sum(r.input_tokens for r in attempts),
        "output_tokens": sum(r.output_tokens for r in attempts),
        "latency_s": sum((r.latency_s for r in attempts), 0.0),
        "error": None,
        "run_id": run_id,
        "chunks": len(chunked.chunks),
    }
    if chunked.error:
        row["error"] = f"not chunked: {chunked.error}"
        return row, None
    failures = chunk_failures(document)
    if failures:
        row["error"] = "; ".join(failures)
        return row, None
    merged = merge_parts([PartAnswer(c, o.output) for c, o in zip(chunked.chunks, outcomes)])  # type: ignore[arg-type]
    extraction = merged.extraction
    row.update({field: getattr(extraction, field) for field in FIELDS})
    row["line_items_total"] = extraction.line_items_total()
    row["line_items"] = json.dumps([item.model_dump() for item in extraction.line_items])
    row["item_check"] = merged.check(total_tolerance)
    rules = merged.failed_rules(total_tolerance)
    return row, merged.describe() + ("; check passed" if rules is None else f"; check FAILED: {rules}")


@dg.op
def reconcile_invoice_chunks(
    context: dg.OpExecutionContext,
    extracted: list[ExtractedDocument],
    quality: InvoiceQualityPolicy,
    ledger: LedgerResource,
    budget: BudgetResource,
    audit: AuditLogResource,
    tracing: TracingResource,
) -> dg.Output[pd.DataFrame]:
    """Each document's parts merged into one extraction, checked, with a per-document error for failed parts."""
    where = _where(context)
    tracer = tracing.recorder()
    rows = []
    with tracer.run_span(where.run_id, where.step_key, where.asset_key, where.partition_key) as step:
        for document in extracted:
            chunked = document.chunked
            with tracer.item_span(chunked.document_id, chunked.input_hash, chunked.classification.value) as span:
                row, summary = reconcile_row(document, context.run_id, quality.total_tolerance)
                span.set_attribute("ai_orch.chunks", len(chunked.chunks))
                if row["error"]:
                    _fail(span, "ChunkFailed" if chunked.chunks else "ChunkingError", row["error"])
                else:
                    span.set_attribute("ai_orch.check.passed", row["item_check"] is None)
                    span.set_attribute(SUMMARY, summary or "")
            rows.append(row)
        failed = sum(r["error"] is not None for r in rows)
        step.set_attribute(SUMMARY, f"{len(rows)} documents reconciled, {failed} failed, "
                                    f"{sum(r['item_check'] is not None for r in rows)} failing the check")
    tracer.force_flush()
    frame, redacted = redact_for_persistence(
        chain_frame(rows), REDACTED_COLUMNS,
        sources={d.chunked.document_id: "\n".join(o.document.text for o in d.outcomes) for d in extracted})
    outcomes = [o for document in extracted for o in document.outcomes]
    store = ledger.store()
    scope = budget.scope_for(context.run.tags, "invoices")
    metadata = {
        "documents": dg.MetadataValue.int(len(rows)),
        "chunks": dg.MetadataValue.int(sum(r["chunks"] for r in rows)),
        "split_documents": dg.MetadataValue.int(sum(r["chunks"] > 1 for r in rows)),
        "failed_documents": dg.MetadataValue.int(failed),
        "documents_failing_check": dg.MetadataValue.int(sum(r["item_check"] is not None for r in rows)),
        **{k: v for k, v in batch_metadata(outcomes).items() if k != "failures"},
        "redacted_values": dg.MetadataValue.int(redacted),
        "audit_head": dg.MetadataValue.text(str(audit.log().head())),
        "charged_to": dg.MetadataValue.json({"department": scope.department, "workflow": scope.workflow}),
        **budget_metadata(budget.statuses(store, scope)),
        "trace": dg.MetadataValue.text(f"ai-orch trace {context.run_id}"),
    }
    if failed:
        metadata["failures"] = dg.MetadataValue.md(document_failure_table(frame))
    return dg.Output(frame, metadata=metadata)


def chain_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in ("total", "tax", "line_items_total"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def document_failure_table(frame: pd.DataFrame, limit: int = 50) -> str:
    """The failed documents as markdown for the UI: id, chunks, and the error (already storable)."""
    failed = frame[frame["error"].notna()]
    rows = ["| document | chunks | error |", "|---|---|---|"]
    for row in failed.head(limit).itertuples():
        error = str(row.error).replace("|", "\\|").replace("\n", " ")[:400]
        rows.append(f"| {row.id} | {row.chunks} | {error} |")
    if len(failed) > limit:
        rows.append(f"| … | | {len(failed) - limit} more |")
    return "\n".join(rows)


@dg.graph_asset(
    name=CHAIN_ASSET,
    partitions_def=invoice_partitions,
    group_name=CHAIN_GROUP,
    kinds={"python", "ai"},
)
def long_invoice_extractions(raw_invoices):
    """Long invoices extracted part by part: chunk → extract → reconcile, one trace for the whole chain."""
    return reconcile_invoice_chunks(extract_invoice_chunks(chunk_invoices(raw_invoices)))


invoice_chain_job = dg.define_asset_job(
    "invoice_chain", selection=dg.AssetSelection.assets(long_invoice_extractions).upstream(),
    partitions_def=invoice_partitions,
)
