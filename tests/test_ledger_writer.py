"""The write-behind ledger: calls are journaled at once and stored in batches; a killed writer loses nothing.

A child process settles calls through a ``LedgerWriter`` that never gets to flush, reports
that it did, and is SIGKILLed. The next reconcile must store exactly those calls, close
their reservations as settled at their cost, and leave no journal behind.
"""

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from resources.audit_log import AuditEntry, DuckDBAuditLog
from resources.budgets import Budget, Period, ScopeKind, SpendScope
from resources.ledger import CallRecord, DuckDBLedger
from resources.ledger_writer import LedgerWriter, journal_dir, recover_journals, set_aside_path

REPO = Path(__file__).resolve().parents[1]


def _record(i: int, run: str = "r1") -> CallRecord:
    return CallRecord(run_id=run, item_id=f"item-{i}", task="invoice_extraction", model_id="gpt-4o-mini", provider="openai",
                      residency="cloud", classification="public", outcome="ok", cost_usd=0.001 * (i + 1))


def test_rows_are_stored_in_batches_and_the_journal_is_removed_on_close(tmp_path):
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    audit = DuckDBAuditLog(tmp_path / "audit.duckdb")
    with LedgerWriter(ledger, audit, flush_interval_s=60) as writer:
        for i in range(30):
            writer.settle(None, [_record(i)])
            writer.append_audit([AuditEntry(event="call", run_id="r1", model_id="gpt-4o-mini")])
        journal = writer.journal_path
        assert journal.exists() and len(ledger.calls()) == 0  # journaled, not yet stored
        assert writer.flush() and len(ledger.calls()) == 30 and writer.flushes == 1
    assert not journal.exists()
    assert len(ledger.calls()) == 30 and round(ledger.calls()["cost_usd"].sum(), 9) == round(sum(0.001 * (i + 1) for i in range(30)), 9)
    verification = audit.verify()
    assert verification.ok and verification.head.count == 30


def test_flush_soon_stores_pending_rows_before_the_interval(tmp_path):
    """What a batch asks when its last items are in flight: store now, not at the next interval."""
    import time

    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    with LedgerWriter(ledger, flush_interval_s=60) as writer:
        for i in range(5):
            writer.settle(None, [_record(i)])
        writer.flush_soon()
        deadline = time.monotonic() + 10
        while writer.flushes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.flushes == 1 and len(ledger.calls()) == 5  # stored by the thread, the writer still open


class _RefusingOnce:
    """A store whose first write fails the way a locked or full file does; later writes go through."""

    def __init__(self, store, method: str):
        self.store, self.method, self.refused = store, method, 0
        self.path = store.path

    def __getattr__(self, name):
        attribute = getattr(self.store, name)
        if name != self.method or self.refused:
            return attribute

        def refuse(*args, **kwargs):
            self.refused += 1
            raise OSError("disk full")
        return refuse


def test_a_store_that_refuses_keeps_its_rows_pending_and_the_other_store_is_written(tmp_path):
    """Ledger and audit log are flushed side by side; one refusing must not lose, or repeat, the other's rows."""
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    audit = DuckDBAuditLog(tmp_path / "audit.duckdb")
    refusing_audit = _RefusingOnce(audit, "append")
    with LedgerWriter(ledger, refusing_audit, flush_interval_s=60) as writer:
        for i in range(10):
            writer.settle(None, [_record(i)])
            writer.append_audit([AuditEntry(event="call", run_id="r1", model_id="gpt-4o-mini")])
        assert writer.flush() is False and refusing_audit.refused == 1
        assert len(ledger.calls()) == 10 and writer.last_error == "OSError: disk full"
        assert writer.flush() is True
        assert len(ledger.calls()) == 10 and audit.verify().head.count == 10  # stored once each

    refusing_ledger = _RefusingOnce(DuckDBLedger(tmp_path / "ledger2.duckdb"), "settle_batch")
    audit2 = DuckDBAuditLog(tmp_path / "audit2.duckdb")
    with LedgerWriter(refusing_ledger, audit2, flush_interval_s=60) as writer:
        for i in range(4):
            writer.settle(None, [_record(i, run="r2")])
            writer.append_audit([AuditEntry(event="call", run_id="r2", model_id="gpt-4o-mini")])
        assert writer.flush() is False and refusing_ledger.refused == 1
        assert audit2.verify().head.count == 4 and len(refusing_ledger.store.calls()) == 0
    assert len(refusing_ledger.store.calls()) == 4 and audit2.verify().head.count == 4  # close stored the rest


def test_a_journaled_row_reads_back_as_it_was_written_non_finite_floats_included():
    import json
    import math

    record = _record(3).model_copy(update={"latency_s": float("nan"), "cost_usd": float("inf")})
    back = CallRecord.model_validate(json.loads(record.model_dump_json()))
    assert math.isnan(back.latency_s) and back.cost_usd == float("inf")
    assert back.model_dump(exclude={"latency_s"}) == record.model_dump(exclude={"latency_s"})


def test_a_live_writers_journal_is_left_alone(tmp_path):
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    with LedgerWriter(ledger, flush_interval_s=60) as writer:
        writer.settle(None, [_record(0)])
        assert recover_journals(ledger)["journals"] == 0  # its lock is held: the owner is alive
        assert len(ledger.calls()) == 0
    assert len(ledger.calls()) == 1


CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from resources.audit_log import AuditEntry, DuckDBAuditLog
    from resources.budgets import SpendScope
    from resources.ledger import CallRecord, DuckDBLedger
    from resources.ledger_writer import LedgerWriter

    ledger = DuckDBLedger({ledger!r})
    writer = LedgerWriter(ledger, DuckDBAuditLog({audit!r}), flush_interval_s=3600)
    for i in range(40):
        reservation = ledger.reserve(SpendScope(department="finance"), 0.01, run_id="doomed", item_id=f"item-{{i}}")
        writer.settle(reservation.reservation_id, [CallRecord(
            run_id="doomed", item_id=f"item-{{i}}", task="t", model_id="gpt-4o-mini", provider="openai",
            residency="cloud", classification="public", outcome="ok", cost_usd=0.002, department="finance")])
        writer.append_audit([AuditEntry(event="call", run_id="doomed", model_id="gpt-4o-mini")])
    print("SETTLED", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_calls_a_killed_process_journaled_are_recovered_once_and_close_their_reservations(tmp_path):
    ledger_path, audit_path = tmp_path / "ledger.duckdb", tmp_path / "audit.duckdb"
    ledger = DuckDBLedger(ledger_path)
    ledger.set_budget(Budget(scope_kind=ScopeKind.DEPARTMENT, scope_value="finance", period=Period.DAY, hard_usd=10.0))
    child = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), ledger=str(ledger_path), audit=str(audit_path))],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL and "SETTLED" in child.stdout, child.stderr[-2000:]
    assert len(ledger.calls("doomed")) == 0 and len(ledger.open_reservations()) == 40  # nothing stored before the kill

    counts = ledger.reconcile()
    calls = ledger.calls("doomed")
    assert len(calls) == 40 and calls["call_id"].is_unique and round(calls["cost_usd"].sum(), 9) == 0.08
    assert counts == {"settled": 40, "expired": 0, "recovered_calls": 40}  # landed: settled at their cost, not expired
    assert ledger.open_reservations() == []
    assert list(journal_dir(ledger).glob("*.jsonl")) == []
    assert DuckDBAuditLog(audit_path).verify().head.count == 40
    (status,) = ledger.budget_statuses(SpendScope(department="finance"))
    assert round(status.spent_usd, 9) == 0.08 and status.reserved_usd == 0

    assert ledger.reconcile() == {"settled": 0, "expired": 0}  # a second reconcile changes nothing
    assert len(ledger.calls("doomed")) == 40


def test_a_line_cut_by_the_kill_is_skipped_and_the_rest_recovered(tmp_path):
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    directory = journal_dir(ledger)
    directory.mkdir(parents=True)
    lines = ['{"ledger": "x", "audit": null}']
    lines += ['{"reservation": null, "calls": [%s]}' % _record(i, "cut").model_dump_json() for i in range(3)]
    (directory / "host-1-abc.jsonl").write_text("\n".join(lines) + '\n{"reservation": null, "calls": [{"call_')
    assert recover_journals(ledger)["calls"] == 3
    assert sorted(ledger.calls("cut")["item_id"]) == ["item-0", "item-1", "item-2"]
    assert not any(directory.iterdir())


def _poisoned(i: int, run: str) -> CallRecord:
    """A row DuckDB refuses for its values (a count past BIGINT), as a provider's impossible usage once made."""
    return _record(i, run).model_copy(update={"input_tokens": 10**25})


def test_a_row_the_ledger_refuses_is_set_aside_and_the_rest_of_its_batch_stored(tmp_path):
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    with LedgerWriter(ledger, flush_interval_s=60) as writer:
        for i in range(5):
            writer.settle(None, [_poisoned(i, "mixed") if i == 2 else _record(i, "mixed")], outputs=[(f"k{i}", "x", "{}")])
        journal = writer.journal_path
        assert writer.flush() and writer.set_aside == 1
    assert not journal.exists()  # nothing left to replay: the refused row would fail every reconcile after
    assert sorted(ledger.calls("mixed")["item_id"]) == ["item-0", "item-1", "item-3", "item-4"]
    (kept,) = [json.loads(line) for line in set_aside_path(ledger).read_text().splitlines()]
    assert kept["calls"][0]["item_id"] == "item-2" and "INT64" in kept["error"]
    assert ledger.reconcile() == {"settled": 0, "expired": 0}


def test_recovery_sets_a_refused_row_aside_once_and_never_blocks_a_later_reconcile(tmp_path):
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    directory = journal_dir(ledger)
    directory.mkdir(parents=True)
    lines = ['{"ledger": "x", "audit": null}']
    lines += ['{"reservation": null, "calls": [%s]}' % (_poisoned(i, "dead") if i == 1 else _record(i, "dead")).model_dump_json()
              for i in range(3)]
    lines.append('{"reservation": null, "calls": [{"call_id": 7}]}')  # unreadable as a call: set aside too
    (directory / "host-1-abc.jsonl").write_text("\n".join(lines) + "\n")
    counts = recover_journals(ledger)
    assert (counts["calls"], counts["set_aside_calls"], counts["journals"]) == (2, 1, 1)
    assert sorted(ledger.calls("dead")["item_id"]) == ["item-0", "item-2"]
    assert len(set_aside_path(ledger).read_text().splitlines()) == 2
    assert list(directory.glob("*.jsonl")) == []
    assert ledger.reconcile() == {"settled": 0, "expired": 0}


def test_the_last_store_at_close_is_checkpointed_after_the_writer_returns(tmp_path, monkeypatch):
    """What the batch waits for at its end is the commit; DuckDB folding the log into the file comes after."""
    import resources.duckdb_file as duckdb_file

    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    audit = DuckDBAuditLog(tmp_path / "audit.duckdb")
    folded: list[list[str]] = []
    monkeypatch.setattr(duckdb_file, "_fold_logs", folded.append)  # held back, to look at the files in between
    with LedgerWriter(ledger, audit, flush_interval_s=60) as writer:
        writer.settle(None, [_record(0)])
        writer.append_audit([AuditEntry(event="call", run_id="r1", model_id="gpt-4o-mini")])
        assert writer.flush()  # a flush during the batch checkpoints as any access does
        assert not Path(f"{ledger.path}.wal").exists()
        for i in range(1, 20):
            writer.settle(None, [_record(i)])
            writer.append_audit([AuditEntry(event="call", run_id="r1", model_id="gpt-4o-mini")])
    duckdb_file.wait_for_checkpoints(60)
    assert sorted(folded[0]) == sorted(str(p.absolute()) for p in (ledger.path, audit.path))
    for path in (ledger.path, audit.path):
        wal = Path(f"{path}.wal")
        assert wal.exists() and wal.stat().st_size > 0, path
    code = (f"import duckdb; print(duckdb.connect({str(ledger.path)!r}, read_only=True)"
            f".execute('SELECT COUNT(*) FROM ai_calls').fetchone()[0])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "20"
    assert audit.verify().ok and audit.verify().head.count == 20
    monkeypatch.undo()
    duckdb_file._fold_logs(folded[0])  # what the background thread does
    assert not Path(f"{ledger.path}.wal").exists() and not Path(f"{audit.path}.wal").exists()
    assert len(ledger.calls()) == 20 and audit.verify().head.count == 20


AUDIT_BEFORE_DEATH = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from resources.audit_log import AuditEntry, DuckDBAuditLog
from resources.ledger import CallRecord, DuckDBLedger
from resources.ledger_writer import LedgerWriter
ledger = DuckDBLedger({ledger!r}, timeout_s=1.0)
writer = LedgerWriter(ledger, DuckDBAuditLog({audit!r}), flush_interval_s=3600)
for i in range(5):
    writer.settle(None, [CallRecord(run_id="r", item_id=f"i{{i}}", task="t", model_id="m", provider="p", residency="cloud",
                                    classification="public", outcome="ok", cost_usd=0.01)])
    writer.append_audit([AuditEntry(event="call", run_id="r", model_id="m", item_hash=f"{{i:064x}}")])
print("FLUSHED", writer.flush(), flush=True)  # the audit half commits; the ledger half waits on a held lock and fails
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_audit_entries_stored_before_the_writer_died_are_not_stored_again_by_recovery(tmp_path):
    import fcntl

    ledger_path, audit_path = tmp_path / "ledger.duckdb", tmp_path / "audit.duckdb"
    ledger = DuckDBLedger(ledger_path)
    with ledger._transaction():
        pass
    with open(f"{ledger_path}.lock", "a+") as holder:  # another process busy on the ledger all along
        fcntl.flock(holder, fcntl.LOCK_EX)
        child = subprocess.run([sys.executable, "-c", AUDIT_BEFORE_DEATH.format(repo=str(REPO), ledger=str(ledger_path),
                                                                                audit=str(audit_path))],
                               capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL and "FLUSHED False" in child.stdout, child.stderr[-2000:]
    audit = DuckDBAuditLog(audit_path)
    assert audit.head().count == 5 and len(ledger.calls()) == 0  # the audit half landed, the ledger half did not
    ledger.reconcile()
    assert len(ledger.calls()) == 5
    assert audit.head().count == 5 and audit.verify().ok  # replayed once: no entry twice
    assert sorted(e.item_hash for e in audit.entries("r")) == [f"{i:064x}" for i in range(5)]


def test_an_append_retried_after_an_unknown_outcome_stores_each_entry_once(tmp_path):
    audit = DuckDBAuditLog(tmp_path / "audit.duckdb")
    entries = [AuditEntry(event="call", run_id="r", model_id="m", item_hash=f"{i:064x}") for i in range(4)]
    audit.append(entries[:3])  # committed; the caller never heard back
    stored = audit.append(entries, skip_stored=True)
    assert [e.item_hash for e in stored] == [entries[3].item_hash] and audit.head().count == 4 and audit.verify().ok
    twin = AuditEntry(event="call", run_id="r", model_id="m", item_hash=f"{9:064x}")
    assert len(audit.append([twin, twin.model_copy()], skip_stored=True)) == 2  # two alike in one batch: both new, both kept
    assert len(audit.append([twin], skip_stored=True)) == 0 and audit.head().count == 6


def _batch_detaches(tmp_path, monkeypatch, enforce: bool) -> tuple[list, list]:
    """Run 5 invoices, 2 at a time, against an OpenAI-protocol server that answers each after 0.3 s (one worker runs
    out of items while the last call is in flight, and the batch stores then); every DETACH of its files with whether its checkpoint was
    deferred, and the files folded in after it."""
    import resources.duckdb_file as duckdb_file
    from orchestration_assets.ai_task import CallContext, run_ai_task
    from orchestration_assets.invoices.assets import INVOICE_EXTRACTION
    from resources.routing import RulesPolicy
    from resources.spend_guard import SpendGuard
    from resources.tracing import TraceRecorder
    from tests.fault_harness import KEY, PROTOCOLS, answer, catalog_text, documents, gateway_resource, invoices
    from tests.protocol_servers import PerDocument, Slow

    detached: list[tuple[str, bool]] = []
    deferred = duckdb_file._checkpoint_deferred

    def noted(path):
        answer_ = deferred(path)
        detached.append((path, answer_))
        return answer_

    folded: list[list[str]] = []
    batch = invoices(5, seed="checkpoints")
    model, server_class = PROTOCOLS["openai"]
    ledger, audit = DuckDBLedger(tmp_path / "ledger.duckdb"), DuckDBAuditLog(tmp_path / "audit.duckdb")
    tracer = TraceRecorder(tmp_path / "traces.duckdb", otlp=False, console=False)
    ledger.calls()  # the file and its schema exist before the batch, as in a project that ran before
    with server_class(api_key=KEY, default=PerDocument({i.text: [Slow(0.3, then=answer(i))] for i in batch})) as server:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(catalog_text({model: server.url}))
        gateway = gateway_resource(catalog).gateway()
        try:
            monkeypatch.setattr(duckdb_file, "_checkpoint_deferred", noted)
            monkeypatch.setattr(duckdb_file, "_fold_logs", folded.append)  # held back, to look at what was left
            outcomes = run_ai_task(INVOICE_EXTRACTION, documents(batch), policy=RulesPolicy([0.25, 0.6, 0.8]),
                                   gateway=gateway, ledger=ledger, where=CallContext(run_id="checkpoints"), audit=audit,
                                   tracer=tracer, guard=SpendGuard(ledger, enforce=enforce), max_concurrency=2)
            duckdb_file.wait_for_checkpoints(60)
        finally:
            gateway.close()
            tracer.shutdown()
    assert [o.error for o in outcomes] == [None] * 5
    monkeypatch.undo()
    for paths in folded:
        duckdb_file._fold_logs(paths)  # what the background thread does
    assert len(ledger.calls("checkpoints")) == 5 and audit.verify().ok and audit.verify().head.count == 5
    return [(Path(path).name, answer_) for path, answer_ in detached if path], sorted({Path(p).name for f in folded for p in f})


def test_a_batch_without_budgets_leaves_its_checkpoints_to_one_pass_after_it(tmp_path, monkeypatch):
    """Nothing reads the ledger per call: every store the batch makes (while its last calls are in flight, at its
    end) skips its checkpoint, and the three files are folded in once, after the batch has returned."""
    detached, folded = _batch_detaches(tmp_path, monkeypatch, enforce=False)
    ledger_detaches = [deferred for name, deferred in detached if name == "ledger.duckdb"]
    assert ledger_detaches and all(ledger_detaches)
    assert folded == ["audit.duckdb", "ledger.duckdb", "traces.duckdb"]
    assert not list(tmp_path.glob("*.wal"))


def test_a_batch_with_budgets_checkpoints_as_it_goes(tmp_path, monkeypatch):
    """Each call's reservation opens the ledger: a log left in place would be replayed by every one of them."""
    detached, _ = _batch_detaches(tmp_path, monkeypatch, enforce=True)
    ledger_detaches = [deferred for name, deferred in detached if name == "ledger.duckdb"]
    assert ledger_detaches.count(False) >= 5  # a reservation per call, at least, folded its log at once
    assert not list(tmp_path.glob("*.wal"))
