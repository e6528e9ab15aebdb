"""Budgets: who may spend how much, per period, and what happens at the cap.

A budget covers the calls of one scope — a department, a workflow (a template, an asset
group or a run tag), a model, or everything (``all``) — over a calendar period in UTC
(``day``, ``month``, ``quarter``; ``total`` never resets, which is how a credit
allocation behaves). It has a soft threshold that alerts and a hard cap that either
refuses new calls (``refuse``) or sends them down to cheaper routes (``downgrade``).

This module is plain logic over numbers the ledger derives: which budgets cover a call,
when a period starts, and whether one more reservation fits. The ledger does the
arithmetic inside one serialised transaction (see ``spend_ledger``), so two processes can
never both take the last dollar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ScopeKind(str, Enum):
    ALL = "all"
    DEPARTMENT = "department"
    WORKFLOW = "workflow"
    MODEL = "model"


class Period(str, Enum):
    DAY = "day"
    MONTH = "month"
    QUARTER = "quarter"
    TOTAL = "total"

    def start(self, now: datetime) -> datetime:
        """The current period's first instant (naive UTC, like the ledger's timestamps)."""
        now = now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo else now
        if self is Period.DAY:
            return now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self is Period.MONTH:
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if self is Period.QUARTER:
            return now.replace(month=3 * ((now.month - 1) // 3) + 1, day=1, hour=0, minute=0, second=0, microsecond=0)
        return datetime(1970, 1, 1)


class OnHardCap(str, Enum):
    REFUSE = "refuse"
    DOWNGRADE = "downgrade"


@dataclass(frozen=True)
class SpendScope:
    """Who a call belongs to: the keys budgets are matched on."""

    department: Optional[str] = None
    workflow: Optional[str] = None
    model_id: Optional[str] = None


class Budget(BaseModel):
    """One budget. ``budget_id`` is ``kind:value/period`` (``all/month`` for everything), stable across edits."""

    model_config = ConfigDict(frozen=True)

    scope_kind: ScopeKind
    scope_value: str = ""
    period: Period = Period.MONTH
    soft_usd: Optional[float] = Field(None, ge=0, description="Alert threshold; None = no alert.")
    hard_usd: Optional[float] = Field(None, ge=0, description="Cap; None = no cap.")
    on_hard: OnHardCap = OnHardCap.REFUSE

    @field_validator("scope_value")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> "Budget":
        if self.scope_kind is ScopeKind.ALL and self.scope_value:
            raise ValueError("an 'all' budget covers everything: give no scope value")
        if self.scope_kind is not ScopeKind.ALL and not self.scope_value:
            raise ValueError(f"a {self.scope_kind.value} budget needs the {self.scope_kind.value}'s name")
        if self.soft_usd is None and self.hard_usd is None:
            raise ValueError("a budget needs a soft threshold, a hard cap, or both")
        if self.soft_usd is not None and self.hard_usd is not None and self.soft_usd > self.hard_usd:
            raise ValueError(f"soft threshold ${self.soft_usd:g} is above the hard cap ${self.hard_usd:g}")
        return self

    @property
    def budget_id(self) -> str:
        scope = "all" if self.scope_kind is ScopeKind.ALL else f"{self.scope_kind.value}:{self.scope_value}"
        return f"{scope}/{self.period.value}"

    def covers(self, scope: SpendScope) -> bool:
        if self.scope_kind is ScopeKind.ALL:
            return True
        value = {ScopeKind.DEPARTMENT: scope.department, ScopeKind.WORKFLOW: scope.workflow,
                 ScopeKind.MODEL: scope.model_id}[self.scope_kind]
        return value == self.scope_value

    @classmethod
    def parse_id(cls, budget_id: str) -> tuple[ScopeKind, str, Period]:
        """``department:finance/month`` → its parts; a clear error for anything else."""
        # The period is after the last '/', so a name may hold one ("department:emea/finance/month").
        scope, _, period = budget_id.rpartition("/") if "/" in budget_id else (budget_id, "", "")
        kind, _, value = scope.partition(":")
        try:
            return ScopeKind(kind), value, Period(period or "month")
        except ValueError:
            raise ValueError(
                f"budget {budget_id!r}: expected KIND:NAME/PERIOD (kind one of {[k.value for k in ScopeKind]}, "
                f"period one of {[p.value for p in Period]}), or all/PERIOD"
            ) from None


class BudgetStatus(BaseModel):
    """A budget's state now: settled spend and open reservations in the current period."""

    budget: Budget
    period_start: datetime
    spent_usd: float
    reserved_usd: float

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.reserved_usd

    @property
    def remaining_usd(self) -> Optional[float]:
        return None if self.budget.hard_usd is None else self.budget.hard_usd - self.committed_usd

    @property
    def state(self) -> str:
        """``ok``, ``soft`` (past the alert threshold) or ``hard`` (cap reached)."""
        if self.budget.hard_usd is not None and self.spent_usd >= self.budget.hard_usd:
            return "hard"
        if self.budget.soft_usd is not None and self.spent_usd >= self.budget.soft_usd:
            return "soft"
        return "ok"

    def fits(self, amount_usd: float) -> bool:
        return self.budget.hard_usd is None or self.committed_usd + amount_usd <= self.budget.hard_usd + 1e-12

    def describe(self) -> str:
        b = self.budget
        cap = "no cap" if b.hard_usd is None else f"cap ${b.hard_usd:.6f}"
        soft = "" if b.soft_usd is None else f", alert at ${b.soft_usd:.6f}"
        return (f"{b.budget_id}: spent ${self.spent_usd:.6f} + reserved ${self.reserved_usd:.6f} "
                f"since {self.period_start:%Y-%m-%d} ({cap}{soft}; {b.on_hard.value} at cap): {self.state}")

    def as_dict(self) -> dict:
        return {
            "budget_id": self.budget.budget_id, "period": self.budget.period.value,
            "period_start": self.period_start.isoformat(), "soft_usd": self.budget.soft_usd,
            "hard_usd": self.budget.hard_usd, "on_hard": self.budget.on_hard.value,
            "spent_usd": round(self.spent_usd, 8), "reserved_usd": round(self.reserved_usd, 8),
            "remaining_usd": None if self.remaining_usd is None else round(self.remaining_usd, 8), "state": self.state,
        }


class BudgetRefusal(Exception):
    """A call did not fit under a hard cap. Says which budget, how much it needed and how much was left."""

    def __init__(self, status: BudgetStatus, amount_usd: float):
        self.status, self.amount_usd = status, amount_usd
        remaining = status.remaining_usd or 0.0
        super().__init__(
            f"budget {status.budget.budget_id}: hard cap ${status.budget.hard_usd:.6f} would be exceeded: "
            f"${status.spent_usd:.6f} spent and ${status.reserved_usd:.6f} reserved, this call needs "
            f"${amount_usd:.6f} (over by ${amount_usd - remaining:.6f})"
        )

    @property
    def downgrade(self) -> bool:
        return self.status.budget.on_hard is OnHardCap.DOWNGRADE

    @property
    def headroom_usd(self) -> float:
        return max(0.0, self.status.remaining_usd or 0.0)
