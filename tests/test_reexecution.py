"""A re-executed run never pays twice for a call that completed: the ledger's kept answers are reused.

Run 1 of the invoice job calls a loopback OpenAI server: four invoices succeed, two get an
HTTP 400, and with ``max_failure_rate`` 0.1 the step fails. Re-executed from failure
(Dagster's re-execution: a new run with run 1 as its root), only the two failed invoices
reach the server again; the four answers run 1 paid for come from the ledger.
"""

import dagster as dg

from orchestration_assets.invoices.generator import generate_invoices
from resources.ledger import DuckDBLedger
from tests.fault_harness import KEY, answer, catalog_text
from tests.protocol_servers import HTTPError, OpenAIChatServer, PerDocument, Success
from tests.reexecution_job import invoice_batch_job

PARTITION = "2026-03-03"


def test_reexecution_from_failure_reuses_completed_calls_and_charges_each_once(tmp_path, monkeypatch):
    batch = generate_invoices(6, seed=PARTITION)  # what raw_invoices generates for the partition
    plans = {inv.text: ([answer(inv)] if i < 4 else [HTTPError(status=400, message="bad request"), answer(inv)])
             for i, inv in enumerate(batch)}
    schedule = PerDocument(plans, default=Success(output="not planned"))
    home = tmp_path / "home"
    home.mkdir()
    with OpenAIChatServer(api_key=KEY, default=schedule) as server:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(catalog_text({"gpt-4o-mini": server.url}))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("AI_ORCH_CATALOG", str(catalog))
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        run_config = {"ops": {"raw_invoices": {"config": {"count": 6, "classification": "public"}},
                              "invoice_extractions": {"config": {"max_failure_rate": 0.1}}}}
        with dg.DagsterInstance.get() as instance:
            first = dg.execute_job(dg.reconstructable(invoice_batch_job), instance=instance, run_config=run_config,
                                   tags={"dagster/partition": PARTITION}, raise_on_error=False)
            assert not first.success
            assert len(server.requests) == 6
            second = dg.execute_job(dg.reconstructable(invoice_batch_job), instance=instance, run_config=run_config,
                                    reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
                                    tags={"dagster/partition": PARTITION}, raise_on_error=False)
            assert second.success
            assert instance.get_run_by_id(second.run_id).root_run_id == first.run_id
            materialization = next(e for e in second.get_asset_materialization_events()
                                   if e.asset_key == dg.AssetKey("invoice_extractions")).materialization
    assert len(server.requests) == 8  # only the two failed invoices were called again
    assert [schedule.seen[inv.text] for inv in batch] == [1, 1, 1, 1, 2, 2]
    assert materialization.metadata["failed_items"].value == 0 and materialization.metadata["items"].value == 6

    ledger = DuckDBLedger(home / "ai_orchestration" / "ledger.duckdb")
    calls = ledger.calls()
    assert len(calls[calls.run_id == first.run_id]) == 6 and len(calls[calls.run_id == second.run_id]) == 2
    ok = calls[calls.outcome == "ok"]
    assert sorted(ok["item_id"]) == sorted(inv.id for inv in batch) and ok["item_id"].is_unique  # each answer paid once
    assert ok["idempotency_key"].str.startswith(f"{first.run_id}:invoice_extractions:").all()
