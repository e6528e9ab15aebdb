"""A llama.cpp model served on 127.0.0.1, started on first use and stopped with the step.

Why a server and not the model in-process: the local model then speaks the same
OpenAI-compatible protocol, through the same adapter, as a hosted model or an on-prem
vLLM/Ollama endpoint, so the path tested offline is the path used in production; the
575 MB model lives in its own process, not in every Dagster step process; and swapping it
for a GPU server is a catalog change (set ``endpoint``), not a code change. It costs about
a second of start-up per step that uses it.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import httpx

from resources.catalog import LocalServerSpec


class LocalServerError(RuntimeError):
    """The local model server could not be started."""


def local_server_unavailable_reason(spec: LocalServerSpec) -> Optional[str]:
    """Why this server cannot run here, or None when it can (cheap: imports nothing heavy)."""
    if spec.kind != "llama_cpp":
        return f"unknown local server kind {spec.kind!r}"
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    if spec.model_path:
        return None if Path(spec.model_path).expanduser().is_file() else f"model file {spec.model_path} not found"
    if spec.model_package and importlib.util.find_spec(spec.model_package) is None:
        return f"model package {spec.model_package} is not installed"
    if not spec.model_path and not spec.model_package:
        return "local_server needs model_path or model_package"
    return None


def resolve_model_path(spec: LocalServerSpec) -> Path:
    if spec.model_path:
        return Path(spec.model_path).expanduser()
    module = importlib.import_module(spec.model_package)  # type: ignore[arg-type]
    return Path(module.assemble())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ``python -m llama_cpp.server``, stopped when the process that started it is gone. It runs in its own
# session (a Ctrl-C in a terminal is for the step, which stops it), so nothing else would stop it when
# that process is killed (SIGKILL, OOM): it would hold its port and ~600 MB for good. Its parent gone,
# it is re-parented, and it stops itself as on a normal stop (SIGTERM: uvicorn shuts down cleanly).
_SERVER_OUTLIVING_NO_PARENT = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)
threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv = ["llama_cpp.server", *sys.argv[2:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _drain(stream, tail: "collections.deque[bytes]") -> None:
    """Read the server's output as it comes (a full pipe would stall it), keeping only the last lines."""
    for line in iter(stream.readline, b""):
        tail.append(line)
    stream.close()


class LocalLlamaServer:
    """One ``python -m llama_cpp.server`` process on a free loopback port."""

    def __init__(self, spec: LocalServerSpec, *, model_alias: str, startup_timeout_s: float = 120.0):
        self.spec = spec
        self.model_alias = model_alias
        self.startup_timeout_s = startup_timeout_s
        self._process: Optional[subprocess.Popen] = None
        self._log = None
        self.base_url: Optional[str] = None

    def start(self) -> str:
        """Start the server (once) and return its OpenAI-compatible base URL."""
        if self._process is not None and self._process.poll() is None and self.base_url:
            return self.base_url
        reason = local_server_unavailable_reason(self.spec)
        if reason:
            raise LocalServerError(reason)
        model_path = resolve_model_path(self.spec)
        port = _free_port()
        command = [
            sys.executable, "-c", _SERVER_OUTLIVING_NO_PARENT, str(os.getpid()),
            "--model", str(model_path),
            "--model_alias", self.model_alias,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.spec.n_ctx),
        ]
        if self.spec.chat_format:
            command += ["--chat_format", self.spec.chat_format]
        if self.spec.n_threads:
            command += ["--n_threads", str(self.spec.n_threads)]
        # The server's output stays in memory (its last lines, for error messages): documents it
        # processes may be restricted, and a log file would be a copy of them on disk.
        self._log = collections.deque(maxlen=200)
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=_drain, args=(self._process.stdout, self._log), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._wait_ready()
        return self.base_url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalServerError(f"llama.cpp server exited with code {self._process.returncode}: {self._log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalServerError(f"llama.cpp server not ready after {self.startup_timeout_s:.0f}s")

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        return b"".join(self._log).decode("utf-8", "replace")[-600:].strip()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with_kill = process.poll() is None
                if with_kill:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
        self._log = None
        self.base_url = None
