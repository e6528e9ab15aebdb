"""The audit log: who ran which AI call on what, where, and how its checks came out — provably unedited.

Governance has to answer, months later: which model saw which item, under which data
classification and residency, with what redaction, and did the checks pass? The ledger
answers "what did it cost" and may be corrected; this log answers "what happened" and must
not be, so it is kept apart. It holds no content: the caller passes ``item_hash(content)``.

Each entry is sealed with ``entry_hash`` = SHA-256 over a canonical serialisation of its
fields and ``prev_hash``, the hash of the entry before it (``GENESIS_HASH`` for the first).
``verify`` recomputes the chain in ``seq`` order, so an edited field, a deleted or inserted
row or a reordering breaks a link and is reported at the seq where it breaks.

That is tamper-*evident*, not tamper-proof, and it has two blind spots: deleting the newest
entries leaves a shorter chain that is still valid, and someone who re-hashes every entry
from an edit onwards leaves a self-consistent one. Only an anchor kept elsewhere catches
those: ``head()`` is ``(count, last_hash)``; the caller publishes it (in Dagster
materialization metadata, which lives in Dagster's own storage) and later passes it back
as ``verify(expected_head=...)``. Every append also writes the head to a sidecar file next
to the database. Being on the same disk, the sidecar only catches *careless* truncation —
an old backup restored, rows deleted by hand, the file removed — never someone who edits
both files. The Dagster-published anchor is the real one.

Appends come from Dagster's parallel step processes. Reading the chain head and inserting
the next entries is one transaction under ``locked_connection``'s lock, so two processes
never extend the same head (fork the chain) or reuse a seq.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Protocol, Sequence

import dagster as dg
import duckdb
from pydantic import BaseModel, Field, field_serializer, field_validator

from resources.duckdb_file import default_data_dir, has_table, insert_rows, locked_connection

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry: a fixed constant, so an emptied-and-restarted chain looks like any other start."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_READ_BATCH = 5000


def item_hash(content: "str | bytes") -> str:
    """SHA-256 (hex) of an item's content: what the audit log stores instead of the content.

    The caller computes it, so the log never receives the text. Equal content gives equal
    hashes — that is what lets an auditor holding a document find its entries — which also
    means a short, guessable content (a bare amount, a name) can be confirmed by guessing:
    hash the whole document, not one field of it.
    """
    # surrogatepass: a lone surrogate escape (valid JSON, not encodable UTF-8) hashes instead of crashing the item
    data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else bytes(content)
    return hashlib.sha256(data).hexdigest()


def default_actor() -> str:
    """``user@host:pid`` of this process: with run and step, it says where an entry came from."""
    return f"{_user_at_host()}:{os.getpid()}"  # the pid read each time: a forked worker is another actor


@functools.lru_cache(maxsize=1)
def _user_at_host() -> str:
    """Looked up once: the passwd lookup alone costs ~0.5 ms, per audited call."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # containers with a uid and no passwd entry
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class AuditHead(NamedTuple):
    """Where the chain ends: publish it elsewhere, pass it back to ``verify`` to catch a cut tail."""

    count: int
    last_hash: str

    def __str__(self) -> str:
        return f"{self.count}:{self.last_hash}"

    @classmethod
    def parse(cls, text: str) -> "AuditHead":
        """Read ``COUNT:HASH`` (what ``str(head)`` writes)."""
        count, sep, last_hash = text.strip().partition(":")
        last_hash = last_hash.lower()
        if not sep or not count.isdigit() or not _SHA256_HEX.fullmatch(last_hash):
            raise ValueError(f"an audit head is COUNT:SHA256HEX (as `ai-orch audit verify` prints it), got {text!r}")
        return cls(int(count), last_hash)


EMPTY_HEAD = AuditHead(0, GENESIS_HASH)


class AuditEntry(BaseModel):
    """One audited event. ``seq``, ``prev_hash`` and ``entry_hash`` are set by the log on append."""

    event: str = Field(min_length=1, description="'call', 'check', 'policy_refusal', 'budget_refusal', ...")
    recorded_at: datetime = Field(default_factory=_utc_now,
                                  description="UTC, when the caller recorded the event. Parallel processes interleave: `seq` is the log's order.")
    run_id: Optional[str] = None
    step_key: Optional[str] = None
    asset_key: Optional[str] = None
    partition_key: Optional[str] = None
    item_hash: Optional[str] = Field(None, description="item_hash(content): SHA-256 hex of the item, never the item.")
    classification: Optional[str] = None
    model_id: Optional[str] = None
    residency: Optional[str] = None
    redaction: str = Field("none", description="'none', 'pseudonymised', or 'redacted:N' for N redacted spans (an int N is read as that).")
    checks: dict[str, Any] = Field(default_factory=dict, description="Check outcomes, e.g. {'schema_valid': true}; must be JSON.")
    actor: str = Field(default_factory=default_actor, description="user@host:pid of the recording process.")
    seq: Optional[int] = Field(None, description="Position in the chain, from 1; set on append.")
    prev_hash: Optional[str] = Field(None, description="entry_hash of entry seq-1 (GENESIS_HASH for seq 1); set on append.")
    entry_hash: Optional[str] = Field(None, description="SHA-256 over all the other fields; set on append.")

    @field_validator("recorded_at")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        # Stored as a DuckDB TIMESTAMP (no zone): hashing must see the same value before and after the round trip.
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value

    @field_validator("item_hash")
    @classmethod
    def _is_a_digest(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _SHA256_HEX.fullmatch(value.lower()):
            raise ValueError("item_hash must be a SHA-256 hex digest — pass audit_log.item_hash(content); "
                             "the audit log never stores content")
        return value.lower() if value is not None else None

    @field_validator("redaction", mode="before")
    @classmethod
    def _redacted_spans(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"a count of redacted spans cannot be negative, got {value}")
            return "none" if value == 0 else f"redacted:{value}"
        return value

    @field_validator("checks")
    @classmethod
    def _is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            _canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"checks must be plain JSON (str, number, bool, None, lists, dicts): {exc}") from None
        return value

    @field_serializer("recorded_at")
    def _utc_iso(self, value: datetime) -> str:
        return value.isoformat(timespec="microseconds") + "Z"

    def computed_hash(self) -> str:
        """The hash these fields *should* have: what ``verify`` compares ``entry_hash`` with."""
        return _entry_hash(_row(self))


_COLUMNS = ["seq", "recorded_at", "event", "run_id", "step_key", "asset_key", "partition_key", "item_hash",
            "classification", "model_id", "residency", "redaction", "checks", "actor", "prev_hash", "entry_hash"]
_HASHED = [c for c in _COLUMNS if c != "entry_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    recorded_at TIMESTAMP NOT NULL,
    event VARCHAR NOT NULL,
    run_id VARCHAR,
    step_key VARCHAR,
    asset_key VARCHAR,
    partition_key VARCHAR,
    item_hash VARCHAR,
    classification VARCHAR,
    model_id VARCHAR,
    residency VARCHAR,
    redaction VARCHAR NOT NULL,
    checks VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    entry_hash VARCHAR NOT NULL
);
"""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _canonical_json(value: Any) -> str:
    """One byte sequence per value: sorted keys, no spaces, ASCII only, no NaN.

    One encoder for every call: ``json.dumps`` with options builds a new one each time, a
    third of the cost for the small values hashed here (three per appended entry).
    """
    return _CANONICAL.encode(value)


def _row(entry: AuditEntry) -> dict[str, Any]:
    """The entry as stored: ``checks`` as canonical JSON text, so the stored text is what was hashed."""
    row = {c: getattr(entry, c) for c in _COLUMNS}
    row["checks"] = _canonical_json(entry.checks)
    return row


def _entry_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 over the stored values of every column but ``entry_hash`` (``prev_hash`` and ``seq`` included)."""
    payload = {c: row[c].isoformat(timespec="microseconds") if isinstance(row[c], datetime) else row[c] for c in _HASHED}
    return hashlib.sha256(_canonical_json(payload).encode("ascii")).hexdigest()


def _entry_from_row(row: Mapping[str, Any]) -> AuditEntry:
    """Read back as stored, without validation: a tampered row must still be shown as it is."""
    values = dict(row)
    try:
        values["checks"] = json.loads(values["checks"])
    except (TypeError, ValueError):
        values["checks"] = {"unparsable": values["checks"]}
    return AuditEntry.model_construct(**values)


class AuditVerification(BaseModel):
    """What ``verify`` found. ``ok`` is false when any entry was edited, deleted, inserted or reordered."""

    ok: bool
    entries: int = Field(description="Entries read from the log.")
    problems: list[str] = Field(default_factory=list, description="Each broken link or unreached anchor, in seq order.")
    first_bad_seq: Optional[int] = Field(None, description="The lowest seq where the chain is broken or missing.")
    head: AuditHead = Field(EMPTY_HEAD, description="Where the chain ends now: publish it to catch later truncation.")
    warnings: list[str] = Field(default_factory=list, description="Limits of this check (e.g. no sidecar), not evidence of tampering.")

    @field_serializer("head")
    def _head_text(self, head: AuditHead) -> str:
        return str(head)


class AuditStore(Protocol):
    """The seam for another backend (Postgres when several machines write); DuckDB is the embedded default."""

    def append(self, entries: Sequence[AuditEntry]) -> list[AuditEntry]: ...

    def head(self) -> AuditHead: ...

    def entries(self, run_id: Optional[str] = None, *, limit: Optional[int] = None) -> list[AuditEntry]: ...

    def verify(self, expected_head: Optional[AuditHead] = None) -> AuditVerification: ...


class DuckDBAuditLog:
    """The audit log in one DuckDB file, with its head mirrored in ``<file>.head`` (see the module docstring)."""

    def __init__(self, path: "str | Path", *, timeout_s: float = 60.0):
        self.path = Path(path).expanduser()
        self.sidecar_path = self.path.with_name(self.path.name + ".head")
        self.timeout_s = timeout_s
        self._initialised = False

    def _connection(self, read_only: bool = False):
        return locked_connection(self.path, read_only=read_only, timeout_s=self.timeout_s)

    # ------------------------------------------------------------------ writing

    def append(self, entries: Sequence[AuditEntry], *, skip_stored: bool = False) -> list[AuditEntry]:
        """Seal and store ``entries`` in order, in one transaction; returns them with seq and hashes set.

        The caller's objects are not changed. If the chain no longer reaches the head the
        sidecar last recorded (it was truncated or rewritten), the entries are still stored —
        losing audit records would be worse — and that head is kept in the sidecar as
        ``unreached`` so ``verify`` goes on reporting it.

        ``skip_stored``: leave out entries the log already holds (every field alike but the
        chain's own: seq and hashes), for a replay of entries that may have been stored before
        their writer died (``ledger_writer.recover_journals``), or a retry of an append whose
        outcome is unknown; only those are returned.
        """
        fresh = list(entries)
        for entry in fresh:
            if entry.entry_hash is not None:
                raise ValueError(f"entry already sealed as seq {entry.seq}: append a new AuditEntry, not one read back")
        if not fresh:
            return []
        with self._connection() as conn:
            if not self._initialised:
                conn.execute(_SCHEMA)
                self._initialised = True
            conn.execute("BEGIN TRANSACTION")
            try:
                if skip_stored:
                    fresh = _not_stored(conn, fresh)
                    if not fresh:
                        conn.execute("ROLLBACK")
                        return []
                head = _chain_head(conn)
                sealed, rows = [], []
                for entry in fresh:  # each entry's row is made once: hashed, then stored as it was hashed
                    row = _row(entry)
                    row["seq"], row["prev_hash"] = head.count + 1, head.last_hash
                    row["entry_hash"] = _entry_hash(row)
                    sealed.append(entry.model_copy(update={c: row[c] for c in ("seq", "prev_hash", "entry_hash")}))
                    rows.append(tuple(row.values()))  # _row keeps _COLUMNS order
                    head = AuditHead(row["seq"], row["entry_hash"])
                insert_rows(conn, "audit_log", _COLUMNS, rows)
                unreached = self._unreached_after(conn, sealed[0].seq - 1)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            # Still under the lock: a slower process can never overwrite a newer head with its older one.
            self._write_sidecar(head, unreached)
        return sealed

    def _unreached_after(self, conn, chain_count: int) -> list[dict[str, Any]]:
        """Heads the sidecar holds that the chain (``chain_count`` entries before this append) does not reach."""
        recorded, unreached, _ = self._read_sidecar()
        if recorded is not None and not _reaches(conn, recorded, chain_count):
            unreached.append({"count": recorded.count, "last_hash": recorded.last_hash,
                              "noticed_at": _utc_now().isoformat(timespec="seconds") + "Z", "chain_count": chain_count})
        return unreached

    def _write_sidecar(self, head: AuditHead, unreached: list[dict[str, Any]]) -> None:
        body = {"count": head.count, "last_hash": head.last_hash, "unreached": unreached}
        partial = self.sidecar_path.with_name(f"{self.sidecar_path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(partial, self.sidecar_path)  # atomic: verify never reads half a sidecar

    def _read_sidecar(self) -> tuple[Optional[AuditHead], list[dict[str, Any]], Optional[str]]:
        """(recorded head, unreached heads, why it could not be read)."""
        if not self.sidecar_path.exists():
            return None, [], None
        try:
            body = json.loads(self.sidecar_path.read_text())
            unreached = [dict(u) for u in body.get("unreached", [])]
            for u in unreached:
                AuditHead.parse(f"{u['count']}:{u['last_hash']}")
            return AuditHead.parse(f"{body['count']}:{body['last_hash']}"), unreached, None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return None, [], f"sidecar {self.sidecar_path} is unreadable ({exc}); the tail can only be checked with --expect-head"

    # ------------------------------------------------------------------ reading

    def head(self) -> AuditHead:
        """``(count, last_hash)`` of the stored chain; ``(0, GENESIS_HASH)`` when empty."""
        if not self.path.exists():
            return EMPTY_HEAD
        with self._connection(read_only=True) as conn:
            return _chain_head(conn) if _has_table(conn) else EMPTY_HEAD

    def entries(self, run_id: Optional[str] = None, *, limit: Optional[int] = None) -> list[AuditEntry]:
        """Entries in seq order, exactly as stored (not verified); ``limit`` keeps the newest."""
        if not self.path.exists():
            return []
        with self._connection(read_only=True) as conn:
            if not _has_table(conn):
                return []
            where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
            tail = "LIMIT ?" if limit is not None else ""
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit_log {where} ORDER BY seq DESC {tail}",
                                params + ([limit] if limit is not None else [])).fetchall()
        return [_entry_from_row(dict(zip(_COLUMNS, values))) for values in reversed(rows)]

    def verify(self, expected_head: Optional[AuditHead] = None) -> AuditVerification:
        """Recompute every hash in seq order and check the chain still reaches its anchors.

        Anchors: ``expected_head`` (one you published earlier — the real protection against
        deleted newest entries or a re-hashed chain) and the sidecar's head (same disk: only
        careless truncation). Entries appended after an anchor are fine; it must be *reached*.
        """
        scan = _ChainScan()
        warnings: list[str] = []
        if self.path.exists():
            try:
                with self._connection(read_only=True) as conn:
                    # The sidecar is read under the same lock as the chain: both from one moment.
                    recorded, unreached, unreadable = self._read_sidecar()
                    if _has_table(conn):
                        cursor = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit_log ORDER BY seq")
                        while batch := cursor.fetchmany(_READ_BATCH):
                            for values in batch:
                                scan.add(dict(zip(_COLUMNS, values)))
            except duckdb.Error as exc:  # overwritten or corrupted: as failed a verification as an edited entry
                scan.problems.append(f"{self.path.name} cannot be read as an audit log: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200]}")
                recorded, unreached, unreadable = self._read_sidecar()
            if not scan.problems and not scan.head.count and recorded is None and not unreadable:
                warnings.append(f"{self.path.name} holds no entries and there is no sidecar {self.sidecar_path.name}: "
                                "a deleted log cannot be told from a new one without --expect-head")
        else:
            recorded, unreached, unreadable = self._read_sidecar()
        anchors: list[tuple[str, AuditHead]] = []
        if expected_head is not None:
            anchors.append(("the expected head", expected_head))
        if recorded is not None:
            anchors.append((f"the head recorded in {self.sidecar_path.name}", recorded))
        elif unreadable:
            warnings.append(unreadable)
        elif scan.head.count:
            warnings.append(f"no sidecar {self.sidecar_path.name}: deleted newest entries cannot be detected without --expect-head")
        for u in unreached:
            anchors.append((f"the head {u['count']}:{u['last_hash'][:12]}… that the chain stopped reaching before "
                            f"entry {u['chain_count'] + 1} was appended ({u['noticed_at']})",
                            AuditHead(int(u["count"]), str(u["last_hash"]))))
        for label, anchor in anchors:
            scan.check_anchor(label, anchor)
        return AuditVerification(ok=not scan.problems, entries=scan.entries, problems=scan.problems,
                                 first_bad_seq=scan.first_bad_seq, head=scan.head, warnings=warnings)


class _ChainScan:
    """The running state of a verification: one pass over the rows in seq order."""

    def __init__(self) -> None:
        self.entries = 0
        self.head = EMPTY_HEAD
        self.problems: list[str] = []
        self.first_bad_seq: Optional[int] = None
        self.hashes: dict[int, str] = {}  # stored entry_hash by seq, to check anchors against

    def _bad(self, seq: int, problem: str) -> None:
        self.problems.append(problem)
        self.first_bad_seq = seq if self.first_bad_seq is None else min(self.first_bad_seq, seq)

    def add(self, row: dict[str, Any]) -> None:
        self.entries += 1
        seq, expected_seq = row["seq"], self.head.count + 1
        previous = "the genesis hash" if self.head.count == 0 else f"entry {self.head.count}'s hash"
        reasons = []
        if seq > expected_seq:
            missing = f"entry {expected_seq}" if seq == expected_seq + 1 else f"entries {expected_seq}–{seq - 1}"
            reasons.append(f"{missing} missing (deleted)")
        elif seq < expected_seq:
            reasons.append(f"seq goes backwards after {self.head.count}")
        if row["prev_hash"] != self.head.last_hash:
            reasons.append(f"prev_hash is not {previous} (an entry before it was deleted, inserted, reordered or re-hashed)")
        try:
            if _entry_hash(row) != row["entry_hash"]:
                reasons.append("its fields do not match its entry_hash (edited after it was written)")
        except (TypeError, ValueError) as exc:
            reasons.append(f"cannot be hashed ({exc})")
        if reasons:
            self._bad(min(seq, expected_seq), f"entry {seq}: " + "; ".join(reasons))
        self.hashes[seq] = row["entry_hash"]
        self.head = AuditHead(seq, row["entry_hash"])

    def check_anchor(self, label: str, anchor: AuditHead) -> None:
        if anchor.count == 0:
            if anchor.last_hash != GENESIS_HASH:
                self._bad(1, f"{label} ({anchor}) has no entries but is not the genesis hash")
        elif anchor.count > self.head.count:
            self._bad(self.head.count + 1,
                      f"{label} ({anchor}) is entry {anchor.count}, but the chain ends at entry {self.head.count}: "
                      f"the newest {anchor.count - self.head.count} entries were deleted (tail truncated)")
        elif anchor.count not in self.hashes:
            self._bad(anchor.count, f"{label} ({anchor}) is entry {anchor.count}, which is missing")
        elif self.hashes[anchor.count] != anchor.last_hash:
            self._bad(anchor.count, f"{label} ({anchor}) does not match entry {anchor.count}'s hash "
                                    f"{self.hashes[anchor.count]}: the chain was rewritten up to there")


def _has_table(conn) -> bool:
    return has_table(conn, "audit_log")


_CONTENT = [c for c in _HASHED if c not in ("seq", "prev_hash")]  # what an event says, apart from its place in the chain


def _not_stored(conn, entries: list[AuditEntry]) -> list[AuditEntry]:
    """``entries`` less those the log holds already (same content, found by their recording times)."""
    times = sorted({e.recorded_at for e in entries})
    stored = conn.execute(f"SELECT {', '.join(_CONTENT)} FROM audit_log WHERE recorded_at IN (SELECT UNNEST(?))",
                          [times]).fetchall()
    seen: dict[tuple, int] = {}
    for row in stored:
        seen[row] = seen.get(row, 0) + 1
    out = []
    for entry in entries:
        key = tuple(_row(entry)[c] for c in _CONTENT)
        if seen.get(key, 0) > 0:
            seen[key] -= 1
        else:
            out.append(entry)
    return out


def _chain_head(conn) -> AuditHead:
    # fetchall, not fetchone: DuckDB refuses some later work on a connection with an unexhausted result.
    rows = conn.execute("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchall()
    return AuditHead(int(rows[0][0]), rows[0][1]) if rows else EMPTY_HEAD


def _reaches(conn, anchor: AuditHead, chain_count: int) -> bool:
    """Does the stored chain still contain ``anchor``? (One lookup: the full check is ``verify``'s.)"""
    if anchor.count == 0:
        return anchor.last_hash == GENESIS_HASH
    if anchor.count > chain_count:
        return False
    row = conn.execute("SELECT entry_hash FROM audit_log WHERE seq = ?", [anchor.count]).fetchone()
    return row is not None and row[0] == anchor.last_hash


class AuditLogResource(dg.ConfigurableResource):
    """The audit log as a Dagster resource. ``path`` defaults to ``$DAGSTER_HOME/ai_orchestration/audit.duckdb``."""

    path: Optional[str] = None
    lock_timeout_s: float = 60.0

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_data_dir() / "audit.duckdb"

    def log(self) -> DuckDBAuditLog:
        return DuckDBAuditLog(self.resolved_path(), timeout_s=self.lock_timeout_s)

