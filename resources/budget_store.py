"""Budgets, reservations and credits in the ledger's DuckDB file: the SQL behind ``DuckDBLedger``.

Why reservations: checking "is there budget left?" and then recording the call later is
the race LiteLLM loses (two first requests both see an empty budget). Here a call first
*reserves* its p95 estimate against every budget that covers it, inside one transaction
that holds the ledger's cross-process lock (``duckdb_file.locked_connection``), so the
check and the claim are one step for every process on the machine. After the call it is
*settled*: the call row and the reservation's closure are written in one transaction,
so spend is never counted twice nor lost. A process that dies leaves its reservation
open; ``expire_stale`` closes reservations whose owner process is gone or whose time is
up, and settles any whose call row did reach the ledger.

Everything is appended, nothing updated: budget edits are new versions, a reservation's
end is a row in ``reservation_closures`` (its primary key makes a double close
impossible), credit allocations and top-ups are rows in ``credit_entries``. Balances are
sums. A Postgres store would keep these tables and take the lock with
``SELECT … FOR UPDATE`` on a budget row instead of the file lock.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional, Sequence

from resources.budgets import Budget, BudgetRefusal, BudgetStatus, OnHardCap, Period, ScopeKind, SpendScope

SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_versions (
    version_id VARCHAR PRIMARY KEY, set_at TIMESTAMP NOT NULL, budget_id VARCHAR NOT NULL,
    scope_kind VARCHAR NOT NULL, scope_value VARCHAR NOT NULL, period VARCHAR NOT NULL,
    soft_usd DOUBLE, hard_usd DOUBLE, on_hard VARCHAR NOT NULL, removed BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, expires_at TIMESTAMP NOT NULL,
    host VARCHAR, pid INTEGER, run_id VARCHAR, item_id VARCHAR, model_id VARCHAR,
    department VARCHAR, workflow VARCHAR, amount_usd DOUBLE NOT NULL, budget_ids VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS reservation_closures (
    reservation_id VARCHAR PRIMARY KEY, closed_at TIMESTAMP NOT NULL, how VARCHAR NOT NULL, actual_usd DOUBLE
);
CREATE TABLE IF NOT EXISTS compliance_holds (
    hold_id VARCHAR PRIMARY KEY, held_at TIMESTAMP NOT NULL, workflow VARCHAR NOT NULL, action VARCHAR NOT NULL,
    reason VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS credit_entries (
    entry_id VARCHAR PRIMARY KEY, entered_at TIMESTAMP NOT NULL, kind VARCHAR NOT NULL, account VARCHAR NOT NULL,
    source VARCHAR, amount_usd DOUBLE NOT NULL, usd_per_credit DOUBLE NOT NULL, note VARCHAR
);
"""

_SCOPE_COLUMN = {ScopeKind.DEPARTMENT: "department", ScopeKind.WORKFLOW: "workflow", ScopeKind.MODEL: "model_id"}
ORG = "org"


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    amount_usd: float
    budget_ids: tuple[str, ...]
    expires_at: datetime


# ---------------------------------------------------------------- budgets


def set_budget(conn, budget: Budget, now: datetime, *, removed: bool = False) -> None:
    conn.execute(
        "INSERT INTO budget_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [uuid.uuid4().hex, now, budget.budget_id, budget.scope_kind.value, budget.scope_value, budget.period.value,
         budget.soft_usd, budget.hard_usd, budget.on_hard.value, removed],
    )


def active_budgets(conn) -> list[Budget]:
    rows = conn.execute(
        """SELECT scope_kind, scope_value, period, soft_usd, hard_usd, on_hard FROM (
               SELECT *, row_number() OVER (PARTITION BY budget_id ORDER BY set_at DESC, version_id DESC) AS n
               FROM budget_versions) WHERE n = 1 AND NOT removed ORDER BY budget_id"""
    ).fetchall()
    return [Budget(scope_kind=k, scope_value=v, period=p, soft_usd=s, hard_usd=h, on_hard=o) for k, v, p, s, h, o in rows]


def _scope_filter(budget: Budget) -> tuple[str, list]:
    if budget.scope_kind is ScopeKind.ALL:
        return "TRUE", []
    return f"{_SCOPE_COLUMN[budget.scope_kind]} = ?", [budget.scope_value]


def budget_status(conn, budget: Budget, now: datetime) -> BudgetStatus:
    start = budget.period.start(now)
    where, params = _scope_filter(budget)
    (spent,) = conn.execute(
        f"SELECT COALESCE(SUM(cost_usd), 0) FROM ai_calls WHERE recorded_at >= ? AND {where}", [start, *params]
    ).fetchone()
    (reserved,) = conn.execute(
        f"""SELECT COALESCE(SUM(r.amount_usd), 0) FROM reservations r
            LEFT JOIN reservation_closures c USING (reservation_id)
            WHERE c.reservation_id IS NULL AND r.expires_at > ? AND r.created_at >= ? AND {where}""",
        [now, start, *params],
    ).fetchone()
    return BudgetStatus(budget=budget, period_start=start, spent_usd=float(spent), reserved_usd=float(reserved))


def covering_budgets(conn, scope: SpendScope) -> list[Budget]:
    """The budgets a call in ``scope`` counts against, including credit allocations (lifetime caps)."""
    return [b for b in active_budgets(conn) + credit_caps(conn) if b.covers(scope)]


# ---------------------------------------------------------------- reservations


def reserve(conn, scope: SpendScope, amount_usd: float, now: datetime, ttl_s: float, *,
            run_id: Optional[str] = None, item_id: Optional[str] = None) -> Reservation:
    """Claim ``amount_usd`` against every covering budget, or raise ``BudgetRefusal`` naming the first that is full.

    Must run inside the ledger's locked transaction: the statuses read here and the row
    written are one atomic step for every process.
    """
    if amount_usd < 0:
        raise ValueError(f"a reservation cannot be negative (${amount_usd})")
    statuses = [budget_status(conn, b, now) for b in covering_budgets(conn, scope)]
    for status in statuses:
        if not status.fits(amount_usd):
            raise BudgetRefusal(status, amount_usd)
    reservation = Reservation(uuid.uuid4().hex, amount_usd, tuple(s.budget.budget_id for s in statuses),
                              now + timedelta(seconds=ttl_s))
    conn.execute(
        "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [reservation.reservation_id, now, reservation.expires_at, socket.gethostname(), os.getpid(), run_id, item_id,
         scope.model_id, scope.department, scope.workflow, amount_usd, ",".join(reservation.budget_ids)],
    )
    return reservation


def close(conn, reservation_id: str, how: str, actual_usd: Optional[float], now: datetime) -> None:
    conn.execute("INSERT OR IGNORE INTO reservation_closures VALUES (?, ?, ?, ?)", [reservation_id, now, how, actual_usd])


def open_reservations(conn, now: Optional[datetime] = None) -> list[dict]:
    rows = conn.execute(
        """SELECT r.* FROM reservations r LEFT JOIN reservation_closures c USING (reservation_id)
           WHERE c.reservation_id IS NULL ORDER BY r.created_at"""
    ).df()
    return rows.to_dict("records")


def _process_alive(host: Optional[str], pid: Optional[int]) -> bool:
    if host != socket.gethostname() or not pid:
        return True  # another machine's process: only its expiry can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expire_stale(conn, now: datetime) -> dict[str, int]:
    """Close reservations whose owner died or whose time ran out; settle those whose call did land."""
    counts = {"settled": 0, "expired": 0}
    for row in open_reservations(conn):
        if row["expires_at"] > now and _process_alive(row["host"], row["pid"]):
            continue
        landed = conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM ai_calls WHERE reservation_id = ?", [row["reservation_id"]]
        ).fetchone()
        how = "settled" if landed[1] else "expired"
        close(conn, row["reservation_id"], how, float(landed[0]) if landed[1] else None, now)
        counts[how] += 1
    return counts


# ---------------------------------------------------------------- compliance holds


def set_hold(conn, workflow: str, action: str, reason: str, now: datetime) -> None:
    conn.execute("INSERT INTO compliance_holds VALUES (?, ?, ?, ?, ?)", [uuid.uuid4().hex, now, workflow, action, reason])


def active_holds(conn) -> dict[str, dict]:
    """Workflows whose latest hold entry is a hold (not a release), with why and since when."""
    rows = conn.execute(
        """SELECT workflow, action, reason, held_at FROM (
               SELECT *, row_number() OVER (PARTITION BY workflow ORDER BY held_at DESC, hold_id DESC) AS n
               FROM compliance_holds) WHERE n = 1 AND action = 'hold' ORDER BY workflow"""
    ).fetchall()
    return {w: {"reason": r, "since": t.isoformat()} for w, _, r, t in rows}


# ---------------------------------------------------------------- credits


def account_name(kind: str, name: str = "") -> str:
    """The account as budgets name its cap: the name without the spaces around it, as ``Budget`` strips it
    ("department:finance " had been a second account, whose cap shadowed finance's own)."""
    kind, name = kind.strip(), name.strip()
    if kind == ORG and not name:
        return ORG
    if kind not in ("department", "workflow") or not name:
        raise ValueError(f"credit account {kind}:{name}: use 'org', 'department:NAME' or 'workflow:NAME'")
    return f"{kind}:{name}"


def credit_entry(conn, kind: str, account: str, amount_usd: float, now: datetime, *, source: Optional[str] = None,
                 usd_per_credit: float = 1.0, note: str = "") -> None:
    if amount_usd <= 0:
        raise ValueError(f"a credit {kind} must be positive (got ${amount_usd})")
    if source is not None:
        available = credit_balances(conn, now)[source]["unallocated_usd"] if source in credit_balances(conn, now) else 0.0
        if amount_usd > available + 1e-9:
            raise ValueError(f"{source} has ${available:.6f} unallocated; cannot move ${amount_usd:.6f} to {account}")
    conn.execute("INSERT INTO credit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 [uuid.uuid4().hex, now, kind, account, source, amount_usd, usd_per_credit, note])


def usd_per_credit(conn) -> float:
    row = conn.execute("SELECT usd_per_credit FROM credit_entries WHERE kind = 'purchase' ORDER BY entered_at DESC LIMIT 1").fetchone()
    return float(row[0]) if row else 1.0


def credit_balances(conn, now: datetime) -> dict[str, dict[str, float]]:
    """Per account: received, passed on to sub-accounts, spent by its calls, and what is left.

    The organisation's balance is what it bought minus what it allocated. A department's
    or workflow's balance is what it received minus what its calls cost (a department's
    calls include its workflows'); ``unallocated_usd`` is what it may still pass on.
    """
    received = dict(conn.execute("SELECT account, SUM(amount_usd) FROM credit_entries GROUP BY account").fetchall())
    passed = dict(conn.execute("SELECT source, SUM(amount_usd) FROM credit_entries WHERE source IS NOT NULL GROUP BY source").fetchall())
    out: dict[str, dict[str, float]] = {}
    for account in sorted(set(received) | set(passed)):
        got, gave = float(received.get(account, 0.0)), float(passed.get(account, 0.0))
        if account == ORG:
            spent = 0.0
        else:
            kind, name = account.split(":", 1)
            (spent,) = conn.execute(f"SELECT COALESCE(SUM(cost_usd), 0) FROM ai_calls WHERE {kind} = ?", [name]).fetchone()
        out[account] = {"received_usd": got, "allocated_usd": gave, "spent_usd": float(spent),
                        "balance_usd": got - (gave if account == ORG else float(spent)),
                        "unallocated_usd": got - gave}
    return out


def credit_caps(conn) -> list[Budget]:
    """Each funded department or workflow as a lifetime hard cap: calls stop when its credits run out."""
    rows = conn.execute(
        "SELECT account, SUM(amount_usd) FROM credit_entries WHERE account <> ? GROUP BY account", [ORG]
    ).fetchall()
    caps = []
    for account, amount in rows:
        kind, name = account.split(":", 1)
        caps.append(Budget(scope_kind=ScopeKind(kind), scope_value=name, period=Period.TOTAL, hard_usd=float(amount),
                           on_hard=OnHardCap.REFUSE))
    return caps


__all__ = ["Reservation", "SCHEMA", "reserve", "close", "expire_stale", "set_budget", "active_budgets",
           "budget_status", "covering_budgets", "credit_entry", "credit_balances", "credit_caps", "open_reservations",
           "account_name", "usd_per_credit", "ORG"]


def statuses(conn, budgets: Sequence[Budget], now: datetime) -> list[BudgetStatus]:
    return [budget_status(conn, b, now) for b in budgets]
