"""A spending cap over a rolling window, read from the ledger.

The budget sensor alerts on it and the schedules consult it before requesting a run,
so once the cap is reached no new AI work is started until spend falls out of the window.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

import dagster as dg
from pydantic import BaseModel

from resources.ledger import LedgerStore


class BudgetStatus(BaseModel):
    spent_usd: float
    cap_usd: float
    window_hours: float

    @property
    def exceeded(self) -> bool:
        return self.spent_usd >= self.cap_usd

    @property
    def message(self) -> str:
        verdict = "cap reached: no new runs are requested" if self.exceeded else "within budget"
        return (
            f"AI spend ${self.spent_usd:.6f} in the last {self.window_hours:g} h against a cap of "
            f"${self.cap_usd:.6f} ({self.spent_usd / self.cap_usd:.0%}): {verdict}"
            if self.cap_usd > 0 else f"AI spend ${self.spent_usd:.6f} against a cap of $0: {verdict}"
        )


class BudgetResource(dg.ConfigurableResource):
    """The spending cap. ``cap_usd`` over the last ``window_hours``."""

    cap_usd: float = 5.0
    window_hours: float = 24.0

    def status(self, ledger: LedgerStore, now: Optional[datetime] = None) -> BudgetStatus:
        now = now or datetime.now(timezone.utc)
        spent = ledger.spend_since(now - timedelta(hours=self.window_hours))
        return BudgetStatus(spent_usd=spent, cap_usd=self.cap_usd, window_hours=self.window_hours)
