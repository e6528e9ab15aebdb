"""The shared-file access layer: every access attaches the file to the process's DuckDB and detaches it after.

What must hold is what closing a connection gave: another process can open the file as
soon as an access ends (committed rows visible, nothing uncommitted), a failed statement
never leaves the file held, and a process that forked after using it gets its own DuckDB.
"""

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from resources.duckdb_file import _HOST, LedgerBusyError, has_table, locked_connection
from resources.tracing import TraceStore


def _rows_seen_by_another_process(path) -> int:
    code = f"import duckdb; print(duckdb.connect({str(path)!r}).execute('SELECT COUNT(*) FROM t').fetchone()[0])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_another_process_opens_the_file_as_soon_as_an_access_ends(tmp_path):
    path = tmp_path / "shared.duckdb"
    with locked_connection(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1), (2), (3)")
    assert _rows_seen_by_another_process(path) == 3
    with locked_connection(path, read_only=True) as conn:
        assert conn.execute("SELECT SUM(x) FROM t").fetchone()[0] == 6


def test_a_failed_transaction_is_rolled_back_and_leaves_the_file_free(tmp_path):
    path = tmp_path / "shared.duckdb"
    with locked_connection(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(duckdb.CatalogException):
        with locked_connection(path) as conn:
            conn.execute("BEGIN TRANSACTION")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("SELECT * FROM no_such_table")  # the transaction is now aborted, as the block ends
    assert _rows_seen_by_another_process(path) == 0
    with locked_connection(path) as conn:  # and this process can use it again at once
        conn.execute("INSERT INTO t VALUES (7)")
    assert _rows_seen_by_another_process(path) == 1


def test_unqualified_names_and_table_checks_mean_the_file_of_the_access(tmp_path):
    """Two files in use at once in one process (threads do this: the ledger and the trace store): each
    access sees only its own file's tables, so an empty trace store reads as empty, not as the other file."""
    spans_file, empty_file = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    with locked_connection(empty_file) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    with locked_connection(spans_file) as outer:
        outer.execute("CREATE TABLE spans (run_id VARCHAR)")
        with locked_connection(empty_file, read_only=True) as inner:
            assert not has_table(inner, "spans") and has_table(inner, "other")
        assert TraceStore(empty_file).spans("any-run") == []
        assert has_table(outer, "spans") and not has_table(outer, "other")


def test_threads_use_different_files_at_once(tmp_path):
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for i in range(20):
                with locked_connection(tmp_path / f"{name}.duckdb") as conn:
                    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                    conn.execute("INSERT INTO t VALUES (?)", [i])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"f{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [_rows_seen_by_another_process(tmp_path / f"f{n}.duckdb") for n in range(4)] == [20, 20, 20, 20]


def _append_in_forked_child(path: str, queue) -> None:
    with locked_connection(path) as conn:
        conn.execute("INSERT INTO t VALUES (42)")
        queue.put(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_uses_its_own_duckdb(tmp_path):
    path = tmp_path / "shared.duckdb"
    with locked_connection(path) as conn:  # the parent's DuckDB exists before the fork
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_append_in_forked_child, args=(str(path), queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 2
    with locked_connection(path, read_only=True) as conn:  # the parent's still works after the child's exit
        assert conn.execute("SELECT SUM(x) FROM t").fetchone()[0] == 43


def test_a_file_held_by_a_process_outside_the_lock_is_waited_for_then_refused(tmp_path):
    path = tmp_path / "shared.duckdb"
    with locked_connection(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    code = (f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); "
            f"time.sleep(float(sys.argv[1])); c.close()")
    holder = subprocess.Popen([sys.executable, "-c", code, "1.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LedgerBusyError, match="held by another process"):
            with locked_connection(path, timeout_s=0.2):
                pass
        with locked_connection(path, timeout_s=30) as conn:  # waits for the holder to let go
            conn.execute("INSERT INTO t VALUES (5)")
    finally:
        holder.wait(30)
    assert _rows_seen_by_another_process(path) == 1


def test_the_database_is_named_after_the_file_as_duckdb_connect_names_it(tmp_path):
    """User SQL (``DuckDBWarehouseResource.read``) may qualify names with it: ``warehouse.spend_report``."""
    path = tmp_path / "warehouse.duckdb"
    with locked_connection(path) as conn:
        conn.execute("CREATE TABLE spend_report (x INTEGER)")
        conn.execute("INSERT INTO spend_report VALUES (1), (2)")
    with locked_connection(path, read_only=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "warehouse"
        assert conn.execute("SELECT COUNT(*) FROM warehouse.main.spend_report").fetchone()[0] == 2
        with locked_connection(tmp_path / "other" / "warehouse.duckdb") as same_stem:  # taken now: another name
            assert same_stem.execute("SELECT current_database()").fetchone()[0] != "warehouse"


def test_an_access_cut_short_before_its_detach_does_not_hold_the_file(tmp_path):
    """An interrupt between an access's end and its DETACH leaves the file attached; the next access detaches it
    (it holds the file's lock, so nobody else uses it) instead of failing for good."""
    path = tmp_path / "ledger.duckdb"
    with locked_connection(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    cursor, _ = _HOST.attach(path, read_only=False)  # what the interrupted access left behind
    cursor.close()
    with locked_connection(path) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert _rows_seen_by_another_process(path) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_exits_cleanly_whether_or_not_it_used_the_files(tmp_path):
    """The parent's DuckDB must not be destroyed by a forked child's exit (its threads did not come along)."""
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from resources.duckdb_file import locked_connection
path = {str(tmp_path / "f.duckdb")!r}
with locked_connection(path) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
codes = []
for use in (True, False):
    pid = os.fork()
    if pid == 0:
        if use:
            with locked_connection(path) as conn:
                conn.execute("INSERT INTO t VALUES (1)")
        sys.exit(0)
    codes.append(os.waitpid(pid, 0)[1])
print(codes)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 0]"


@pytest.mark.parametrize("count", [3, 600])  # unnested column lists, and a registered frame from 500 rows
def test_insert_rows_stores_values_and_nulls_and_skips_stored_keys_with_or_ignore(tmp_path, count):
    from datetime import datetime

    from resources.duckdb_file import insert_rows

    rows = [(f"k{i}", i if i % 3 else None, i / 4, None if i % 2 else f"text {i} ✓", datetime(2026, 1, 1, 0, 0, i % 60))
            for i in range(count)]
    with locked_connection(tmp_path / "rows.duckdb") as conn:
        conn.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY, n BIGINT, x DOUBLE, s VARCHAR, seen TIMESTAMP)")
        insert_rows(conn, "t", ["k", "n", "x", "s", "seen"], rows)
        insert_rows(conn, "t", ["k", "n", "x", "s", "seen"], rows[:2] + [("new", 1, 0.5, "s", datetime(2026, 1, 2))],
                    or_ignore=True)
        stored = conn.execute("SELECT k, n, x, s, seen FROM t ORDER BY k").fetchall()
    assert stored == sorted(rows + [("new", 1, 0.5, "s", datetime(2026, 1, 2))])


def _wal_bytes(path) -> int:
    wal = Path(str(path) + ".wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_deferred_checkpoint_leaves_the_log_readable_and_is_folded_in_after_the_block(tmp_path, monkeypatch):
    import resources.duckdb_file as duckdb_file
    from resources.duckdb_file import checkpoints_deferred, wait_for_checkpoints

    path = tmp_path / "shared.duckdb"
    with locked_connection(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    assert _wal_bytes(path) == 0  # an ordinary access checkpoints
    with checkpoints_deferred(path):
        with locked_connection(path) as conn:
            conn.execute("INSERT INTO t SELECT range FROM range(1000)")
        assert _wal_bytes(path) > 0  # the commit is in the log, not yet in the file
        assert _rows_seen_by_another_process(path) == 1000  # durable and visible: replayed by any opener
        with locked_connection(path, read_only=True) as conn:
            assert conn.execute("SELECT SUM(x) FROM t").fetchone()[0] == sum(range(1000))
    wait_for_checkpoints(60)  # the block's end folds the log in, in the background
    assert _wal_bytes(path) == 0 and _rows_seen_by_another_process(path) == 1000
    # A process gone before that (here: the fold never runs) leaves the log for the next writer.
    monkeypatch.setattr(duckdb_file, "_fold_logs", lambda paths: None)
    with checkpoints_deferred(path):
        with locked_connection(path) as conn:
            conn.execute("INSERT INTO t VALUES (-1)")
    wait_for_checkpoints(60)
    assert _wal_bytes(path) > 0
    with locked_connection(path) as conn:
        conn.execute("INSERT INTO t VALUES (-2)")
    assert _wal_bytes(path) == 0
    assert _rows_seen_by_another_process(path) == 1002


def test_a_deferred_checkpoint_is_taken_anyway_once_the_log_is_long(tmp_path, monkeypatch):
    import resources.duckdb_file as duckdb_file

    path, other = tmp_path / "long.duckdb", tmp_path / "other.duckdb"
    for file in (path, other):
        with locked_connection(file) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
    monkeypatch.setattr(duckdb_file, "DEFERRED_WAL_LIMIT_BYTES", 1)
    with duckdb_file.checkpoints_deferred(path):
        with locked_connection(path) as conn:
            conn.execute("INSERT INTO t SELECT range FROM range(1000)")
        assert _wal_bytes(path) == 0  # over the limit: checkpointed
    monkeypatch.setattr(duckdb_file, "DEFERRED_WAL_LIMIT_BYTES", 4 << 20)
    with duckdb_file.checkpoints_deferred(path):
        with duckdb_file.checkpoints_deferred(path):  # nested: the outer block still defers after the inner ends
            pass
        with locked_connection(path) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
        with locked_connection(other) as conn:  # only the files named are deferred
            conn.execute("INSERT INTO t VALUES (1)")
        duckdb_file.wait_for_checkpoints(60)
        assert _wal_bytes(path) > 0 and _wal_bytes(other) == 0
    duckdb_file.wait_for_checkpoints(60)
    assert _wal_bytes(path) == 0


def test_a_scratch_directory_is_removed_only_after_the_checkpoints_deferred_in_it(monkeypatch):
    """A fold still running when a benchmark's temporary directory goes would write into it (and re-create it)."""
    import time

    import resources.duckdb_file as duckdb_file
    from resources.duckdb_file import checkpoints_deferred, scratch_directory, wait_for_checkpoints

    fold = duckdb_file._fold_logs
    monkeypatch.setattr(duckdb_file, "_fold_logs", lambda paths: (time.sleep(0.3), fold(paths)))
    with scratch_directory(prefix="scratch-") as tmp:
        path = tmp / "store.duckdb"
        with checkpoints_deferred(path):
            with locked_connection(path) as conn:
                conn.execute("CREATE TABLE t AS SELECT range AS x FROM range(100)")
    wait_for_checkpoints(60)
    assert not tmp.exists()
