"""Write-behind for the ledger and the audit log: every call journaled at once, stored in batches.

Opening the DuckDB file, committing and closing it costs milliseconds (more under a
contended lock), so a batch that wrote each call in its own transaction spent longer
recording than calling. A ``LedgerWriter`` keeps the guarantee and drops the cost:

* each settled call (its ledger rows, the reservation it closes) and each audit entry is
  first appended to a journal file, one JSON line written with one ``os.write`` on an
  ``O_APPEND`` descriptor: no Python buffer, so a killed process loses nothing it returned;
* a background thread moves what is pending into DuckDB in one transaction every
  ``flush_interval_s`` (or at ``max_batch`` calls), then marks the journal as flushed;
* the journal is locked (``flock``) for the writer's life. ``recover_journals`` (run by
  ``DuckDBLedger.reconcile``: the budget sensor, and every AI step's guard) replays the
  unflushed tail of journals whose owner died (the lock is free): ledger rows are
  idempotent on ``call_id``, so a replay never charges twice, and the dead process's
  reservations then close as *settled* rather than *expired* (``budget_store.expire_stale``).

The journal holds what the ledger and the audit log hold (no document text: errors of
sensitive items are already pseudonymised), lives beside the ledger, and is deleted when
its writer closes cleanly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import ValidationError

from resources.audit_log import AuditEntry, DuckDBAuditLog
from resources.duckdb_file import REFUSED_VALUES, checkpoints_deferred, default_data_dir
from resources.ledger import CallRecord, DuckDBLedger

log = logging.getLogger(__name__)

JOURNAL_DIR = "ledger-journal"
SET_ASIDE_DIR = "set-aside"  # in the journals' folder: rows the ledger refused for what they hold, for a person


def journal_dir(ledger: DuckDBLedger) -> Path:
    """Beside the ledger file; for a ledger without one (a server database), in the project's data directory."""
    path = getattr(ledger, "path", None)
    return (Path(path).parent if path is not None else default_data_dir()) / JOURNAL_DIR


class LedgerWriter:
    """Buffers settlements and audit entries of one process; thread-safe. Use as a context manager."""

    def __init__(self, ledger: DuckDBLedger, audit: Optional[DuckDBAuditLog] = None, *,
                 flush_interval_s: float = 1.0, max_batch: int = 2000):
        if flush_interval_s <= 0 or max_batch < 1:
            raise ValueError("flush_interval_s > 0 and max_batch >= 1 are required")
        self.ledger, self.audit = ledger, audit
        self.flush_interval_s, self.max_batch = flush_interval_s, max_batch
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending_calls: list[tuple[Optional[str], list[CallRecord]]] = []
        self._pending_audit: list[AuditEntry] = []
        self._pending_outputs: list[tuple[str, str, str]] = []
        self._journal_lines = 0
        self._audit_retry = False
        self.flushes = 0
        self.set_aside = 0  # calls the ledger refused for their values (``store_each``)
        self.last_error: Optional[str] = None
        directory = journal_dir(ledger)
        directory.mkdir(parents=True, exist_ok=True)
        self.journal_path = directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        # Locked under a name recovery does not look at, then renamed (same file, same lock): another
        # process's recovery can never take a journal between its creation and its lock.
        claiming = self.journal_path.with_suffix(".claiming")
        self._fd = os.open(claiming, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # held until close or death: recovery knows the owner is alive
        os.rename(claiming, self.journal_path)
        with self._lock:
            self._write({"ledger": str(ledger.path), "audit": str(audit.path) if audit is not None else None})
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- producers

    def settle(self, reservation_id: Optional[str], records: Sequence[CallRecord],
               outputs: Sequence[tuple[str, str, str]] = ()) -> None:
        """Journal the call's rows (the reservation they close, the answers kept) now; store them with the next batch."""
        records, outputs = list(records), [tuple(o) for o in outputs]
        line = (f'{{"reservation":{json.dumps(reservation_id)},"calls":[{",".join(r.model_dump_json() for r in records)}],'
                f'"outputs":{json.dumps(outputs, separators=(",", ":"))}}}')
        with self._lock:
            self._write_line(line)
            self._pending_calls.append((reservation_id, records))
            self._pending_outputs.extend(outputs)
            full = len(self._pending_calls) >= self.max_batch
        if full:
            self._wake.set()

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        if self.audit is None or not entries:
            return
        entries = list(entries)
        line = f'{{"audit_entries":[{",".join(e.model_dump_json() for e in entries)}]}}'
        with self._lock:
            self._write_line(line)
            self._pending_audit.extend(entries)

    # ---------------------------------------------------------------- flushing

    def flush_soon(self) -> None:
        """Ask the background thread to store what is pending now rather than at its next interval."""
        self._wake.set()

    def flush(self) -> bool:
        """Store everything pending in one ledger transaction (and one audit append); False if the store refused."""
        with self._flush_lock:
            with self._lock:
                calls, self._pending_calls = self._pending_calls, []
                outputs, self._pending_outputs = self._pending_outputs, []
                entries, self._pending_audit = self._pending_audit, []
                lines = self._journal_lines
            if not calls and not entries:
                return True
            # Two files, two transactions, run side by side: DuckDB's open, commit and checkpoint
            # release the GIL, so a flush takes the longer of the two rather than their sum.
            audit_stored: list[bool] = []
            appending = None
            if entries and self.audit is not None:
                appending = threading.Thread(target=lambda: audit_stored.append(self._append_audit(entries)),
                                             name="audit-flush", daemon=True)
                appending.start()
            stored = self._settle_calls(calls, outputs) if calls else True
            if appending is not None:
                appending.join()
                stored = stored and audit_stored == [True]
            if not stored:
                return False
            with self._lock:
                self._write({"flushed_through": lines})
            self.flushes += 1
            return True

    def _settle_calls(self, calls: list, outputs: list) -> bool:
        try:
            self.ledger.settle_batch(calls, outputs)
            return True
        except REFUSED_VALUES as exc:  # one call's row refused for its values: the others are stored without it
            self._failed(exc, len(calls))
            try:
                self.set_aside += store_each(self.ledger, calls, outputs, source=self.journal_path.name)
                return True
            except Exception as again:  # the file itself failed meanwhile: kept, as below
                exc = again
            if _stored(self.ledger, calls):
                return True
            with self._lock:
                self._pending_calls[:0] = calls
                self._pending_outputs[:0] = outputs
            return False
        except Exception as exc:  # kept: the next flush retries, the journal still has them
            if self._failed(exc, len(calls)) or _stored(self.ledger, calls):
                return True
            with self._lock:
                self._pending_calls[:0] = calls
                self._pending_outputs[:0] = outputs
            return False

    def _append_audit(self, entries: list[AuditEntry]) -> bool:
        retry = self._audit_retry  # after a failed append: it may have committed before failing
        try:
            self.audit.append(entries, skip_stored=retry)
            self._audit_retry = False
            return True
        except Exception as exc:
            self._failed(exc, len(entries))
            with self._lock:
                self._pending_audit[:0] = entries
            self._audit_retry = True
            return False

    def _failed(self, exc: Exception, count: int) -> bool:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("ledger/audit flush failed (%s); %d rows kept for the next try", self.last_error, count)
        return False

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # e.g. the journal's disk is full: keep the thread, close() tries again
                log.exception("ledger writer: flush failed; rows stay pending")

    def close(self) -> None:
        """Store the rest and delete the journal; if the store still refuses, keep it for ``recover_journals``."""
        if self._stopped:
            return
        # The last store is what the batch waits for: its checkpoint is taken in the background after it.
        with checkpoints_deferred(getattr(self.ledger, "path", None), getattr(self.audit, "path", None)):
            self._stopped = True
            self._wake.set()
            self._thread.join()
            stored = self.flush()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        if stored:
            self.journal_path.unlink(missing_ok=True)
        else:
            log.error("ledger writes failed at close (%s): journal kept at %s, replayed by the next reconcile",
                      self.last_error, self.journal_path)

    def __enter__(self) -> "LedgerWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- journal

    def _write(self, entry: dict[str, Any]) -> None:
        self._write_line(json.dumps(entry, separators=(",", ":"), default=str))

    def _write_line(self, line: str) -> None:
        """One journal line, one ``os.write`` (hold ``_lock``: the line count orders lines and batches).

        Rows are serialised by pydantic (``model_dump_json``, in Rust): about a third of the cost of
        ``json.dumps(model_dump())``, paid on the event loop once per call.
        """
        os.write(self._fd, (line + "\n").encode())
        self._journal_lines += 1


def store_each(ledger: DuckDBLedger, calls: Sequence[tuple[Optional[str], Sequence[CallRecord]]],
               outputs: Sequence[tuple[str, str, str]], *, source: str) -> int:
    """Store settlements one by one after their batch was refused for a row's values; set aside
    (``set_aside_path``) each one the ledger refuses, with its error, and return how many calls were.

    Why: one provider reply with an impossible count (10**25 tokens) once failed its batch's
    transaction, so none of the batch's paid calls was stored, and every later reconcile replayed
    the journal into the same error: no AI step could run until someone deleted the file.
    """
    own_outputs: dict[str, list[tuple[str, str, str]]] = {}
    for output in outputs:
        own_outputs.setdefault(output[1], []).append(output)
    refused = 0
    for reservation, records in calls:
        kept = [output for record in records for output in own_outputs.get(record.call_id, [])]
        try:
            ledger.settle_batch([(reservation, records)], kept)
        except REFUSED_VALUES as exc:
            _set_aside(ledger, {"from": source, "error": f"{type(exc).__name__}: {exc}", "reservation": reservation,
                                "calls": [r.model_dump(mode="json") for r in records], "outputs": kept})
            refused += len(records)
    return refused


def set_aside_path(ledger: DuckDBLedger) -> Path:
    """Where refused settlements are kept: a folder recovery does not replay (it reads ``*.jsonl`` beside it)."""
    return journal_dir(ledger) / SET_ASIDE_DIR / "refused.jsonl"


def _set_aside(ledger: DuckDBLedger, entry: dict[str, Any]) -> None:
    path = set_aside_path(ledger)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as kept:
        kept.write(json.dumps(entry, default=str, ensure_ascii=True) + "\n")
    log.error("the ledger refused a settlement (%s); set aside in %s, the rest stored", entry["error"][:300], path)


def _stored(ledger: DuckDBLedger, calls: Sequence[tuple[Optional[str], Sequence[CallRecord]]]) -> bool:
    """Did a failed flush commit after all (an error raised after COMMIT)? Then retrying it would be pointless."""
    ids = [r.call_id for _, records in calls for r in records]
    try:
        return bool(ids) and ledger.count_calls(ids) == len(ids)
    except Exception:
        return False


def recover_journals(ledger: DuckDBLedger) -> dict[str, int]:
    """Replay the unflushed tail of every journal beside ``ledger`` whose writer is gone; delete it once stored.

    Safe to run any time, from any process: a live writer holds its journal's lock and is
    skipped; replayed ledger rows are ignored when their ``call_id`` is already stored.
    """
    counts = {"journals": 0, "calls": 0, "reservations": 0, "audit_entries": 0, "set_aside_calls": 0}
    directory = journal_dir(ledger)
    if not directory.is_dir():
        return counts
    for stale in directory.glob("*.claiming"):  # a writer that died before its journal got its name: empty
        _remove_if_unlocked(stale)
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            calls, outputs, entries, audit_path = _unflushed(path, ledger)
            refused = 0
            if calls:
                try:
                    ledger.settle_batch(calls, outputs)
                except REFUSED_VALUES:  # a row the ledger refuses never blocks the journal (nor later reconciles)
                    refused = store_each(ledger, calls, outputs, source=path.name)
            if entries and audit_path:  # the writer may have died after storing them and before saying so
                DuckDBAuditLog(audit_path).append(entries, skip_stored=True)
            path.unlink(missing_ok=True)
            counts["journals"] += 1
            counts["calls"] += sum(len(records) for _, records in calls) - refused
            counts["set_aside_calls"] += refused
            counts["reservations"] += sum(1 for reservation, _ in calls if reservation is not None)
            counts["audit_entries"] += len(entries)
            log.warning("recovered %s: %d calls and %d audit entries a dead process had not stored",
                        path.name, counts["calls"], counts["audit_entries"])
        finally:
            os.close(fd)
    return counts


def _remove_if_unlocked(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _unflushed(path: Path, ledger: DuckDBLedger) -> tuple[list[tuple[Optional[str], list[CallRecord]]],
                                                        list[tuple[str, str, str]], list[AuditEntry], Optional[str]]:
    lines = path.read_bytes().split(b"\n")
    parsed: list[dict[str, Any]] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            parsed.append(json.loads(raw))
        except json.JSONDecodeError:
            parsed.append({})  # a line cut by the kill: nothing was acknowledged for it
    audit_path = parsed[0].get("audit") if parsed else None
    flushed = max((e["flushed_through"] for e in parsed if "flushed_through" in e), default=1)
    calls, outputs, entries = [], [], []
    for entry in parsed[flushed:]:
        if "calls" in entry:
            try:
                records = [CallRecord.model_validate(r) for r in entry["calls"]]
            except ValidationError as exc:  # unreadable as a call (hand-edited, another version): set aside
                _set_aside(ledger, {"from": path.name, "error": f"unreadable: {exc}"[:2000], **entry})
                continue
            calls.append((entry.get("reservation"), records))
            outputs.extend(tuple(o) for o in entry.get("outputs", []))
        elif "audit_entries" in entry:
            entries.extend(AuditEntry.model_validate(e) for e in entry["audit_entries"])
    return calls, outputs, entries, audit_path
