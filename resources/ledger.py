"""The ledger: one row per model call, the single source of truth for spend.

Rows are appended, never updated; every number a user sees (cost per run, spend in a
budget window, calls per model) is derived from them. ``LedgerStore`` is the seam for
other backends (Postgres when several machines write); ``DuckDBLedger`` is the embedded
default, safe under Dagster's multiprocess executor (see ``duckdb_file``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Protocol, Sequence

import dagster as dg
import pandas as pd
from pydantic import BaseModel, Field

from resources.duckdb_file import default_data_dir, locked_connection


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class CallRecord(BaseModel):
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


_COLUMNS = list(CallRecord.model_fields)

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
"""


class LedgerStore(Protocol):
    def append(self, records: Sequence[CallRecord]) -> None: ...

    def calls(self, run_id: Optional[str] = None) -> pd.DataFrame: ...

    def spend_since(self, since: datetime) -> float: ...


class DuckDBLedger:
    """The ledger in one DuckDB file. Appends are idempotent on ``call_id``."""

    def __init__(self, path: "str | Path", *, timeout_s: float = 60.0):
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self._initialised = False

    def _connection(self, read_only: bool = False):
        return locked_connection(self.path, read_only=read_only, timeout_s=self.timeout_s)

    def _ensure_schema(self, conn) -> None:
        if not self._initialised:
            conn.execute(_SCHEMA)
            self._initialised = True

    def append(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        rows = [tuple(getattr(r, c) for c in _COLUMNS) for r in records]
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._connection() as conn:
            self._ensure_schema(conn)
            conn.executemany(f"INSERT OR IGNORE INTO ai_calls ({', '.join(_COLUMNS)}) VALUES ({placeholders})", rows)

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

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_data_dir() / "ledger.duckdb"

    def store(self) -> DuckDBLedger:
        return DuckDBLedger(self.resolved_path(), timeout_s=self.lock_timeout_s)
