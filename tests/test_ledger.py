"""The ledger on a real DuckDB file, written by several processes at once."""

import multiprocessing
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest

from resources.ledger import CallRecord, DuckDBLedger

PROCESSES, CALLS_EACH = 4, 60


def _record(i: int, writer: int, cost: float = 0.001) -> CallRecord:
    return CallRecord(
        run_id=f"run-{writer}", item_id=f"item-{writer}-{i}", task="t", model_id="m", provider="p", residency="on_prem",
        classification="internal", input_tokens=10, output_tokens=5, cost_usd=cost, latency_s=0.01, outcome="ok",
    )


def _write_many(path: str, writer: int) -> None:
    ledger = DuckDBLedger(path, timeout_s=120)
    for i in range(CALLS_EACH):
        ledger.append([_record(i, writer)])


def test_parallel_processes_lose_no_call(tmp_path):
    path = str(tmp_path / "ledger.duckdb")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(path, w)) for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    # Read while they write: readers must wait their turn, not fail.
    reader = DuckDBLedger(path)
    for _ in range(5):
        reader.spend_since(datetime.now(timezone.utc) - timedelta(hours=1))
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    calls = reader.calls()
    assert len(calls) == PROCESSES * CALLS_EACH
    assert calls["call_id"].is_unique
    assert reader.spend_since(datetime.now(timezone.utc) - timedelta(hours=1)) == pytest.approx(PROCESSES * CALLS_EACH * 0.001)


def test_append_is_idempotent_on_call_id(tmp_path):
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    record = _record(0, 0, cost=0.5)
    ledger.append([record])
    ledger.append([record])
    assert len(ledger.calls()) == 1
    assert ledger.calls(run_id="run-0")["cost_usd"].sum() == pytest.approx(0.5)
    assert ledger.calls(run_id="other").empty


def test_a_replayed_settlement_batch_stores_each_call_and_answer_once(tmp_path):
    """A batch is inserted plainly; one that meets stored keys (a journal replayed after a crash, part of it
    already flushed) is made again skipping them: the new rows land, the stored ones are not doubled."""
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    first = [_record(i, 0, cost=0.1) for i in range(3)]
    answers = [(f"run-0:step:{r.item_id}", r.call_id, '{"total": 1}') for r in first]
    ledger.settle_batch([(None, first)], answers)
    later = [_record(i, 1, cost=0.2) for i in range(2)]
    ledger.settle_batch([(None, first[1:]), (None, later)],
                        answers[1:] + [(f"run-1:step:{r.item_id}", r.call_id, '{"total": 2}') for r in later])
    calls = ledger.calls()
    assert len(calls) == 5 and calls["call_id"].is_unique
    assert calls["cost_usd"].sum() == pytest.approx(3 * 0.1 + 2 * 0.2)
    assert len(ledger.completed_outputs("run-0:step:")) == 3 and len(ledger.completed_outputs("run-1:step:")) == 2


def test_a_zone_aware_call_time_is_stored_as_utc_whatever_the_session_zone(tmp_path):
    """DuckDB stores a zone-aware time in a TIMESTAMP column as the session's local wall time; the record
    makes every time naive UTC first, so the ledger holds UTC under any zone, mixed with naive times or not."""
    from resources.duckdb_file import locked_connection

    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    with locked_connection(tmp_path / "l.duckdb") as conn:  # the process's DuckDB, as every access meets it
        (zone,) = conn.execute("SELECT current_setting('TimeZone')").fetchone()
        conn.execute("SET GLOBAL TimeZone = 'Asia/Kolkata'")
    try:
        _store_mixed_zones(ledger)
    finally:
        with locked_connection(tmp_path / "l.duckdb") as conn:
            conn.execute(f"SET GLOBAL TimeZone = '{zone}'")


def _store_mixed_zones(ledger: DuckDBLedger) -> None:
    aware = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)
    kolkata = aware.astimezone(timezone(timedelta(hours=5, minutes=30)))
    naive = datetime(2026, 3, 14, 12, 0)
    records = [_record(i, 0).model_copy(update={"recorded_at": t}) for i, t in enumerate([aware, naive, kolkata])]
    records = [CallRecord.model_validate(r.model_dump()) for r in records]
    ledger.settle_batch([(None, records)])
    assert set(ledger.calls()["recorded_at"]) == {pd.Timestamp(naive)}


def test_spend_window_excludes_old_calls(tmp_path):
    ledger = DuckDBLedger(tmp_path / "l.duckdb")
    old = _record(1, 0, cost=2.0).model_copy(update={"recorded_at": datetime(2020, 1, 1)})
    ledger.append([old, _record(2, 0, cost=0.25)])
    assert ledger.spend_since(datetime.now(timezone.utc) - timedelta(days=1)) == pytest.approx(0.25)
    assert ledger.spend_since(datetime(2019, 1, 1, tzinfo=timezone.utc)) == pytest.approx(2.25)


def test_dagster_multiprocess_executor_steps_write_one_ledger(tmp_path):
    """Dagster's default executor runs each step in its own process; every call must land."""
    from tests.parallel_ledger_job import CALLS_PER_STEP, WRITERS, parallel_ledger_job_def

    path = str(tmp_path / "ledger.duckdb")
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(
            dg.reconstructable(parallel_ledger_job_def),
            instance=instance,
            run_config={"resources": {"ledger": {"config": {"path": path}}}},
        )
        assert result.success
        step_pids = {event.pid for event in result.all_events if event.event_type_value == "STEP_START"}
    assert len(step_pids) == WRITERS  # really one process per step
    calls = DuckDBLedger(path).calls(run_id=result.run_id)
    assert len(calls) == WRITERS * CALLS_PER_STEP
    assert set(calls["step_key"]) == {f"writer_{i}" for i in range(WRITERS)}
    assert calls["cost_usd"].sum() == pytest.approx(WRITERS * CALLS_PER_STEP * 0.01)



def test_dagster_multiprocess_steps_never_overrun_a_hard_cap(tmp_path):
    """Four step processes race for a $0.50 cap with $1.00 of calls: exactly half land, to the cent."""
    from resources.budgets import Budget, SpendScope
    from tests.parallel_ledger_job import CALLS_PER_STEP, WRITERS, parallel_ledger_job_def

    path = str(tmp_path / "ledger.duckdb")
    ledger = DuckDBLedger(path)
    ledger.set_budget(Budget(scope_kind="department", scope_value="parallel", period="day", hard_usd=0.5))
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(dg.reconstructable(parallel_ledger_job_def), instance=instance,
                                run_config={"resources": {"ledger": {"config": {"path": path}}}})
        assert result.success
    assert WRITERS * CALLS_PER_STEP * 0.01 == pytest.approx(1.0)
    calls = ledger.calls(run_id=result.run_id)
    assert len(calls) == 50 and round(float(calls["cost_usd"].sum()), 2) == 0.50
    (status,) = ledger.budget_statuses(SpendScope(department="parallel"))
    assert round(status.spent_usd, 2) == 0.50 and status.reserved_usd == 0 and status.state == "hard"
    assert ledger.open_reservations() == []
