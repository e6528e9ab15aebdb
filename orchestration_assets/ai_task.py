"""Run an AI task over a batch of documents: route, call, record, per item.

This is the one loop every template's AI asset uses, so routing, pricing and ledger
records come from here and the asset body holds only business logic. Data flows one way:
document → classify → route → call → validate → record. Every call is written to the
ledger as soon as it returns, so a step that dies mid-batch loses no spend.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import dagster as dg
from pydantic import BaseModel

from resources.catalog import ModelCatalog
from resources.complexity import estimate_tokens
from resources.documents import Document
from resources.ledger import CallRecord, LedgerStore
from resources.model_call import CallResult, StructuredRequest
from resources.model_gateway import ModelGateway
from resources.routing import RoutingDecision, RoutingItem, RulesPolicy


@dataclass(frozen=True)
class AITask:
    """What a template asks of a model: a name, instructions and the schema of the answer."""

    name: str
    instructions: str
    output_schema: type[BaseModel]
    max_output_tokens: int = 600
    expected_output_tokens: int = 250


@dataclass(frozen=True)
class CallContext:
    """Where a call happens in Dagster, recorded with it in the ledger."""

    run_id: Optional[str] = None
    step_key: Optional[str] = None
    asset_key: Optional[str] = None
    partition_key: Optional[str] = None

    @classmethod
    def from_asset(cls, context: dg.AssetExecutionContext) -> "CallContext":
        return cls(
            run_id=context.run_id,
            step_key=context.op_execution_context.get_step_execution_context().step.key,
            asset_key=context.asset_key.to_user_string(),
            partition_key=context.partition_key if context.has_partition_key else None,
        )


@dataclass
class ItemOutcome:
    document: Document
    decision: RoutingDecision
    result: Optional[CallResult]

    @property
    def error(self) -> Optional[str]:
        if self.result is None:
            return "not routed: " + self.decision.reason
        return self.result.error

    @property
    def output(self) -> Optional[BaseModel]:
        return self.result.output if self.result is not None and self.result.ok else None


def run_ai_task(
    task: AITask,
    documents: Sequence[Document],
    *,
    policy: RulesPolicy,
    gateway: ModelGateway,
    ledger: LedgerStore,
    where: CallContext,
    log: Optional[Callable[[str], None]] = None,
) -> list[ItemOutcome]:
    catalog: ModelCatalog = gateway.catalog
    instruction_tokens = estimate_tokens(task.instructions)
    outcomes: list[ItemOutcome] = []
    progress = _Progress(len(documents), log)
    for document in documents:
        availability = {spec.id: gateway.availability(spec) for spec in catalog}
        item = RoutingItem(
            item_id=document.id, task=task.name, text=document.text, classification=document.classification,
            instructions_tokens=instruction_tokens, expected_output_tokens=task.expected_output_tokens,
        )
        decision = policy.decide(item, catalog, availability)
        result = None
        if decision.model_id is not None:
            request = StructuredRequest(
                task=task.name, system=task.instructions, document=document.text,
                output_schema=task.output_schema, max_output_tokens=task.max_output_tokens,
            )
            result = gateway.call(decision.model_id, request)
            ledger.append([_record(where, task, document, decision, result, catalog)])
        outcome = ItemOutcome(document, decision, result)
        outcomes.append(outcome)
        progress.advance(outcome)
    return outcomes


def _record(where: CallContext, task: AITask, document: Document, decision: RoutingDecision, result: CallResult, catalog: ModelCatalog) -> CallRecord:
    spec = catalog.get(result.model_id)
    return CallRecord(
        run_id=where.run_id, step_key=where.step_key, asset_key=where.asset_key, partition_key=where.partition_key,
        item_id=document.id, task=task.name, model_id=spec.id, provider=spec.provider, residency=spec.residency.value,
        classification=document.classification.value, input_tokens=result.input_tokens, output_tokens=result.output_tokens,
        cost_usd=result.cost_usd, estimated_cost_usd=decision.estimated_cost_usd, latency_s=result.latency_s,
        route_reason=decision.reason, outcome="ok" if result.ok else "error", error=result.error,
    )


class _Progress:
    """Logs 'items done, cost so far' about every tenth of the batch and at least every 10 s."""

    def __init__(self, total: int, log: Optional[Callable[[str], None]]):
        self.total, self.log = total, log
        self.done = self.errors = 0
        self.cost = 0.0
        self.every = max(1, total // 10)
        self.last = time.monotonic()

    def advance(self, outcome: ItemOutcome) -> None:
        self.done += 1
        self.errors += outcome.error is not None
        self.cost += outcome.result.cost_usd if outcome.result else 0.0
        now = time.monotonic()
        if self.log and (self.done % self.every == 0 or self.done == self.total or now - self.last > 10):
            self.last = now
            self.log(f"{self.done}/{self.total} items done, ${self.cost:.6f} so far, {self.errors} failed")


def batch_metadata(outcomes: Sequence[ItemOutcome]) -> dict[str, dg.MetadataValue]:
    """What a user reads on the materialization: calls, models, tokens, cost, routes, failures."""
    results = [o.result for o in outcomes if o.result is not None]
    models = Counter(r.model_id for r in results)
    routes = Counter(o.decision.model_id or "unrouted" for o in outcomes)
    failures = [o for o in outcomes if o.error is not None]
    estimated = sum(o.decision.estimated_cost_usd or 0.0 for o in outcomes if o.result is not None)
    metadata: dict[str, dg.MetadataValue] = {
        "items": dg.MetadataValue.int(len(outcomes)),
        "calls": dg.MetadataValue.int(len(results)),
        "failed_items": dg.MetadataValue.int(len(failures)),
        "models": dg.MetadataValue.json(dict(models)),
        "route_share": dg.MetadataValue.json({k: round(v / max(1, len(outcomes)), 3) for k, v in routes.items()}),
        "input_tokens": dg.MetadataValue.int(sum(r.input_tokens for r in results)),
        "output_tokens": dg.MetadataValue.int(sum(r.output_tokens for r in results)),
        "cost_usd": dg.MetadataValue.float(round(sum(r.cost_usd for r in results), 8)),
        "estimated_cost_usd": dg.MetadataValue.float(round(estimated, 8)),
    }
    if failures:
        metadata["failures"] = dg.MetadataValue.md(failure_table(failures))
    return metadata


def failure_table(failures: Sequence[ItemOutcome], limit: int = 50) -> str:
    rows = ["| item | model | error |", "|---|---|---|"]
    for outcome in failures[:limit]:
        error = (outcome.error or "").replace("|", "\\|").replace("\n", " ")[:200]
        rows.append(f"| {outcome.document.id} | {outcome.decision.model_id or '—'} | {error} |")
    if len(failures) > limit:
        rows.append(f"| … | | {len(failures) - limit} more |")
    return "\n".join(rows)


def outcome_json(outcome: ItemOutcome) -> str:
    return json.dumps(outcome.output.model_dump() if outcome.output else None)
