"""A trace for every AI call: OpenTelemetry spans, named by the GenAI conventions, kept in a local DuckDB file.

The ledger says what a run cost and the audit log what it touched; neither says *where the
time went* or *which attempt of which item failed, and why*. Spans do: one per Dagster step
(``run_span``), one per item inside it (``item_span``), one per model call (``call_span``),
nested through OpenTelemetry's context, so a retry or a cascade shows up as sibling calls
under their item. Call spans carry the GenAI semantic-convention attributes
(``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ...) so any OTel backend reads
them as LLM calls; ``ai_orch.*`` adds what only this project knows (cost, route reason,
attempt, check outcome).

Spans go to ``$DAGSTER_HOME/ai_orchestration/traces.duckdb`` through a batching processor:
the hot path only queues a finished span; a background thread writes batches, each in one
transaction under ``locked_connection`` (Dagster's step processes share the file). An OTLP
exporter is added when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and a console exporter (to
stderr) when ``AI_ORCH_TRACE_CONSOLE=1``.

Spans never hold content: ``item_span`` takes a SHA-256 (``audit_log.item_hash``), not the
text, and ``record`` reads only counts, ids and the provider's (already shortened) error
message from a ``CallResult``.

The global OTel provider (``trace.set_tracer_provider``) can be set once per process and is
left alone: ``TraceRecorder`` owns its provider and tracer, so tests and several stores can
coexist. ``configure_tracing`` keeps one recorder per process for the module-level helpers.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import dagster as dg
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from resources.reliability import error_type
from resources.duckdb_file import (REFUSED_VALUES, checkpoints_deferred, default_data_dir, has_table, insert_rows,
                                   locked_connection)

log = logging.getLogger(__name__)

TRACES_FILE = "traces.duckdb"
INSTRUMENTATION_NAME = "ai_orchestration"

# Copied from the enclosing span onto every child, and into their own columns for queries.
RUN_ID, STEP_KEY, ITEM_ID = "dagster.run_id", "dagster.step_key", "ai_orch.item_id"
_INHERITED = (RUN_ID, STEP_KEY, ITEM_ID)
SUMMARY = "ai_orch.summary"  # a step's or item's outcome in words, shown by render_tree; never content
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_STATUS_MESSAGE = 500

_COLUMNS = ["trace_id", "span_id", "parent_span_id", "name", "start_time", "end_time", "duration_ms", "status",
            "status_message", "attributes", "events", "run_id", "step_key", "item_id"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    parent_span_id VARCHAR,
    name VARCHAR NOT NULL,
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    duration_ms DOUBLE NOT NULL,
    status VARCHAR NOT NULL,
    status_message VARCHAR,
    attributes JSON,
    events JSON,
    run_id VARCHAR,
    step_key VARCHAR,
    item_id VARCHAR
);
"""


def default_trace_path() -> Path:
    """``$DAGSTER_HOME/ai_orchestration/traces.duckdb``."""
    return default_data_dir() / TRACES_FILE


# ---------------------------------------------------------------------------------------------- export


def _utc(ns: Optional[int]) -> datetime:
    return datetime.fromtimestamp((ns or 0) / 1e9, tz=timezone.utc).replace(tzinfo=None)


_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)  # one for every span: json.dumps with options builds one per call


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _row(span: ReadableSpan) -> tuple:
    attributes = span.attributes or {}
    events = [{"name": e.name, "time": _utc(e.timestamp).isoformat(), "attributes": dict(e.attributes or {})}
              for e in span.events]
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    return (
        format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None else None, span.name, _utc(start), _utc(end),
        (end - start) / 1e6, span.status.status_code.name, span.status.description, _json(dict(attributes)),
        _json(events) if events else "[]",
        attributes.get(RUN_ID), attributes.get(STEP_KEY), attributes.get(ITEM_ID),
    )


_SPAN_DATA_ERRORS = (*REFUSED_VALUES, ValueError, TypeError)  # and a value ``_row`` cannot encode


class DuckDBSpanExporter(SpanExporter):
    """Writes each batch of finished spans into ``spans`` in one transaction (run it behind a BatchSpanProcessor)."""

    def __init__(self, path: "str | Path", *, timeout_s: float = 60.0):
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self._schema_ready = False
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            self.write([_row(span) for span in spans])
        except Exception as exc:  # tracing must never take a run down
            if len(spans) == 1 or not isinstance(exc, _SPAN_DATA_ERRORS):
                log.exception("could not write %d spans to %s", len(spans), self.path)
                return SpanExportResult.FAILURE
            # One span's values refused (text DuckDB cannot hold): the others are written, that one is lost alone.
            results = [self.export([span]) for span in spans]
            return SpanExportResult.SUCCESS if all(r is SpanExportResult.SUCCESS for r in results) else SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def write(self, rows: Sequence[tuple]) -> None:
        with locked_connection(self.path, timeout_s=self.timeout_s) as conn:
            if not self._schema_ready:
                conn.execute(_SCHEMA)
                self._schema_ready = True
            conn.execute("BEGIN TRANSACTION")
            try:
                insert_rows(conn, "spans", _COLUMNS, rows)
                conn.execute("COMMIT")
            except Exception:
                conn.execute("ROLLBACK")
                raise

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self._closed = True


def _inherited(parent_attributes: Optional[Mapping[str, Any]], own: Mapping[str, Any]) -> dict[str, Any]:
    """The run id, step key and item id a span takes from its parent, where it does not set its own."""
    if not parent_attributes:
        return {}
    return {key: parent_attributes[key] for key in _INHERITED if key not in own and key in parent_attributes}


class _InheritRunAttributes(SpanProcessor):
    """Copies run id, step key and item id from the parent span, so every span of a run is found by ``run_id``."""

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        parent_attributes = getattr(trace.get_current_span(parent_context), "attributes", None)
        if not parent_attributes:
            return
        own = span.attributes or {}
        inherited = _inherited(parent_attributes, own)
        if inherited:
            span.set_attributes(inherited)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# ---------------------------------------------------------------------------------------------- recording


_SCALARS = (str, bool, int, float, bytes)  # OpenTelemetry's attribute value types
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


def _clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Attribute values as the SDK keeps them: scalars as they are, a sequence of one scalar type (Nones
    allowed) as a tuple; None and anything else dropped, the latter with a warning, as the SDK does."""
    cleaned = {}
    for key, value in attributes.items():
        if isinstance(value, _SCALARS):
            cleaned[key] = value
        elif isinstance(value, (list, tuple)) and len({type(v) for v in value if v is not None}) <= 1 and all(
                v is None or isinstance(v, _SCALARS) for v in value):
            cleaned[key] = tuple(value)
        elif value is not None:
            log.warning("span attribute %s dropped: a %s is not an OpenTelemetry attribute value", key, type(value).__name__)
    return cleaned


class _RecordedSpan(trace.Span):
    """A span of this recorder's own (run, item, call): recorded in a plain dict, ended as the SDK's ``ReadableSpan``.

    Why: the SDK's ``Span`` costs about 40 µs to start and end even bare (a sampler, a lock
    per span, every attribute validated behind the lock, two processor passes), and a batch
    makes two per item on the event loop that also carries the next requests: with the
    recorder's attributes, 140 µs an item. These spans know their attributes' types (ours),
    inherit the run, step and item from their parent as ``_InheritRunAttributes`` does, and
    end as the same ``ReadableSpan`` the SDK would hand its processors, so the DuckDB, OTLP
    and console exporters see no difference. Ids come from the provider's id generator,
    and a parent that was not sampled is honoured (``_span`` records nothing under it).
    """

    def __init__(self, recorder: "TraceRecorder", name: str, kind: SpanKind, parent: trace.Span,
                 attributes: Mapping[str, Any]):
        parent_context = parent.get_span_context()
        ids = recorder.provider.id_generator
        if parent_context.is_valid:
            self._parent: Optional[SpanContext] = parent_context
            trace_id, trace_state = parent_context.trace_id, parent_context.trace_state
        else:
            self._parent, trace_id, trace_state = None, ids.generate_trace_id(), None
        self._context = SpanContext(trace_id, ids.generate_span_id(), is_remote=False, trace_flags=_SAMPLED,
                                    trace_state=trace_state)
        self._recorder, self._name, self._kind = recorder, name, kind
        own = _clean(attributes)
        self._attributes = {**_inherited(getattr(parent, "attributes", None), own), **own}
        self._events: list[Event] = []
        self._status = _UNSET
        self._start = time.time_ns()
        self._end: Optional[int] = None

    @property
    def attributes(self) -> Mapping[str, AttributeValue]:
        return self._attributes

    @property
    def status(self) -> Status:
        return self._status

    @property
    def name(self) -> str:
        return self._name

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end is None:
            self._attributes.update(_clean(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: Optional[Mapping[str, Any]] = None, timestamp: Optional[int] = None) -> None:
        if self._end is None:
            self._events.append(Event(name, _clean(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Optional[Mapping[str, Any]] = None) -> None:
        return None  # this recorder's spans have no links

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: "Status | StatusCode", description: Optional[str] = None) -> None:
        """As the SDK: UNSET is ignored, and so is everything once OK was set."""
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        status = status if isinstance(status, Status) else Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Optional[Mapping[str, Any]] = None,
                         timestamp: Optional[int] = None, escaped: bool = False) -> None:
        """Its type only: an exception's message or traceback may quote the document (``_span``)."""
        self.add_event("exception", {"exception.type": type(exception).__qualname__, "exception.escaped": escaped,
                                     **(attributes or {})}, timestamp)

    def end(self, end_time: Optional[int] = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time.time_ns()
        self._recorder._ended(ReadableSpan(
            name=self._name, context=self._context, parent=self._parent, resource=self._recorder.provider.resource,
            attributes=self._attributes, events=tuple(self._events), kind=self._kind, status=self._status,
            start_time=self._start, end_time=self._end, instrumentation_scope=self._recorder.scope))




class CallSpan:
    """The span of one model call; ``record(result)`` sets the GenAI attributes and, on failure, the error."""

    def __init__(self, span: trace.Span, model_id: str):
        self.span = span
        self.model_id = model_id

    def record(self, result: Any, *, check_passed: Optional[bool] = None, route_reason: Optional[str] = None,
               attempt: Optional[int] = None, error_type_override: Optional[str] = None,
               error_message: Optional[str] = None) -> None:
        """Read a ``CallResult`` (or anything with its fields): tokens, cost, finish reason, error. Never its output.

        A provider's error can quote the document; pass the message as the ledger stores it
        (``error_message=``, e.g. pseudonymised) and only that reaches the span. ``error.type``
        is taken from the raw error, but is only ever a code or a class name.
        """
        span = self.span
        attempts = list(getattr(result, "attempt_log", None) or [])
        attributes: dict[str, Any] = {
            "gen_ai.response.model": str(getattr(result, "model_id", None) or self.model_id),
            "gen_ai.usage.input_tokens": int(getattr(result, "input_tokens", 0) or 0),
            "gen_ai.usage.output_tokens": int(getattr(result, "output_tokens", 0) or 0),
            "ai_orch.cost_usd": float(getattr(result, "cost_usd", 0.0) or 0.0),
        }
        finish_reason = getattr(result, "finish_reason", None)
        if finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [str(finish_reason)]
        if route_reason is not None:
            attributes["ai_orch.route.reason"] = route_reason
        if attempt is not None:
            attributes["ai_orch.attempt"] = int(attempt)
        if check_passed is not None:
            attributes["ai_orch.check.passed"] = bool(check_passed)
        attributes["ai_orch.transport_attempts"] = int(getattr(result, "transport_attempts", len(attempts)))
        if getattr(result, "replayed", False):
            attributes["ai_orch.replayed"] = True
        span.set_attributes(attributes)  # one call (one lock) for all of them
        for entry in attempts:  # every HTTP attempt, retries included: codes and waits, never a message
            event = {"ai_orch.attempt_number": int(entry.get("attempt", 0)), "ai_orch.waited_s": float(entry.get("waited_s", 0.0))}
            if entry.get("status") is not None:
                event["http.response.status_code"] = int(entry["status"])
            if entry.get("error_type"):
                event["error.type"] = str(entry["error_type"])
            span.add_event("ai_orch.transport_attempt", event)
        error = getattr(result, "error", None)
        if error:
            self.fail(error_message or str(error), error_type_override or error_type(str(error)))

    def check(self, passed: bool) -> None:
        """The outcome of the item's checks on this call's output (may come after ``record``)."""
        self.span.set_attribute("ai_orch.check.passed", bool(passed))

    def fail(self, message: str, kind: str) -> None:
        self.span.set_attribute("error.type", kind)
        self.span.set_status(Status(StatusCode.ERROR, message[:_MAX_STATUS_MESSAGE]))


class TraceRecorder:
    """Owns a TracerProvider that exports to one DuckDB span store (and OTLP / console when asked)."""

    def __init__(self, store_path: "str | Path | None" = None, *, otlp: Optional[bool] = None,
                 console: Optional[bool] = None, schedule_delay_ms: int = 5000):
        self.store_path = Path(store_path).expanduser() if store_path else default_trace_path()
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "ai-orchestration"}
        self.provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
        self.provider.add_span_processor(_InheritRunAttributes())  # for spans others start with ``tracer``
        self.scope = InstrumentationScope(INSTRUMENTATION_NAME)
        self._ending: list[SpanProcessor] = []  # what this recorder's own spans are handed to when they end
        self.exporter = DuckDBSpanExporter(self.store_path)
        # A large queue: the SDK drops spans when it is full, and a burst of cached calls can outrun one batch.
        # Exported every 5 s (and at 4,096 spans, and when a batch drains or a step ends): an export
        # holds the interpreter lock while it turns spans into rows, and replies wait on it; a
        # batch shorter than that exports as its last calls are in flight, when the loop is idle.
        self._add_processor(BatchSpanProcessor(
            self.exporter, max_queue_size=65536, max_export_batch_size=4096, schedule_delay_millis=schedule_delay_ms))
        if otlp if otlp is not None else bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            self._add_otlp()
        if console if console is not None else os.environ.get("AI_ORCH_TRACE_CONSOLE") == "1":
            self._add_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        self.tracer = self.provider.get_tracer(INSTRUMENTATION_NAME)

    def _add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)
        self._ending.append(processor)

    def _ended(self, span: ReadableSpan) -> None:
        for processor in self._ending:
            processor.on_end(span)

    def _add_otlp(self) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http is not "
                        "installed: spans go to %s only (pip install opentelemetry-exporter-otlp-proto-http)",
                        self.store_path)
            return
        try:
            self._add_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except Exception as exc:  # a bad endpoint or header setting must not stop the run
            log.warning("could not set up the OTLP exporter (%s): spans go to %s only", exc, self.store_path)

    @contextlib.contextmanager
    def run_span(self, run_id: str, step_key: str, asset_key: Optional[str] = None,
                 partition_key: Optional[str] = None) -> Iterator[trace.Span]:
        """The parent of everything a step does with AI: one per Dagster step."""
        attributes = {RUN_ID: run_id, STEP_KEY: step_key}
        if asset_key is not None:
            attributes["dagster.asset_key"] = asset_key
        if partition_key is not None:
            attributes["dagster.partition_key"] = partition_key
        with self._span("dagster.step", attributes) as span:
            yield span

    @contextlib.contextmanager
    def item_span(self, item_id: str, input_hash: Optional[str] = None,
                  classification: Optional[str] = None) -> Iterator[trace.Span]:
        """One item (document) of a step; ``input_hash`` is ``audit_log.item_hash(content)``, never the content."""
        attributes: dict[str, Any] = {ITEM_ID: str(item_id)}
        if input_hash is not None:
            if not _SHA256_HEX.fullmatch(str(input_hash).lower()):
                raise ValueError("input_hash must be a SHA-256 hex digest — pass audit_log.item_hash(content); "
                                 "spans never store content")
            attributes["ai_orch.input_hash"] = str(input_hash).lower()
        if classification is not None:
            attributes["ai_orch.classification"] = str(classification)
        with self._span("ai_orch.item", attributes) as span:
            yield span

    @contextlib.contextmanager
    def call_span(self, model_id: str, provider: str, operation: str = "chat", *, route_reason: Optional[str] = None,
                  attempt: Optional[int] = None) -> Iterator[CallSpan]:
        """One model call, named ``"{operation} {model_id}"`` as the GenAI conventions name client spans."""
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation, "gen_ai.provider.name": provider,
                                      "gen_ai.request.model": model_id}
        if route_reason is not None:
            attributes["ai_orch.route.reason"] = route_reason
        if attempt is not None:
            attributes["ai_orch.attempt"] = int(attempt)
        with self._span(f"{operation} {model_id}", attributes, kind=SpanKind.CLIENT) as span:
            yield CallSpan(span, model_id)

    @contextlib.contextmanager
    def _span(self, name: str, attributes: Mapping[str, Any], kind: SpanKind = SpanKind.INTERNAL) -> Iterator[trace.Span]:
        # Exceptions are marked by hand: the SDK's record_exception would store the traceback and message as an
        # event, and an exception's message may quote the document.
        parent = trace.get_current_span()
        parent_context = parent.get_span_context()
        if parent_context.is_valid and not parent_context.trace_flags.sampled:  # a caller's unsampled trace
            span: trace.Span = trace.NonRecordingSpan(SpanContext(
                parent_context.trace_id, self.provider.id_generator.generate_span_id(), is_remote=False,
                trace_flags=parent_context.trace_flags, trace_state=parent_context.trace_state))
        else:
            span = _RecordedSpan(self, name, kind, parent, attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            status = getattr(span, "status", None)
            if status is None or status.status_code is not StatusCode.ERROR:  # a reason set before raising stays
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write every finished span now (the end of a step, a test, a benchmark); the caller waits on the
        write, and the store's checkpoint is taken in the background after it (``duckdb_file``)."""
        with checkpoints_deferred(self.store_path):
            return self.provider.force_flush(timeout_millis)

    def export_soon(self) -> threading.Thread:
        """Export the spans finished so far from a background thread, as a scheduled export would.

        A batch calls it once only its last calls are in flight, so its closing ``force_flush``
        (which the caller waits on) has only their spans left to write. Returns the thread.
        """
        thread = threading.Thread(target=self.provider.force_flush, name="trace-export", daemon=True)
        thread.start()
        return thread

    def shutdown(self) -> None:
        self.provider.shutdown()

    def store(self) -> "TraceStore":
        return TraceStore(self.store_path)


_lock = threading.Lock()
_recorder: Optional[TraceRecorder] = None


def configure_tracing(store_path: "str | Path | None" = None) -> TracerProvider:
    """This process's recorder: created once; called again with no path or the same path, returns the same provider.

    A different ``store_path`` flushes and shuts the current one down and starts a new one
    (tests use a store per test).
    """
    global _recorder
    with _lock:
        if _recorder is not None:
            if store_path is None or Path(store_path).expanduser() == _recorder.store_path:
                return _recorder.provider
            _recorder.shutdown()
        _recorder = TraceRecorder(store_path)
        return _recorder.provider


def recorder() -> TraceRecorder:
    """The process's recorder, configured with the default store on first use."""
    if _recorder is None:
        configure_tracing()
    assert _recorder is not None
    return _recorder


@atexit.register
def _flush_at_exit() -> None:
    if _recorder is not None:
        _recorder.shutdown()


def run_span(run_id: str, step_key: str, asset_key: Optional[str] = None, partition_key: Optional[str] = None):
    """``recorder().run_span``: the parent span of a step."""
    return recorder().run_span(run_id, step_key, asset_key, partition_key)


def item_span(item_id: str, input_hash: Optional[str] = None, classification: Optional[str] = None):
    """``recorder().item_span``: one item, by id and hash."""
    return recorder().item_span(item_id, input_hash, classification)


def call_span(model_id: str, provider: str, operation: str = "chat", *, route_reason: Optional[str] = None,
              attempt: Optional[int] = None):
    """``recorder().call_span``: one model call; ``with call_span(...) as call: call.record(result)``."""
    return recorder().call_span(model_id, provider, operation, route_reason=route_reason, attempt=attempt)


# ---------------------------------------------------------------------------------------------- queries


class TraceStore:
    """Reads the span store: a run's spans, as a list, a tree, an error summary or text."""

    def __init__(self, path: "str | Path | None" = None, *, timeout_s: float = 60.0):
        self.path = Path(path).expanduser() if path else default_trace_path()
        self.timeout_s = timeout_s

    def spans(self, run_id: str) -> list[dict[str, Any]]:
        """Every span of a run, oldest first; ``attributes`` and ``events`` parsed."""
        if not self.path.exists():
            return []
        with locked_connection(self.path, read_only=True, timeout_s=self.timeout_s) as conn:
            if not has_table(conn, "spans"):
                return []
            cursor = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM spans WHERE run_id = ? ORDER BY start_time, span_id",
                                  [run_id])
            rows = cursor.fetchall()
        spans = []
        for row in rows:
            span = dict(zip(_COLUMNS, row))
            span["attributes"] = json.loads(span["attributes"] or "{}")
            span["events"] = json.loads(span["events"] or "[]")
            spans.append(span)
        return spans

    def run_ids_starting(self, prefix: str, limit: int = 6) -> list[str]:
        """The stored run ids that are ``prefix`` or start with it (the Dagster UI shows a run id's first 8
        characters): the exact id alone when it is stored, else up to ``limit`` matches, sorted."""
        if not self.path.exists() or not prefix:
            return []
        with locked_connection(self.path, read_only=True, timeout_s=self.timeout_s) as conn:
            if not has_table(conn, "spans"):
                return []
            rows = conn.execute("SELECT DISTINCT run_id FROM spans WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT ?",
                                [prefix, limit]).fetchall()
        found = [run_id for (run_id,) in rows]
        return [prefix] if prefix in found else found

    def tree(self, run_id: str) -> list[dict[str, Any]]:
        """The run's spans nested: each span dict gets ``children`` (oldest first); the roots are returned."""
        spans = self.spans(run_id)
        by_id = {s["span_id"]: {**s, "children": []} for s in spans}
        roots = []
        for span in by_id.values():
            parent = by_id.get(span["parent_span_id"]) if span["parent_span_id"] else None
            (parent["children"] if parent is not None else roots).append(span)
        return roots

    def error_summary(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Calls, errors and the first error message, per model and per step."""
        spans = self.spans(run_id)
        calls = [s for s in spans if "gen_ai.operation.name" in s["attributes"]]
        summary = {}
        for key, label in (("gen_ai.request.model", "model_id"), (STEP_KEY, "step_key")):
            groups: dict[str, dict[str, Any]] = {}
            for span in calls:
                name = span["attributes"].get(key) or "?"
                group = groups.setdefault(name, {label: name, "calls": 0, "errors": 0, "first_error": None,
                                                 "first_error_type": None})
                group["calls"] += 1
                if span["status"] == "ERROR":
                    group["errors"] += 1
                    if group["first_error"] is None:
                        group["first_error"] = span["status_message"]
                        group["first_error_type"] = span["attributes"].get("error.type")
            summary["by_model" if label == "model_id" else "by_step"] = sorted(groups.values(), key=lambda g: g[label])
        # Items fail without a failed call too (unreadable input, failed check, refused budget): counted per step.
        items: dict[str, dict[str, Any]] = {}
        for span in spans:
            if span["name"] != "ai_orch.item":
                continue
            step = span["attributes"].get(STEP_KEY) or "?"
            group = items.setdefault(step, {"step_key": step, "items": 0, "failed_items": 0, "first_item_error": None})
            group["items"] += 1
            if span["status"] == "ERROR":
                group["failed_items"] += 1
                group["first_item_error"] = group["first_item_error"] or span["status_message"]
        summary["items_by_step"] = sorted(items.values(), key=lambda g: g["step_key"])
        return summary

    def render_tree(self, run_id: str) -> str:
        """An indented text tree: durations, model, tokens, cost; failed spans marked ✗."""
        lines: list[str] = []

        def walk(span: dict[str, Any], depth: int) -> None:
            lines.append("  " * depth + _describe(span))
            for child in span["children"]:
                walk(child, depth + 1)

        for root in self.tree(run_id):
            walk(root, 0)
        return "\n".join(lines)


def _describe(span: dict[str, Any]) -> str:
    a = span["attributes"]
    failed = span["status"] == "ERROR"
    duration = f"{span['duration_ms']:.1f} ms"
    if span["name"] == "dagster.step":
        where = " ".join(str(a[k]) for k in ("dagster.asset_key", "dagster.partition_key") if a.get(k))
        text = f"step {a.get(STEP_KEY)}" + (f" [{where}]" if where else "") + f"  {duration}"
    elif span["name"] == "ai_orch.item":
        extra = f" ({a['ai_orch.classification']})" if a.get("ai_orch.classification") else ""
        text = f"item {a.get(ITEM_ID)}{extra}  {duration}"
    elif "gen_ai.operation.name" in a:
        mark = "✗" if failed else "✓"
        text = (f"{mark} {a['gen_ai.operation.name']} {a.get('gen_ai.request.model')} [{a.get('gen_ai.provider.name')}]"
                f"  {duration}  tokens {a.get('gen_ai.usage.input_tokens', 0)}→{a.get('gen_ai.usage.output_tokens', 0)}"
                f"  ${a.get('ai_orch.cost_usd', 0.0):.6f}")
        if "ai_orch.attempt" in a:
            text += f"  attempt {a['ai_orch.attempt']}"
        tries = [e["attributes"] for e in span.get("events", []) if e.get("name") == "ai_orch.transport_attempt"]
        if len(tries) > 1:  # the HTTP attempts behind the call: "http 503 → 503 → ok (waited 1.2s)"
            codes = [str(t.get("error.type") or t.get("http.response.status_code") or "ok") for t in tries]
            waited = sum(float(t.get("ai_orch.waited_s", 0.0)) for t in tries)
            text += f"  http {' → '.join(codes)} (waited {waited:.2f}s)"
        if a.get("ai_orch.replayed"):
            text += "  replayed (no new request)"
        if "ai_orch.route.reason" in a:
            text += f"  route: {a['ai_orch.route.reason']}"
        if "ai_orch.check.passed" in a:
            text += "  check " + ("passed" if a["ai_orch.check.passed"] else "FAILED")
        if failed:
            text += f"  FAILED [{a.get('error.type', '_OTHER')}]: {span['status_message'] or ''}"
        return text
    else:
        text = f"{span['name']}  {duration}"
    if a.get(SUMMARY):  # what a step or item did, in a few content-free words ("3 chunks ≤ 400 tokens")
        text += f"  {a[SUMMARY]}"
    if failed:
        text = f"✗ {text}  FAILED [{a.get('error.type', '_OTHER')}]: {span['status_message'] or ''}"
    return text


def render_tree(run_id: str, store: "TraceStore | str | Path | None" = None) -> str:
    """``TraceStore(store).render_tree(run_id)``; the default store is this process's configured one."""
    if not isinstance(store, TraceStore):
        store = TraceStore(store or (_recorder.store_path if _recorder is not None else None))
    return store.render_tree(run_id)


# ---------------------------------------------------------------------------------------------- Dagster


class TracingResource(dg.ConfigurableResource):
    """Tracing as a Dagster resource. ``path`` defaults to ``$DAGSTER_HOME/ai_orchestration/traces.duckdb``."""

    path: Optional[str] = None

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_trace_path()

    def recorder(self) -> TraceRecorder:
        """The process's recorder, pointed at this resource's store."""
        configure_tracing(self.resolved_path())
        return recorder()

    def store(self) -> TraceStore:
        return TraceStore(self.resolved_path())
