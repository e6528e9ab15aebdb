"""The invoice graph materialized in-process on a real Dagster instance and real DuckDB files."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration_assets.invoices.assets import approved_invoices, invoice_extractions, raw_invoices
from orchestration_assets.invoices.checks import extraction_compliance, extraction_no_pii, extraction_quality
from resources.compliance import call_violations
from resources.data_policy import active_policy
from resources.ledger import CallRecord, DuckDBLedger
from tests.pipeline_support import BAD_RULES, isolated_resources

GRAPH = [raw_invoices, invoice_extractions, approved_invoices, extraction_quality, extraction_compliance, extraction_no_pii]
DAY = "2026-03-02"


def _materialize(instance, resources, count=12, **config):
    return dg.materialize(
        GRAPH, instance=instance, resources=resources, partition_key=DAY, raise_on_error=False,
        run_config={"ops": {"raw_invoices": {"config": {"count": count, **config}}}},
    )


def test_graph_materializes_prices_every_call_and_fills_the_table(tmp_path):
    resources = isolated_resources(tmp_path)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"extraction_quality": True, "extraction_compliance": True, "extraction_no_pii": True}

        calls = DuckDBLedger(tmp_path / "ledger.duckdb").calls(run_id=result.run_id)
        assert len(calls) == 12
        assert set(calls["asset_key"]) == {"invoice_extractions"}
        assert set(calls["partition_key"]) == {DAY}
        assert calls["step_key"].str.contains("invoice_extractions").all()
        assert calls["route_reason"].str.contains("chose rules-invoice").all()

        frame = result.asset_value("invoice_extractions")
        materialization = instance.get_latest_materialization_event(dg.AssetKey("invoice_extractions")).asset_materialization
        metadata = materialization.metadata
        assert metadata["calls"].value == 12
        assert metadata["models"].value == {"rules-invoice": 12}
        assert metadata["cost_usd"].value == pytest.approx(calls["cost_usd"].sum(), abs=1e-8)

        with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
            stored = conn.execute("SELECT id, total FROM approved_invoices WHERE partition_date = ?", [DAY]).fetchall()
        approved_meta = instance.get_latest_materialization_event(dg.AssetKey("approved_invoices")).asset_materialization.metadata
        assert len(stored) == approved_meta["approved"].value > 0
        assert approved_meta["approved"].value + approved_meta["rejected"].value == len(frame)
        stored_totals = dict(stored)
        for row in frame.itertuples():
            if row.id in stored_totals:
                assert stored_totals[row.id] == pytest.approx(row.total)


def test_rematerializing_a_partition_replaces_its_rows(tmp_path):
    resources = isolated_resources(tmp_path)
    with dg.instance_for_test() as instance:
        assert _materialize(instance, resources, count=5).success
        assert _materialize(instance, resources, count=5).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM approved_invoices").fetchone()
        (distinct,) = conn.execute("SELECT COUNT(DISTINCT id) FROM approved_invoices").fetchone()
    assert count == distinct <= 5


def test_bad_extractions_fail_the_quality_check_and_block_downstream(tmp_path):
    resources = isolated_resources(tmp_path, BAD_RULES)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources, count=6)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evaluations["extraction_quality"].passed is False
        rules = evaluations["extraction_quality"].metadata["rules"].value
        assert rules["total_matches_line_items"] == {"passed": False, "failing_percent": 100.0}
        assert evaluations["extraction_compliance"].passed is True
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "invoice_extractions" in materialized
        assert "approved_invoices" not in materialized
        assert instance.get_latest_materialization_event(dg.AssetKey("approved_invoices")) is None


def test_compliance_check_fails_when_a_call_went_to_a_model_not_cleared(tmp_path):
    """A ledger row saying restricted data reached a cloud model must fail the check, whatever the frame says."""
    resources = isolated_resources(tmp_path)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources, count=3, classification="restricted")
        assert result.success
        frame = result.asset_value("invoice_extractions")
        ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
        leaked = ledger.calls(run_id=result.run_id).iloc[0].to_dict()
        leaked.update(call_id="leak", model_id="gpt-4o-mini", residency="cloud")
        ledger.append([CallRecord(**{k: v for k, v in leaked.items() if k in CallRecord.model_fields})])
        calls = ledger.calls(run_id=result.run_id)
        violations = call_violations(calls, resources["models"].catalog(), active_policy())
        assert [v["item"] for v in violations] == [leaked["item_id"]]
        assert "gpt-4o-mini (cloud) is not cleared for restricted data" in violations[0]["why"]
        assert set(frame["classification"]) == {"restricted"}
        # The raw restricted documents never reached Dagster's IO storage; the extraction check says so too.
        raw = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "raw_invoices"][0]
        assert raw.materialization.metadata["storage"].value.startswith("memory only")
        assert not list(Path(instance.storage_directory()).rglob("raw_invoices*/*"))


def test_user_documents_replace_generated_ones(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        '{"id": "r1", "text": "Kopi House Sdn Bhd\\nReceipt No: 88\\nDate: 03/02/2026\\nTOTAL RM 12.50", "extra": 1}\n\n'
        '{"id": "r2", "text": "Blue Ltd\\nInvoice INV-7\\n2026-02-03\\nTotal GBP 99.00"}\n'
    )
    resources = isolated_resources(tmp_path)
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources, input_path=str(docs))
        frame = result.asset_value("invoice_extractions")
    assert list(frame["id"]) == ["r1", "r2"]
    assert list(frame["total"]) == [12.5, 99.0]
