"""A batch's HTTP calls sent from a child process, so the batch's own work never delays them.

Why: a batch runs its items on one event loop, and each item costs the loop about 2 ms of
Python (routing, schema validation, ledger, audit, trace). A reply that arrives while the
loop works waits its turn, and so does the request that follows it: measured against a
100 ms endpoint with 32 calls in flight, replies took 130 ms on average and the batch ran at
0.65 of the bound N × latency ÷ concurrency, while a bare aiohttp loop reached 0.91. Here the
child process owns the connections (its loop does nothing but HTTP, on the other core) and
the batch hands it request bytes over a socket pair: measured the same way, a loop with 2 ms
of synthetic work per item went from 0.70 to 0.91 of the bound, and the product (more work,
plus its start and end) from 0.62 to 0.71 (``benchmarks/throughput.py``), replies in 103 ms.
vLLM's OpenAI server splits its API process from its engine for the same reason.

What crosses the socket: the request (URL, headers, the JSON body's bytes, proxy, timeouts)
and the reply (status, headers, body bytes) or the transport fault in
``aiohttp_faults``' words, so an error reads, and is retried, exactly as on the
in-process path. Nothing is written anywhere: sensitive inputs stay in memory, as before.

Lifetime: one child per batch (``ModelGateway.batch_transport``), forked where the platform
can (ready in about 10 ms), else spawned as a new interpreter (about 0.3 s, its imports),
and started without waiting: calls go through the in-process session until the child says
it is ready, so no call waits for it. The child exits when the socket closes (end of batch,
or the parent died); if the child dies, the calls in flight fail as dropped connections,
the gateway retries them, and the retries go in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import itertools
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

_FRAME = struct.Struct("<I")
JOB_DELAY_S = 0.002  # the longest a job's frame waits for a request's to ride with (``TransportProcess.submit``)
_ROOT = str(Path(__file__).resolve().parents[2])  # so the child finds ``resources`` however the parent was started
_CHILD_EXITED = ("ReadError", "the HTTP transport process exited", False)
_MAX_FD = 65536  # where the open descriptors cannot be listed, those below this are closed in a forked child


def _framed(message: tuple) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


class TransportProcess:
    """The parent's end: ``post`` a request, await its reply frame. One per batch, on the batch's event loop."""

    def __init__(self) -> None:
        self.ready = False  # the child answered its hello: calls may go through it
        self._ready = asyncio.Event()
        self._gone = False  # the child exited (or never started): every call from now on stays in-process
        self.calls = 0  # calls it carried
        self.forked = False  # a fork of this process (it takes jobs), not a new interpreter
        self.pid: Optional[int] = None
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future] = {}
        self._process: "subprocess.Popen | _ForkedChild | None" = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._pump: Optional[asyncio.Task] = None
        self._jobs: list[bytes] = []  # job frames waiting to ride with the next request (``submit``)
        self._jobs_flush: Optional[asyncio.TimerHandle] = None

    async def start(self) -> "TransportProcess":
        """Start the child and listen for its frames; returns at once (``ready`` turns True later)."""
        ours, theirs = socket.socketpair()
        try:
            self._process = _forked(theirs, ours) or _spawned(theirs)
        finally:
            theirs.close()
        if self._process is None:  # neither way could start it: every call stays in-process
            ours.close()
            self._gone = True
            return self
        self.pid = self._process.pid
        self.forked = isinstance(self._process, _ForkedChild)
        try:
            reader, self._writer = await asyncio.open_connection(sock=ours)
        except BaseException:  # cancelled (its batch ended first): the child reads the socket's end and exits
            ours.close()
            self._gone = True
            raise
        self._pump = asyncio.create_task(self._read_frames(reader), name="transport-frames")
        return self

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the child's hello; whether it is ready."""
        if self._pump is not None and timeout_s > 0:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return self.ready

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, proxy: Optional[str],
                   connect_s: Optional[float], read_s: Optional[float]) -> tuple:
        """``("reply", status, raw_headers, content, latency_s)`` or ``("fault", kind, detail, timed_out, text, latency_s)``."""
        if self._gone:  # it died between the caller's look at ``ready`` and now
            return ("fault", *_CHILD_EXITED, "", 0.0)
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self.calls += 1
        self._send(("post", request_id, url, body, dict(headers), proxy, connect_s, read_s))
        try:
            return await future
        except asyncio.CancelledError:
            if self._waiting.pop(request_id, None) is not None:
                self._send(("cancel", request_id))
            raise

    def submit(self, job: Callable[[], Any]) -> Optional[asyncio.Future]:
        """Run ``job`` (a picklable callable) in the child; a future of ``("done", True, its result)``,
        ``("done", False, its error)``, or a fault if the child dies first. None where there is no
        forked child ready to take it: the caller computes the result itself.

        Why: the batch's own process is the bottleneck of a fast batch (one interpreter lock
        routes, traces and records every item), and the child's core has room. Work an item
        needs only after its reply (its routing features) rides there while the call is in
        flight. Only a forked child takes jobs: it already has the code a job runs, where a
        spawned one would import it in the middle of the batch's calls.

        A job is not sent on its own: its frame goes out with the next request's (one write, one
        wake-up of the child, where there were two a call), or after ``JOB_DELAY_S`` if no
        request follows. The child starts the requests it has read before it runs a job.
        """
        if not self.ready or self._gone or not self.forked:
            return None
        request_id = next(self._ids)
        try:
            frame = _framed(("job", request_id, job))
        except Exception:  # noqa: BLE001 - a job that cannot be pickled: the caller computes it itself
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._jobs.append(frame)
        if self._jobs_flush is None:
            self._jobs_flush = asyncio.get_running_loop().call_later(JOB_DELAY_S, self._send_jobs)
        return future

    def _send(self, message: tuple) -> None:
        """Write ``message`` now, followed by the job frames waiting (the request first: the child starts it first)."""
        frame = _framed(message)
        if self._jobs:
            frame = b"".join([frame, *self._jobs])
            self._jobs.clear()
        self._write(frame)

    def _send_jobs(self) -> None:
        self._jobs_flush = None
        if self._jobs:
            frames = b"".join(self._jobs)
            self._jobs.clear()
            self._write(frames)

    def _write(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
                message = pickle.loads(await reader.readexactly(size))
                if message[0] == "ready":
                    self.ready = True
                    self._ready.set()
                    continue
                future = self._waiting.pop(message[1], None)
                if future is not None and not future.done():
                    future.set_result((message[0], *message[2:]))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:  # the child is gone: what it carried fails as a dropped connection, later calls stay in-process
            self.ready, self._gone = False, True
            self._ready.set()  # nobody waits for a child that will never be ready
            waiting, self._waiting = self._waiting, {}
            for future in waiting.values():
                if not future.done():
                    future.set_result(("fault", *_CHILD_EXITED, "", 0.0))

    async def aclose(self) -> None:
        """Close the socket (the child then exits) and reap the child in the background, never waiting on it here."""
        self.ready = False
        if self._jobs_flush is not None:
            self._jobs_flush.cancel()
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._process is not None:
            threading.Thread(target=_reap, args=(self._process,), name="transport-reaper", daemon=True).start()


class _ForkedChild:
    """A forked child as ``_reap`` and the tests see a ``Popen``: its pid, ``wait`` with a timeout, ``kill``."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"transport process {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _forked(theirs: socket.socket, ours: socket.socket) -> Optional[_ForkedChild]:
    """The child as a fork of this process: ready in milliseconds, where a new interpreter takes ~0.3 s.

    Why: a batch's first calls go in-process until the child is ready, and a spawned child
    spends that time importing ``aiohttp`` (0.28-0.37 s against a 100 ms endpoint: three of
    a 500-item batch's sixteen waves, and ~0.25 s of CPU taken from the batch). A fork has
    those imports already. The child touches nothing it inherits but the interpreter and
    these modules: it runs a new event loop on its own socket, closes every other inherited
    descriptor first (so no journal lock or database file is held by it), never writes to
    stdout, stderr or a file, and leaves by ``os._exit`` (no ``atexit`` handler of the
    parent's runs in it). Where ``fork`` is missing or fails, the child is spawned.
    """
    if not hasattr(os, "fork"):
        return None
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of forking a threaded process: see above
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: it never returns into the parent's frames
        code = 1
        try:
            ours.close()
            _forked_child_main(theirs.fileno())
            code = 0
        finally:
            os._exit(code)
    return _ForkedChild(pid)


def _forked_child_main(fd: int) -> None:
    gc.freeze()  # the inherited heap is never collected here: its pages stay shared with the parent
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    _close_inherited(keep=fd)
    for name in ("SIGTERM", "SIGHUP"):  # the parent's handlers (Dagster's among them) are not the child's
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # the parent loop's wakeup descriptor, closed above
    asyncio.events._set_running_loop(None)  # forked from inside the parent's running loop
    main(["forked", str(fd)])


def _close_inherited(keep: int) -> None:
    """Close every descriptor above stderr but ``keep``: those open (Linux lists them), else the whole range."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, keep)
        os.closerange(keep + 1, _MAX_FD)
        return
    for descriptor in open_fds:
        if descriptor > 2 and descriptor != keep:
            with contextlib.suppress(OSError):  # the listing's own descriptor, already closed
                os.close(descriptor)


def _spawned(theirs: socket.socket) -> Optional[subprocess.Popen]:
    """The child as a new interpreter (``python -S -m`` this module), where there is no ``fork``."""
    if not sys.executable:  # an embedded interpreter may not know its own executable
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-S", "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()], env=_child_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
    except (OSError, ValueError, TypeError):  # no such executable, or one Popen cannot even take
        return None


def _child_env() -> dict[str, str]:
    """The child's environment: this process's import path handed over whole, so it runs with ``-S``.

    ``-S`` skips ``site`` and the ``.pth`` files of site-packages (an editable install's
    import hook among them): about 50 ms of the child's ~0.25 s start. The path it would
    have built is this one, so it imports the same ``aiohttp`` and the same ``resources``.
    """
    entries = [_ROOT, *(entry for entry in sys.path if entry and os.path.exists(entry))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(entries))}


def _reap(process: "subprocess.Popen | _ForkedChild", grace_s: float = 10.0) -> None:
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The batch's transport, seen by every call its items make (tasks inherit the context they were created in).
BATCH_TRANSPORT: contextvars.ContextVar[Optional[TransportProcess]] = contextvars.ContextVar("batch_transport", default=None)


# ------------------------------------------------------------------------------------------------ the child


async def _serve(fd: int) -> None:
    import aiohttp

    from resources.providers.aiohttp_faults import aiohttp_fault  # aiohttp alone: the child is ready sooner

    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    # ssl=True: aiohttp's verifying default context, built at its import (a second one costs ~30 ms of start).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=True))
    tasks: dict[int, asyncio.Task] = {}

    def send(message: tuple) -> None:
        if not writer.is_closing():  # the parent has gone (end of batch): asyncio would warn on stderr per write
            writer.write(_framed(message))

    def run_job(request_id: int, job: Callable[[], Any]) -> None:
        if writer.is_closing():  # the batch ended while the job waited its turn: nobody reads the answer
            return
        try:
            send(("done", request_id, True, job()))
        except Exception as exc:  # noqa: BLE001 - the parent computes it itself
            send(("done", request_id, False, f"{type(exc).__name__}: {exc}"))

    async def post(request_id: int, url: str, body: bytes, headers: dict, proxy: Optional[str],
                   connect_s: Optional[float], read_s: Optional[float]) -> None:
        timeout = aiohttp.ClientTimeout(total=None if read_s is None else max(read_s, connect_s or 0.0),  # request_deadline_s
                                        sock_connect=connect_s, sock_read=read_s)
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers, proxy=proxy, timeout=timeout) as response:
                content = await response.read()
            send(("reply", request_id, response.status, list(response.raw_headers), content, time.perf_counter() - started))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the parent words it, as for its own session's faults
            kind, detail, timed_out = aiohttp_fault(exc)
            send(("fault", request_id, kind, detail, timed_out, f"{type(exc).__name__}: {exc}", time.perf_counter() - started))
        finally:
            tasks.pop(request_id, None)

    send(("ready", os.getpid()))
    try:
        while True:
            (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
            message: Any = pickle.loads(await reader.readexactly(size))
            if message[0] == "post":
                tasks[message[1]] = asyncio.create_task(post(*message[1:]))
            elif message[0] == "job":  # after the requests read before it have been started (their tasks run first)
                asyncio.get_running_loop().call_soon(run_job, message[1], message[2])
            elif message[0] == "cancel" and message[1] in tasks:
                tasks[message[1]].cancel()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the parent closed the socket (end of batch) or died
    finally:
        writer.close()  # what is still queued (a job, a late reply) has nobody to read it
        for task in list(tasks.values()):
            task.cancel()
        await session.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends it by closing the socket, after its own cleanup
    asyncio.run(_serve(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
