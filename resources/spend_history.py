"""A synthetic multi-month daily spend history, so spend forecasting can be measured without production data.

A forecaster is only worth shipping if its error on history is known, and a fresh install has no
months of ledger to measure it on. This generator produces the shapes a real AI bill has, per
department, each a knob:

* a trend — compound growth per 30 days (adoption growing, or a team winding down);
* a weekly pattern — business days cost more than weekends (batch jobs follow office hours);
* multiplicative noise — log-normal with mean one, one factor per department-day (a busy day is
  busy for every workflow of the department), plus a smaller per-workflow jitter;
* a step change — a new workflow launching on a date and costing a share of the department's
  level from then on, with its own weekly pattern (customer-facing work runs on weekends too).

Departments' parameters are drawn from the seed within realistic ranges (``draw_profiles``), so
several seeds give several different histories, and the same seed always gives the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Optional

import numpy as np
import pandas as pd

DEPARTMENT_NAMES = ("finance", "legal", "support", "marketing", "engineering", "operations", "sales", "hr")
WORKFLOW_NAMES = ("invoices", "contracts", "tickets", "summaries", "translation", "search")
DEFAULT_START = date(2025, 9, 1)


@dataclass(frozen=True)
class StepChange:
    """A workflow that starts on ``day`` and adds ``share`` × the department's level from then on."""

    day: date
    share: float
    workflow: str = "new-workflow"
    weekend_factor: float = 1.0  # its own weekend level relative to its weekdays

    def __post_init__(self) -> None:
        if self.share <= 0 or self.weekend_factor < 0:
            raise ValueError(f"step on {self.day}: share must be > 0 (a launch adds spend), weekend_factor ≥ 0")


@dataclass(frozen=True)
class DepartmentProfile:
    """How one department's spend behaves; the defaults are a mid-sized, growing department."""

    name: str
    base_daily_usd: float = 200.0  # a weekday's spend on the first day, before noise
    growth_per_30d: float = 0.04  # compound: 0.04 = +4 % every 30 days
    weekly_pattern: tuple[float, ...] = (1.0, 1.05, 1.0, 1.0, 0.95, 0.45, 0.35)  # Monday first
    noise: float = 0.2  # σ of the department-day log-normal factor (mean one)
    workflows: tuple[str, ...] = ("invoices", "contracts")
    step: Optional[StepChange] = None
    workflow_jitter: float = field(default=0.1)  # σ of each workflow's share around its mean, per day

    def __post_init__(self) -> None:
        if len(self.weekly_pattern) != 7:
            raise ValueError(f"{self.name}: weekly_pattern needs 7 factors (Monday first), got {len(self.weekly_pattern)}")
        if self.base_daily_usd <= 0 or self.noise < 0 or not self.workflows:
            raise ValueError(f"{self.name}: base_daily_usd must be > 0, noise ≥ 0, and at least one workflow")


def draw_profiles(count: int = 4, *, days: int = 240, start: date = DEFAULT_START, noise: float = 0.2,
                  seed: int = 0) -> list[DepartmentProfile]:
    """``count`` departments with trend, weekly pattern and a step change drawn from realistic ranges.

    The step lands between 30 % and 55 % of the history: late enough that there is a before,
    early enough that a 30-day backtest's origins see at least a week of the new level (a step
    inside a forecast window is a surprise no method can forecast; it measures the surprise).
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    rng = np.random.default_rng([seed, 1])
    profiles = []
    for n in range(count):
        name = DEPARTMENT_NAMES[n] if n < len(DEPARTMENT_NAMES) else f"department-{n + 1}"
        weekend = rng.uniform(0.25, 0.8)
        weekdays = rng.uniform(0.9, 1.1, size=5)
        pattern = tuple(float(x) for x in (*weekdays, weekend * rng.uniform(0.9, 1.1), weekend))
        workflows = tuple(str(w) for w in rng.choice(WORKFLOW_NAMES, size=int(rng.integers(1, 4)), replace=False))
        step_day = start + timedelta(days=int(days * rng.uniform(0.30, 0.55)))
        step = StepChange(day=step_day, share=float(rng.uniform(0.2, 0.6)), workflow=f"{name}-assistant",
                          weekend_factor=float(rng.uniform(0.4, 1.0)))
        profiles.append(DepartmentProfile(
            name=name, base_daily_usd=float(np.exp(rng.uniform(np.log(40), np.log(800)))),
            growth_per_30d=float(rng.uniform(-0.03, 0.10)), weekly_pattern=pattern, noise=noise,
            workflows=workflows, step=step))
    return profiles


def generate_spend_history(profiles: Sequence[DepartmentProfile] | None = None, *, days: int = 240,
                           start: date = DEFAULT_START, seed: int = 0) -> pd.DataFrame:
    """Daily spend as ``day, department, workflow, cost_usd`` rows (``day`` a ``datetime.date``).

    Without ``profiles``, four departments from ``draw_profiles(seed=seed)``. Deterministic for a
    seed: the same arguments give the same frame, row for row.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    profiles = list(profiles) if profiles is not None else draw_profiles(days=days, start=start, seed=seed)
    rng = np.random.default_rng([seed, 2])
    calendar = [start + timedelta(days=d) for d in range(days)]
    t = np.arange(days)
    weekday = np.array([d.weekday() for d in calendar])
    frames = []
    for profile in profiles:
        pattern = np.asarray(profile.weekly_pattern)[weekday]
        level = profile.base_daily_usd * (1 + profile.growth_per_30d) ** (t / 30)
        day_noise = _mean_one_lognormal(rng, profile.noise, days)
        # Base workflows share the department's spend; their shares wobble day to day.
        shares = rng.dirichlet(np.full(len(profile.workflows), 4.0))
        for workflow, share in zip(profile.workflows, shares):
            jitter = _mean_one_lognormal(rng, profile.workflow_jitter, days)
            frames.append(_rows(calendar, profile.name, workflow, level * pattern * share * jitter * day_noise))
        if profile.step is not None:
            launched = np.array([d >= profile.step.day for d in calendar])
            own_pattern = np.where(weekday >= 5, profile.step.weekend_factor, 1.0)
            jitter = _mean_one_lognormal(rng, profile.workflow_jitter, days)
            cost = level * profile.step.share * own_pattern * jitter * day_noise * launched
            frames.append(_rows(calendar, profile.name, profile.step.workflow, cost)[launched])
    history = pd.concat(frames, ignore_index=True)
    return history.sort_values(["day", "department", "workflow"], ignore_index=True)


def daily_department_spend(history: pd.DataFrame) -> dict[str, pd.Series]:
    """Each department's total spend per day (workflows summed), as the forecaster takes it."""
    totals = history.groupby(["department", "day"])["cost_usd"].sum()
    return {str(dept): series.droplevel(0) for dept, series in totals.groupby(level=0)}


def _mean_one_lognormal(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    return np.exp(rng.normal(-sigma**2 / 2, sigma, size)) if sigma > 0 else np.ones(size)


def _rows(calendar: list[date], department: str, workflow: str, cost: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"day": calendar, "department": department, "workflow": workflow,
                         "cost_usd": np.round(cost, 6)})
