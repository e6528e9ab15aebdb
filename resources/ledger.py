"""The ledger: one row per model call, the single source of truth for spend.

Rows are appended, never updated; every number a user sees (cost per run, spend in a
budget window, calls per model) is derived from them. ``LedgerStore`` is the seam for
other backends (Postgres when several machines write); ``DuckDBLedger`` is the embedded
default, safe under Dagster's multiprocess executor (see ``duckdb_file``).
"""

from __future__ import annotations

import contextlib
import math
import operator
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Protocol, Sequence

import dagster as dg
import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from resources import budget_store
from resources.budgets import Budget, BudgetStatus, SpendScope
from resources.duckdb_file import default_data_dir, insert_rows, locked_connection


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class CallRecord(BaseModel):
    # The journal writes rows with model_dump_json: a non-finite float must come back as itself, not as null.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    call_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    recorded_at: datetime = Field(default_factory=utc_now, description="UTC.")
    run_id: Optional[str] = None
    step_key: Optional[str] = None
    asset_key: Optional[str] = None
    partition_key: Optional[str] = None
    item_id: str
    task: str
    model_id: str
    provider: str
    residency: str
    classification: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    estimated_cost_usd: Optional[float] = None
    latency_s: float = 0.0
    route_reason: str = ""
    outcome: str = Field(description="'ok' or 'error'.")
    error: Optional[str] = None
    policy: str = "rules"
    attempt: int = Field(1, description="Position in a cascade's chain (1 = first model tried).")
    accepted: Optional[bool] = Field(None, description="Did the answer pass the task's item check?")
    features: Optional[str] = Field(None, description="JSON of the hashed routing features (no text), for retraining.")
    input_chars: Optional[int] = Field(None, description="Characters sent (document + instructions): calibrates token estimates.")
    department: Optional[str] = Field(None, description="Who pays: the department whose budgets and credits the call draws on.")
    workflow: Optional[str] = Field(None, description="The workflow (template, asset group or run tag) it draws on.")
    reservation_id: Optional[str] = Field(None, description="The budget reservation this call settled.")
    redaction: Optional[str] = Field(None, description="What the model saw: 'none' or 'pseudonymised N values'.")
    idempotency_key: Optional[str] = Field(None, description="run (the root of a re-execution):step:item:attempt:model.")
    usage_estimated: Optional[bool] = Field(None, description="The provider reported no usable token counts; tokens (and cost) estimated from the text.")
    transport_attempts: Optional[int] = Field(None, description="HTTP attempts the call took (retries of 429/5xx/timeouts included).")
    compute_s: Optional[float] = Field(None, description="Seconds of compute charged where not latency_s: an in-process model's CPU time.")

    @field_validator("recorded_at")
    @classmethod
    def _naive_utc(cls, value: datetime) -> datetime:
        # Stored as a DuckDB TIMESTAMP (no zone): a zone-aware time would be stored as the session's local
        # wall time (12:00 UTC as 17:30 under TimeZone=Asia/Kolkata), so every row is naive UTC first.
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


_COLUMNS = list(CallRecord.model_fields)
_ROW_OF = operator.attrgetter(*_COLUMNS)  # a record's values in column order, in one C call (not a getattr per column)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ai_calls (
    call_id VARCHAR PRIMARY KEY,
    recorded_at TIMESTAMP NOT NULL,
    run_id VARCHAR,
    step_key VARCHAR,
    asset_key VARCHAR,
    partition_key VARCHAR,
    item_id VARCHAR NOT NULL,
    task VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    residency VARCHAR NOT NULL,
    classification VARCHAR NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd DOUBLE NOT NULL,
    estimated_cost_usd DOUBLE,
    latency_s DOUBLE NOT NULL,
    route_reason VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    error VARCHAR
);
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS policy VARCHAR DEFAULT 'rules';
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS attempt INTEGER DEFAULT 1;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS accepted BOOLEAN;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS features VARCHAR;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS input_chars BIGINT;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS department VARCHAR;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS workflow VARCHAR;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS reservation_id VARCHAR;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS redaction VARCHAR;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS usage_estimated BOOLEAN;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS transport_attempts INTEGER;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS idempotency_key VARCHAR;
ALTER TABLE ai_calls ADD COLUMN IF NOT EXISTS compute_s DOUBLE;
CREATE TABLE IF NOT EXISTS call_outputs (
    idempotency_key VARCHAR PRIMARY KEY,
    call_id VARCHAR NOT NULL,
    output_json VARCHAR NOT NULL
);
""" + budget_store.SCHEMA


class LedgerStore(Protocol):
    def append(self, records: Sequence[CallRecord]) -> None: ...

    def calls(self, run_id: Optional[str] = None) -> pd.DataFrame: ...

    def spend_since(self, since: datetime) -> float: ...

    def reserve(self, scope: SpendScope, amount_usd: float, *, run_id: Optional[str] = None,
                item_id: Optional[str] = None) -> "budget_store.Reservation": ...

    def settle(self, reservation: "Optional[budget_store.Reservation]", records: Sequence[CallRecord]) -> None: ...

    def release(self, reservation: "budget_store.Reservation") -> None: ...

    def settle_batch(self, settlements: Sequence[tuple[Optional[str], Sequence[CallRecord]]],
                     outputs: Sequence[tuple[str, str, str]] = ()) -> None: ...

    def completed_outputs(self, key_prefix: str) -> dict[str, str]: ...


class DuckDBLedger:
    """The ledger in one DuckDB file. Appends are idempotent on ``call_id``."""

    def __init__(self, path: "str | Path", *, timeout_s: float = 60.0, reservation_ttl_s: float = 900.0):
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self.reservation_ttl_s = reservation_ttl_s
        self._initialised = False

    def _connection(self, read_only: bool = False):
        return locked_connection(self.path, read_only=read_only, timeout_s=self.timeout_s)

    def _ensure_schema(self, conn) -> None:
        if not self._initialised:
            conn.execute(_SCHEMA)
            self._initialised = True

    @contextlib.contextmanager
    def _transaction(self):
        """The locked connection inside BEGIN/COMMIT: a process killed half-way leaves nothing half-written."""
        with self._connection() as conn:
            self._ensure_schema(conn)
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _insert_calls(conn, records: Sequence[CallRecord], or_ignore: bool = True) -> None:
        insert_rows(conn, "ai_calls", _COLUMNS, list(map(_ROW_OF, records)), or_ignore=or_ignore)

    def append(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        with self._transaction() as conn:
            self._insert_calls(conn, records)

    def daily_spend(self, since: Optional[datetime] = None) -> pd.DataFrame:
        """Spend per day, department, workflow and model: what reports and forecasts are built on."""
        columns = ["day", "department", "workflow", "model_id", "calls", "cost_usd"]
        if not self.path.exists():
            return pd.DataFrame(columns=columns)
        with self._connection() as conn:
            self._ensure_schema(conn)
            return conn.execute(
                """SELECT CAST(recorded_at AS DATE) AS day, COALESCE(department, '(none)') AS department,
                          COALESCE(workflow, '(none)') AS workflow, model_id, COUNT(*) AS calls, SUM(cost_usd) AS cost_usd
                   FROM ai_calls WHERE recorded_at >= ?
                   GROUP BY ALL ORDER BY day, department, workflow, model_id""",
                [since or datetime(1970, 1, 1)],
            ).df()

    # ------------------------------------------------------------ budgets and reservations

    def reserve(self, scope: SpendScope, amount_usd: float, *, run_id: Optional[str] = None,
                item_id: Optional[str] = None, now: Optional[datetime] = None) -> budget_store.Reservation:
        """Claim a call's p95 estimate against every budget covering it, atomically; ``BudgetRefusal`` if one is full."""
        with self._transaction() as conn:
            return budget_store.reserve(conn, scope, amount_usd, now or utc_now(), self.reservation_ttl_s,
                                        run_id=run_id, item_id=item_id)

    def settle(self, reservation: Optional[budget_store.Reservation], records: Sequence[CallRecord]) -> None:
        """Record the calls and close their reservation in one transaction: spend counted once, the claim released."""
        self.settle_batch([(reservation.reservation_id if reservation is not None else None, records)])

    def settle_batch(self, settlements: Sequence[tuple[Optional[str], Sequence[CallRecord]]],
                     outputs: Sequence[tuple[str, str, str]] = ()) -> None:
        """Many settled calls in one transaction (``ledger_writer``): rows inserted once by ``call_id``, each
        reservation closed at the sum of its calls, and the answers kept for re-executions
        (``outputs``: idempotency key, call id, JSON) with them. Replaying a batch changes nothing."""
        if not settlements and not outputs:
            return
        try:
            # Nearly always none of these rows is stored yet, and a plain INSERT costs a third of an
            # INSERT OR IGNORE: tried first; a key already stored (a replayed journal) aborts the
            # transaction, which is then made again skipping stored keys.
            self._settle_batch(settlements, outputs, or_ignore=False)
        except duckdb.ConstraintException:
            self._settle_batch(settlements, outputs, or_ignore=True)

    def _settle_batch(self, settlements: Sequence[tuple[Optional[str], Sequence[CallRecord]]],
                      outputs: Sequence[tuple[str, str, str]], *, or_ignore: bool) -> None:
        now = utc_now()
        with self._transaction() as conn:
            self._insert_calls(conn, [r for _, records in settlements for r in records], or_ignore=or_ignore)
            insert_rows(conn, "call_outputs", ["idempotency_key", "call_id", "output_json"], list(outputs), or_ignore=or_ignore)
            for reservation_id, records in settlements:
                if reservation_id is not None:
                    budget_store.close(conn, reservation_id, "settled", sum(r.cost_usd for r in records), now)

    def completed_outputs(self, key_prefix: str) -> dict[str, str]:
        """Answers kept for calls whose idempotency key starts with ``key_prefix`` (a run and step)."""
        if not self.path.exists():
            return {}
        with self._connection() as conn:
            self._ensure_schema(conn)
            rows = conn.execute("SELECT idempotency_key, output_json FROM call_outputs WHERE starts_with(idempotency_key, ?)",
                                [key_prefix]).fetchall()
        return dict(rows)

    def count_calls(self, call_ids: Sequence[str]) -> int:
        if not self.path.exists() or not call_ids:
            return 0
        with self._connection() as conn:
            self._ensure_schema(conn)
            (count,) = conn.execute("SELECT COUNT(*) FROM ai_calls WHERE call_id IN (SELECT UNNEST(?))", [list(call_ids)]).fetchone()
            return int(count)

    def release(self, reservation: budget_store.Reservation) -> None:
        """Give a reservation back unused (the call was never made)."""
        with self._transaction() as conn:
            budget_store.close(conn, reservation.reservation_id, "released", None, utc_now())

    def reconcile(self, now: Optional[datetime] = None) -> dict[str, int]:
        """Store the journaled calls of dead processes (``ledger_writer``), then close reservations left open
        by dead processes or past their expiry: those whose call landed as settled, the rest as expired."""
        if not self.path.exists():
            return {"settled": 0, "expired": 0}
        from resources.ledger_writer import recover_journals

        recovered = recover_journals(self)
        with self._transaction() as conn:
            counts = budget_store.expire_stale(conn, now or utc_now())
        counts["settled"] += recovered["reservations"]
        if recovered["calls"]:
            counts["recovered_calls"] = recovered["calls"]
        if recovered["set_aside_calls"]:
            counts["set_aside_calls"] = recovered["set_aside_calls"]
        return counts

    def open_reservations(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._connection() as conn:
            self._ensure_schema(conn)
            return budget_store.open_reservations(conn)

    def set_budget(self, budget: Budget, *, remove: bool = False) -> None:
        with self._transaction() as conn:
            budget_store.set_budget(conn, budget, utc_now(), removed=remove)

    def budget_statuses(self, scope: Optional[SpendScope] = None, now: Optional[datetime] = None) -> list[BudgetStatus]:
        """Every active budget (and funded credit account), or those covering ``scope``, with spend and reservations."""
        if not self.path.exists():
            return []
        now = now or utc_now()
        with self._connection() as conn:
            self._ensure_schema(conn)
            budgets = budget_store.covering_budgets(conn, scope) if scope else (
                budget_store.active_budgets(conn) + budget_store.credit_caps(conn))
            return budget_store.statuses(conn, budgets, now)

    def hold_workflow(self, workflow: str, reason: str) -> None:
        """Stop a workflow's schedules until ``release_workflow``: the compliance sensor's brake."""
        with self._transaction() as conn:
            budget_store.set_hold(conn, workflow, "hold", reason, utc_now())

    def release_workflow(self, workflow: str, note: str) -> None:
        with self._transaction() as conn:
            budget_store.set_hold(conn, workflow, "release", note, utc_now())

    def holds(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        with self._connection() as conn:
            self._ensure_schema(conn)
            return budget_store.active_holds(conn)

    def add_credits(self, kind: str, account: str, amount_usd: float, *, source: Optional[str] = None,
                    usd_per_credit: Optional[float] = None, note: str = "") -> None:
        """Append a credit entry: ``purchase`` (into the organisation), ``allocate`` or ``topup`` (from ``source``).

        A purchase at another rate than the first one's is refused (``ValueError``), in the same
        transaction as the append: balances are kept in USD and shown at one rate, and two first
        purchases at once must not both set it.
        """
        with self._transaction() as conn:
            if kind == "purchase" and usd_per_credit is not None:
                (bought,) = conn.execute("SELECT COUNT(*) FROM credit_entries WHERE kind = 'purchase'").fetchone()
                current = budget_store.usd_per_credit(conn)
                if bought and not math.isclose(usd_per_credit, current):
                    raise ValueError(f"credits here are worth ${current:g} each (set by the first purchase); buy at that "
                                     f"rate or leave out --usd-per-credit, not ${usd_per_credit:g}")
            rate = usd_per_credit if usd_per_credit is not None else budget_store.usd_per_credit(conn)
            if not math.isfinite(amount_usd):
                raise ValueError(f"that many credits come to ${amount_usd} (not a finite amount): buy fewer at a time")
            budget_store.credit_entry(conn, kind, account, amount_usd, utc_now(), source=source, usd_per_credit=rate, note=note)

    def credit_balances(self) -> tuple[dict[str, dict[str, float]], float]:
        """Balances per account and the current USD per credit."""
        if not self.path.exists():
            return {}, 1.0
        with self._connection() as conn:
            self._ensure_schema(conn)
            return budget_store.credit_balances(conn, utc_now()), budget_store.usd_per_credit(conn)

    def calls(self, run_id: Optional[str] = None) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=_COLUMNS)
        with self._connection() as conn:
            self._ensure_schema(conn)
            where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
            return conn.execute(f"SELECT * FROM ai_calls {where} ORDER BY recorded_at, call_id", params).df()

    def spend_since(self, since: datetime) -> float:
        if not self.path.exists():
            return 0.0
        with self._connection() as conn:
            self._ensure_schema(conn)
            since_utc = since.astimezone(timezone.utc).replace(tzinfo=None) if since.tzinfo else since
            (total,) = conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM ai_calls WHERE recorded_at >= ?", [since_utc]).fetchone()
            return float(total)


class LedgerResource(dg.ConfigurableResource):
    """The ledger as a Dagster resource. ``path`` defaults to ``$DAGSTER_HOME/ai_orchestration/ledger.duckdb``."""

    path: Optional[str] = None
    lock_timeout_s: float = 60.0
    reservation_ttl_s: float = Field(900.0, description="A budget reservation not settled by then is expired by reconcile.")

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_data_dir() / "ledger.duckdb"

    def store(self) -> DuckDBLedger:
        return DuckDBLedger(self.resolved_path(), timeout_s=self.lock_timeout_s, reservation_ttl_s=self.reservation_ttl_s)
