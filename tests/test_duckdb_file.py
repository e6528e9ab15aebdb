"""The shared-file access layer: every access attaches the file to the process's DuckDB and detaches it after.

What must hold is what closing a connection gave: another process can open the file as
soon as an access ends (committed rows visible, nothing uncommitted), a failed statement
never leaves the file held, and a process that forked after using it gets its own DuckDB.
"""

import multiprocessing
import subprocess
import sys
import threading

import duckdb
import pytest

from resources.duckdb_file import LedgerBusyError, has_table, locked_connection
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
