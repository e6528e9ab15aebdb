"""Items of one batch run concurrently, bounded per step and per endpoint; outcomes keep the documents' order.

A real OpenAI-protocol server on 127.0.0.1 holds every request for a while and counts how many
it has in flight at once: the bound the product promises is what the server sees.
"""

import dataclasses
import threading
import time
from dataclasses import dataclass, field

import pytest

from orchestration_assets.ai_task import CallContext, run_ai_task
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION
from orchestration_assets.invoices.generator import generate_invoices
from orchestration_assets.invoices.quality import failed_rules, invoice_item_check
from orchestration_assets.invoices.schema import InvoiceExtraction, LineItem
from resources.classification import DataClassification
from resources.documents import Document
from resources.ledger import DuckDBLedger
from resources.model_gateway import ModelGatewayResource
from resources.complexity import estimate_complexity
from resources.routing import RoutingItem, RulesPolicy, item_features
from resources.routing_features import FeatureSpace, decode_sketch
from resources.spend_guard import SpendGuard
from tests.protocol_servers import Behaviour, Exchange, OpenAIChatServer

KEY = "sk-test-concurrency"
ANSWER = {"vendor": "ACME Ltd", "invoice_number": "INV-1", "date": "2026-03-14", "currency": "EUR", "total": 12.0,
          "tax": 2.0, "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 5.0, "amount": 10.0}],
          "notes": None}


@dataclass
class Held(Behaviour):
    """Answer after ``seconds``, counting requests in flight (the server is threaded: one thread a request)."""

    seconds: float = 0.3
    in_flight: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, exchange: Exchange) -> None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.seconds)
        with self.lock:
            self.in_flight -= 1
        exchange.send_success(ANSWER, input_tokens=200, output_tokens=60)


def _run(tmp_path, server, documents, *, max_concurrency, endpoint_limit=None, task=INVOICE_EXTRACTION):
    catalog = tmp_path / "catalog.yaml"
    limit = f"\n    max_concurrency: {endpoint_limit}" if endpoint_limit else ""
    catalog.write_text(f"models:\n  - id: rules-invoice\n    enabled: false\n  - id: local-gemma3-270m\n    enabled: false\n"
                       f"  - id: gpt-4o-mini\n    endpoint: {server.url}{limit}\n")
    gateway = ModelGatewayResource(catalog_path=str(catalog), openai_api_key=KEY, max_concurrency=max_concurrency,
                                   endpoint_concurrency=64).gateway()
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    try:
        outcomes = run_ai_task(task, documents, policy=RulesPolicy([0.25, 0.6, 0.8]), gateway=gateway, ledger=ledger,
                               where=CallContext(run_id="concurrent"))
    finally:
        gateway.close()
    return outcomes, ledger.calls("concurrent")


def _documents(n):
    return [Document(id=f"doc-{i:02d}", text=inv.text, classification=DataClassification.PUBLIC)
            for i, inv in enumerate(generate_invoices(n, seed="concurrency"))]


def test_a_batch_keeps_exactly_max_concurrency_calls_in_flight_and_its_order(tmp_path):
    held = Held()
    documents = _documents(12)
    with OpenAIChatServer(api_key=KEY, default=held) as server:
        outcomes, calls = _run(tmp_path, server, documents, max_concurrency=4)
    assert held.most == 4  # concurrent, and never past the step's bound
    assert [o.document.id for o in outcomes] == [d.id for d in documents]  # the documents' order, not completion order
    assert all(o.error is None for o in outcomes)
    assert sorted(calls["item_id"]) == [d.id for d in documents]  # every call recorded once, through the write-behind journal
    assert calls["call_id"].is_unique


def test_the_catalog_limit_of_an_endpoint_caps_calls_in_flight_below_the_step_bound(tmp_path):
    held = Held(seconds=0.2)
    with OpenAIChatServer(api_key=KEY, default=held) as server:
        outcomes, _ = _run(tmp_path, server, _documents(8), max_concurrency=8, endpoint_limit=2)
    assert held.most == 2
    assert all(o.error is None for o in outcomes)


def test_an_item_that_raises_fails_alone_and_names_the_exception(tmp_path):
    documents = _documents(5)
    poisoned = documents[2].id

    seen = []

    def check(output: InvoiceExtraction):
        seen.append(output)
        if len(seen) == 3:  # one item at a time: the third document's answer
            raise RuntimeError("check exploded")
        return None

    task = dataclasses.replace(INVOICE_EXTRACTION, check=check)
    with OpenAIChatServer(api_key=KEY, default=Held(seconds=0.0)) as server:
        outcomes, calls = _run(tmp_path, server, documents, max_concurrency=1, task=task)
    failed = [o for o in outcomes if o.error is not None]
    assert [o.document.id for o in failed] == [poisoned]
    assert failed[0].error == "item failed: RuntimeError: check exploded"
    assert [o.error for o in outcomes if o.document.id != poisoned] == [None] * 4


@pytest.mark.parametrize("row", [
    dict(vendor="A", date="2026-01-02", total=12.0, tax=2.0, lines=10.0),
    dict(vendor="A", date="2026-01-02", total=12.0, tax=None, lines=10.0),
    dict(vendor=None, date="02/01/2026", total=-1.0, tax=None, lines=None),
    dict(vendor="A", date=None, total=None, tax=1.0, lines=5.0),
    dict(vendor="A", date="2026-01-02", total=10.03, tax=0.0, lines=10.0),
    dict(vendor="A", date="2026-01-02", total=10.02, tax=0.0, lines=10.0),
    dict(vendor="", date="2026-1-2", total=0.0, tax=float("nan"), lines=0.0),
])
def test_the_per_item_check_equals_the_batch_rules(row):
    """The per-item check runs without pandas; it must judge exactly as the batch filter does."""
    import pandas as pd

    items = [] if row["lines"] is None else [LineItem(description="x", amount=row["lines"])]
    extraction = InvoiceExtraction.model_construct(vendor=row["vendor"], date=row["date"], total=row["total"],
                                                   tax=row["tax"], line_items=items)
    frame = pd.DataFrame([{"vendor": row["vendor"], "date": row["date"], "total": row["total"], "tax": row["tax"],
                           "line_items_total": row["lines"]}])
    expected = failed_rules(frame, 0.02)[0]
    assert invoice_item_check(extraction) == (("failed: " + ", ".join(expected)) if expected else None)


def test_a_batch_started_from_inside_a_running_event_loop_still_runs(tmp_path):
    """From a notebook or an async caller: the batch gets its own loop in a worker thread, same results."""
    import asyncio

    documents = _documents(3)

    async def caller():
        with OpenAIChatServer(api_key=KEY, default=Held(seconds=0.0)) as server:
            return _run(tmp_path, server, documents, max_concurrency=2)

    outcomes, calls = asyncio.run(caller())
    assert [o.document.id for o in outcomes] == [d.id for d in documents]
    assert all(o.error is None for o in outcomes) and len(calls) == 3


def test_the_startup_heap_sits_out_collections_during_a_batch_and_is_handed_back_after(tmp_path):
    """A full collection of the process's heap pauses every call in flight; a batch parks that heap, then returns it."""
    import gc

    @dataclass
    class Watching(Held):
        frozen: list = field(default_factory=list)

        def serve(self, exchange: Exchange) -> None:
            self.frozen.append(gc.get_freeze_count())
            super().serve(exchange)

    before = gc.get_freeze_count()
    watching = Watching(seconds=0.0)
    with OpenAIChatServer(api_key=KEY, default=watching) as server:
        outcomes, calls = _run(tmp_path, server, _documents(3), max_concurrency=2)
    assert all(o.error is None for o in outcomes) and len(calls) == 3
    assert len(watching.frozen) == 3 and min(watching.frozen) > 10_000  # Dagster, pandas, pydantic: parked
    assert gc.get_freeze_count() == before == 0  # handed back to the collector


class _DiskFullFor(SpendGuard):
    """A guard whose recording of one item's call fails, as a full disk fails the journal write."""

    def __init__(self, ledger, item_id):
        super().__init__(ledger, enforce=False)
        self.item_id = item_id

    def settle(self, reservation, records, writer=None, outputs=()):
        if any(r.item_id == self.item_id for r in records):
            raise OSError(28, "No space left on device")
        super().settle(reservation, records, writer=writer, outputs=outputs)


def _hosted_batch(tmp_path, documents, run_id: str, held_s: float, guard_for=None):
    """``documents`` through a loopback OpenAI-compatible endpoint answering after ``held_s``, 4 in flight:
    (outcomes, ledger, HTTP requests the endpoint received). ``guard_for(ledger)``: the batch's spend guard."""
    catalog = tmp_path / "catalog.yaml"
    with OpenAIChatServer(api_key=KEY, default=Held(seconds=held_s)) as server:
        catalog.write_text("models:\n  - id: rules-invoice\n    enabled: false\n  - id: local-gemma3-270m\n    enabled: false\n"
                           f"  - id: gpt-4o-mini\n    endpoint: {server.url}\n")
        gateway = ModelGatewayResource(catalog_path=str(catalog), openai_api_key=KEY, max_concurrency=4).gateway()
        ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
        try:
            outcomes = run_ai_task(INVOICE_EXTRACTION, documents, policy=RulesPolicy([0.25, 0.6, 0.8]), gateway=gateway,
                                   ledger=ledger, where=CallContext(run_id=run_id),
                                   guard=guard_for(ledger) if guard_for else None)
        finally:
            gateway.close()
        return outcomes, ledger, len(server.requests)


def test_a_call_whose_recording_fails_fails_its_item_alone_and_the_rest_are_recorded_with_their_features(tmp_path):
    """Records are written after the next request goes out (``_Batch.later``): a failure there still names its item,
    and every other call's row, its routing features included, is in the ledger when the batch returns."""
    documents = _documents(8)
    outcomes, ledger, _ = _hosted_batch(tmp_path, documents, "disk-full", 0.05, lambda ledger: _DiskFullFor(ledger, "doc-03"))
    errors = {o.document.id: o.error for o in outcomes}
    assert errors.pop("doc-03") == "item failed: recording failed: OSError: [Errno 28] No space left on device"
    assert set(errors.values()) == {None}
    calls = ledger.calls("disk-full").set_index("item_id")
    assert sorted(calls.index) == sorted(errors)
    for document in documents:
        if document.id in errors:
            item = RoutingItem(item_id=document.id, task=INVOICE_EXTRACTION.name, text=document.text,
                               classification=document.classification, attributes=dict(INVOICE_EXTRACTION.attributes))
            expected = item_features(item, estimate_complexity(document.text), FeatureSpace())
            assert decode_sketch(calls.loc[document.id, "features"]) == pytest.approx(expected, rel=1e-6)


def test_a_second_document_with_an_id_already_in_the_batch_fails_alone_and_is_never_answered_with_the_firsts(tmp_path):
    """An id keys its item's idempotency key: the second document had been answered from the first one's call."""
    first, second, other = _documents(3)
    second = second.model_copy(update={"id": first.id})
    outcomes, ledger, sent = _hosted_batch(tmp_path, [first, second, other], "twice", 0.01)
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert outcomes[1].error.startswith(f"unreadable input: duplicate id {first.id!r}")
    assert outcomes[1].result is None and sent == 2
    assert sorted(ledger.calls("twice")["item_id"]) == sorted([first.id, other.id])
