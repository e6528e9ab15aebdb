"""Fault mixes for the invoice template, shared by ``test_fault_injection`` and ``benchmarks/fault_injection``.

A batch of generated invoices goes through ``run_ai_task`` to one hosted model served by a
loopback protocol server (``protocol_servers``). Each document has its own fault plan
(``PerDocument``), so which item sees which fault, and whether a retry of that item gets
past it, is fixed by the document, not by timing or by the order items are called in.

Layouts (six invoices, indexes into the batch; ``F`` the mix's fault, ``ok`` the right answer):

* transport faults (429, 5xx, timeout, dropped connection: retried by the gateway)::

    0: F, ok      recovers on the 2nd attempt
    1: F, F, F    permanent: fails after MAX_ATTEMPTS attempts
    2: ok
    3: F, F, ok   recovers on the 3rd attempt
    4: ok
    5: ok

  At most one call gives up per mix, so the endpoint's circuit breaker (5 failed calls) never opens here.

* output faults (truncated / schema-invalid JSON: never retried, the cascade's business)::

    0: F, ok      fails: no retry, although a retry would have been answered
    1: F
    2-5: ok

* wrong token counts (a good answer whose ``usage`` is wrong): every item succeeds::

    0: usage missing
    1: usage negative and a string
    2: usage whose total does not add up (OpenAI) / a negative cache counter (Anthropic)
    3: usage absurd: 10 million output tokens for a 600-token cap
    4-5: ok
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from orchestration_assets.ai_task import CallContext, ItemOutcome, run_ai_task
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION
from orchestration_assets.invoices.generator import GeneratedInvoice, generate_invoices
from resources.classification import DataClassification
from resources.documents import Document
from resources.ledger import DuckDBLedger
from resources.model_gateway import ModelGateway, ModelGatewayResource
from resources.routing import RulesPolicy
from resources.tracing import TraceRecorder, TraceStore
from tests.protocol_servers import (
    AnthropicMessagesServer, Behaviour, DropConnection, OpenAIChatServer, Overloaded, PerDocument, ProtocolServer,
    RateLimited, SchemaInvalid, ServerError, Slow, Success, Truncated, Unavailable, WrongUsage,
)

KEY = "sk-test-faults"
SEED = "fault-injection"
BATCH = 6
MAX_ATTEMPTS = 3  # HTTP attempts per call
RETRY_AFTER_S = 0.05  # what the 429s ask for: longer than any backoff below, so a wait of at least this is the header's
TIMEOUT_S = 1.0  # per HTTP request; a Slow reply waits far longer (until the server stops)
ANSWER_TOKENS = (500, 90)  # usage of a good answer
BAD_OUTPUT_TOKENS = (500, 600)  # usage of a truncated / schema-invalid answer: billed although unusable
ABSURD_OUTPUT_TOKENS = 10_000_000
ABSURD_INPUT_TOKENS = 10**25  # past BIGINT too: it once failed the ledger's whole batch

SHIPPED_MODELS = ("rules-invoice", "local-gemma3-270m", "gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1",
                  "claude-haiku-4-5", "claude-sonnet-4-5")
PROTOCOLS: dict[str, tuple[str, type[ProtocolServer]]] = {
    "openai": ("gpt-4o-mini", OpenAIChatServer),
    "anthropic": ("claude-haiku-4-5", AnthropicMessagesServer),
}
USAGE_KEYS = {"openai": ("prompt_tokens", "completion_tokens"), "anthropic": ("input_tokens", "output_tokens")}

TRANSPORT_LAYOUT = {0: 1, 1: None, 3: 2}  # index → faults before the answer (None: always the fault)
OUTPUT_LAYOUT = {0: 1, 1: None}


@dataclass(frozen=True)
class Fault:
    """One fault mix: the behaviour per protocol, whether the gateway retries it, and how a failure reads."""

    name: str
    make: Callable[[str], Behaviour]  # protocol → the faulty reply
    kind: str  # "transport" | "output" | "usage"
    error: dict[str, str] = field(default_factory=dict)  # protocol → regex for a failed item's error ({model} filled in)
    error_type: Optional[str] = None  # the attempt's error.type in attempt_log and span events
    status: Optional[int] = None  # the attempt's HTTP status in attempt_log and span events
    protocols: tuple[str, ...] = ("openai", "anthropic")

    @property
    def layout(self) -> dict[int, Optional[int]]:
        return TRANSPORT_LAYOUT if self.kind == "transport" else OUTPUT_LAYOUT if self.kind == "output" else {}

    def expected(self) -> list[tuple[bool, int]]:
        """Per item: (succeeds?, HTTP requests the server gets for it)."""
        rows = []
        for index in range(BATCH):
            faults = self.layout.get(index, 0)
            if self.kind == "transport":
                rows.append((False, MAX_ATTEMPTS) if faults is None else (True, faults + 1))
            elif self.kind == "output":
                rows.append((index not in self.layout, 1))
            else:
                rows.append((True, 1))
        return rows


def _both(pattern: str) -> dict[str, str]:
    return {"openai": pattern, "anthropic": pattern}


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("429-retry-after", lambda p: RateLimited(retry_after=RETRY_AFTER_S), "transport",
          _both(r"HTTP 429 from {model}: .+ \(retry after 0\.05s\)"), "429", 429),
    Fault("500", lambda p: ServerError(), "transport", _both(r"HTTP 500 from {model}: .+"), "500", 500),
    Fault("503", lambda p: Unavailable(), "transport", _both(r"HTTP 503 from {model}: .+"), "503", 503),
    Fault("529-overloaded", lambda p: Overloaded(), "transport", _both(r"HTTP 529 from {model}: Overloaded \[overloaded_error\]"),
          "529", 529, protocols=("anthropic",)),
    # One protocol: the timeout is the shared HTTP layer's, and each one costs TIMEOUT_S of wall time.
    Fault("timeout", lambda p: Slow(seconds=600), "transport",
          _both(r"timed out after \d+\.\ds calling {model} \(ReadTimeout\)"), "timeout", protocols=("openai",)),
    Fault("dropped-connection", lambda p: DropConnection(), "transport",
          _both(r"connection error calling {model}: RemoteProtocolError: Server disconnected without sending a response\."),
          "connection_error"),
    # error_type left None: error_type() calls these '_OTHER' (see test_output_faults_are_typed_invalid_output).
    Fault("truncated-json", lambda p: Truncated(input_tokens=BAD_OUTPUT_TOKENS[0], output_tokens=BAD_OUTPUT_TOKENS[1]), "output",
          {"openai": r"reply was truncated at max tokens \(600\): reply is not valid JSON: .+",
           "anthropic": r"reply was truncated at max tokens \(600\) before the record_invoice_extraction tool call"}),
    Fault("schema-invalid-json", lambda p: SchemaInvalid(input_tokens=BAD_OUTPUT_TOKENS[0], output_tokens=BAD_OUTPUT_TOKENS[1]),
          "output", _both(r"reply does not match the schema InvoiceExtraction: line_items\.0\.description: Field required"),
          "invalid_output"),
    Fault("wrong-token-counts", lambda p: Success(), "usage"),
)}


def invoices(n: int = BATCH, seed: str = SEED) -> list[GeneratedInvoice]:
    return generate_invoices(n, seed=seed)


def documents(batch: Sequence[GeneratedInvoice]) -> list[Document]:
    """Public, so the hosted model sees the text as it is (no pseudonymisation) and plans match it exactly."""
    return [Document(id=i.id, text=i.text, classification=DataClassification.PUBLIC, truth=i.truth.model_dump())
            for i in batch]


def answer(invoice: GeneratedInvoice, tokens: tuple[int, int] = ANSWER_TOKENS) -> Success:
    """The right extraction (the generator's truth), which passes the template's item check."""
    return Success(invoice.truth.model_dump(mode="json"), input_tokens=tokens[0], output_tokens=tokens[1])


def wrong_usage(invoice: GeneratedInvoice, protocol: str) -> list[WrongUsage]:
    """The usage faults of the 'wrong-token-counts' layout, items 0-4."""
    truth = invoice.truth.model_dump(mode="json")
    into, out = USAGE_KEYS[protocol]
    adds_up = {"openai": {"total_tokens": 7}, "anthropic": {"cache_read_input_tokens": -3}}[protocol]
    return [
        WrongUsage(truth, usage=WrongUsage.MISSING),
        WrongUsage(truth, usage={into: -5, out: "40"}),
        WrongUsage(truth, usage={into: ANSWER_TOKENS[0], out: ANSWER_TOKENS[1], **adds_up}),
        WrongUsage(truth, usage={into: ANSWER_TOKENS[0], out: ABSURD_OUTPUT_TOKENS}),
        WrongUsage(truth, usage={into: ABSURD_INPUT_TOKENS, out: ANSWER_TOKENS[1]}),
    ]


def fault_plans(fault: Fault, batch: Sequence[GeneratedInvoice], protocol: str) -> dict[int, list[Behaviour]]:
    """Per item index, the replies its requests get in turn (the last one repeats)."""
    plans: dict[int, list[Behaviour]] = {}
    for index, invoice in enumerate(batch):
        if fault.kind == "usage":
            usage_faults = wrong_usage(invoice, protocol)
            plans[index] = [usage_faults[index]] if index < len(usage_faults) else [answer(invoice)]
            continue
        faults = fault.layout.get(index, 0)
        bad = fault.make(protocol)
        plans[index] = [bad] if faults is None else [*[bad] * faults, answer(invoice)]
    return plans


MIXED_FAILED = (3, 6, 8)  # items of the mixed plan that fail: a permanent 500, a truncated and a schema-invalid reply


def mixed_plans(batch: Sequence[GeneratedInvoice]) -> dict[int, list[Behaviour]]:
    """Twelve items, every fault once among clean ones: transient faults recover, permanent ones fail their item.

    The breaker counts calls that gave up (not attempts), so only the permanent faults count toward it.
    """
    assert len(batch) == 12
    bad_output = dict(input_tokens=BAD_OUTPUT_TOKENS[0], output_tokens=BAD_OUTPUT_TOKENS[1])
    return {
        **{i: [answer(batch[i])] for i in (0, 2, 4, 7, 10)},
        1: [RateLimited(retry_after=RETRY_AFTER_S), answer(batch[1])],
        3: [ServerError()],  # permanent
        5: [DropConnection(), answer(batch[5])],
        6: [Truncated(**bad_output)],  # never retried
        8: [SchemaInvalid(**bad_output), answer(batch[8])],  # never retried, though a retry would be answered
        9: [Unavailable(), Unavailable(), answer(batch[9])],
        11: [Slow(seconds=600), answer(batch[11])],
    }


def catalog_text(endpoints: dict[str, str]) -> str:
    """Every shipped model disabled but the given ones, each pointed at its loopback server."""
    lines = ["models:"]
    for model in SHIPPED_MODELS:
        if model in endpoints:
            lines += [f"  - id: {model}", f"    endpoint: {endpoints[model]}"]
        else:
            lines += [f"  - id: {model}", "    enabled: false"]
    return "\n".join(lines) + "\n"


def gateway_resource(catalog_path: "str | Path", timeout_s: float = TIMEOUT_S,
                     transport_process: bool = False) -> ModelGatewayResource:
    """``transport_process``: every batch sends its calls from a child process (``transport_process``), else none does."""
    return ModelGatewayResource(
        catalog_path=str(catalog_path), openai_api_key=KEY, anthropic_api_key=KEY, timeout_s=timeout_s,
        retry_max_attempts=MAX_ATTEMPTS, retry_base_delay_s=0.01, retry_max_delay_s=0.02,
        # One item at a time: the breaker's consecutive-failure count then follows the layout, whatever the
        # scheduler (run_ai_task is becoming concurrent; max_concurrency bounds it).
        max_concurrency=1, transport_process_min_items=1 if transport_process else None,
    )


@dataclass
class FaultRun:
    """What one batch did: outcomes, what the server received, the ledger's rows and the run's call spans."""

    name: str
    protocol: str
    model: str
    url: str
    documents: list[Document]
    outcomes: list[ItemOutcome]
    requests: int  # HTTP requests the server received
    item_requests: list[int]  # per document, in batch order
    calls: pd.DataFrame
    spans: list[dict]  # every span of the run
    gateway: ModelGateway

    @property
    def results(self):
        return [r for o in self.outcomes for r in o.attempts]

    @property
    def call_spans(self) -> list[dict]:
        return [s for s in self.spans if "gen_ai.operation.name" in s["attributes"]]

    @property
    def attempt_events(self) -> list[dict]:
        return [e for s in self.call_spans for e in s["events"] if e["name"] == "ai_orch.transport_attempt"]

    def summary(self) -> dict:
        ok = sum(1 for o in self.outcomes if o.error is None)
        charges = self.calls
        duplicates = int(charges.duplicated(["item_id", "attempt"]).sum()) + int(charges["call_id"].duplicated().sum())
        return {
            "protocol": self.protocol, "model": self.model, "items": len(self.outcomes), "ok": ok,
            "failed": len(self.outcomes) - ok,
            "failed_items": [o.document.id for o in self.outcomes if o.error is not None],
            "http_requests": self.requests,
            "transport_attempts": sum(r.transport_attempts for r in self.results),
            "retries": self.requests - sum(1 for r in self.results if r.attempt_log),
            "ledger_rows": len(charges), "ledger_charged_rows": int((charges["cost_usd"] > 0).sum()),
            "duplicate_charges": duplicates,
            "ledger_cost_usd": round(float(charges["cost_usd"].sum()), 8),
            "results_cost_usd": round(sum(r.cost_usd for r in self.results), 8),
            "call_spans": len(self.call_spans), "trace_attempt_events": len(self.attempt_events),
            "errors": sorted({(o.error or "")[:90] for o in self.outcomes if o.error}),
        }


def run_plans(workdir: Path, protocol: str, plans: dict[int, list[Behaviour]], *, name: str = "faults",
              batch: Optional[Sequence[GeneratedInvoice]] = None, repeat: int = 1,
              timeout_s: float = TIMEOUT_S, transport_process: bool = False) -> FaultRun:
    """Serve ``plans`` (item index → replies) and run the batch through ``run_ai_task`` ``repeat`` times on one
    gateway and one run id (``repeat=2``: a step executed again in the same process)."""
    workdir.mkdir(parents=True, exist_ok=True)
    batch = list(batch if batch is not None else invoices())
    docs = documents(batch)
    model, server_class = PROTOCOLS[protocol]
    schedule = PerDocument({batch[i].text: plan for i, plan in plans.items()},
                           default=Success(output="not planned"))
    run_id = f"{name}-{protocol}"
    with server_class(api_key=KEY, default=schedule) as server:
        catalog = workdir / "catalog.yaml"
        catalog.write_text(catalog_text({model: server.url}))
        gateway = gateway_resource(catalog, timeout_s, transport_process).gateway()
        gateway.transport_process_wait_s = 30.0 if transport_process else 0.0  # every call through the child
        ledger = DuckDBLedger(workdir / "ledger.duckdb")
        recorder = TraceRecorder(workdir / "traces.duckdb")
        try:
            outcomes: list[ItemOutcome] = []
            for _ in range(repeat):
                with recorder.run_span(run_id, "invoice_extractions", "invoice_extractions"):
                    outcomes = run_ai_task(INVOICE_EXTRACTION, docs, policy=RulesPolicy([0.25, 0.6, 0.8]), gateway=gateway,
                                           ledger=ledger, where=CallContext(run_id=run_id), tracer=recorder)
            recorder.force_flush()
        finally:
            gateway.close()
            recorder.shutdown()
        requests = len(server.requests)
        item_requests = [schedule.seen[d.text] for d in docs]
        url = server.url
    return FaultRun(name, protocol, model, url, docs, outcomes, requests, item_requests, ledger.calls(run_id),
                    TraceStore(workdir / "traces.duckdb").spans(run_id), gateway)


def run_fault(fault_name: str, protocol: str, workdir: Path, transport_process: bool = False) -> FaultRun:
    fault = FAULTS[fault_name]
    batch = invoices()
    return run_plans(workdir, protocol, fault_plans(fault, batch, protocol), name=fault_name, batch=batch,
                     transport_process=transport_process)
