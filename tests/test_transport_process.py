"""A batch's HTTP calls sent from a child process (``resources/providers/transport_process``).

Against a real OpenAI-protocol server on 127.0.0.1: the child carries the calls and gives the
same answers, ledger rows and traces as the in-process path (the fault matrix in
``test_fault_injection`` runs through it too); a child killed mid-batch costs a retry, not an
item; no child is left behind; and batches that would not gain from one do not start one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time

import pytest

from orchestration_assets.ai_task import CallContext, run_ai_task
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION
from resources.ledger import DuckDBLedger
from resources.routing import RulesPolicy
from tests.fault_harness import KEY, PROTOCOLS, answer, catalog_text, documents, gateway_resource, invoices, run_plans
from tests.protocol_servers import Gzipped, PerDocument, Slow, Success

BATCH = 12


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _ChildWatcher(threading.Thread):
    """Notes the batch's child process once it carries a call and ``when()`` holds; with ``kill``, SIGKILLs it then."""

    def __init__(self, gateway, kill: bool = False, when=lambda: True):
        super().__init__(daemon=True)
        self.gateway, self.kill, self.when, self.pid = gateway, kill, when, None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            transport = self.gateway.transport
            if transport is not None and transport.ready and transport.calls >= 1 and self.when():
                self.pid = transport.pid
                if self.kill:
                    os.kill(self.pid, signal.SIGKILL)
                return
            time.sleep(0.005)


@contextlib.contextmanager
def _slow_batch_server(tmp_path, batch, delay_s: float, **options):
    """A server answering each invoice after ``delay_s``, and a gateway whose batches send every call from a child."""
    model, server_class = PROTOCOLS["openai"]
    schedule = PerDocument({i.text: [Slow(delay_s, then=answer(i))] for i in batch}, default=Success(output="not planned"))
    with server_class(api_key=KEY, default=schedule) as server:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(catalog_text({model: server.url}))
        gateway = gateway_resource(catalog, transport_process=True, **options).gateway()
        gateway.transport_process_wait_s = 30.0  # every call through the child
        try:
            yield server, gateway
        finally:
            gateway.close()


def _run_watched(watcher: _ChildWatcher, batch, ledger: DuckDBLedger, run_id: str):
    watcher.start()
    try:
        return run_ai_task(INVOICE_EXTRACTION, documents(batch), policy=RulesPolicy([0.25, 0.6, 0.8]),
                           gateway=watcher.gateway, ledger=ledger, where=CallContext(run_id=run_id))
    finally:
        watcher.stop.set()


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_a_batch_sends_its_calls_from_a_child_process_with_the_same_answers_and_leaves_no_process(tmp_path):
    batch = invoices(BATCH, seed="transport-process")
    plans = {i: [answer(invoice)] for i, invoice in enumerate(batch)}
    in_process = run_plans(tmp_path / "in-process", "openai", plans, name="in-process", batch=batch)
    via_child = run_plans(tmp_path / "child", "openai", plans, name="child", batch=batch, transport_process=True)

    assert in_process.gateway.transport_calls == 0
    assert via_child.gateway.transport_calls == via_child.requests == BATCH
    assert [o.output.model_dump() for o in via_child.outcomes] == [o.output.model_dump() for o in in_process.outcomes]
    assert [o.output.model_dump(mode="json") for o in via_child.outcomes] == [i.truth.model_dump(mode="json") for i in batch]
    assert len(via_child.calls) == BATCH and not via_child.calls["call_id"].duplicated().any()
    assert via_child.calls["cost_usd"].sum() == pytest.approx(in_process.calls["cost_usd"].sum(), abs=1e-12)
    assert sorted(via_child.calls["input_tokens"]) == sorted(in_process.calls["input_tokens"])
    assert len(via_child.call_spans) == BATCH


def test_a_child_killed_mid_batch_costs_a_retry_in_process_not_an_item(tmp_path):
    """Calls the child carried when it died fail as dropped connections; the gateway retries them, in-process."""
    batch = invoices(BATCH, seed="transport-killed")
    # Every answer takes 0.3 s. The child dies once the server holds the first 4 requests (4 items in flight):
    # no reply has come back and no fifth item can start, so exactly those 4 calls are lost and retried.
    with _slow_batch_server(tmp_path, batch, 0.3, timeout_s=10.0) as (server, gateway):
        gateway.max_concurrency = 4
        ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
        watcher = _ChildWatcher(gateway, kill=True, when=lambda: len(server.requests) >= gateway.max_concurrency)
        outcomes = _run_watched(watcher, batch, ledger, "killed")
        requests = len(server.requests)

    assert watcher.pid is not None
    assert [o.error for o in outcomes] == [None] * BATCH
    assert [o.output.model_dump(mode="json") for o in outcomes] == [i.truth.model_dump(mode="json") for i in batch]
    retried = [o for o in outcomes if len(o.result.attempt_log) > 1]
    assert len(retried) == gateway.max_concurrency == 4  # the calls in flight when it died
    for outcome in retried:  # a dropped connection on the first attempt, answered on the second
        assert [a["error_type"] for a in outcome.result.attempt_log] == ["connection_error", None]
    # The killed calls were answered into a closed socket: a request more each, and still one charge per item.
    assert requests == BATCH + 4
    calls = ledger.calls("killed")
    assert len(calls) == BATCH and not calls["item_id"].duplicated().any()
    assert _wait_gone(watcher.pid)


def test_the_child_exits_after_its_batch(tmp_path):
    batch = invoices(4, seed="transport-exit")
    with _slow_batch_server(tmp_path, batch, 0.2) as (_, gateway):
        watcher = _ChildWatcher(gateway)
        outcomes = _run_watched(watcher, batch, DuckDBLedger(tmp_path / "ledger.duckdb"), "exits")
    assert all(o.error is None for o in outcomes) and gateway.transport_calls == 4
    assert watcher.pid is not None and watcher.pid != os.getpid()
    assert _wait_gone(watcher.pid), "the transport process outlived its batch"


@pytest.mark.parametrize("items,min_items,http_model,endpoint_limit,started", [
    (12, 64, True, 16, False),  # below the threshold
    (12, None, True, 16, False),  # switched off
    (12, 12, False, 16, False),  # nothing to send over HTTP: an in-process model only
    (12, 12, True, 1, False),  # one call at a time (a local llama.cpp server): nothing waits behind the batch
    (12, 12, True, 16, True),
])
def test_a_batch_starts_a_child_only_when_it_can_gain_from_one(tmp_path, items, min_items, http_model, endpoint_limit,
                                                               started):
    batch = invoices(items, seed="transport-threshold")
    model, server_class = PROTOCOLS["openai"]
    schedule = PerDocument({i.text: [answer(i)] for i in batch})
    with server_class(api_key=KEY, default=schedule) as server:
        catalog = tmp_path / "catalog.yaml"
        text = catalog_text({model: server.url})
        if not http_model:  # the hosted model off, the in-process rules extractor on
            text = text.replace(f"  - id: {model}\n    endpoint: {server.url}", f"  - id: {model}\n    enabled: false")
            text = text.replace("  - id: rules-invoice\n    enabled: false", "  - id: rules-invoice")
        catalog.write_text(text)
        gateway = gateway_resource(catalog).gateway()
        gateway.transport_process_min_items = min_items
        gateway.endpoint_concurrency = endpoint_limit
        gateway.transport_process_wait_s = 30.0
        try:
            outcomes = run_ai_task(INVOICE_EXTRACTION, documents(batch), policy=RulesPolicy([0.25, 0.6, 0.8]),
                                   gateway=gateway, ledger=DuckDBLedger(tmp_path / "ledger.duckdb"),
                                   where=CallContext(run_id="threshold"))
        finally:
            gateway.close()
    assert len(outcomes) == items
    assert gateway.transport_calls == (items if started else 0)


@pytest.mark.parametrize("via_child", [False, True], ids=["in-process", "transport-process"])
def test_a_gzip_compressed_reply_is_read_on_both_paths(tmp_path, via_child):
    """aiohttp hands over the body decompressed: its Content-Encoding must not make httpx decode it twice."""
    batch = invoices(4, seed="gzip")
    plans = {i: [Gzipped(invoice.truth.model_dump(mode="json"), input_tokens=500, output_tokens=90)]
             for i, invoice in enumerate(batch)}
    run = run_plans(tmp_path, "openai", plans, name="gzip", batch=batch, transport_process=via_child)
    assert [o.error for o in run.outcomes] == [None] * 4 and run.requests == 4
    assert [o.output.model_dump(mode="json") for o in run.outcomes] == [i.truth.model_dump(mode="json") for i in batch]
    assert run.gateway.transport_calls == (4 if via_child else 0)


@pytest.mark.parametrize("executable", [None, "", "/nonexistent/python"])
def test_a_child_that_cannot_start_leaves_every_call_in_process(tmp_path, monkeypatch, executable):
    """Neither way starts one: no fork (refused here), and no interpreter to spawn."""
    def refused():
        raise OSError("fork refused")

    monkeypatch.setattr("os.fork", refused)
    monkeypatch.setattr("sys.executable", executable)
    batch = invoices(3, seed="no-child")
    run = run_plans(tmp_path, "openai", {i: [answer(invoice)] for i, invoice in enumerate(batch)}, name="no-child",
                    batch=batch, transport_process=True)
    assert [o.error for o in run.outcomes] == [None] * 3 and run.gateway.transport_calls == 0


def test_without_fork_the_child_is_a_new_interpreter_and_carries_the_calls(tmp_path, monkeypatch):
    monkeypatch.delattr("os.fork")
    batch = invoices(3, seed="spawned")
    run = run_plans(tmp_path, "openai", {i: [answer(invoice)] for i, invoice in enumerate(batch)}, name="spawned",
                    batch=batch, transport_process=True)
    assert [o.error for o in run.outcomes] == [None] * 3 and run.gateway.transport_calls == 3
    assert [o.output.model_dump(mode="json") for o in run.outcomes] == [i.truth.model_dump(mode="json") for i in batch]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists open descriptors through /proc (Linux)")
def test_a_forked_child_holds_no_descriptor_of_its_parent_but_its_socket(tmp_path):
    """The parent's journal (and its lock), database files and connections stay the parent's alone."""
    batch = invoices(4, seed="forked-fds")
    seen: dict[int, str] = {}
    with _slow_batch_server(tmp_path, batch, 0.3) as (_, gateway):
        def descriptors() -> bool:  # read while the child carries the batch's calls
            pid = gateway.transport.pid
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    seen[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
                except OSError:
                    pass
            return True

        watcher = _ChildWatcher(gateway, when=descriptors)
        outcomes = _run_watched(watcher, batch, DuckDBLedger(tmp_path / "ledger.duckdb"), "fds")
    assert all(o.error is None for o in outcomes) and gateway.transport_calls == 4
    assert watcher.pid is not None and seen
    assert not [target for target in seen.values() if str(tmp_path) in target], seen  # no journal, no database file
    assert seen[0] == seen[1] == os.devnull
    others = {fd: target for fd, target in seen.items() if fd > 2}
    # Its own socket, the connections it opened to the server, its event loop's selector and wake-up pair.
    assert all(target.startswith(("socket:", "anon_inode:")) for target in others.values()), others


@pytest.mark.skipif(not hasattr(os, "fork"), reason="only a forked child takes jobs")
def test_a_job_the_child_cannot_take_is_left_to_the_caller(tmp_path):
    """An unpicklable job is refused (None: the caller computes it), and nothing waits for it."""
    import asyncio

    from resources.providers.transport_process import TransportProcess

    async def scenario():
        transport = await TransportProcess().start()
        try:
            assert await transport.wait_ready(30.0) and transport.forked
            refused = transport.submit(lambda: 1)  # a lambda cannot be pickled
            taken = transport.submit(functools.partial(sum, [1, 2, 3]))
            return refused, await taken, len(transport._waiting)
        finally:
            await transport.aclose()

    refused, answer, waiting = asyncio.run(scenario())
    assert refused is None
    assert answer == ("done", True, 6)
    assert waiting == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="only a forked child takes jobs")
def test_a_job_rides_with_the_next_request_or_goes_alone_soon_after():
    """One write (one wake-up of the child) per call, not two: a job's frame waits for the next request's."""
    import asyncio
    import socket

    from resources.providers.transport_process import JOB_DELAY_S, TransportProcess

    with socket.socket() as sock:  # a port nothing listens on: the request fails fast, as a refused connection
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"

    async def scenario():
        transport = await TransportProcess().start()
        writes: list[bytes] = []
        write = transport._write
        transport._write = lambda data: (writes.append(data), write(data))[-1]
        try:
            assert await transport.wait_ready(30.0) and transport.forked
            alone = transport.submit(functools.partial(sum, [1, 2]))
            assert writes == []  # held back for a request to ride with
            answered_alone = await asyncio.wait_for(alone, 10)
            alone_writes = len(writes)
            riding = transport.submit(functools.partial(sum, [3, 4]))
            reply = await transport.post(url, b"{}", {"content-type": "application/json"}, proxy=None,
                                         connect_s=5.0, read_s=5.0)
            answered_riding = await asyncio.wait_for(riding, 10)
            await asyncio.sleep(2 * JOB_DELAY_S)  # the timer that no longer has anything to send
            return answered_alone, alone_writes, answered_riding, reply, len(writes)
        finally:
            await transport.aclose()

    answered_alone, alone_writes, answered_riding, reply, writes = asyncio.run(scenario())
    assert answered_alone == ("done", True, 3) and alone_writes == 1
    assert answered_riding == ("done", True, 7)
    assert reply[0] == "fault" and reply[1] == "ConnectError"
    assert writes == 2  # the request and the job that rode with it: one write


def test_without_a_wait_the_first_wave_leaves_in_process_and_the_child_carries_the_rest(tmp_path):
    """The child is forked once the first wave's requests are out (nothing waits then), not before them."""
    batch = invoices(BATCH, seed="transport-first-wave")
    with _slow_batch_server(tmp_path, batch, 0.3) as (server, gateway):
        gateway.max_concurrency = 4
        gateway.transport_process_wait_s = 0.0  # the default: no call waits for the child
        started = []
        start = gateway.batch_transport

        def noted(items, first_wave=0):  # what the batch asks for
            started.append(first_wave)
            return start(items, first_wave)

        gateway.batch_transport = noted
        ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
        outcomes = run_ai_task(INVOICE_EXTRACTION, documents(batch), policy=RulesPolicy([0.25, 0.6, 0.8]),
                               gateway=gateway, ledger=ledger, where=CallContext(run_id="first-wave"))
        requests = len(server.requests)
    assert started == [4]
    assert [o.output.model_dump(mode="json") for o in outcomes] == [i.truth.model_dump(mode="json") for i in batch]
    assert requests == BATCH and gateway.transport_calls == BATCH - 4  # the first wave's 4 went in-process
    calls = ledger.calls("first-wave")
    assert len(calls) == BATCH and calls["features"].notna().all()  # the first wave's features computed here


def test_a_batch_that_ends_before_its_child_starts_leaves_no_child(tmp_path):
    """One fast call: the batch can end before the deferred start runs, or while the fork is being wired up."""
    import glob

    def children() -> set[int]:
        found = set()
        for status in glob.glob("/proc/[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in open(status).read().splitlines() if ":\t" in line)
            except OSError:
                continue
            if fields.get("PPid", "").strip() == str(os.getpid()):
                found.add(int(status.split("/")[2]))
        return found

    batch = invoices(1, seed="transport-early-end")
    before = children() if os.path.isdir("/proc") else set()
    for attempt in range(5):
        (tmp_path / str(attempt)).mkdir()
        with _slow_batch_server(tmp_path / str(attempt), batch, 0.0) as (_, gateway):
            gateway.transport_process_wait_s = 0.0
            outcomes = run_ai_task(INVOICE_EXTRACTION, documents(batch), policy=RulesPolicy([0.25, 0.6, 0.8]),
                                   gateway=gateway, ledger=DuckDBLedger(tmp_path / f"ledger-{attempt}.duckdb"),
                                   where=CallContext(run_id=f"early-{attempt}"))
        assert outcomes[0].error is None
    if os.path.isdir("/proc"):
        deadline = time.monotonic() + 15
        while children() - before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not children() - before, "a transport child outlived its batch"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="only a forked child takes jobs")
def test_the_child_writes_nothing_to_stderr_when_its_batch_ends_first(tmp_path):
    """Fast calls (the throughput benchmark's zero-latency endpoint, 500 items, 32 in flight) end the batch while
    jobs are still queued in the child: it drops them silently, where asyncio had warned on the step's stderr.

    In a process of its own: pytest's log capture would swallow what a plain step process prints.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = f"""
import sys, tempfile
from pathlib import Path
sys.path.insert(0, {str(root / "benchmarks")!r})
import throughput
docs = throughput._documents(500)
with throughput.latency_server(0) as url:
    for attempt in range(3):
        assert throughput.product(url, docs, 32, Path({str(tmp_path)!r}), f"quiet-{{attempt}}")[1] == 500
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "socket.send() raised exception" not in done.stderr
