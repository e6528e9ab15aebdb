"""FinOps in lineage: the ledger's spend as a report, and the report as a forecast with its track record.

``spend_report`` sums the ledger per day, department, workflow and model (in DuckDB) and
writes it to the warehouse table ``spend_report``, so finance can query it beside their
other data. ``spend_forecast`` forecasts each department's next 30 and 90 days with a
p10–p90 interval (``resources.spend_forecast``) and backtests the forecaster on the same
history at rolling origins: its 30-day MAPE is in the metadata, so a forecast never
arrives without its measured error. Departments with less history than a forecast needs
are listed with the reason instead of failing the asset.
"""

import math
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from resources.ledger import LedgerResource
from resources.spend_forecast import MIN_BACKTEST_TRAIN_DAYS, backtest_by_department, forecast_by_department
from resources.warehouse import DuckDBWarehouseResource


@dg.asset(group_name="finops", kinds={"duckdb"}, deps=[dg.AssetKey("invoice_extractions")])
def spend_report(ledger: LedgerResource, warehouse: DuckDBWarehouseResource) -> dg.Output[pd.DataFrame]:
    """Spend by day, department, workflow and model, from the ledger; also the warehouse table spend_report."""
    report = ledger.store().daily_spend()
    rows = warehouse.replace_table("spend_report", report) if len(report) else 0
    total = float(report["cost_usd"].sum()) if len(report) else 0.0
    by_department = report.groupby("department")["cost_usd"].sum().round(8).to_dict() if len(report) else {}
    by_model = report.groupby("model_id")["cost_usd"].sum().round(8).to_dict() if len(report) else {}
    return dg.Output(report, metadata={
        "rows": dg.MetadataValue.int(rows),
        "days": dg.MetadataValue.int(int(report["day"].nunique()) if len(report) else 0),
        "total_usd": dg.MetadataValue.float(round(total, 8)),
        "by_department_usd": dg.MetadataValue.json(by_department),
        "by_model_usd": dg.MetadataValue.json(by_model),
        "warehouse_table": dg.MetadataValue.text("spend_report"),
    })


@dg.asset(group_name="finops", kinds={"python"})
def spend_forecast(context: dg.AssetExecutionContext, spend_report: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """Next 30 and 90 days of spend per department (p10/p90), with the forecaster's backtested MAPE."""
    today = datetime.now(timezone.utc).date()
    complete = spend_report[pd.to_datetime(spend_report["day"]).dt.date < today] if len(spend_report) else spend_report
    # Today is still being spent: a partial day would read as a slump.
    spend = complete.groupby(["day", "department"], as_index=False)["cost_usd"].sum() if len(complete) else \
        pd.DataFrame(columns=["day", "department", "cost_usd"])
    forecasts = forecast_by_department(spend)
    frame = forecasts.to_frame()
    metadata: dict[str, dg.MetadataValue] = {
        "departments_forecast": dg.MetadataValue.int(len(forecasts.forecasts)),
        "skipped": dg.MetadataValue.json(forecasts.skipped),
    }
    backtestable = {d for d, f in forecasts.forecasts.items() if f.history_days >= 30 + MIN_BACKTEST_TRAIN_DAYS}
    if backtestable:
        tests = backtest_by_department(spend[spend["department"].isin(backtestable)], horizon=30)
        mapes = {d: b.mape for d, b in tests.items() if not math.isnan(b.mape)}
        if mapes:
            metadata["mape_30d"] = dg.MetadataValue.float(round(sum(mapes.values()) / len(mapes), 4))
            metadata["mape_30d_by_department"] = dg.MetadataValue.json({d: round(m, 4) for d, m in mapes.items()})
    for department, forecast in forecasts.forecasts.items():
        for horizon, total in forecast.totals.items():
            key = f"{department}_{horizon}d".replace(" ", "_")
            metadata[f"{key}_usd"] = dg.MetadataValue.float(round(total.total_usd, 6))
            metadata[f"{key}_p10_p90_usd"] = dg.MetadataValue.text(f"{total.p10_usd:.6f} – {total.p90_usd:.6f}")
    if len(frame):
        metadata["forecast"] = dg.MetadataValue.md(_table(frame))
    context.log.info(f"forecast {len(forecasts.forecasts)} departments; skipped {forecasts.skipped}")
    return dg.Output(frame, metadata=metadata)


def _table(frame: pd.DataFrame) -> str:
    rows = ["| department | days | forecast | p10 | p90 | method |", "|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        rows.append(f"| {r.department} | {r.horizon_days} | ${r.total_usd:,.2f} | ${r.p10_usd:,.2f} | ${r.p90_usd:,.2f} | {r.method} |")
    return "\n".join(rows)
