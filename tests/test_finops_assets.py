"""spend_report and spend_forecast materialized on a real instance over a ledger with months of spend."""

from datetime import datetime, time, timedelta

import dagster as dg
import pytest

from orchestration_assets.finops_assets import spend_forecast, spend_report
from resources.ledger import CallRecord, LedgerResource
from resources.spend_history import draw_profiles, generate_spend_history
from resources.warehouse import DuckDBWarehouseResource


def test_spend_report_and_forecast_from_the_ledger(tmp_path):
    history = generate_spend_history(draw_profiles(2, days=200, seed=3), days=200, seed=3)
    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    ledger.store().append([
        CallRecord(recorded_at=datetime.combine(row.day, time(12)), item_id=f"h{n}", task="history", model_id="gpt-4o-mini",
                   provider="openai", residency="cloud", classification="internal", cost_usd=float(row.cost_usd),
                   outcome="ok", department=row.department, workflow=row.workflow)
        for n, row in enumerate(history.itertuples())
    ])
    warehouse = DuckDBWarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([spend_report, spend_forecast], instance=instance,
                                resources={"ledger": ledger, "warehouse": warehouse})
    assert result.success
    report = result.output_for_node("spend_report")
    assert round(float(report["cost_usd"].sum()), 2) == round(float(history["cost_usd"].sum()), 2)
    assert set(report["department"]) == set(history["department"])
    (count,) = warehouse.read("SELECT COUNT(*) AS n FROM spend_report")["n"]
    assert count == len(report)

    meta = result.asset_materializations_for_node("spend_forecast")[0].metadata
    assert meta["departments_forecast"].value == 2 and meta["skipped"].value == {}
    assert 0 <= meta["mape_30d"].value < 0.2  # the forecaster's measured error is always shown
    frame = result.output_for_node("spend_forecast")
    assert sorted(frame["horizon_days"].unique()) == [30, 90] and len(frame) == 4
    assert (frame["p10_usd"] <= frame["total_usd"]).all() and (frame["total_usd"] <= frame["p90_usd"]).all()
    last_30 = history[history["day"] > history["day"].max() - timedelta(days=30)]
    for dept, group in last_30.groupby("department"):
        forecast_30 = frame[(frame["department"] == dept) & (frame["horizon_days"] == 30)]["total_usd"].item()
        assert forecast_30 == pytest.approx(group["cost_usd"].sum(), rel=0.5)  # the right order of magnitude


def test_forecast_with_too_little_history_says_why(tmp_path):
    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    yesterday = datetime.utcnow() - timedelta(days=1)  # today's partial day is left out of forecasts
    ledger.store().append([CallRecord(item_id="a", task="t", model_id="m", provider="p", residency="on_prem", recorded_at=yesterday,
                                      classification="internal", cost_usd=1.0, outcome="ok", department="legal")])
    with dg.instance_for_test() as instance:
        result = dg.materialize([spend_report, spend_forecast], instance=instance, resources={
            "ledger": ledger, "warehouse": DuckDBWarehouseResource(path=str(tmp_path / "w.duckdb"))})
    assert result.success
    meta = result.asset_materializations_for_node("spend_forecast")[0].metadata
    assert meta["departments_forecast"].value == 0 and "28" in meta["skipped"].value["legal"]
