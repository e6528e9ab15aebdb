"""Short, serialised connections to a DuckDB file shared by several processes.

DuckDB lets one process at a time open a file for writing, and a writer also locks out
other processes' readers. Dagster's default multiprocess executor runs steps in parallel
processes, so every access here opens the file, does its work and closes it at once,
queued behind an ``fcntl`` lock on a sidecar file: waiting processes block in order
instead of spinning on DuckDB's "Could not set lock" error. A process outside this code
(the duckdb CLI, a notebook) can still hold the file; that conflict is retried with
jittered backoff until ``timeout_s``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from pathlib import Path
from typing import Iterator, Sequence

import duckdb


class LedgerBusyError(TimeoutError):
    """The file stayed locked by another process for longer than the timeout."""


def default_data_dir() -> Path:
    """Where the project keeps its files: ``$DAGSTER_HOME/ai_orchestration``, beside Dagster's own."""
    home = os.environ.get("DAGSTER_HOME") or str(Path.cwd() / ".dagster_home")
    return Path(home).expanduser() / "ai_orchestration"


@contextlib.contextmanager
def locked_connection(path: "str | Path", *, read_only: bool = False, timeout_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with _process_lock(path.with_name(path.name + ".lock"), deadline):
        conn = _open_with_retry(path, read_only=read_only and path.exists(), deadline=deadline)
        try:
            yield conn
        finally:
            conn.close()


@contextlib.contextmanager
def _process_lock(lock_path: Path, deadline: float) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        delay = 0.002
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LedgerBusyError(f"{lock_path} stayed locked by another process past the timeout") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _open_with_retry(path: Path, *, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                if "lock" in str(exc).lower():
                    raise LedgerBusyError(f"{path} is held by another process: {exc}") from exc
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], rows: Sequence[tuple], *,
                or_ignore: bool = False, frame_from: int = 8) -> None:
    """Insert ``rows`` (tuples in ``columns`` order); ``or_ignore`` skips rows whose key is already stored.

    A few rows go through ``executemany``; more go in as one registered pandas frame, since
    DuckDB runs ``executemany`` as a statement per row (measured 2.4 ms a ledger row, against
    about 0.1 ms in a frame). Object columns let DuckDB see ``None`` as NULL of the column's type.
    """
    if not rows:
        return
    names = ", ".join(columns)
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    if len(rows) < frame_from:
        conn.executemany(f"{verb} INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})", list(rows))
        return
    import pandas as pd

    frame = pd.DataFrame.from_records(list(rows), columns=list(columns))
    view = f"_{table}_batch"
    conn.register(view, frame)
    try:
        conn.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM {view}")
    finally:
        conn.unregister(view)
