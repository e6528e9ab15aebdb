"""Spend forecasting: exact on a noiseless series, follows a step, refuses short histories, backtests honestly."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from resources.spend_forecast import (
    MIN_HISTORY_DAYS,
    backtest,
    complete_daily,
    forecast_by_department,
    forecast_spend,
    recent_mean_forecast,
)
from resources.spend_history import (
    DepartmentProfile,
    StepChange,
    daily_department_spend,
    draw_profiles,
    generate_spend_history,
)

START = date(2025, 9, 1)  # a Monday
WEEKLY = np.array([1.0, 1.1, 1.0, 1.05, 0.9, 0.4, 0.3])


def _series(values: np.ndarray, start: date = START) -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="D"))


def _trend_and_week(days: int, base: float = 100.0, per_day: float = 0.5) -> np.ndarray:
    t = np.arange(days)
    return (base + per_day * t) * WEEKLY[t % 7]


def test_noiseless_linear_trend_and_week_is_forecast_within_two_percent():
    days, horizon = 150, 30
    full = _trend_and_week(days + 90)
    forecast = forecast_spend(_series(full[:days]), (horizon, 90))
    total = forecast.total(horizon)
    actual = full[days:days + horizon].sum()
    assert total.total_usd == pytest.approx(actual, rel=0.02)
    assert total.p10_usd < total.total_usd < total.p90_usd
    assert forecast.total(90).total_usd == pytest.approx(full[days:].sum(), rel=0.04)
    # The day-by-day path keeps the weekly shape: weekends well under weekdays.
    path = forecast.daily.set_index("day")["forecast_usd"]
    weekend = [v for d, v in path.items() if d.weekday() >= 5]
    weekday = [v for d, v in path.items() if d.weekday() < 5]
    assert max(weekend) < 0.6 * min(weekday)
    assert len(forecast.daily) == 90 and forecast.first_day == START + timedelta(days=days)


def test_forecast_after_a_step_tracks_the_new_level():
    rng = np.random.default_rng(3)
    days, step_at = 160, 130  # a workflow launched 30 days ago and doubled the spend
    level = np.where(np.arange(days + 30) >= step_at, 2.0, 1.0) * 100.0
    t = np.arange(days + 30)
    spend = level * WEEKLY[t % 7] * np.exp(rng.normal(-0.005, 0.1, days + 30))
    forecast = forecast_spend(_series(spend[:days]), (30,))
    actual = spend[days:].sum()
    old_level = (100.0 * WEEKLY[t[days:] % 7]).sum()
    assert forecast.level_shift == START + timedelta(days=step_at)
    assert forecast.total(30).total_usd == pytest.approx(actual, rel=0.08)
    assert forecast.total(30).total_usd > 1.7 * old_level  # not an average of the two levels


def test_too_short_history_names_the_minimum():
    with pytest.raises(ValueError, match=f"at least {MIN_HISTORY_DAYS} days"):
        forecast_spend(_series(np.full(MIN_HISTORY_DAYS - 1, 10.0)))
    with pytest.raises(ValueError, match="at least"):
        backtest(_series(np.full(60, 10.0)), horizon=30)


def test_missing_days_are_zero_spend():
    index = pd.to_datetime([START + timedelta(days=d) for d in range(40) if d % 7 != 6])  # no rows on Sundays
    completed = complete_daily(pd.Series(5.0, index=index))
    assert len(completed) == 40  # first to last day, Sundays filled in
    assert (completed[completed.index.weekday == 6] == 0).all()
    forecast = forecast_spend(pd.Series(5.0, index=index), (14,))
    sundays = forecast.daily[[d.weekday() == 6 for d in forecast.daily["day"]]]
    assert (sundays["forecast_usd"] < 1.0).all()
    assert forecast.total(14).total_usd == pytest.approx(12 * 5.0, rel=0.05)


def test_generator_is_deterministic_and_has_trend_week_noise_and_step():
    first = generate_spend_history(draw_profiles(3, days=120, seed=7), days=120, seed=7)
    again = generate_spend_history(draw_profiles(3, days=120, seed=7), days=120, seed=7)
    other = generate_spend_history(draw_profiles(3, days=120, seed=8), days=120, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first["cost_usd"].equals(other["cost_usd"])
    assert list(first.columns) == ["day", "department", "workflow", "cost_usd"]
    profile = DepartmentProfile("finance", base_daily_usd=100.0, growth_per_30d=0.1, noise=0.0,
                                step=StepChange(day=START + timedelta(days=60), share=0.5, workflow="launch"))
    history = generate_spend_history([profile], days=120, seed=0)
    daily = daily_department_spend(history)["finance"]
    assert history.loc[history["workflow"] == "launch", "day"].min() == START + timedelta(days=60)
    assert daily.iloc[7] / daily.iloc[0] == pytest.approx(1.1 ** (7 / 30), rel=0.15)  # trend (share jitter aside)
    assert daily.iloc[5] < 0.6 * daily.iloc[2]  # a Saturday under a Wednesday
    assert daily.iloc[60] > 1.3 * daily.iloc[53]  # the launch lifts the level


def test_backtest_mape_on_a_generated_history_beats_a_bound_and_is_defined_on_totals():
    history = generate_spend_history(draw_profiles(1, days=180, seed=1), days=180, seed=1)
    daily = next(iter(daily_department_spend(history).values()))
    result = backtest(daily, horizon=30, origins=3)
    assert len(result.origins) == 3
    assert result.mape < 0.12
    first = result.origins[0]
    assert first.pct_error == pytest.approx((first.forecast_usd - first.actual_usd) / first.actual_usd)
    assert result.mape == pytest.approx(np.mean([abs(o.pct_error) for o in result.origins]))
    assert result.daily_mape > result.mape  # a day's noise does not average out
    payload = result.to_dict()
    assert payload["mape"] == round(result.mape, 4) and len(payload["origins"]) == 3
    naive = backtest(daily, horizon=30, origins=3, forecaster=recent_mean_forecast)
    assert [o.origin for o in naive.origins] == [o.origin for o in result.origins]


def test_forecast_by_department_returns_one_entry_per_department():
    history = generate_spend_history(draw_profiles(3, days=70, seed=2), days=70, seed=2)
    young = pd.DataFrame({"day": [date(2025, 11, 1) + timedelta(days=d) for d in range(9)],
                          "department": "research", "workflow": "search", "cost_usd": 3.0})
    result = forecast_by_department(pd.concat([history, young]), (30, 90))
    assert set(result.forecasts) == set(history["department"])
    assert "research" in result.skipped and str(MIN_HISTORY_DAYS) in result.skipped["research"]
    frame = result.to_frame()
    assert len(frame) == 3 * 2 and set(frame["horizon_days"]) == {30, 90}
    assert {f.first_day for f in result.forecasts.values()} == {date(2025, 11, 10)}  # all end on the same day
    payload = result.to_dict()
    assert set(payload["departments"]) == set(history["department"])
    assert payload["departments"]["finance"]["horizons"]["30"]["total_usd"] > 0


@pytest.mark.parametrize("spent", [
    {59: 1.0, 0: 1.0},  # a dollar two months ago and one yesterday: once $5.9 million for the next 30 days
    {199: 1.0, 0: 1.0},  # once $5.8e35
    {**{d: 5.0 for d in range(30, 40)}, 0: 0.5},  # a pilot, then quiet: once $7.4e7
    {40: 2.0, **{d: 2.0 for d in range(0, 7)}},  # a month's gap, then a week: once outside its own interval
])
def test_a_sparse_history_forecasts_within_reason_longer_horizons_never_less(spent):
    end = date(2026, 11, 26)
    daily = pd.Series({end - timedelta(days=d): usd for d, usd in spent.items()})
    forecast = forecast_spend(daily, (30, 90))
    recent_mean = sum(usd for d, usd in spent.items() if d < 28) / 28
    for horizon in (30, 90):
        total = forecast.totals[horizon]
        assert total.total_usd <= 3.0 * recent_mean * horizon + 1e-9
        assert total.p10_usd <= total.total_usd <= total.p90_usd
    assert forecast.totals[90].total_usd >= forecast.totals[30].total_usd
