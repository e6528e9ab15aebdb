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

Lifetime: one child per batch (``ModelGateway.batch_transport``), started without waiting:
calls go through the in-process session until the child says it is ready (about 0.2 s,
its imports), so no call waits for it. The child exits when the socket closes (end of batch,
or the parent died); if the child dies, the calls in flight fail as dropped connections,
the gateway retries them, and the retries go in-process.
"""

from __future__ import annotations

import asyncio
import contextvars
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
from pathlib import Path
from typing import Any, Mapping, Optional

_FRAME = struct.Struct("<I")
_ROOT = str(Path(__file__).resolve().parents[2])  # so the child finds ``resources`` however the parent was started
_CHILD_EXITED = ("ReadError", "the HTTP transport process exited", False)


class TransportProcess:
    """The parent's end: ``post`` a request, await its reply frame. One per batch, on the batch's event loop."""

    def __init__(self) -> None:
        self.ready = False  # the child answered its hello: calls may go through it
        self._ready = asyncio.Event()
        self._gone = False  # the child exited (or never started): every call from now on stays in-process
        self.calls = 0  # calls it carried
        self.pid: Optional[int] = None
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future] = {}
        self._process: Optional[subprocess.Popen] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._pump: Optional[asyncio.Task] = None

    async def start(self) -> "TransportProcess":
        """Start the child and listen for its frames; returns at once (``ready`` turns True later)."""
        if not sys.executable:  # an embedded interpreter may not know its own executable: stay in-process
            self._gone = True
            return self
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()], env=_child_env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        except (OSError, ValueError, TypeError):  # no such executable, or one Popen cannot even take
            ours.close()
            self._gone = True
            return self  # never ready: every call stays in-process
        finally:
            theirs.close()
        self.pid = self._process.pid
        reader, self._writer = await asyncio.open_connection(sock=ours)
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

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(_FRAME.pack(len(data)) + data)

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
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._process is not None:
            threading.Thread(target=_reap, args=(self._process,), name="transport-reaper", daemon=True).start()


def _child_env() -> dict[str, str]:
    """The child's environment: this process's import path handed over whole, so it runs with ``-S``.

    ``-S`` skips ``site`` and the ``.pth`` files of site-packages (an editable install's
    import hook among them): about 50 ms of the child's ~0.25 s start. The path it would
    have built is this one, so it imports the same ``aiohttp`` and the same ``resources``.
    """
    entries = [_ROOT, *(entry for entry in sys.path if entry and os.path.exists(entry))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(entries))}


def _reap(process: subprocess.Popen, grace_s: float = 10.0) -> None:
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
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        writer.write(_FRAME.pack(len(data)) + data)

    async def post(request_id: int, url: str, body: bytes, headers: dict, proxy: Optional[str],
                   connect_s: Optional[float], read_s: Optional[float]) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)
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
            elif message[0] == "cancel" and message[1] in tasks:
                tasks[message[1]].cancel()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the parent closed the socket (end of batch) or died
    finally:
        for task in list(tasks.values()):
            task.cancel()
        await session.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends it by closing the socket, after its own cleanup
    asyncio.run(_serve(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
