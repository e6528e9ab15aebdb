"""Short, serialised connections to a DuckDB file shared by several processes.

DuckDB lets one process at a time open a file for writing, and a writer also locks out
other processes' readers. Dagster's default multiprocess executor runs steps in parallel
processes, so every access here opens the file, does its work and closes it at once,
queued behind an ``fcntl`` lock on a sidecar file: waiting processes block in order
instead of spinning on DuckDB's "Could not set lock" error. A process outside this code
(the duckdb CLI, a notebook) can still hold the file; that conflict is retried with
jittered backoff until ``timeout_s``.

"Opens" is an ``ATTACH`` to one in-memory DuckDB kept for the process, and "closes" a
``DETACH`` (which checkpoints and releases DuckDB's own file lock, like closing). Why:
``duckdb.connect`` builds a whole database instance, its catalog of built-in functions
included, every time: 15-17 ms of CPU on this host even for ``:memory:``, against about
1 ms to attach, read and detach a file (3.5 ms with a write and its checkpoint). A batch
touches its ledger, audit and trace files a few times a second and a budget reservation
touches the ledger once per call, so that instance build was most of what recording cost.

A DETACH checkpoints (folds the write-ahead log into the file), except inside
``checkpoints_deferred``: the stores at the end of a batch or a step, which its caller waits
for, leave their log to a background thread that folds it in right after. What a commit wrote
is durable in the log already (DuckDB syncs it at COMMIT); the checkpoint only spares later
opens its replay. Run together at a batch's end, the ledger's, audit log's and trace store's
checkpoints took 20-35 ms (the ledger's key indexes rewritten), most of the time between the
last reply and the return. Every other access still checkpoints: a log left in place is
replayed by every open until a writer folds it in, and measured per budget reservation (an
attach each) a log kept to a few hundred KB made each 3-5 times slower than its checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import duckdb

log = logging.getLogger(__name__)

DEFERRED_WAL_LIMIT_BYTES = 4 * 1024 * 1024
"""``checkpoints_deferred`` still checkpoints a file whose log has reached this (steps that only ever defer)."""


class LedgerBusyError(TimeoutError):
    """The file stayed locked by another process for longer than the timeout."""


def default_data_dir() -> Path:
    """Where the project keeps its files: ``$DAGSTER_HOME/ai_orchestration``, beside Dagster's own."""
    home = os.environ.get("DAGSTER_HOME") or str(Path.cwd() / ".dagster_home")
    return Path(home).expanduser() / "ai_orchestration"


@contextlib.contextmanager
def locked_connection(path: "str | Path", *, read_only: bool = False, timeout_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose default database is the file at ``path``, held (both locks) until the block ends.

    Unqualified table names resolve to the file, and the database is named after the file's
    stem as ``duckdb.connect`` names it (``warehouse`` for ``warehouse.duckdb``), so SQL that
    qualifies names with it still works. Whatever the block leaves uncommitted is rolled back
    when it ends, as on closing a connection. Catalog views (``information_schema``,
    ``duckdb_tables()``) also list other files this process has attached at that moment:
    filter them on ``current_database()`` (``has_table``).
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with _process_lock(path.with_name(path.name + ".lock"), deadline):
        conn, alias = _attach_with_retry(path, read_only=read_only and path.exists(), deadline=deadline)
        try:
            yield conn
        finally:
            try:
                conn.close()  # rolls back an open (or aborted) transaction, which would refuse the detach
            finally:
                _HOST.detach(alias)


_RESERVED_NAMES = {"memory", "system", "temp", "main"}


_deferred: dict[str, int] = {}  # absolute path → open ``checkpoints_deferred`` blocks naming it
_deferred_lock = threading.Lock()
_folding: list[threading.Thread] = []  # checkpoints started when a block ended


@contextlib.contextmanager
def checkpoints_deferred(*paths: "str | Path | None") -> Iterator[None]:
    """While the block runs, a DETACH of these files (from any thread) skips its checkpoint.

    For the last stores of a batch or step, which its caller waits on. When the block ends, a
    background thread folds the logs in (an access whose DETACH checkpoints), while the caller
    goes on: a step's process still reports its outputs and events, and waits for the thread
    before it exits, so a finished step leaves no log beside its files (a copied or restored
    file is whole). A process killed before leaves the log, which the next writer folds in.
    A log that has reached ``DEFERRED_WAL_LIMIT_BYTES`` is checkpointed at once. ``None``
    entries are ignored.
    """
    keys = [str(Path(p).expanduser().absolute()) for p in paths if p is not None]
    with _deferred_lock:
        for key in keys:
            _deferred[key] = _deferred.get(key, 0) + 1
    try:
        yield
    finally:
        released = []
        with _deferred_lock:
            for key in keys:
                if _deferred[key] == 1:
                    del _deferred[key]
                    released.append(key)
                else:
                    _deferred[key] -= 1
        pending = [key for key in released if os.path.exists(key + ".wal")]
        if pending:
            # Not a daemon: the interpreter waits for it at exit rather than stopping it inside DuckDB.
            thread = threading.Thread(target=_fold_logs, args=(pending,), name="duckdb-checkpoint")
            with _deferred_lock:
                _folding[:] = [t for t in _folding if t.is_alive()] + [thread]
            try:
                thread.start()
            except RuntimeError:  # the interpreter is shutting down: no new threads, so fold them in here
                _fold_logs(pending)


@contextlib.contextmanager
def scratch_directory(**options) -> Iterator[Path]:
    """A temporary directory for DuckDB files (``tempfile.TemporaryDirectory`` options), removed only once the
    checkpoints this process deferred for them are done: a fold still running would write into it as it goes."""
    with tempfile.TemporaryDirectory(**options) as name:
        try:
            yield Path(name)
        finally:
            wait_for_checkpoints()


def wait_for_checkpoints(timeout_s: Optional[float] = None) -> None:
    """Wait for the checkpoints ``checkpoints_deferred`` left running (before copying the files, in tests)."""
    with _deferred_lock:
        running = list(_folding)
    for thread in running:
        thread.join(timeout_s)


def _fold_logs(paths: list[str]) -> None:
    """Checkpoint each file whose log a ``checkpoints_deferred`` block left (unless another block defers it again)."""
    for path in paths:
        with _deferred_lock:
            if path in _deferred:
                continue
        try:
            with locked_connection(path):
                pass  # a read-write access: its DETACH checkpoints
        except Exception as exc:  # the log stays and the next writer folds it in; nothing is lost
            log.warning("could not checkpoint %s after a batch (%s): its next access will", path, exc)


def _checkpoint_deferred(path: Optional[str]) -> bool:
    with _deferred_lock:
        if path is None or path not in _deferred:
            return False
    try:
        return os.stat(path + ".wal").st_size < DEFERRED_WAL_LIMIT_BYTES
    except OSError:
        return True  # no log: nothing to checkpoint


def _skip_checkpoint(cursor: duckdb.DuckDBPyConnection) -> None:
    """This cursor's DETACH leaves the log in place (a session setting: other cursors still checkpoint)."""
    try:
        cursor.execute("SET SESSION checkpoint_on_detach = 'DISABLED'")
    except duckdb.Error:  # a DuckDB from before the setting: it checkpoints, as it always did
        pass


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _AttachHost:
    """The process's in-memory DuckDB that files are attached to and detached from.

    Each access gets its own cursor (DuckDB connections are not thread-safe) and its own
    database name, so threads attaching different files at once never meet; the same file is
    never attached twice at once, since ``_process_lock`` excludes other threads of this
    process as it does other processes. An access cut short (an interrupt between its end and
    its DETACH, or a DETACH that failed) leaves its file attached: the next access to that
    file, holding its lock, detaches it first. A forked child never touches, nor destroys, the
    instance it inherited (its threads did not come along); it builds its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: "duckdb.DuckDBPyConnection | None" = None
        self._attached: dict[str, str] = {}  # database name → absolute path, from before ATTACH until DETACH succeeds
        self._suffixes = itertools.count(1)

    def _instance(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            spill = Path(tempfile.gettempdir()) / f"ai_orchestration-duckdb-{os.getpid()}"
            self._conn = duckdb.connect(":memory:", config={"temp_directory": str(spill)})
        return self._conn

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's instance without destroying it (it stays allocated till exit)."""
        if self._conn is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._conn))
        self._lock = threading.Lock()
        self._conn, self._attached = None, {}

    def _name_for(self, path: Path) -> str:
        """The file's stem, as ``duckdb.connect`` names its database; suffixed if another file has it now."""
        taken = {name.lower() for name in self._attached} | _RESERVED_NAMES
        name = path.stem or "file"
        while name.lower() in taken:
            name = f"{path.stem or 'file'}_{next(self._suffixes)}"
        return name

    def attach(self, path: Path, *, read_only: bool) -> tuple[duckdb.DuckDBPyConnection, str]:
        key = str(path.absolute())
        with self._lock:
            cursor = self._instance().cursor()
            stale = [name for name, attached in self._attached.items() if attached == key]
        for name in stale:  # an earlier access to this file was cut short; we hold its lock, so nobody uses it
            self.detach(name)
        with self._lock:
            name = self._name_for(path)
            self._attached[name] = key  # reserved before ATTACH: an interrupt after it still leaves a record
        try:
            cursor.execute(f"ATTACH '{key.replace(chr(39), chr(39) * 2)}' AS {_identifier(name)}"
                           f"{' (READ_ONLY)' if read_only else ''}")
            cursor.execute(f"USE {_identifier(name)}")
        except BaseException:
            try:
                cursor.close()
            finally:
                self.detach(name)  # an ATTACH that succeeded before USE failed; a no-op otherwise
            raise
        return cursor, name

    def detach(self, name: str) -> None:
        """Detach ``name``; a failure is logged, never raised: the access's own outcome stands.

        A DETACH whose checkpoint fails (a full disk) has still detached, and what was committed
        is in the file's WAL, which the next opener replays: raising here would report a write
        that happened as failed. One that left the file attached is retried by its next access.
        """
        with self._lock:
            cursor = self._instance().cursor()
            path = self._attached.get(name)
        try:
            if _checkpoint_deferred(path):
                _skip_checkpoint(cursor)
            cursor.execute(f"DETACH DATABASE IF EXISTS {_identifier(name)}")
        except duckdb.Error as exc:
            try:
                (attached,) = cursor.execute("SELECT COUNT(*) FROM duckdb_databases() WHERE database_name = ?",
                                             [name]).fetchone()
            except duckdb.Error:
                attached = 1  # cannot tell: retried by the file's next access, a no-op if it was detached
            log.warning("detaching %s: %s%s", self._attached.get(name, name), exc,
                        "; it stays attached until its next access" if attached else "")
            if attached:
                return
        finally:
            cursor.close()
        with self._lock:
            self._attached.pop(name, None)


_HOST = _AttachHost()
os.register_at_fork(after_in_child=_HOST.forget_after_fork)


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


def _attach_with_retry(path: Path, *, read_only: bool, deadline: float) -> tuple[duckdb.DuckDBPyConnection, str]:
    delay = 0.01
    while True:
        try:
            return _HOST.attach(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                if "lock" in str(exc).lower():
                    raise LedgerBusyError(f"{path} is held by another process: {exc}") from exc
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


def has_table(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Does the file this connection is on hold ``table``? (Other files attached meanwhile, by other
    threads of this process, are not looked at.)"""
    (count,) = conn.execute("SELECT COUNT(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
                            [table]).fetchone()
    return count > 0


# What DuckDB refuses for a row's own values (a count past BIGINT, text it cannot store), unlike a file it cannot
# open now (locked, disk full): retrying never stores such a row, so it must not hold back the rows written with it.
REFUSED_VALUES = (duckdb.DataError, duckdb.InvalidInputException, UnicodeEncodeError)


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], rows: Sequence[tuple], *,
                or_ignore: bool = False, frame_from: int = 500) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) in one statement; ``or_ignore`` skips rows whose key is already stored.

    Up to a few hundred rows travel as one list per column that DuckDB unnests (``INSERT ...
    SELECT unnest($1), ...``): no pandas frame for DuckDB to scan and type column by column
    (33 ledger rows: 2.9 ms, against 5.9 ms through a frame; ``executemany`` would plan a
    statement per row). From ``frame_from`` rows a registered frame is faster (2,000 rows:
    36 ms against 54 ms). ``None`` is NULL of the column's type either way.
    ``INSERT OR IGNORE`` costs about 3 ms more a statement whatever the rows (its conflict check):
    a caller that rarely meets a stored key tries a plain insert first (``DuckDBLedger.settle_batch``).
    """
    if not rows:
        return
    names = ", ".join(columns)
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    if len(rows) < frame_from:
        unnested = ", ".join(f"unnest(${n}) AS {name}" for n, name in enumerate(columns, start=1))
        conn.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM (SELECT {unnested})",
                     [list(values) for values in zip(*rows)]).fetchall()
        return
    import pandas as pd

    view = f"_{table}_batch"
    conn.register(view, pd.DataFrame.from_records(list(rows), columns=list(columns)))
    try:
        conn.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM {view}").fetchall()
    finally:
        conn.unregister(view)
