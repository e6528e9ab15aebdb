"""Run an AI task over a batch of documents: route, call, record, per item.

This is the one loop every template's AI asset uses, so routing, pricing and ledger
records come from here and the asset body holds only business logic. Data flows one way:
document → classify → route → call → validate → record. Every call is written to the
ledger as soon as it returns, so a step that dies mid-batch loses no spend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import gc
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import dagster as dg
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel

from resources.catalog import ModelCatalog, ModelSpec
from resources.complexity import ComplexityEstimate, context_tokens, estimate_complexity, estimate_tokens
from resources.documents import Document
from resources.duckdb_file import checkpoints_deferred
from resources.ledger import CallRecord, LedgerStore
from resources.ledger_writer import LedgerWriter
from resources.model_call import CallResult, StructuredRequest
from resources.model_gateway import TURNS_TO_SEND, ModelGateway
from resources.audit_log import AuditEntry, AuditStore, item_hash
from resources.budgets import BudgetRefusal
from resources.data_policy import active_policy
from resources.reliability import error_type, is_transport_failure
from resources.routing import (
    CascadePolicy, LearnedRoutingPolicy, RoutingDecision, RoutingItem, RulesPolicy, candidate_pool, estimated_cost,
    feature_inputs,
)
from resources.providers.transport_process import TransportProcess
from resources.routing_features import FeatureSpace, encode_sketch
from resources.spend_guard import SpendGuard
from resources.tracing import TraceRecorder

RoutingPolicy = Union[RulesPolicy, LearnedRoutingPolicy, CascadePolicy]


@dataclass(frozen=True)
class AITask:
    """What a template asks of a model: a name, instructions and the schema of the answer."""

    name: str
    instructions: str
    output_schema: type[BaseModel]
    max_output_tokens: int = 600
    expected_output_tokens: int = 250
    # The item check: None when an answer is acceptable, else why not. It labels outcomes
    # for learned routing and decides a cascade's escalation.
    check: Optional[Callable[[BaseModel], Optional[str]]] = None
    attributes: tuple[tuple[str, str], ...] = ()  # declared routing signals, e.g. (("domain", "finance"),)

    def request_texts(self, document_text: str) -> tuple[str, str]:
        """What a call sends for a document: the instructions and the document. The ledger's
        ``input_chars``, budget reservations and pre-run estimates all count these, so each
        model's characters-per-token, calibrated on one, prices the others."""
        return self.instructions, document_text


@dataclass(frozen=True)
class CallContext:
    """Where a call happens in Dagster, recorded with it in the ledger."""

    run_id: Optional[str] = None
    step_key: Optional[str] = None
    asset_key: Optional[str] = None
    partition_key: Optional[str] = None
    # The run a Dagster re-execution descends from (its root): calls that completed there are
    # answered from the ledger instead of being made, and charged, again.
    resumes_run: Optional[str] = None

    @classmethod
    def from_asset(cls, context: dg.AssetExecutionContext) -> "CallContext":
        return cls(
            run_id=context.run_id,
            step_key=context.op_execution_context.get_step_execution_context().step.key,
            asset_key=context.asset_key.to_user_string(),
            partition_key=context.partition_key if context.has_partition_key else None,
            resumes_run=context.run.root_run_id,
        )

    def idempotency_key(self, item_id: str, attempt: int, model_id: str) -> str:
        """One call's key: the same across retries of the step and re-executions of the run."""
        return f"{self.resumes_run or self.run_id}:{self.step_key}:{item_id}:{attempt}:{model_id}"


@dataclass
class ItemOutcome:
    document: Document
    decision: RoutingDecision
    result: Optional[CallResult]  # the answer kept: the first accepted one, else the last tried
    attempts: list[CallResult] = field(default_factory=list)
    check_failure: Optional[str] = None
    budget_refusal: Optional[str] = None  # why a hard cap stopped the item (or its escalation)
    redactions: dict[int, str] = field(default_factory=dict)  # attempt → what the model saw ('none', 'pseudonymised')
    crash: Optional[str] = None  # an exception raised while handling the item (a bug or a document nothing can read)

    @property
    def error(self) -> Optional[str]:
        if self.document.input_error is not None:
            return f"unreadable input: {self.document.input_error}"
        if self.crash is not None:
            return f"item failed: {self.crash}"
        if self.result is None:
            return self.budget_refusal or "not routed: " + self.decision.reason
        return self.result.error

    @property
    def output(self) -> Optional[BaseModel]:
        return self.result.output if self.result is not None and self.result.ok else None


BATCH_STORE_INTERVAL_S = 5.0
"""How long a batch's ledger rows and audit entries may wait in its journal before they are stored.

Each store turns a few hundred rows into DuckDB values under the interpreter lock, and a
reply that arrives meanwhile waits for it, with every call in flight behind it: stored every
second, a 500-call batch against a 100 ms endpoint had one wave of its 32 calls take
0.21-0.23 s instead of 0.10 (``benchmarks/throughput.py``). A batch stores once its last
calls are in flight (the loop is idle then), at its end, and every this many seconds in a
long batch. Nothing waits on the store: each call is in the journal when it returns, and
its budget reservation, closed when its row is stored, counts its p95 estimate until then.
"""


def run_ai_task(
    task: AITask,
    documents: Sequence[Document],
    *,
    policy: RoutingPolicy,
    gateway: ModelGateway,
    ledger: LedgerStore,
    where: CallContext,
    log: Optional[Callable[[str], None]] = None,
    guard: Optional[SpendGuard] = None,
    audit: Optional[AuditStore] = None,
    tracer: Optional[TraceRecorder] = None,
    max_concurrency: Optional[int] = None,
) -> list[ItemOutcome]:
    """Route, call and record every document, ``max_concurrency`` items at once (default: the gateway's);
    outcomes come back in the documents' order.

    Hosted and local-server calls run concurrently on one event loop (``aiohttp``), each
    endpoint bounded by its own limits; with a ``guard`` every call is reserved against budgets
    first. Ledger rows and audit entries are journaled as each call returns and stored in
    batches (``ledger_writer``): nothing a call returned is lost if the process dies. An item
    that raises is that item's error, never the batch's.
    """
    guard = guard or SpendGuard(ledger, enforce=False)
    concurrency = max_concurrency or gateway.max_concurrency
    if concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {concurrency}")
    documents = _with_distinct_ids(documents)
    batch = _Batch(task, gateway, policy, guard, where, tracer, _Progress(len(documents), log))
    if where.resumes_run:
        batch.completed = ledger.completed_outputs(f"{where.resumes_run}:{where.step_key}:")
        if batch.completed and log:
            log(f"re-execution of run {where.resumes_run}: {len(batch.completed)} completed calls reused, not repeated")
    with _checkpoints_deferred_for(guard, ledger, audit, tracer):
        with LedgerWriter(ledger, audit, flush_interval_s=BATCH_STORE_INTERVAL_S) as writer, _startup_heap_frozen():
            batch.writer = writer
            outcomes = _run_coroutine(batch.run(documents, concurrency))
            # The items' spans go to the trace store while the writer stores the last calls (another
            # file, its own thread): the batch ends after the longer of the two, not after both.
            exporting = _flush_in_background(tracer)
        if exporting is not None:
            exporting.join()
    return outcomes


def _with_distinct_ids(documents: Sequence[Document]) -> Sequence[Document]:
    """The documents, each one whose id an earlier one has failing with an error that says so.

    An item's id keys its idempotency key, so a second document with the same id was answered
    from the first one's call (its own text never sent) and recorded as the same item. Read
    from a file, a repeated id is refused the same way (``read_documents_jsonl``).
    """
    seen: set[str] = set()
    distinct = list(documents)
    for index, document in enumerate(distinct):
        if document.id in seen and document.input_error is None:
            distinct[index] = document.model_copy(update={"input_error": (
                f"duplicate id {document.id!r}: an earlier document of this batch has it, and an id names one item "
                "(its calls, ledger rows and traces)")})
        seen.add(document.id)
    return distinct


def _checkpoints_deferred_for(guard: SpendGuard, ledger: LedgerStore, audit: Optional[AuditStore],
                              tracer: Optional[TraceRecorder]) -> contextlib.AbstractContextManager:
    """The batch's stores leave their files' checkpoints to one background pass after it, where nothing
    reads the ledger per call.

    Why: a store's checkpoint (at its DETACH, ``duckdb_file``) can cost more than its rows:
    34 ms of CPU for 468 ledger rows whose insert took 24, 26 of the 36 ms that storing 32
    rows took. A batch stores its calls while its last ones are in flight and again at its
    end, and those stores are what the batch's end waits for. The second store then replays
    the first one's log when it opens the file (about 20 ms for those 468 rows), so what this
    saves at the end is the difference, and the fold runs after the batch has returned.
    With budgets enforced, every call's reservation opens the ledger and would replay a log
    left in place (3-5 times slower than its checkpoint, ``duckdb_file``): then every store
    still checkpoints. A log past ``DEFERRED_WAL_LIMIT_BYTES`` is checkpointed regardless.
    """
    if guard.enforce:
        return contextlib.nullcontext()
    return checkpoints_deferred(getattr(ledger, "path", None), getattr(audit, "path", None),
                                tracer.store_path if tracer is not None else None)


def _flush_in_background(tracer: Optional[TraceRecorder]) -> Optional[threading.Thread]:
    if tracer is None:
        return None
    thread = threading.Thread(target=tracer.force_flush, name="trace-flush", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _startup_heap_frozen():
    """Keep the objects that existed before the batch out of the cyclic collector's passes while it runs.

    A Dagster step process holds a large heap (Dagster, pandas, pydantic: about 200,000
    objects) and a batch allocates fast enough to set off full collections, each a 50-100 ms
    pause of the event loop that every call in flight waits out. ``gc.freeze`` parks the
    existing objects for the batch (the collector still frees the batch's own garbage);
    ``gc.unfreeze`` hands them back after it. Measured (benchmarks/throughput.py, 24 and 32 in
    flight): the longest loop stall 233 → 72 ms, share of the bound +0.03.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_coroutine(coroutine):
    """``asyncio.run`` here, or in a worker thread (same context: trace parents) when a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(context.run, asyncio.run, coroutine).result()


@dataclass
class _Batch:
    task: AITask
    gateway: ModelGateway
    policy: RoutingPolicy
    guard: SpendGuard
    where: CallContext
    tracer: Optional[TraceRecorder]
    progress: "_Progress"
    writer: Optional[LedgerWriter] = None
    completed: dict[str, str] = field(default_factory=dict)  # idempotency key → stored answer (re-executions)
    draining: bool = False  # no item is left to start
    _deferred: deque = field(default_factory=deque)  # (bookkeeping, the item it belongs to), in order
    _drain_scheduled: bool = False
    _in_flight: set = field(default_factory=set)  # the features of items whose calls are in flight
    _preparing: list = field(default_factory=list)  # the tasks computing in-flight items' features

    async def _prepare_in_flight(self, after_turns: int = 0) -> None:
        """The in-flight items' features, one per loop turn (a reply that arrives meanwhile waits one item's worth)."""
        for _ in range(after_turns):
            await asyncio.sleep(0)
        for features in list(self._in_flight):
            features.prepare()
            await asyncio.sleep(0)

    def later(self, bookkeeping: Callable[[], None], outcome: "ItemOutcome") -> None:
        """Do an item's bookkeeping (its ledger row and features, its audit entries) in the event loop's next turn.

        Why: between a worker's reply and its next request, everything the loop does delays that
        request, and so every call after it. A call's record is needed by nothing that follows
        in its worker, so it waits one turn: by then the worker has routed its next item and
        written that request (the path to the socket never suspends), and the loop does the
        record while the call is in flight. Order is kept (a queue); a bookkeeping step that
        raises fails its item, as it did inline; ``drain`` runs whatever is left before the
        batch returns, so nothing a call returned goes unrecorded.
        """
        self._deferred.append((bookkeeping, outcome))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self.drain)

    def drain(self) -> None:
        self._drain_scheduled = False
        while self._deferred:
            bookkeeping, outcome = self._deferred.popleft()
            try:
                bookkeeping()
            except Exception as exc:  # e.g. the journal's disk is full: the item fails, the batch goes on
                outcome.crash = outcome.crash or _storable_error(f"recording failed: {type(exc).__name__}: {exc}",
                                                                 outcome.document)

    def completed_call(self, key: str, model_id: str) -> Optional[CallResult]:
        """The answer a run this one re-executes already paid for, or None."""
        stored = self.completed.get(key)
        if stored is None:
            return None
        return CallResult(model_id=model_id, output=self.task.output_schema.model_validate_json(stored), replayed=True,
                          transport_attempts=0, finish_reason="stop")

    async def run(self, documents: Sequence[Document], concurrency: int) -> list[ItemOutcome]:
        self.instruction_tokens = estimate_tokens(self.task.instructions)
        self.space = FeatureSpace()
        outcomes: list[Optional[ItemOutcome]] = [None] * len(documents)
        queue = iter(enumerate(documents))

        async def worker(turn: int) -> None:
            # Worker k starts k loop turns after the first, so each new connection's connect and
            # request go out between two items' routing rather than after all of them: the first
            # wave's requests leave as they are routed, not together once the last one is.
            for _ in range(turn):
                await asyncio.sleep(0)
            for index, document in queue:  # one shared iterator: each item is taken once
                outcomes[index] = await self.item(document)
                self.progress.advance(outcomes[index])
            if not self.draining:
                # The first worker out of items: the loop now mostly waits for the last calls, so
                # their features are computed, and what is pending stored (ledger, audit, spans), while
                # they are in flight; after the batch only their rows and spans are left to store.
                self.draining = True
                if self.writer is not None:
                    self.writer.flush_soon()
                if self.tracer is not None:
                    self.tracer.export_soon()
                self._preparing.append(asyncio.ensure_future(self._prepare_in_flight()))

        first_wave = min(concurrency, len(documents))
        # The first wave's calls leave before the transport child exists (``batch_transport``): their
        # features are computed here, once they are all in flight and nothing else waits.
        self._preparing.append(asyncio.ensure_future(self._prepare_in_flight(after_turns=first_wave + TURNS_TO_SEND)))
        try:
            async with self.gateway.batch_transport(len(documents), first_wave=first_wave):
                await asyncio.gather(*(worker(turn) for turn in range(first_wave)))
        finally:
            for preparing in self._preparing:
                if not preparing.done():
                    preparing.cancel()  # every call returned: their records compute what is left
                    with contextlib.suppress(asyncio.CancelledError):
                        await preparing
            self.drain()
            await self.gateway.aclose_async()
        return [o for o in outcomes if o is not None]

    async def item(self, document: Document) -> ItemOutcome:
        document = document.checked()
        if document.input_error is not None:  # nothing to send: the item's error says which line and why
            outcome = ItemOutcome(document, _no_route(document, self.policy, "unreadable input"), None)
            with _item_span(self.tracer, document) as span:  # in the trace too, marked failed
                _mark_item_span(span, outcome, document)
            return outcome
        availability = {spec.id: self.gateway.availability(spec) for spec in self.gateway.catalog}
        item = RoutingItem(
            item_id=document.id, task=self.task.name, text=document.text, classification=document.classification,
            instructions_tokens=self.instruction_tokens, expected_output_tokens=self.task.expected_output_tokens,
            attributes=dict(self.task.attributes),
        )
        with _item_span(self.tracer, document) as span:
            decision: Optional[RoutingDecision] = None
            try:
                complexity = estimate_complexity(item.text)  # once per item: routing, features and the record share it
                decision = self.policy.decide(item, self.gateway.catalog, availability, complexity)
                features = _Features(decision.features, item, complexity, self.space)
                self._in_flight.add(features)
                # Once this task has sent the item's request (the next loop turn), not before it.
                asyncio.get_running_loop().call_soon(features.offload, self.gateway.transport)
                try:
                    outcome = await _call_chain(self, document, decision, features, availability)
                finally:
                    self._in_flight.discard(features)
            except Exception as exc:  # a bug or a bad document fails its item, not the batch
                decision = decision or _no_route(document, self.policy, "failed before a route was chosen")
                outcome = ItemOutcome(document, decision, None,
                                      crash=_storable_error(f"{type(exc).__name__}: {exc}", document))
            _mark_item_span(span, outcome, document)
        if self.writer is not None:
            self.later(functools.partial(_append_audit, self.writer, outcome, self.where, self.gateway.catalog), outcome)
        return outcome


def encoded_features(space: FeatureSpace, text: str, attributes: dict, signals: dict) -> str:
    """An item's routing features as the ledger stores them, from ``routing.feature_inputs`` (here, or in the
    transport child)."""
    return encode_sketch(space.sketch(text, attributes, signals))


def _append_audit(writer: LedgerWriter, outcome: "ItemOutcome", where: CallContext, catalog: ModelCatalog) -> None:
    writer.append_audit(audit_entries(outcome, where, catalog))


@dataclass(eq=False)  # held in a set while its call is in flight: by identity
class _Features:
    """An item's routing features as the ledger stores them.

    The learned policy computed them to decide (``decision.features``). For the others (about
    0.4 ms of Python for an invoice, the largest part of an item's work in this process) the
    batch's forked transport child computes them while the item's call is in flight
    (``offload``); where there is none, or its answer is not back when the item's record is
    written, they are computed here, off the path from a reply to the next request
    (``_Batch.later``), or, for the batch's last calls, while they are in flight (``prepare``):
    the loop is idle then, and the batch's end would otherwise wait for them. The same
    function runs either way, so the ledger holds the same features.
    """

    sketch: Optional[dict[int, float]]
    item: RoutingItem
    complexity: ComplexityEstimate
    space: FeatureSpace
    _encoded: Optional[str] = None
    _offloaded: Optional[asyncio.Future] = None

    def offload(self, transport: Optional[TransportProcess]) -> None:
        """Have the batch's transport child compute them while the item's call is in flight (``TransportProcess.submit``)."""
        if self.sketch is None and self._encoded is None and transport is not None:
            # Plain values cross to the child: pickling the pydantic models cost as much again.
            self._offloaded = transport.submit(functools.partial(
                encoded_features, self.space, *feature_inputs(self.item, self.complexity)))

    @property
    def encoded(self) -> str:
        if self._encoded is None and self._offloaded is not None and self._offloaded.done():
            answer = self._offloaded.result()
            if answer[0] == "done" and answer[1]:
                self._encoded = answer[2]
        if self._encoded is None:  # not offloaded, not back yet, or the child failed: the same function, here
            self._encoded = (encode_sketch(self.sketch) if self.sketch is not None
                             else encoded_features(self.space, *feature_inputs(self.item, self.complexity)))
        return self._encoded

    def prepare(self) -> None:
        """Compute ``encoded`` now, unless the transport child is computing it; an error is left for the item's
        record to meet (and fail the item)."""
        if self._offloaded is not None and not self._offloaded.done():
            return
        try:
            self.encoded
        except Exception:  # noqa: BLE001 - raised again, and attributed, when the record reads it
            pass


def _mark_item_span(span, outcome: ItemOutcome, document: Document) -> None:
    """The item's route on its span, and a failed item (unreadable input, failed check, refused budget,
    crash) as an ERROR span with its error, so ``ai-orch trace`` marks and counts it."""
    if span is None:
        return
    attributes = {"ai_orch.route.policy": outcome.decision.policy, "ai_orch.route.model": outcome.decision.model_id or "none"}
    if outcome.budget_refusal:
        attributes["ai_orch.budget_refusal"] = True
    if outcome.error:
        attributes["ai_orch.item.failed"] = True
        attributes["error.type"] = ("crash" if outcome.crash else "input" if document.input_error else
                                    "budget" if outcome.budget_refusal else "item_failed")
    span.set_attributes(attributes)
    if outcome.error:
        span.set_status(Status(StatusCode.ERROR, (_storable_error(outcome.error, document) or "")[:300]))


def _no_route(document: Document, policy: RoutingPolicy, reason: str) -> RoutingDecision:
    return RoutingDecision(item_id=document.id, model_id=None, complexity=0.0, required_tier=0,
                           classification=document.classification, estimated_cost_usd=None, reasons=[reason],
                           policy=getattr(policy, "name", "unknown"))


async def _call_chain(batch: _Batch, document: Document, decision: RoutingDecision, features: _Features,
                      availability) -> ItemOutcome:
    """Call the chosen model; in a cascade, escalate along the chain while the item check fails.

    Every call is first reserved against the budgets covering it; a refused reservation
    either downgrades the call to a cheaper cleared model or ends the item, said in its error.
    """
    task, gateway, guard, where, tracer = batch.task, batch.gateway, batch.guard, batch.where, batch.tracer
    outcome = ItemOutcome(document, decision, None)
    if decision.model_id is None:
        return outcome
    request = StructuredRequest(
        task=task.name, system=task.instructions, document=document.text,
        output_schema=task.output_schema, max_output_tokens=task.max_output_tokens,
    )
    chain = [decision.model_id, *decision.escalation]
    planned = len(chain)
    reason = decision.reason
    characters = sum(map(len, task.request_texts(document.text)))
    pseudonymised: Optional[_Redaction] = None
    for attempt, model_id in enumerate(chain, start=1):
        if guard.enforce:  # a DuckDB transaction: off the event loop
            reservation, model_id, reason, refused = await asyncio.to_thread(
                _reserve, guard, gateway, task, document, availability, where, model_id, reason, characters)
        else:
            reservation, refused = None, None
        if refused is not None:
            outcome.budget_refusal = refused
            break
        redaction = None
        if active_policy().must_redact(gateway.catalog.get(model_id), document.classification):
            pseudonymised = pseudonymised or _Redaction.of(document.text)  # once per item, kept in memory
            redaction = pseudonymised
        with _call_span(tracer, gateway.catalog.get(model_id), reason, attempt) as span:
            try:
                key = where.idempotency_key(document.id, attempt, model_id)
                result = batch.completed_call(key, model_id)
                if result is None:
                    result = await gateway.acall(model_id, request if redaction is None else redaction.request(request),
                                                 idempotency_key=key)
                    if redaction is not None:
                        result = redaction.restore(result)
            except BaseException:
                if reservation is not None:
                    guard.ledger.release(reservation)
                raise
            problem = result.error if not result.ok else (task.check(result.output) if task.check else None)
            if span is not None:
                span.record(result, check_passed=problem is None, error_message=_storable_error(result.error, document))
        outcome.redactions[attempt] = "pseudonymised" if redaction is not None else "none"
        if result.replayed:  # this run already recorded (and paid for) the call: record nothing twice
            if reservation is not None:
                guard.ledger.release(reservation)
        else:
            settle = functools.partial(_settle, batch, document, decision, result, reservation, features, attempt=attempt,
                                       accepted=problem is None, reason=reason, redaction=redaction, key=key)
            if batch.writer is not None:
                batch.later(settle, outcome)
            else:
                settle()
        outcome.attempts.append(result)
        outcome.result, outcome.check_failure = result, problem
        if problem is None:
            break
        if attempt == len(chain) and len(chain) < planned + MAX_FALLBACKS and _endpoint_failed(result):
            # Tried: the chain, and any model a budget downgrade called in its place.
            tried = [*chain, *(r.model_id for r in outcome.attempts)]
            fallback = fallback_model(gateway, task, document, decision, availability, tried=tried)
            if fallback is not None:
                chain.append(fallback.id)
                reason = (f"fallback: {model_id} failed ({error_type(result.error or '')}: {problem[:120]}); "
                          f"next model the policy allows: {fallback.id}")
                continue
        if attempt < len(chain):
            reason = f"cascade step {attempt + 1}: escalated from {model_id} ({problem[:160]})"
    return outcome


MAX_FALLBACKS = 2  # other models tried per item after its endpoints failed


def _settle(batch: _Batch, document: Document, decision: RoutingDecision, result: CallResult, reservation,
            features: _Features, *, attempt: int, accepted: bool, reason: str, redaction: Optional["_Redaction"],
            key: str) -> None:
    """A completed call's ledger row, charged to the guard's budgets and closing its reservation."""
    record = _record(batch.where, batch.task, document, decision, result, batch.gateway.catalog,
                     attempt=attempt, accepted=accepted, reason=reason, features=features.encoded)
    record.redaction = redaction.describe() if redaction is not None else "none"
    record.idempotency_key = key
    # The answer kept beside its ledger row, for a re-execution to reuse; only where the
    # data policy lets raw-derived content persist (confidential and restricted: never).
    kept = ([(key, record.call_id, result.output.model_dump_json())]
            if result.ok and active_policy().may_persist_raw(document.classification) else [])
    batch.guard.settle(reservation, [record], writer=batch.writer, outputs=kept)


def _endpoint_failed(result: CallResult) -> bool:
    """The provider, not the answer, failed: retries exhausted on a transport fault, or the circuit or the
    rate limiter refused the call. Worth another model; a bad answer is the cascade's business instead."""
    return bool(result.error) and (is_transport_failure(result) or error_type(result.error) in ("circuit_open", "rate_limited"))


def fallback_model(gateway: ModelGateway, task: AITask, document: Document, decision: RoutingDecision,
                   availability, tried: Sequence[str]) -> Optional[ModelSpec]:
    """The next model the policy allows for the item once its model's endpoint failed: cleared for the data,
    available, not tried yet, on another endpoint, with room for the document; capable enough (tier) first,
    then cheapest."""
    catalog = gateway.catalog
    failed_endpoints = {ModelGateway.endpoint(catalog.get(m)) for m in tried}
    instructions = estimate_tokens(task.instructions)
    needed = context_tokens(document.text) + instructions + task.expected_output_tokens  # cautious, as routing's check
    pool = [s for s in candidate_pool(task.name, document.classification, catalog, availability).usable
            if s.id not in tried and ModelGateway.endpoint(s) not in failed_endpoints and s.context_window >= needed]
    if not pool:
        return None
    input_tokens = estimate_tokens(document.text) + instructions
    return min(pool, key=lambda s: (s.tier < decision.required_tier, estimated_cost(s, input_tokens, task.expected_output_tokens)))


def _reserve(guard: SpendGuard, gateway: ModelGateway, task: AITask, document: Document, availability,
             where: CallContext, model_id: str, reason: str, characters: int):
    """``(reservation, model to call, route reason, refusal)``: the call reserved against its budgets, or a
    cheaper cleared model's when a hard cap says downgrade, or the refusal in words."""
    spec = gateway.catalog.get(model_id)
    try:
        return guard.reserve(spec, task.name, characters, run_id=where.run_id, item_id=document.id), model_id, reason, None
    except BudgetRefusal as refusal:
        pool = candidate_pool(task.name, document.classification, gateway.catalog, availability).usable
        last = refusal
        for cheaper in guard.cheaper_routes(refusal, pool, spec, task.name, characters):
            try:
                reservation = guard.reserve(cheaper, task.name, characters, run_id=where.run_id, item_id=document.id)
            except BudgetRefusal as again:
                last = again
                continue
            guard.downgrades += 1
            return reservation, cheaper.id, f"{reason}; budget downgrade: {model_id} → {cheaper.id} ({refusal})", None
        return None, model_id, reason, f"refused by budget: {last}"


def _record(where: CallContext, task: AITask, document: Document, decision: RoutingDecision, result: CallResult,
            catalog: ModelCatalog, *, attempt: int, accepted: bool, reason: str, features: str) -> CallRecord:
    spec = catalog.get(result.model_id)
    estimate = decision.estimated_cost_usd if attempt == 1 else None
    return CallRecord(
        run_id=where.run_id, step_key=where.step_key, asset_key=where.asset_key, partition_key=where.partition_key,
        item_id=document.id, task=task.name, model_id=spec.id, provider=spec.provider, residency=spec.residency.value,
        classification=document.classification.value, input_tokens=result.input_tokens, output_tokens=result.output_tokens,
        cost_usd=result.cost_usd, estimated_cost_usd=estimate, latency_s=result.latency_s,
        route_reason=reason, outcome="ok" if result.ok else "error", error=_storable_error(result.error, document),
        policy=decision.policy, attempt=attempt, accepted=accepted, features=features,
        input_chars=sum(map(len, task.request_texts(document.text))),
        usage_estimated=result.usage_estimated, transport_attempts=result.transport_attempts, compute_s=result.compute_s,
    )


def _item_span(tracer: Optional[TraceRecorder], document: Document):
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.item_span(document.id, item_hash(document.text), document.classification.value)


def _call_span(tracer: Optional[TraceRecorder], spec: ModelSpec, reason: str, attempt: int):
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.call_span(spec.id, spec.provider, route_reason=reason[:300], attempt=attempt)


def audit_entries(outcome: ItemOutcome, where: CallContext, catalog: ModelCatalog) -> list[AuditEntry]:
    """The item's who/what/where for the audit chain: one entry per call, or one for a refusal; no content."""
    base = dict(run_id=where.run_id, step_key=where.step_key, asset_key=where.asset_key, partition_key=where.partition_key,
                item_hash=item_hash(outcome.document.text), classification=outcome.document.classification.value)
    entries = []
    for number, result in enumerate(outcome.attempts, start=1):
        spec = catalog.get(result.model_id)
        accepted = result.ok and (number < len(outcome.attempts) or outcome.check_failure is None)
        checks = {"attempt": number, "ok": result.ok, "item_check_passed": bool(accepted)}
        if result.replayed:
            checks["replayed"] = True
        entries.append(AuditEntry(event="call", model_id=spec.id, residency=spec.residency.value,
                                  redaction=outcome.redactions.get(number, "none"), checks=checks, **base))
    if outcome.budget_refusal:
        entries.append(AuditEntry(event="budget_refusal", checks={"refused": True}, **base))
    if not outcome.attempts and outcome.decision.model_id is None:
        event = ("input_error" if outcome.document.input_error else "item_error" if outcome.crash else "policy_refusal")
        entries.append(AuditEntry(event=event, checks={"routed": False}, **base))
    return entries


@dataclass
class _Redaction:
    """A document pseudonymised for a hosted model: the text it sees, and the in-memory way back."""

    text: str
    mapping: object  # resources.pii mapping: never pickled, never logged
    spans: int

    @classmethod
    def of(cls, text: str) -> "_Redaction":
        from resources.pii import pseudonymize

        redacted, mapping = pseudonymize(text)
        return cls(redacted, mapping, len(mapping))

    def request(self, request: StructuredRequest) -> StructuredRequest:
        return request.model_copy(update={"document": self.text})

    def restore(self, result: CallResult) -> CallResult:
        """The originals back into the answer, where the workflow needs them (a vendor name, an IBAN)."""
        from resources.pii import restore

        if result.output is None or not self.spans:
            return result
        return result.model_copy(update={"output": restore(result.output, self.mapping)})

    def describe(self) -> str:
        return f"pseudonymised {self.spans} values"


def _storable_error(error: Optional[str], document: Document) -> Optional[str]:
    """A provider's error can quote the document (a validation error echoing the output): for data the
    policy forbids persisting raw, its PII is tokenised before the ledger stores it."""
    if not error or active_policy().may_persist_raw(document.classification):
        return error
    from resources.pii import pseudonymize

    return pseudonymize(error)[0]


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
        self.cost += sum(r.cost_usd for r in outcome.attempts)
        now = time.monotonic()
        if self.log and (self.done % self.every == 0 or self.done == self.total or now - self.last > 10):
            self.last = now
            self.log(f"{self.done}/{self.total} items done, ${self.cost:.6f} so far, {self.errors} failed")


def batch_metadata(outcomes: Sequence[ItemOutcome]) -> dict[str, dg.MetadataValue]:
    """What a user reads on the materialization: calls, models, tokens, cost, routes, failures."""
    results = [r for o in outcomes for r in o.attempts]
    models = Counter(r.model_id for r in results)
    routes = Counter(o.result.model_id if o.result else "unrouted" for o in outcomes)
    failures = [o for o in outcomes if o.error is not None]
    estimated = sum((o.decision.estimated_cost_usd or 0.0 for o in outcomes if o.result is not None), 0.0)
    metadata: dict[str, dg.MetadataValue] = {
        "items": dg.MetadataValue.int(len(outcomes)),
        "calls": dg.MetadataValue.int(len(results)),
        "failed_items": dg.MetadataValue.int(len(failures)),
        "policy": dg.MetadataValue.text(outcomes[0].decision.policy if outcomes else "none"),
        "escalations": dg.MetadataValue.int(sum(max(0, len(o.attempts) - 1) for o in outcomes)),
        "budget_refusals": dg.MetadataValue.int(sum(o.budget_refusal is not None for o in outcomes)),
        "items_failing_check": dg.MetadataValue.int(sum(o.check_failure is not None for o in outcomes if o.result)),
        "models": dg.MetadataValue.json(dict(models)),
        "route_share": dg.MetadataValue.json({k: round(v / max(1, len(outcomes)), 3) for k, v in routes.items()}),
        "input_tokens": dg.MetadataValue.int(sum(r.input_tokens for r in results)),
        "output_tokens": dg.MetadataValue.int(sum(r.output_tokens for r in results)),
        "cost_usd": dg.MetadataValue.float(round(sum((r.cost_usd for r in results), 0.0), 8)),
        "estimated_cost_usd": dg.MetadataValue.float(round(estimated, 8)),
    }
    if failures:
        metadata["failures"] = dg.MetadataValue.md(failure_table(failures))
    return metadata


def raise_past_failure_rate(outcomes: Sequence[ItemOutcome], max_failure_rate: float) -> None:
    """Fail the step (``dg.Failure`` with the failing items as a table) when more than ``max_failure_rate``
    of its items failed; below that, a batch with some bad documents completes and says which.

    Items a budget refused are not failures: spending stopped as configured, and the budget
    metadata and sensor say so (a run refused whole by a hard cap completes, with nothing spent)."""
    failures = [o for o in outcomes if o.error is not None and o.budget_refusal is None]
    if not outcomes or len(failures) / len(outcomes) <= max_failure_rate:
        return
    raise dg.Failure(
        description=(f"{len(failures)} of {len(outcomes)} items failed ({len(failures) / len(outcomes):.0%}), more than "
                     f"max_failure_rate {max_failure_rate:.0%}; first: {failures[0].document.id}: "
                     f"{(_storable_error(failures[0].error, failures[0].document) or '')[:200]}"),
        metadata={"failed_items": dg.MetadataValue.int(len(failures)), "items": dg.MetadataValue.int(len(outcomes)),
                  "failures": dg.MetadataValue.md(failure_table(failures))},
    )


def failure_table(failures: Sequence[ItemOutcome], limit: int = 50) -> str:
    rows = ["| item | input sha256 | model | attempts | error |", "|---|---|---|---|---|"]
    for outcome in failures[:limit]:
        error = (_storable_error(outcome.error, outcome.document) or "").replace("|", "\\|").replace("\n", " ")[:200]
        model = outcome.result.model_id if outcome.result else outcome.decision.model_id
        tried = " → ".join(r.model_id for r in outcome.attempts) or "none"
        rows.append(f"| {outcome.document.id} | {item_hash(outcome.document.text)[:12]} | {model or '—'} | {tried} | {error} |")
    if len(failures) > limit:
        rows.append(f"| … | | {len(failures) - limit} more |")
    return "\n".join(rows)
