"""An AI task run as a Dagster step: the resources wired together, the step's span opened, traces flushed.

Every template's AI asset or op does the same before its business logic: read the cost
history (the estimate's basis), find who pays, arm the budget guard, open the step span
and run the batch. Done here once, so a new template cannot forget the guard or the flush.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import dagster as dg
from opentelemetry.trace import Status, StatusCode

from orchestration_assets.ai_task import AITask, CallContext, ItemOutcome, raise_past_failure_rate, run_ai_task
from resources.audit_log import AuditLogResource
from resources.budget import BudgetResource
from resources.budgets import SpendScope
from resources.documents import Document
from resources.estimation import CostHistory
from resources.ledger import DuckDBLedger, LedgerResource
from resources.model_gateway import ModelGatewayResource
from resources.routing import RoutingResource
from resources.spend_guard import SpendGuard
from resources.tracing import SUMMARY, TracingResource


@dataclass
class AIStepResult:
    outcomes: list[ItemOutcome]
    history: CostHistory  # the ledger's history before the batch: what its estimate was based on
    guard: SpendGuard
    scope: SpendScope
    store: DuckDBLedger


@dataclass(frozen=True)
class AIStepResources:
    routing: RoutingResource
    models: ModelGatewayResource
    ledger: LedgerResource
    budget: BudgetResource
    audit: AuditLogResource
    tracing: TracingResource


def run_ai_step(context: "dg.AssetExecutionContext | dg.OpExecutionContext", task: AITask,
                documents: Sequence[Document], where: CallContext, resources: AIStepResources, *, workflow: str,
                summary: Optional[Callable[[list[ItemOutcome]], str]] = None,
                max_failure_rate: Optional[float] = None) -> AIStepResult:
    """Run ``task`` over ``documents`` in this step, charged to ``workflow`` (or the run's workflow tag).

    With ``max_failure_rate``, more failed items than that fail the step (``raise_past_failure_rate``)
    inside its span, so the trace marks the step failed too, with the reason.
    """
    store = resources.ledger.store()
    history = CostHistory.from_calls(store.calls())
    scope = resources.budget.scope_for(context.run.tags, workflow)
    guard = resources.budget.guard(store, scope, history, task.expected_output_tokens)
    tracer = resources.tracing.recorder()
    try:
        with tracer.run_span(where.run_id, where.step_key, where.asset_key, where.partition_key) as step:
            outcomes = run_ai_task(
                task, documents, policy=resources.routing.build_policy(task.name), gateway=resources.models.gateway(),
                ledger=store, where=where, log=context.log.info, guard=guard, audit=resources.audit.log(), tracer=tracer,
            )
            if summary is not None:
                step.set_attribute(SUMMARY, summary(outcomes))
            if max_failure_rate is not None:
                try:
                    raise_past_failure_rate(outcomes, max_failure_rate)
                except dg.Failure as failure:
                    step.set_status(Status(StatusCode.ERROR, (failure.description or "Failure")[:300]))
                    raise
    finally:
        tracer.force_flush()  # `ai-orch trace RUN_ID` can read the spans as soon as the step ends, failed or not
    return AIStepResult(outcomes, history, guard, scope, store)
