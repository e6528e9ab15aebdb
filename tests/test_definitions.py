"""The whole Definitions loads, and the budget sensor and schedule obey the ledger."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from orchestration_assets import defs
from orchestration_assets.invoices.schedules import invoice_daily_schedule
from resources.budget import BudgetResource
from resources.ledger import CallRecord, LedgerResource
from sensors.budget_sensor import ai_budget_sensor


def test_definitions_load_with_the_invoice_graph():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {"raw_invoices", "invoice_extractions", "approved_invoices", "routing_outcomes", "routing_policy"}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert checks == {"extraction_quality", "extraction_compliance"}
    assert defs.resolve_job_def("invoice_batch") is not None
    assert {s.name for s in repo.schedule_defs} == {"invoice_daily_schedule"}
    assert {s.name for s in repo.sensor_defs} == {"ai_budget_sensor"}
    deps = repo.asset_graph.get(dg.AssetKey("approved_invoices")).parent_keys
    assert deps == {dg.AssetKey("invoice_extractions")}


def _spend(ledger: LedgerResource, usd: float) -> None:
    ledger.store().append([CallRecord(
        item_id="x", task="t", model_id="gpt-4o-mini", provider="openai", residency="cloud",
        classification="internal", cost_usd=usd, outcome="ok",
    )])


def test_budget_sensor_alerts_once_per_breach_and_schedule_stops(tmp_path):
    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    budget = BudgetResource(cap_usd=1.0)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"ledger": ledger, "budget": budget})
        quiet = ai_budget_sensor(context)
        assert "within budget" in quiet.skip_message and context.cursor == "clear"

        schedule_context = dg.build_schedule_context(
            instance=instance, resources={"ledger": ledger, "budget": budget},
            scheduled_execution_time=datetime(2026, 3, 5, 6, tzinfo=timezone.utc),
        )
        request = invoice_daily_schedule(schedule_context)
        assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-03-04"

        _spend(ledger, 1.25)
        context = dg.build_sensor_context(instance=instance, resources={"ledger": ledger, "budget": budget}, cursor="clear")
        breached = ai_budget_sensor(context)
        assert "$1.250000" in breached.skip_message and "cap reached" in breached.skip_message
        assert context.cursor == "alerting"

        skipped = invoice_daily_schedule(schedule_context)
        assert isinstance(skipped, dg.SkipReason) and "cap reached" in skipped.skip_message


def test_budget_status_numbers():
    status = BudgetResource(cap_usd=2.0).status(_FixedLedger(0.5))
    assert (status.spent_usd, status.exceeded) == (0.5, False)
    assert "25%" in status.message
    assert BudgetResource(cap_usd=0.5).status(_FixedLedger(0.5)).exceeded


class _FixedLedger:
    def __init__(self, spent):
        self.spent = spent

    def spend_since(self, since):
        return self.spent
