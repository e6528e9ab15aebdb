"""Fault injection: the invoice template against loopback OpenAI / Anthropic servers that fail on a schedule.

Each fault mix (``tests/fault_harness.py``) gives every document its own plan of replies, so
which items recover and which fail is fixed by the document. For each mix the tests assert:

* outcomes: which items succeeded and which failed, and that a failure names the model and the fault;
* transport: the HTTP requests the server received equal the attempts the results report;
* ledger: one row per model call (unique ``call_id``, unique item × cascade attempt), priced as the
  results were; transport failures without usage cost nothing;
* traces: one call span per ledger row and one ``ai_orch.transport_attempt`` event per HTTP request.

The circuit breaker, replay, usage and error-typing tests pin bugs this suite found (the breaker
counted attempts and 429s, replays reported phantom attempts, calls without usage were free, bad
output was typed ``_OTHER``).
"""

from __future__ import annotations

import re

import dagster as dg
import pytest

from orchestration_assets.ai_task import CallContext, failure_table, run_ai_task
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION, approved_invoices, invoice_extractions, raw_invoices
from resources.ledger import DuckDBLedger
from resources.routing import CascadePolicy, RulesPolicy
from resources.tracing import TraceRecorder, TraceStore
from tests.fault_harness import (
    ABSURD_OUTPUT_TOKENS, ANSWER_TOKENS, BAD_OUTPUT_TOKENS, BATCH, FAULTS, KEY, MAX_ATTEMPTS, MIXED_FAILED, RETRY_AFTER_S,
    FaultRun, answer, catalog_text, documents, gateway_resource, invoices, mixed_plans, run_fault, run_plans,
)
from tests.pipeline_support import isolated_resources
from tests.protocol_servers import (
    AnthropicMessagesServer, InvalidJSON, OpenAIChatServer, PerDocument, RateLimited, SchemaInvalid, ServerError, Success, Truncated,
    Unavailable, WrongUsage,
)

MATRIX = [(name, protocol) for name, fault in FAULTS.items() if fault.kind != "usage" for protocol in fault.protocols]


# ------------------------------------------------------------------------------------------- invariants


def assert_ledger_matches_results(run: FaultRun) -> None:
    """One ledger row per call (never per HTTP retry), priced exactly as the call's result."""
    calls = run.calls
    results = {(o.document.id, n): r for o in run.outcomes for n, r in enumerate(o.attempts, start=1)}
    assert len(calls) == len(results)
    assert calls["call_id"].is_unique
    assert not calls.duplicated(["item_id", "attempt"]).any()
    for row in calls.itertuples():
        result = results[(row.item_id, row.attempt)]
        assert (row.model_id, row.outcome, row.cost_usd) == (result.model_id, "ok" if result.ok else "error", result.cost_usd)
        assert (row.input_tokens, row.output_tokens) == (result.input_tokens, result.output_tokens)
    assert calls["cost_usd"].sum() == pytest.approx(sum(r.cost_usd for r in results.values()), abs=1e-12)


def assert_traces_match(run: FaultRun) -> None:
    """One call span per ledger row; one transport-attempt event per HTTP request, numbered, with its code."""
    spans = {(s["item_id"], s["attributes"]["ai_orch.attempt"]): s for s in run.call_spans}
    assert len(spans) == len(run.call_spans) == len(run.calls)
    assert len(run.attempt_events) == run.requests
    for outcome in run.outcomes:
        for number, result in enumerate(outcome.attempts, start=1):
            span = spans[(outcome.document.id, number)]
            assert span["name"] == f"chat {result.model_id}"
            events = [e["attributes"] for e in span["events"] if e["name"] == "ai_orch.transport_attempt"]
            assert [e["ai_orch.attempt_number"] for e in events] == [a["attempt"] for a in result.attempt_log]
            assert [e.get("http.response.status_code") for e in events] == [a["status"] for a in result.attempt_log]
            assert [e.get("error.type") for e in events] == [a["error_type"] for a in result.attempt_log]
            assert span["status"] == ("UNSET" if result.ok else "ERROR")
            assert span["attributes"]["ai_orch.cost_usd"] == pytest.approx(result.cost_usd, abs=1e-12)


def assert_requests_match_attempts(run: FaultRun) -> None:
    assert sum(run.item_requests) == run.requests
    assert sum(r.transport_attempts for r in run.results) == run.requests
    for outcome, requests in zip(run.outcomes, run.item_requests):
        assert sum(r.transport_attempts for r in outcome.attempts) == requests
        assert sum(len(r.attempt_log) for r in outcome.attempts) == requests


# ------------------------------------------------------------------------------------------- the matrix


# Every OpenAI-protocol mix again with the calls sent from the batch's transport process: the same outcomes,
# errors, retries, ledger and traces as in-process (the child reports faults in the same words).
VIA_CHILD = [(name, protocol, True) for name, protocol in MATRIX if protocol == "openai"]


@pytest.mark.parametrize("fault_name,protocol,via_child", [(f, p, False) for f, p in MATRIX] + VIA_CHILD,
                         ids=[f"{f}-{p}" for f, p in MATRIX] + [f"{f}-{p}-transport-process" for f, p, _ in VIA_CHILD])
def test_fault_mix(tmp_path, fault_name, protocol, via_child):
    fault = FAULTS[fault_name]
    run = run_fault(fault_name, protocol, tmp_path, transport_process=via_child)
    spec = run.gateway.catalog.get(run.model)
    expected = fault.expected()
    assert run.gateway.transport_calls == (run.requests if via_child else 0)

    # Which items succeeded, and how many requests each took.
    assert [o.error is None for o in run.outcomes] == [ok for ok, _ in expected]
    assert run.item_requests == [requests for _, requests in expected]
    assert_requests_match_attempts(run)

    # Attribution: a failed item names the model and the fault, in its error, the ledger and the failure table.
    failed = [o for o in run.outcomes if o.error is not None]
    pattern = fault.error[protocol].format(model=re.escape(run.model))
    table = failure_table(failed)
    for outcome in failed:
        assert outcome.result.model_id == run.model and [r.model_id for r in outcome.attempts] == [run.model]
        assert re.fullmatch(pattern, outcome.error), outcome.error
        assert f"| {outcome.document.id} |" in table and f"| {run.model} |" in table
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]] == [o.document.id for o in failed]

    # What each HTTP attempt met: the fault's code on the faulty ones (for a 429 a wait of at least its
    # Retry-After before the next), nothing on the one answered.
    for outcome, (ok, requests) in zip(run.outcomes, expected):
        (result,) = outcome.attempts
        log = result.attempt_log
        assert [a["attempt"] for a in log] == list(range(1, requests + 1))
        faulty = requests if not ok else requests - 1 if fault.kind == "transport" else 0
        assert all(a["error_type"] is None for a in log[faulty:])
        assert all(a["status"] == fault.status for a in log[:faulty])
        if fault.error_type is not None:
            assert all(a["error_type"] == fault.error_type for a in log[:faulty])
        if fault.status == 429:
            assert all(a["waited_s"] >= RETRY_AFTER_S for a in log[1:])

    # Prices: a good answer bills its usage; an unusable answer bills its usage too (the provider did);
    # a transport failure without usage costs nothing.
    for outcome in run.outcomes:
        expected_cost = (spec.token_cost(*ANSWER_TOKENS) if outcome.error is None
                         else spec.token_cost(*BAD_OUTPUT_TOKENS) if fault.kind == "output" else 0.0)
        assert outcome.result.cost_usd == pytest.approx(expected_cost, abs=1e-12)
    assert_ledger_matches_results(run)
    assert_traces_match(run)
    if fault.status == 429:
        waits = [e["attributes"]["ai_orch.waited_s"] for e in run.attempt_events if e["attributes"]["ai_orch.attempt_number"] > 1]
        assert len(waits) == run.requests - BATCH and min(waits) >= RETRY_AFTER_S
    for span in run.call_spans:
        if span["status"] == "ERROR" and fault.error_type is not None:
            assert span["attributes"]["error.type"] == fault.error_type


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_wrong_token_counts(tmp_path, protocol):
    """What the adapters do with a bad ``usage`` on a good answer (all items succeed, one request each):
    missing, negative or non-integer counts are estimated from the text and flagged ``usage_estimated``; a total
    that does not add up, or a negative cache counter, is ignored; a count no call could have (more output
    tokens than max_tokens, more input tokens than the request had characters) is estimated and flagged too,
    not charged, and never keeps the batch's other calls out of the ledger."""
    run = run_fault("wrong-token-counts", protocol, tmp_path)
    spec = run.gateway.catalog.get(run.model)
    assert [o.error for o in run.outcomes] == [None] * BATCH
    assert run.item_requests == [1] * BATCH
    assert_requests_match_attempts(run)
    recorded = [(o.result.input_tokens, o.result.output_tokens) for o in run.outcomes]
    # Missing or unusable counts: estimated from the text (never $0 for a completed call), and flagged.
    flagged = [True, True, False, True, True, False]
    assert [o.result.usage_estimated for o in run.outcomes] == flagged
    assert all(tokens > 0 for pair in recorded[:2] for tokens in pair)
    assert recorded[2] == recorded[5] == ANSWER_TOKENS
    assert recorded[3][0] == ANSWER_TOKENS[0] and 0 < recorded[3][1] <= INVOICE_EXTRACTION.max_output_tokens < ABSURD_OUTPUT_TOKENS
    document = run.outcomes[4].document.text
    assert 0 < recorded[4][0] <= len(document) + len(INVOICE_EXTRACTION.instructions) and recorded[4][1] == ANSWER_TOKENS[1]
    assert [o.result.cost_usd for o in run.outcomes] == [spec.token_cost(*tokens) for tokens in recorded]
    assert run.calls.set_index("item_id").loc[[o.document.id for o in run.outcomes], "usage_estimated"].tolist() == flagged
    assert_ledger_matches_results(run)
    assert_traces_match(run)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_completed_call_without_usage_is_not_recorded_as_free(tmp_path, protocol):
    batch = invoices(2)
    truth = batch[0].truth.model_dump(mode="json")
    run = run_plans(tmp_path, protocol, {0: [WrongUsage(truth, usage=WrongUsage.MISSING)], 1: [answer(batch[1])]},
                    name="no-usage", batch=batch)
    assert run.outcomes[0].error is None
    assert run.calls.set_index("item_id").loc[batch[0].id, "cost_usd"] > 0


# ------------------------------------------------------------------------------------------- error typing


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_output_faults_are_typed_invalid_output(tmp_path, protocol):
    run = run_plans(tmp_path, protocol, {0: [Truncated()], 1: [InvalidJSON()]}, name="typing", batch=invoices(2))
    assert [o.error is None for o in run.outcomes] == [False, False]
    assert [r.attempt_log[0]["error_type"] for r in run.results] == ["invalid_output", "invalid_output"]
    assert [s["attributes"]["error.type"] for s in run.call_spans] == ["invalid_output", "invalid_output"]


# ------------------------------------------------------------------------------------------- circuit breaker


FAILING, BREAKER_BATCH = 5, 8  # the breaker opens after 5 consecutive calls that gave up (not attempts)


def _breaker_run(tmp_path, fault):
    """Items 0-4 fail permanently (every retry too): five failed calls open the endpoint's circuit."""
    batch = invoices(BREAKER_BATCH)
    plans = {**{i: [fault] for i in range(FAILING)}, **{i: [answer(batch[i])] for i in range(FAILING, BREAKER_BATCH)}}
    return run_plans(tmp_path, "openai", plans, name="breaker", batch=batch)


def test_an_open_circuit_refuses_later_items_without_a_request_or_a_charge(tmp_path):
    run = _breaker_run(tmp_path, ServerError())
    assert run.item_requests == [MAX_ATTEMPTS] * FAILING + [0] * (BREAKER_BATCH - FAILING)
    for outcome in run.outcomes[:FAILING]:
        assert outcome.error.startswith("HTTP 500 from gpt-4o-mini: ")
    for outcome in run.outcomes[FAILING:]:
        assert outcome.result.model_id == "gpt-4o-mini"
        assert outcome.error.startswith(f"circuit open for {run.url} since ")
        assert "(5 consecutive failures; last: HTTP 500 from gpt-4o-mini: " in outcome.error
        assert outcome.result.cost_usd == 0.0
    assert [len(r.attempt_log) for r in run.results] == run.item_requests
    assert_ledger_matches_results(run)
    assert (run.calls["cost_usd"] == 0).all() and (run.calls["outcome"] == "error").all()
    assert_traces_match(run)  # the refused calls have a span (ERROR) and no attempt events


def test_a_refused_call_reports_no_transport_attempt(tmp_path):
    run = _breaker_run(tmp_path, ServerError())
    assert [r.transport_attempts for r in run.results] == run.item_requests
    assert [s["attributes"]["ai_orch.transport_attempts"] for s in run.call_spans] == run.item_requests


def test_rate_limits_with_a_short_retry_after_do_not_open_the_circuit(tmp_path):
    run = _breaker_run(tmp_path, RateLimited(retry_after=RETRY_AFTER_S))
    assert [o.error is None for o in run.outcomes] == [False] * FAILING + [True] * (BREAKER_BATCH - FAILING)


def test_calls_that_all_recover_do_not_open_the_circuit(tmp_path):
    batch = invoices(8)
    run = run_plans(tmp_path, "openai", {i: [ServerError(), answer(batch[i])] for i in range(8)}, name="rate", batch=batch)
    assert [o.error for o in run.outcomes] == [None] * 8


# ------------------------------------------------------------------------------------------- replays, cascades


def _replayed_run(tmp_path):
    batch = invoices(2)
    plans = {0: [ServerError(), answer(batch[0])], 1: [answer(batch[1])]}
    return batch, run_plans(tmp_path, "openai", plans, name="replay", batch=batch, repeat=2)


def test_a_step_run_again_in_the_same_process_makes_no_request_and_no_charge(tmp_path):
    """The gateway's idempotency keys (run, item, cascade step, model) answer a second execution of the same
    step from the completed calls: no request, no second charge."""
    batch, run = _replayed_run(tmp_path)
    assert run.item_requests == [2, 1] and [o.error for o in run.outcomes] == [None, None]
    spec = run.gateway.catalog.get("gpt-4o-mini")
    assert run.calls["cost_usd"].sum() == pytest.approx(2 * spec.token_cost(*ANSWER_TOKENS), abs=1e-12)
    assert [r.cost_usd for r in run.results] == [0.0, 0.0]  # the replayed results charge nothing


def test_a_replayed_call_records_no_transport_attempts(tmp_path):
    _, run = _replayed_run(tmp_path)
    assert len(run.attempt_events) == run.requests == 3


def test_a_cascade_escalates_past_a_failing_endpoint_and_records_each_step_once(tmp_path):
    """gpt-4o-mini (OpenAI server) fails item 1 for good; the cascade's next step, claude-haiku-4-5 on the
    Anthropic server, answers it. Retries stay inside a step; the ledger has one row per step."""
    batch = invoices()
    docs = documents(batch)
    by_text = lambda plans: PerDocument({batch[i].text: p for i, p in plans.items()}, default=Success(output="unplanned"))
    openai_plans = by_text({0: [Unavailable(), answer(batch[0])], 1: [ServerError()],
                            **{i: [answer(batch[i])] for i in range(2, BATCH)}})
    anthropic_plans = by_text({1: [RateLimited(retry_after=RETRY_AFTER_S), answer(batch[1])]})
    with OpenAIChatServer(api_key=KEY, default=openai_plans) as openai, \
            AnthropicMessagesServer(api_key=KEY, default=anthropic_plans) as anthropic:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(catalog_text({"gpt-4o-mini": openai.url, "claude-haiku-4-5": anthropic.url}))
        gateway = gateway_resource(catalog).gateway()
        ledger, recorder = DuckDBLedger(tmp_path / "ledger.duckdb"), TraceRecorder(tmp_path / "traces.duckdb")
        with recorder.run_span("cascade", "invoice_extractions"):
            outcomes = run_ai_task(INVOICE_EXTRACTION, docs, policy=CascadePolicy(RulesPolicy([0.25, 0.6, 0.8])),
                                   gateway=gateway, ledger=ledger, where=CallContext(run_id="cascade"), tracer=recorder)
        recorder.force_flush()
        gateway.close()
        recorder.shutdown()
        requests = (len(openai.requests), len(anthropic.requests))
    assert [o.error for o in outcomes] == [None] * BATCH
    assert [[r.model_id for r in o.attempts] for o in outcomes][:2] == [["gpt-4o-mini"], ["gpt-4o-mini", "claude-haiku-4-5"]]
    assert outcomes[1].attempts[0].error.startswith("HTTP 500 from gpt-4o-mini")
    assert requests == (2 + MAX_ATTEMPTS + 4, 2)
    assert sum(r.transport_attempts for o in outcomes for r in o.attempts) == sum(requests)
    calls = ledger.calls("cascade")
    assert len(calls) == BATCH + 1 and calls["call_id"].is_unique and not calls.duplicated(["item_id", "attempt"]).any()
    step = calls[calls["item_id"] == batch[1].id].sort_values("attempt")
    assert step[["attempt", "model_id", "outcome", "accepted"]].values.tolist() == [
        [1, "gpt-4o-mini", "error", False], [2, "claude-haiku-4-5", "ok", True]]
    assert step["cost_usd"].tolist() == [0.0, gateway.catalog.get("claude-haiku-4-5").token_cost(*ANSWER_TOKENS)]
    spans = [s for s in TraceStore(tmp_path / "traces.duckdb").spans("cascade") if "gen_ai.operation.name" in s["attributes"]]
    assert len(spans) == len(calls)
    assert sum(1 for s in spans for e in s["events"] if e["name"] == "ai_orch.transport_attempt") == sum(requests)


def test_rules_routing_falls_back_to_the_next_allowed_model_when_its_endpoint_fails(tmp_path):
    """Not a cascade: the rules policy routes every item to gpt-4o-mini, whose server fails item 1 through
    all its retries. The item falls back to the next model the policy allows (claude-haiku-4-5, another
    endpoint) and the route says why; items whose answer was bad (not the endpoint) do not fall back."""
    batch = invoices()
    docs = documents(batch)
    by_text = lambda plans: PerDocument({batch[i].text: p for i, p in plans.items()}, default=Success(output="unplanned"))
    openai_plans = by_text({1: [ServerError()], 2: [SchemaInvalid(input_tokens=100, output_tokens=10)],
                            **{i: [answer(batch[i])] for i in (0, 3, 4, 5)}})
    anthropic_plans = by_text({1: [answer(batch[1])]})
    with OpenAIChatServer(api_key=KEY, default=openai_plans) as openai, \
            AnthropicMessagesServer(api_key=KEY, default=anthropic_plans) as anthropic:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(catalog_text({"gpt-4o-mini": openai.url, "claude-haiku-4-5": anthropic.url}))
        gateway = gateway_resource(catalog).gateway()
        ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
        outcomes = run_ai_task(INVOICE_EXTRACTION, docs, policy=RulesPolicy([0.25, 0.6, 0.8]), gateway=gateway,
                               ledger=ledger, where=CallContext(run_id="fallback"))
        gateway.close()
        requests = (len(openai.requests), len(anthropic.requests))
    assert [[r.model_id for r in o.attempts] for o in outcomes] == [
        ["gpt-4o-mini"], ["gpt-4o-mini", "claude-haiku-4-5"], ["gpt-4o-mini"], ["gpt-4o-mini"], ["gpt-4o-mini"], ["gpt-4o-mini"]]
    assert [o.error is None for o in outcomes] == [True, True, False, True, True, True]
    assert requests == (MAX_ATTEMPTS + 5, 1)
    calls = ledger.calls("fallback")
    fallback = calls[(calls["item_id"] == batch[1].id) & (calls["attempt"] == 2)].iloc[0]
    assert fallback["model_id"] == "claude-haiku-4-5" and fallback["outcome"] == "ok"
    assert fallback["route_reason"].startswith("fallback: gpt-4o-mini failed (500: HTTP 500 from gpt-4o-mini")
    assert fallback["route_reason"].endswith("next model the policy allows: claude-haiku-4-5")


# ------------------------------------------------------------------------------------------- through Dagster

DAY = "2026-03-02"


@pytest.mark.parametrize("via_child", [False, True], ids=["in-process", "transport-process"])
def test_a_mixed_fault_batch_materializes_with_attributed_failures_and_counted_retries(tmp_path, monkeypatch, via_child):
    """The real template (raw_invoices → invoice_extractions → approved_invoices) against a server that rate-limits,
    errors, drops, stalls, truncates and breaks the schema, item by item. Transient faults recover, permanent ones
    fail their item only; the step completes and says which items failed and why. Through the step's transport
    process too (its calls leave from a child process once it is up): the same outcome to the request."""
    from resources.providers.transport_process import TransportProcess

    started = []
    start = TransportProcess.start

    async def counted_start(self):
        started.append(self)
        return await start(self)

    monkeypatch.setattr(TransportProcess, "start", counted_start)
    batch = invoices(12, seed=DAY)  # what raw_invoices generates for the partition
    plans = mixed_plans(batch)
    schedule = PerDocument({batch[i].text: p for i, p in plans.items()}, default=Success(output="unplanned"))
    with OpenAIChatServer(api_key=KEY, default=schedule) as server:
        resources = isolated_resources(tmp_path, catalog_text({"gpt-4o-mini": server.url}))
        resources["models"] = gateway_resource(tmp_path / "catalog.yaml", transport_process=via_child)
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [raw_invoices, invoice_extractions, approved_invoices], instance=instance, resources=resources,
                partition_key=DAY, raise_on_error=False,
                run_config={"ops": {"raw_invoices": {"config": {"count": 12, "classification": "public"}}}},
            )
            assert result.success
            metadata = instance.get_latest_materialization_event(
                dg.AssetKey("invoice_extractions")).asset_materialization.metadata
            approved = instance.get_latest_materialization_event(dg.AssetKey("approved_invoices")).asset_materialization.metadata
        requests = len(server.requests)
        item_requests = [schedule.seen[i.text] for i in batch]

    failed = MIXED_FAILED
    assert len(started) == (1 if via_child else 0) and all(t.calls >= 1 for t in started)
    assert item_requests == [1, 2, 1, MAX_ATTEMPTS, 1, 2, 1, 1, 1, 3, 1, 2] and requests == 19
    assert metadata["items"].value == 12 and metadata["calls"].value == 12 and metadata["failed_items"].value == 3
    table = metadata["failures"].value
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == [batch[i].id for i in failed]
    assert "| gpt-4o-mini | gpt-4o-mini | HTTP 500 from gpt-4o-mini: " in rows[batch[3].id]
    assert "| gpt-4o-mini | gpt-4o-mini | reply was truncated at max tokens (600): reply is not valid JSON" in rows[batch[6].id]
    assert "| gpt-4o-mini | gpt-4o-mini | reply does not match the schema InvoiceExtraction: " in rows[batch[8].id]
    assert approved["approved"].value == 9 and approved["rejected"].value == 3

    frame = result.asset_value("invoice_extractions").set_index("id")
    assert frame["error"].notna().tolist() == [i in failed for i in range(12)]

    calls = DuckDBLedger(tmp_path / "ledger.duckdb").calls(result.run_id)
    assert len(calls) == 12 and calls["call_id"].is_unique and not calls.duplicated(["item_id", "attempt"]).any()
    assert calls["cost_usd"].sum() == pytest.approx(metadata["cost_usd"].value, abs=1e-8)
    price = lambda tokens: (tokens[0] * 0.15 + tokens[1] * 0.60) / 1e6  # gpt-4o-mini's list prices
    by_item = calls.set_index("item_id")["cost_usd"]
    expected_costs = [0.0 if i == 3 else price(BAD_OUTPUT_TOKENS) if i in (6, 8) else price(ANSWER_TOKENS) for i in range(12)]
    assert [by_item[i.id] for i in batch] == pytest.approx(expected_costs, abs=1e-12)

    # Retries taken, as the trace tells them: per item the HTTP attempts and what each one met.
    spans = {s["item_id"]: s for s in TraceStore(tmp_path / "traces.duckdb").spans(result.run_id)
             if "gen_ai.operation.name" in s["attributes"]}
    assert [spans[i.id]["attributes"]["ai_orch.transport_attempts"] for i in batch] == item_requests
    met = [[e["attributes"].get("error.type") for e in spans[i.id]["events"] if e["name"] == "ai_orch.transport_attempt"]
           for i in batch]
    # Item 6, the truncated reply: one attempt, typed '_OTHER' today (test_output_faults_are_typed_invalid_output).
    assert len(met[6]) == 1
    assert {i: m for i, m in enumerate(met) if m != [None] and i != 6} == {
        1: ["429", None], 3: ["500", "500", "500"], 5: ["connection_error", None], 8: ["invalid_output"],
        9: ["503", "503", None], 11: ["timeout", None]}
    assert sum(len(m) for m in met) == requests


def test_the_trace_tree_shows_each_calls_http_attempts(tmp_path):
    """`ai-orch trace` prints the attempts behind a call: the statuses in order and the time waited."""
    run = run_fault("503", "openai", tmp_path)
    text = TraceStore(tmp_path / "traces.duckdb").render_tree("503-openai")
    recovered = [line for line in text.splitlines() if " → ok (waited " in line]
    exhausted = [line for line in text.splitlines() if "http 503 → 503 → 503 (waited " in line]
    retried_ok = [n for n, o in zip(run.item_requests, run.outcomes) if n > 1 and o.error is None]
    assert len(recovered) == len(retried_ok) > 0 and len(exhausted) == 1
    assert sum(line.count("503 →") for line in recovered) == sum(n - 1 for n in retried_ok)
    assert all("(waited " in line for line in recovered + exhausted) and "✗" in exhausted[0]
