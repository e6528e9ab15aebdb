"""Next month's and next quarter's AI spend per department, with an interval and a measured error.

A budget owner asks "what will we spend in the next 30 / 90 days?". An answer is only useful
with a range and with a track record, so every forecast here comes with both:

* **Point forecast** — the mean of a few small candidate models (``CANDIDATES``): the last four
  weeks' weekday profile (no trend), a log-linear trend + weekday regression over the last 13
  and 26 weeks, and statsmodels' Holt-Winters on log spend (damped trend, weekly season). No
  single model wins on every bill — flat spend punishes extrapolated trends, growing spend
  punishes flat profiles — and on varied histories the mean beat picking the one with the best
  rolling-origin backtest (a few overlapping origins make that pick noisy) as well as the naive
  baseline. The backtest on the series' own history still decides what goes in: a candidate
  that clearly fails there (intermittent spend breaks the log models) is left out, and a history
  too short to test a trend over the horizon gets the weekday profile alone.
* **Level shifts** — a workflow launching (or retiring) moves a department's spend to a new level
  overnight. Shifts of 10 % or more are detected on the log series (trend + weekday + step, the
  split that a BIC-like test accepts); the regressions carry a step term, and the other models
  see the history rescaled to today's level, so none averages the old level with the new.
* **Interval** — p10/p90 (80 %) around the point, log-normal, with a spread from what the mean
  missed by in the backtest on the same series (shrunk toward a prior of ~7 % drift a month,
  since a few origins can be lucky), plus the day-to-day noise a total of that many days still
  carries. Per day, the day's own noise is added.

**MAPE at H days** (``Backtest.mape``): for each rolling origin, forecast from the history before
it, take the absolute percentage error of the forecast H-day TOTAL against the actual H-day
total, ``|F − A| / A``, and average over origins. Totals are what budgets are set on; the daily
numbers are reported too (``Backtest.daily_mape``: per origin, the mean over the H days of
``|f_d − a_d| / a_d`` for days with spend, averaged over origins), and they are much larger,
because a single day's noise does not average out.

Input is a daily series indexed by date; a day with no row is a day with zero spend. Pure
pandas/numpy/statsmodels — a Dagster asset wraps it, and so can a notebook.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import dataclass, field
from datetime import date
from typing import Optional

import numpy as np
import pandas as pd

MIN_HISTORY_DAYS = 28  # four weeks: the least that shows a weekly pattern more than once
MIN_BACKTEST_TRAIN_DAYS = 56  # a backtest origin needs this much history before it
SELECTION_ORIGINS = 4  # rolling origins, a week apart, that test the candidates on a series
Z80 = 1.2815515655446004  # standard normal quantile of 0.9: p10/p90 is an 80 % interval
# A forecast's daily mean is at most this many times the last four weeks' (room for growth, none for the
# log-linear trends' blow-ups on a sparse history: a dollar two months ago and one yesterday had extrapolated to
# $5.9 million for the next 30 days).
CEILING_FACTOR = 3.0
# The interval's log σ at most: past about 2.56 (2 × Z80) a log-normal's mean lies above its own p90, and the
# forecast fell outside its interval.
MAX_SPREAD = 1.5
_WEEK = 7


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class HorizonForecast:
    """Total spend over the next ``horizon_days`` days: the point and its p10/p90."""

    horizon_days: int
    total_usd: float
    p10_usd: float
    p90_usd: float
    method: str  # the models averaged, e.g. "mean(weekday_profile, holt_winters)"
    backtest_mape: Optional[float]  # this forecast's MAPE in the backtest on the series' own last weeks (None: too short)

    def to_dict(self) -> dict:
        return {"horizon_days": self.horizon_days, "total_usd": round(self.total_usd, 2),
                "p10_usd": round(self.p10_usd, 2), "p90_usd": round(self.p90_usd, 2), "method": self.method,
                "backtest_mape": None if self.backtest_mape is None else round(self.backtest_mape, 4)}


@dataclass(frozen=True)
class SpendForecast:
    """A series' forecast: totals per horizon and the day-by-day path of the longest one."""

    first_day: date  # the first forecast day (the day after the history's last)
    history_days: int
    totals: dict[int, HorizonForecast]
    # day, forecast_usd, p10_usd, p90_usd: one row per day of the longest horizon, the path behind
    # that horizon's total (a shorter horizon's total may average a different set of models).
    daily: pd.DataFrame
    level_shift: Optional[date] = None  # the latest level shift detected in the history, if any
    candidate_mape: dict[int, dict[str, float]] = field(default_factory=dict)  # horizon → each model's backtest MAPE

    def total(self, horizon_days: int) -> HorizonForecast:
        try:
            return self.totals[horizon_days]
        except KeyError:
            raise KeyError(f"no {horizon_days}-day forecast; horizons are {sorted(self.totals)}") from None

    def to_dict(self, include_daily: bool = False) -> dict:
        result = {"first_day": self.first_day.isoformat(), "history_days": self.history_days,
                  "level_shift": self.level_shift.isoformat() if self.level_shift else None,
                  "horizons": {str(h): f.to_dict() for h, f in sorted(self.totals.items())},
                  "candidate_mape": {str(h): {k: round(v, 4) for k, v in c.items()}
                                     for h, c in sorted(self.candidate_mape.items())}}
        if include_daily:
            result["daily"] = [{"day": r.day.isoformat(), "forecast_usd": round(r.forecast_usd, 2),
                                "p10_usd": round(r.p10_usd, 2), "p90_usd": round(r.p90_usd, 2)}
                               for r in self.daily.itertuples()]
        return result


@dataclass(frozen=True)
class OriginError:
    """One rolling origin of a backtest: what was forecast for the H days after it, and what happened."""

    origin: date  # the first forecast day; the history used ends the day before
    forecast_usd: float
    actual_usd: float
    p10_usd: float
    p90_usd: float
    method: str
    daily_mape: Optional[float]  # mean |f_d − a_d| / a_d over the days with spend

    @property
    def pct_error(self) -> Optional[float]:
        """Signed (F − A) / A of the H-day total; None when nothing was spent."""
        return (self.forecast_usd - self.actual_usd) / self.actual_usd if self.actual_usd > 0 else None

    @property
    def within_interval(self) -> bool:
        return self.p10_usd <= self.actual_usd <= self.p90_usd

    def to_dict(self) -> dict:
        error = self.pct_error
        return {"origin": self.origin.isoformat(), "method": self.method,
                "forecast_usd": round(self.forecast_usd, 2), "actual_usd": round(self.actual_usd, 2),
                "p10_usd": round(self.p10_usd, 2), "p90_usd": round(self.p90_usd, 2),
                "pct_error": None if error is None else round(error, 4),
                "daily_mape": None if self.daily_mape is None else round(self.daily_mape, 4)}


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin accuracy of a forecaster at one horizon (see the module docstring for MAPE)."""

    horizon_days: int
    origins: list[OriginError]

    @property
    def _scored(self) -> list[OriginError]:
        return [o for o in self.origins if o.pct_error is not None]

    @property
    def mape(self) -> float:
        """Mean over origins of |F − A| / A for the H-day total, a fraction (0.05 = 5 %)."""
        return float(np.mean([abs(o.pct_error) for o in self._scored])) if self._scored else float("nan")

    @property
    def daily_mape(self) -> float:
        """Mean over origins of the mean daily |f_d − a_d| / a_d in the window (days with spend)."""
        values = [o.daily_mape for o in self.origins if o.daily_mape is not None]
        return float(np.mean(values)) if values else float("nan")

    @property
    def bias(self) -> float:
        """Mean signed (F − A) / A of the totals: > 0 means the forecaster over-forecasts."""
        return float(np.mean([o.pct_error for o in self._scored])) if self._scored else float("nan")

    @property
    def interval_coverage(self) -> float:
        """Share of origins whose actual total fell inside p10–p90 (0.8 is calibrated)."""
        return float(np.mean([o.within_interval for o in self.origins])) if self.origins else float("nan")

    def to_dict(self, include_origins: bool = True) -> dict:
        result = {"horizon_days": self.horizon_days, "origins_count": len(self.origins), "mape": _round(self.mape),
                  "daily_mape": _round(self.daily_mape), "bias": _round(self.bias),
                  "interval_coverage": _round(self.interval_coverage)}
        if include_origins:
            result["origins"] = [o.to_dict() for o in self.origins]
        return result


@dataclass(frozen=True)
class DepartmentForecasts:
    """One forecast per department that has enough history; the others with the reason why not."""

    forecasts: dict[str, SpendForecast]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per department and horizon: department, horizon_days, total_usd, p10_usd, p90_usd, method."""
        rows = [{"department": dept, **f.to_dict()} for dept, fc in self.forecasts.items() for f in fc.totals.values()]
        columns = ["department", "horizon_days", "total_usd", "p10_usd", "p90_usd", "method", "backtest_mape"]
        return pd.DataFrame(rows, columns=columns)

    def to_dict(self, include_daily: bool = False) -> dict:
        return {"departments": {d: f.to_dict(include_daily) for d, f in self.forecasts.items()},
                "skipped": dict(self.skipped)}


# --------------------------------------------------------------------------- public functions

Forecaster = Callable[[pd.Series, Sequence[int]], SpendForecast]


def forecast_spend(daily: pd.Series, horizons: Sequence[int] = (30, 90), *,
                   as_of: Optional[date] = None) -> SpendForecast:
    """Forecast the total spend of the next ``horizons`` days of a daily spend series.

    ``daily``: spend in USD indexed by day (dates, strings or timestamps; repeated days are
    summed, missing days are zero spend). ``as_of``: the history's last complete day, when
    trailing days without spend must count as zeros. Raises ``ValueError`` for a history shorter
    than ``MIN_HISTORY_DAYS`` days.
    """
    series = complete_daily(daily, as_of=as_of)
    horizons = _check_horizons(horizons)
    history = _History.of(series.to_numpy(), series.index[0].weekday())
    recent = float(series.to_numpy()[-4 * _WEEK:].mean())
    totals, candidate_mape, paths, fitted = {}, {}, {}, {}
    for horizon in horizons:
        choice = _choose(history, horizon)
        fitted.update(_paths(history, max(horizons), [m for m in choice.members if m not in fitted]))
        members = [fitted[m] for m in choice.members if m in fitted]
        if not members:  # the members fit the backtest's shorter histories but not this one
            members = list(_paths(history, max(horizons), [_FALLBACK]).values())
        paths[horizon] = _under_ceiling(np.mean(members, axis=0)[:horizon], recent)
        totals[horizon] = _horizon_forecast(paths[horizon], choice.spread, choice.method, choice.mape)
        candidate_mape[horizon] = choice.scores
    _never_less_over_longer(totals)
    longest = max(horizons)
    daily_frame = _daily_frame(series.index[-1], paths[longest], history.noise_sigma, _spread_of(totals[longest]))
    shift = series.index[history.shifts[-1]].date() if history.shifts else None
    return SpendForecast(first_day=(series.index[-1] + pd.Timedelta(days=1)).date(), history_days=len(series),
                         totals=totals, daily=daily_frame, level_shift=shift, candidate_mape=candidate_mape)


def recent_mean_forecast(daily: pd.Series, horizons: Sequence[int] = (30, 90), *,
                         as_of: Optional[date] = None) -> SpendForecast:
    """The naive baseline: the last 28 days' mean daily spend × the horizon, with a noise-only interval.

    What a spreadsheet would do; a forecaster that does not beat it is not worth its complexity.
    """
    series = complete_daily(daily, as_of=as_of)
    horizons = _check_horizons(horizons)
    history = _History.of(series.to_numpy(), series.index[0].weekday())
    path = np.full(max(horizons), series.to_numpy()[-28:].mean())
    totals = {h: _horizon_forecast(path[:h], history.noise_sigma / np.sqrt(h), "recent_28d_mean", None)
              for h in horizons}
    return SpendForecast(first_day=(series.index[-1] + pd.Timedelta(days=1)).date(), history_days=len(series),
                         totals=totals, daily=_daily_frame(series.index[-1], path, history.noise_sigma, 0.0))


def backtest(daily: pd.Series, horizon: int = 30, origins: int | Sequence[date] = 6, *, step_days: int = 14,
             min_train_days: int = MIN_BACKTEST_TRAIN_DAYS, forecaster: Forecaster = forecast_spend) -> Backtest:
    """Rolling-origin backtest: forecast from each origin with only the history before it, score H-day totals.

    ``origins``: a count — the latest origin is the last that leaves ``horizon`` days of actuals,
    the others ``step_days`` apart before it, keeping only those with ``min_train_days`` of history
    — or explicit first-forecast days. ``forecaster`` is ``forecast_spend`` or any function of the
    same shape (``recent_mean_forecast`` for the baseline).
    """
    series = complete_daily(daily)
    horizon = _check_horizons([horizon])[0]
    n = len(series)
    if isinstance(origins, int):
        positions = [n - horizon - k * step_days for k in range(origins)]
        positions = sorted(p for p in positions if p >= max(min_train_days, MIN_HISTORY_DAYS))
        if not positions:
            raise ValueError(f"a {horizon}-day backtest needs at least {max(min_train_days, MIN_HISTORY_DAYS) + horizon} "
                             f"days of history (got {n})")
    else:
        index = {d.date(): i for i, d in enumerate(series.index)}
        positions = []
        for origin in origins:
            p = index.get(pd.Timestamp(origin).date())
            if p is None or p < MIN_HISTORY_DAYS or p + horizon > n:
                raise ValueError(f"origin {origin}: needs {MIN_HISTORY_DAYS} days of history before it and "
                                 f"{horizon} days of actuals after it within {series.index[0].date()}…{series.index[-1].date()}")
            positions.append(p)
    results = []
    for p in positions:
        forecast = forecaster(series.iloc[:p], (horizon,))
        actual = series.to_numpy()[p:p + horizon]
        total = forecast.total(horizon)
        predicted = forecast.daily["forecast_usd"].to_numpy()[:horizon]
        spent = actual > 0
        daily_mape = float(np.mean(np.abs(predicted[spent] - actual[spent]) / actual[spent])) if spent.any() else None
        results.append(OriginError(origin=series.index[p].date(), forecast_usd=total.total_usd,
                                   actual_usd=float(actual.sum()), p10_usd=total.p10_usd, p90_usd=total.p90_usd,
                                   method=total.method, daily_mape=daily_mape))
    return Backtest(horizon_days=horizon, origins=results)


def forecast_by_department(spend: pd.DataFrame, horizons: Sequence[int] = (30, 90), *,
                           as_of: Optional[date] = None, group_column: str = "department") -> DepartmentForecasts:
    """``forecast_spend`` for each department of a long frame with columns ``day``, ``department``, ``cost_usd``.

    Every department's history ends on the same day — ``as_of``, else the latest day in the frame —
    so all forecasts cover the same calendar days. A department with too short a history is listed
    in ``skipped`` with the reason, instead of failing the others.
    """
    grouped = _group_daily(spend, group_column)
    if as_of is None and grouped:
        as_of = max(s.index[-1] for s in grouped.values()).date()
    forecasts, skipped = {}, {}
    for dept, series in grouped.items():
        try:
            forecasts[dept] = forecast_spend(series, horizons, as_of=as_of)
        except ValueError as exc:
            skipped[dept] = str(exc)
    return DepartmentForecasts(forecasts=forecasts, skipped=skipped)


def backtest_by_department(spend: pd.DataFrame, horizon: int = 30, origins: int | Sequence[date] = 6, *,
                           group_column: str = "department", **options) -> dict[str, Backtest]:
    """``backtest`` for each department of a long frame (``day``, ``department``, ``cost_usd``)."""
    grouped = _group_daily(spend, group_column)
    end = max(s.index[-1] for s in grouped.values()).date() if grouped else None
    return {dept: backtest(complete_daily(series, as_of=end), horizon, origins, **options)
            for dept, series in grouped.items()}


def complete_daily(daily: pd.Series, *, as_of: Optional[date] = None) -> pd.Series:
    """The series on a gap-free daily index from its first day to ``as_of`` (or its last), zeros filled.

    Negative days (credits, refunds) count as zero: they are not spend, and log models need
    non-negative values.
    """
    if not isinstance(daily, pd.Series):
        raise TypeError(f"daily spend must be a pandas Series indexed by day, got {type(daily).__name__}")
    if daily.empty:
        raise ValueError(f"a spend forecast needs at least {MIN_HISTORY_DAYS} days of history (got none)")
    index = pd.DatetimeIndex(pd.to_datetime(daily.index))
    index = (index.tz_localize(None) if index.tz is not None else index).normalize()
    values = pd.to_numeric(pd.Series(daily.to_numpy(), index=index), errors="coerce").fillna(0.0)
    values = values.groupby(level=0).sum().clip(lower=0.0)
    end = pd.Timestamp(as_of) if as_of is not None else values.index[-1]
    values = values[values.index <= end]
    if values.empty:
        raise ValueError(f"a spend forecast needs at least {MIN_HISTORY_DAYS} days of history (got none up to {end.date()})")
    full = pd.date_range(values.index[0], end, freq="D")
    series = values.reindex(full, fill_value=0.0).astype(float)
    if len(series) < MIN_HISTORY_DAYS:
        raise ValueError(f"a spend forecast needs at least {MIN_HISTORY_DAYS} days of history "
                         f"(got {len(series)}: {full[0].date()}…{full[-1].date()})")
    return series


# --------------------------------------------------------------------------- the history and its level shifts


@dataclass(frozen=True)
class _History:
    """A completed daily series as the candidates see it: values, weekdays, detected shifts, noise."""

    y: np.ndarray
    first_weekday: int
    shifts: tuple[int, ...]  # positions of the first day at each new level, oldest first
    shift_sizes: tuple[float, ...]  # each shift's size in log spend (0.3 ≈ +35 %)
    noise_sigma: float  # robust σ of log daily spend around trend + weekday + shifts

    @classmethod
    def of(cls, y: np.ndarray, first_weekday: int) -> "_History":
        y = np.asarray(y, dtype=float)
        shifts, sizes, sigma = _detect_level_shifts(y, first_weekday)
        return cls(y=y, first_weekday=first_weekday, shifts=shifts, shift_sizes=sizes, noise_sigma=sigma)

    def before(self, position: int) -> "_History":
        return _History.of(self.y[:position], self.first_weekday)

    def weekdays(self, start: int, stop: int) -> np.ndarray:
        return (self.first_weekday + np.arange(start, stop)) % _WEEK

    @property
    def at_current_level(self) -> np.ndarray:
        """The history with each day before a shift scaled by that shift: as if today's level had always held.

        Models without a step term of their own (the weekday profile, Holt-Winters) then fit one
        level instead of averaging two, and keep the whole history for the weekly pattern.
        """
        t = np.arange(len(self.y))
        log_scale = sum((size * (t < s) for s, size in zip(self.shifts, self.shift_sizes)), np.zeros(len(t)))
        return self.y * np.exp(log_scale)


_SHIFT_LOOKBACK_DAYS = 182
_SHIFT_MARGIN_DAYS = 7  # a shift needs a week on each side to be told from a noisy week
_SHIFT_PENALTY = 2.5  # × log(n): BIC-like, a little stricter than BIC to avoid chasing noise
_MIN_SHIFT = 0.1  # in log spend (≈ 10 %): a smaller change is the trend's and the noise's business


def _log_values(y: np.ndarray) -> tuple[np.ndarray, float]:
    """log(y + c) with c = 1 % of the mean, and c: zero-spend days stay finite without dominating the fit."""
    offset = 0.01 * max(float(np.mean(y)), 1e-9)
    return np.log(y + offset), offset


def _design(t: np.ndarray, weekdays: np.ndarray, shifts: Sequence[int]) -> np.ndarray:
    """Columns: intercept, trend (per 30 days), six weekday dummies, one step per shift."""
    columns = [np.ones(len(t)), t / 30.0]
    columns += [(weekdays == d).astype(float) for d in range(1, _WEEK)]
    columns += [(t >= s).astype(float) for s in shifts]
    return np.column_stack(columns)


def _least_squares(z: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    beta, *_ = np.linalg.lstsq(X, z, rcond=None)
    return beta, z - X @ beta


def _detect_level_shifts(y: np.ndarray, first_weekday: int,
                         max_shifts: int = 2) -> tuple[tuple[int, ...], tuple[float, ...], float]:
    """Up to ``max_shifts`` level shifts in the last 26 weeks: positions, sizes (log), and the noise σ.

    Greedy: the split that most reduces the squared error of log spend ~ trend + weekday (+ the
    shifts found so far), kept while ``n · log(SSE_before / SSE_after)`` exceeds 2.5 · log(n) and
    the step is at least 10 % — a gradual trend is absorbed by the trend term, not taken for a shift.
    """
    n = len(y)
    start = max(0, n - _SHIFT_LOOKBACK_DAYS)
    z, _ = _log_values(y[start:])
    t = np.arange(start, n)
    weekdays = (first_weekday + t) % _WEEK
    shifts: list[int] = []
    m = len(z)
    _, residual = _least_squares(z, _design(t, weekdays, shifts))
    current = float(residual @ residual)
    for _ in range(max_shifts):
        candidates = [s for s in range(start + _SHIFT_MARGIN_DAYS, n - _SHIFT_MARGIN_DAYS + 1)
                      if all(abs(s - k) >= _SHIFT_MARGIN_DAYS for k in shifts)]
        if not candidates or current <= 1e-12:
            break
        errors = []
        for s in candidates:
            beta, r = _least_squares(z, _design(t, weekdays, [*shifts, s]))
            errors.append(float(r @ r) if abs(beta[-1]) >= _MIN_SHIFT else np.inf)
        best = int(np.argmin(errors))
        if not np.isfinite(errors[best]) or m * np.log(current / max(errors[best], 1e-12)) <= _SHIFT_PENALTY * np.log(m):
            break
        shifts.append(candidates[best])
        current = errors[best]
    shifts.sort()
    beta, residual = _least_squares(z, _design(t, weekdays, shifts))
    recent = residual[-min(m, 56):]
    sigma = 1.4826 * float(np.median(np.abs(recent - np.median(recent))))  # MAD: a spike does not inflate it
    return tuple(shifts), tuple(float(b) for b in beta[_WEEK + 1:]), max(sigma, 1e-3)


# --------------------------------------------------------------------------- candidate models


def _weekday_profile(history: _History, horizon: int) -> np.ndarray:
    """No trend: each weekday's mean over the last four weeks (at today's level), repeated."""
    n = len(history.y)
    window, weekdays = history.at_current_level[-28:], history.weekdays(max(0, n - 28), n)
    means = np.array([window[weekdays == d].mean() for d in range(_WEEK)])
    return means[history.weekdays(n, n + horizon)]


def _log_linear(lookback: int) -> Callable[[_History, int], np.ndarray]:
    def forecast(history: _History, horizon: int) -> np.ndarray:
        """log spend ~ trend + weekday + a step per detected shift, over the last ``lookback`` days, extrapolated."""
        n = len(history.y)
        start = max(0, n - lookback)
        z, offset = _log_values(history.y[start:])
        shifts = [s for s in history.shifts if s > start]
        beta, residual = _least_squares(z, _design(np.arange(start, n), history.weekdays(start, n), shifts))
        smearing = float(np.mean(np.exp(residual)))  # Duan: exp of a mean of logs is a median, not a mean
        future = _design(np.arange(n, n + horizon), history.weekdays(n, n + horizon), shifts)
        return np.maximum(np.exp(future @ beta) * smearing - offset, 0.0)
    return forecast


def _holt_winters(history: _History, horizon: int) -> np.ndarray:
    """statsmodels' Holt-Winters on log spend over the last 26 weeks at today's level: damped trend, weekly season.

    The adaptive member: its level and trend follow recent weeks, where a regression weighs all
    days alike. On the log scale the weekly season is a ratio (weekends a share of weekdays) and
    the fit is far steadier than a multiplicative season on dollars, whose result depended on the
    optimizer in our backtests.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    z, offset = _log_values(history.at_current_level[-_SHIFT_LOOKBACK_DAYS:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on short or flat series; the backtest judges the result
        model = ExponentialSmoothing(z, trend="add", damped_trend=True, seasonal="add", seasonal_periods=_WEEK,
                                     initialization_method="estimated")
        # SLSQP, not L-BFGS-B: as accurate here, and not slowed by BLAS threads when the cores are busy.
        fitted = model.fit(method="SLSQP", use_brute=False)
    smearing = float(np.mean(np.exp(fitted.resid)))  # Duan, as for the regressions
    path = np.exp(np.asarray(fitted.forecast(horizon), dtype=float)) * smearing - offset
    if not np.isfinite(path).all():
        raise FloatingPointError("Holt-Winters diverged")
    return np.maximum(path, 0.0)


CANDIDATES: dict[str, Callable[[_History, int], np.ndarray]] = {
    "weekday_profile": _weekday_profile,
    "log_linear_13w": _log_linear(91),
    "log_linear_26w": _log_linear(182),
    "holt_winters": _holt_winters,
}
_FALLBACK = "weekday_profile"  # when the history is too short to backtest: no trend to extrapolate wrongly


def _paths(history: _History, horizon: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each named candidate's daily path; a candidate that cannot fit this history is left out."""
    paths = {}
    for name in names:
        try:
            paths[name] = CANDIDATES[name](history, horizon)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
    return paths


@dataclass(frozen=True)
class _Choice:
    members: tuple[str, ...]
    scores: dict[str, float]  # each candidate's selection-backtest MAPE on this series
    mape: Optional[float]  # the combination's own selection-backtest MAPE
    spread: float  # log σ of the H-day total, for the interval

    @property
    def method(self) -> str:
        return "mean(" + ", ".join(self.members) + ")" if len(self.members) > 1 else self.members[0]


def _choose(history: _History, horizon: int) -> _Choice:
    """Backtest the candidates and their mean on this history, for H-day totals, from rolling origins.

    The forecast is the equal-weight mean of the candidates that fit at every origin, less any
    that clearly failed there (MAPE over 3 × the best's plus 5 points): on varied histories the
    mean beat choosing the single best candidate by these few, overlapping origins (a noisy
    choice), and the baseline. The backtest also reports each candidate's MAPE and sets the
    interval from what the mean actually missed by.

    Origins are a week apart, the latest leaving H days of actuals — or, for a short history, as
    many as it allows past ``MIN_HISTORY_DAYS``. When that tests less than a third of H, trends
    are not extrapolated: the weekday profile alone, its measured error grown to H.
    """
    n = len(history.y)
    tested = min(horizon, n - MIN_HISTORY_DAYS)
    positions = [p for p in (n - tested - k * _WEEK for k in range(SELECTION_ORIGINS)) if p >= MIN_HISTORY_DAYS]
    positions = [p for p in positions if history.y[p:p + tested].sum() > 0]
    if tested < _WEEK or not positions:
        return _Choice((_FALLBACK,), {}, None, _untested_spread(history, horizon))
    pool = list(CANDIDATES) if tested * 3 >= horizon else [_FALLBACK]
    actual = np.array([history.y[p:p + tested].sum() for p in positions])
    totals: dict[str, list[float]] = {name: [] for name in pool}
    for p in positions:
        for name, path in _paths(history.before(p), tested, pool).items():
            totals[name].append(float(path.sum()))
    predicted = {name: np.array(v) for name, v in totals.items() if len(v) == len(positions)}
    if not predicted:
        return _Choice((_FALLBACK,), {}, None, _untested_spread(history, horizon))
    scores = {name: float(np.mean(np.abs(v - actual) / actual)) for name, v in predicted.items()}
    best = min(scores.values())
    members = [name for name in predicted if scores[name] <= 3 * best + _CLEAR_FAILURE]
    combined = np.mean([predicted[name] for name in members], axis=0)
    log_errors = np.log(np.maximum(combined, 1e-9) / actual) * horizon / tested  # grown linearly to H
    return _Choice(tuple(members), scores, float(np.mean(np.abs(combined - actual) / actual)),
                   _measured_spread(history, horizon, log_errors))


_CLEAR_FAILURE = 0.05
_DRIFT_PER_30D = 0.07  # prior log-σ of the level a month out: what a history too short to measure gets
_PRIOR_ORIGINS = 2  # the prior counts as this many backtest origins


def _measured_spread(history: _History, horizon: int, log_errors: np.ndarray) -> float:
    """The H-day total's log-σ: the backtest's RMS miss, shrunk toward the drift prior, plus the noise.

    One to four overlapping origins can miss by nearly nothing by luck; the prior keeps such an
    interval from collapsing (without it, 90-day intervals covered barely half of the outcomes).
    """
    prior = _DRIFT_PER_30D * horizon / 30
    variance = (float(np.sum(np.square(log_errors))) + _PRIOR_ORIGINS * prior**2) / (len(log_errors) + _PRIOR_ORIGINS)
    return float(np.hypot(np.sqrt(variance), _noise_spread(history, horizon)))


def _untested_spread(history: _History, horizon: int) -> float:
    """An interval for a forecast nobody could backtest: the noise plus the drift prior, growing with H."""
    return float(np.hypot(_noise_spread(history, horizon), _DRIFT_PER_30D * horizon / 30))


def _noise_spread(history: _History, horizon: int) -> float:
    """The log-spread that independent daily noise alone leaves on an H-day total."""
    return history.noise_sigma / np.sqrt(horizon)


def _under_ceiling(path: np.ndarray, recent_daily_mean: float) -> np.ndarray:
    """``path`` scaled down, shape kept, where its mean passes ``CEILING_FACTOR`` times the recent daily mean."""
    ceiling = CEILING_FACTOR * recent_daily_mean * len(path)
    total = float(path.sum())
    return path * (ceiling / total) if total > ceiling > 0 else path


def _never_less_over_longer(totals: dict[int, HorizonForecast]) -> None:
    """A longer horizon forecasts at least what a shorter one does (each horizon picks its own models, and a
    sparse history once gave $3 for 90 days beside a far larger 30)."""
    ordered = sorted(totals)
    for shorter, longer in zip(ordered, ordered[1:]):
        low, high = totals[shorter], totals[longer]
        if high.total_usd < low.total_usd:
            totals[longer] = dataclasses.replace(high, total_usd=low.total_usd, p10_usd=max(high.p10_usd, low.p10_usd),
                                                 p90_usd=max(high.p90_usd, low.p90_usd))


def _horizon_forecast(path: np.ndarray, spread: float, method: str, backtest_mape: Optional[float]) -> HorizonForecast:
    total = float(path.sum())
    low, high = _interval(total, min(spread, MAX_SPREAD))
    return HorizonForecast(horizon_days=len(path), total_usd=total, p10_usd=float(low), p90_usd=float(high), method=method,
                           backtest_mape=backtest_mape)


def _interval(point: np.ndarray | float, spread: float):
    """p10/p90 of a log-normal whose mean is ``point`` and whose log σ is ``spread``."""
    centre = np.asarray(point) * np.exp(-spread**2 / 2)
    return centre * np.exp(-Z80 * spread), centre * np.exp(Z80 * spread)


def _spread_of(forecast: HorizonForecast) -> float:
    if forecast.total_usd <= 0 or forecast.p90_usd <= forecast.p10_usd:
        return 0.0
    return float(np.log(forecast.p90_usd / forecast.p10_usd) / (2 * Z80))


def _daily_frame(last_day: pd.Timestamp, path: np.ndarray, noise_sigma: float, total_spread: float) -> pd.DataFrame:
    """Per-day p10/p90: the day's own noise on top of the uncertainty in the level (the total's spread)."""
    spread = float(np.hypot(noise_sigma, total_spread))
    low, high = _interval(path, spread)
    days = [(last_day + pd.Timedelta(days=k)).date() for k in range(1, len(path) + 1)]
    return pd.DataFrame({"day": days, "forecast_usd": path, "p10_usd": low, "p90_usd": high})


# --------------------------------------------------------------------------- helpers


def _check_horizons(horizons: Sequence[int]) -> list[int]:
    horizons = sorted({int(h) for h in horizons})
    if not horizons or horizons[0] < 1:
        raise ValueError(f"horizons must be positive numbers of days, got {list(horizons)}")
    return horizons


def _group_daily(spend: pd.DataFrame, group_column: str) -> dict[str, pd.Series]:
    missing = {"day", group_column, "cost_usd"} - set(spend.columns)
    if missing:
        raise ValueError(f"spend frame needs columns day, {group_column}, cost_usd; missing {sorted(missing)}")
    frame = spend.assign(day=pd.to_datetime(spend["day"]).dt.normalize())
    totals = frame.groupby([group_column, "day"])["cost_usd"].sum()
    return {str(k): s.droplevel(0) for k, s in totals.groupby(level=0)}


def _round(value: float) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)
