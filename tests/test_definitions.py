"""The whole Definitions loads, and the budget sensor and schedule obey the ledger."""

import http.server
import json
import threading
from datetime import datetime, timezone

import dagster as dg
import pytest

from orchestration_assets import defs
from orchestration_assets.invoices.schedules import invoice_daily_schedule
from resources.budget import BudgetResource
from resources.budgets import Budget
from resources.ledger import CallRecord, LedgerResource
from sensors.budget_sensor import ai_budget_sensor


def test_definitions_load_with_the_invoice_graph():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {"raw_invoices", "invoice_extractions", "approved_invoices", "routing_outcomes", "routing_policy",
                    "ai_budget_alerts", "ai_budget_status", "spend_report", "spend_forecast", "ai_compliance_alerts",
                    "long_invoice_extractions"}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert checks == {"extraction_quality", "extraction_compliance", "extraction_no_pii"}
    assert defs.resolve_job_def("invoice_batch") is not None
    assert {s.name for s in repo.schedule_defs} == {"invoice_daily_schedule"}
    assert {s.name for s in repo.sensor_defs} == {"ai_budget_sensor", "ai_compliance_sensor"}
    deps = repo.asset_graph.get(dg.AssetKey("approved_invoices")).parent_keys
    assert deps == {dg.AssetKey("invoice_extractions")}
    # The chain for long invoices reads the same raw_invoices but is not part of the daily batch.
    chain = repo.asset_graph.get(dg.AssetKey("long_invoice_extractions"))
    assert chain.parent_keys == {dg.AssetKey("raw_invoices")} and chain.group_name == "invoice_chains"
    batch = defs.resolve_job_def("invoice_batch").asset_layer.asset_graph.get_all_asset_keys()
    assert dg.AssetKey("long_invoice_extractions") not in batch
    assert defs.resolve_job_def("invoice_chain") is not None


def _spend(ledger: LedgerResource, usd: float) -> None:
    ledger.store().append([CallRecord(
        item_id="x", task="t", model_id="gpt-4o-mini", provider="openai", residency="cloud",
        classification="internal", cost_usd=usd, outcome="ok", department="operations",
    )])


class _WebhookReceiver(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _WebhookReceiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WebhookReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", _WebhookReceiver.received
    server.shutdown()


def _tick(instance, resources, cursor):
    context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
    result = ai_budget_sensor(context)
    return result, result.cursor


def test_budget_sensor_alerts_once_per_state_change_posts_webhook_and_schedule_skips(tmp_path, webhook):
    url, received = webhook
    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    ledger.store().set_budget(Budget(scope_kind="department", scope_value="operations", period="day",
                                     soft_usd=0.5, hard_usd=1.0))
    budget = BudgetResource(alert_webhook_url=url)
    resources = {"ledger": ledger, "budget": budget}
    with dg.instance_for_test() as instance:
        quiet, cursor = _tick(instance, resources, None)
        assert "department:operations/day" in quiet.skip_reason.skip_message
        assert not [e for e in quiet.asset_events if e.asset_key.path == ["ai_budget_alerts"]] and received == []

        schedule_context = dg.build_schedule_context(
            instance=instance, resources=resources, scheduled_execution_time=datetime(2026, 3, 5, 6, tzinfo=timezone.utc))
        request = invoice_daily_schedule(schedule_context)
        assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-03-04"

        _spend(ledger, 0.6)
        soft, cursor = _tick(instance, resources, cursor)
        alerts = [e for e in soft.asset_events if e.asset_key.path == ["ai_budget_alerts"]]
        assert len(alerts) == 1 and alerts[0].metadata["state"].value == "soft"
        status = next(e for e in soft.asset_events if e.asset_key.path == ["ai_budget_status"])
        assert status.metadata["department_operations_day_spent_usd"].value == 0.6
        assert status.metadata["department_operations_day_remaining_usd"].value == pytest.approx(0.4)

        again, cursor = _tick(instance, resources, cursor)  # nothing changed: no alert, no status event
        assert again.asset_events == []

        _spend(ledger, 0.65)
        hard, cursor = _tick(instance, resources, cursor)
        (alert,) = [e for e in hard.asset_events if e.asset_key.path == ["ai_budget_alerts"]]
        assert alert.metadata["state"].value == "hard" and "HARD CAP" in alert.description
        assert [r["state"] for r in received] == ["soft", "hard"]
        assert received[-1]["spent_usd"] == pytest.approx(1.25) and received[-1]["budget_id"] == "department:operations/day"

        skipped = invoice_daily_schedule(schedule_context)
        assert isinstance(skipped, dg.SkipReason)
        assert "department:operations/day" in skipped.skip_message and "over by $0.250000" in skipped.skip_message


def test_declared_daily_cap_is_written_once_to_the_ledger(tmp_path):
    store = LedgerResource(path=str(tmp_path / "ledger.duckdb")).store()
    budget = BudgetResource(daily_cap_usd=2.0)
    (status,) = budget.statuses(store)
    assert (status.budget.budget_id, status.budget.hard_usd, status.budget.soft_usd) == ("all/day", 2.0, 1.6)
    budget.statuses(store)
    with store._connection() as conn:
        assert conn.execute("SELECT COUNT(*) FROM budget_versions").fetchone()[0] == 1


def test_budget_sensor_cancels_started_runs_of_the_capped_department(tmp_path):
    from dagster._core.storage.dagster_run import DagsterRun

    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    ledger.store().set_budget(Budget(scope_kind="department", scope_value="operations", period="day", hard_usd=1.0))
    _spend(ledger, 1.5)
    resources = {"ledger": ledger, "budget": BudgetResource(cancel_runs_at_hard_cap=True)}
    with dg.instance_for_test() as instance:
        for run_id, department in (("ours", "operations"), ("theirs", "legal")):
            instance.add_run(DagsterRun(job_name="invoice_batch", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                        tags={"ai_orch/department": department}))
        result, _ = _tick(instance, resources, None)
        (alert,) = [e for e in result.asset_events if e.asset_key.path == ["ai_budget_alerts"]]
        assert alert.metadata["alert"].value["cancelled_runs"] == ["ours"]
        assert instance.get_run_by_id("ours").status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
        assert instance.get_run_by_id("theirs").status == dg.DagsterRunStatus.STARTED


def test_compliance_sensor_checks_a_row_stored_after_a_newer_one_once(tmp_path):
    """The cursor was the newest call time seen: a row stored after a tick but made before that tick's newest row
    (a later write-behind batch, another step, a dead worker's journal) was never checked."""
    from datetime import timedelta

    from orchestration_assets.definitions import default_resources
    from resources.ledger import utc_now
    from sensors.compliance_sensor import ai_compliance_sensor

    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    resources = {"ledger": ledger, "models": default_resources()["models"], "budget": BudgetResource()}
    now = utc_now()

    def row(item: str, model: str, residency: str, when) -> CallRecord:
        return CallRecord(item_id=item, task="t", model_id=model, provider="p", residency=residency, classification="restricted",
                          outcome="ok", workflow="invoices", recorded_at=when)

    ledger.store().append([row("ok-1", "rules-invoice", "on_prem", now)])
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = ai_compliance_sensor(context)
        ledger.store().append([row("late-1", "gpt-4o-mini", "cloud", now - timedelta(seconds=3))])
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as context:
            second = ai_compliance_sensor(context)
        assert len(second.asset_events) == 1 and "late-1" in json.dumps(second.asset_events[0].metadata["findings"].value)
        assert "invoices" in ledger.store().holds()
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=second.cursor) as context:
            third = ai_compliance_sensor(context)
        assert third.asset_events == []  # reported once
        # a cursor written before violations were kept by call id does not re-alert what it had already seen
        legacy = json.dumps({k: v for k, v in json.loads(second.cursor).items() if k != "reported"})
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=legacy) as context:
            assert ai_compliance_sensor(context).asset_events == []


def test_compliance_sensor_alerts_and_holds_the_workflow_until_released(tmp_path, webhook):
    from orchestration_assets.definitions import default_resources
    from sensors.compliance_sensor import ai_compliance_sensor

    url, received = webhook
    ledger = LedgerResource(path=str(tmp_path / "ledger.duckdb"))
    resources = {"ledger": ledger, "models": default_resources()["models"], "budget": BudgetResource(alert_webhook_url=url)}
    schedule_resources = {"ledger": ledger, "budget": resources["budget"]}
    ledger.store().append([CallRecord(item_id="ok-1", task="t", model_id="rules-invoice", provider="rules",
                                      residency="on_prem", classification="restricted", outcome="ok", workflow="invoices")])
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            quiet = ai_compliance_sensor(context)
        assert quiet.asset_events == [] and "no new violations" in quiet.skip_reason.skip_message

        # Restricted data recorded against a cloud model: the router would never, the sensor must notice.
        ledger.store().append([CallRecord(item_id="leak-1", task="t", model_id="gpt-4o-mini", provider="openai",
                                          residency="cloud", classification="restricted", outcome="ok", workflow="invoices")])
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=quiet.cursor) as context:
            alarmed = ai_compliance_sensor(context)
        (event,) = alarmed.asset_events
        assert event.asset_key.path == ["ai_compliance_alerts"] and event.metadata["workflow"].value == "invoices"
        assert received and "leak-1" in json.dumps(received[-1]) and "restricted" in received[-1]["alert"] + json.dumps(received[-1])
        assert "gpt-4o-mini (cloud) is not cleared for restricted data" in json.dumps(received[-1]["findings"])

        schedule_context = dg.build_schedule_context(
            instance=instance, resources=schedule_resources,
            scheduled_execution_time=datetime(2026, 3, 5, 6, tzinfo=timezone.utc))
        skipped = invoice_daily_schedule(schedule_context)
        assert isinstance(skipped, dg.SkipReason) and "compliance hold" in skipped.skip_message

        with dg.build_sensor_context(instance=instance, resources=resources, cursor=alarmed.cursor) as context:
            again = ai_compliance_sensor(context)
        assert again.asset_events == []  # the same violation is not re-alerted
        ledger.store().release_workflow("invoices", "reviewed: test fixture")
        assert isinstance(invoice_daily_schedule(schedule_context), dg.RunRequest)
