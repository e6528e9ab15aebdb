"""Traces of AI calls: nesting, GenAI attributes, failures, no content in the store, and `ai-orch trace`."""

import argparse
import json

import duckdb
import pytest

from orchestration_assets import trace_cli
from orchestration_assets.cli_errors import CliError
from resources import tracing
from resources.audit_log import item_hash
from resources.model_call import CallResult
from resources.tracing import TraceRecorder, TraceStore, configure_tracing, error_type

MARKER = "ZEBRA-7781-CONFIDENTIAL"
DOCUMENT = f"INVOICE 2026-0042\nACME Corp {MARKER}\nIBAN DE89 3704 0044 0532 0130 00\nTotal due: EUR 12,345.67"


@pytest.fixture
def recorder(tmp_path):
    rec = TraceRecorder(tmp_path / "traces.duckdb", otlp=False, console=False)
    yield rec
    rec.shutdown()


def _ok(model="gpt-4o-mini", **extra) -> CallResult:
    return CallResult(model_id=model, input_tokens=812, output_tokens=95, cost_usd=0.000182, latency_s=0.2,
                      finish_reason="stop", **extra)


def _failed(model="gpt-4o") -> CallResult:
    return CallResult(model_id=model, error=f"HTTP 429 from {model}: Rate limit reached [rate_limit_exceeded]",
                      finish_reason="error")


def _one_run(rec: TraceRecorder, run_id="run-1", step_key="extract", document=DOCUMENT) -> None:
    """A step with two items: the first succeeds; the second fails on gpt-4o, then succeeds on gpt-4o-mini."""
    with rec.run_span(run_id, step_key, "invoices/extracted", "2026-03-03"):
        with rec.item_span("inv-1", item_hash(document), "internal"):
            with rec.call_span("gpt-4o-mini", "openai", route_reason="cheapest-eligible", attempt=1) as call:
                call.record(_ok(), check_passed=True)
        with rec.item_span("inv-2", item_hash(document + "2"), "internal"):
            with rec.call_span("gpt-4o", "openai", route_reason="complex", attempt=1) as call:
                call.record(_failed())
            with rec.call_span("gpt-4o-mini", "openai", route_reason="fallback", attempt=2) as call:
                call.record(_ok(), check_passed=False)
    rec.force_flush()


def test_spans_nest_run_item_call_with_parent_ids(recorder):
    _one_run(recorder)
    spans = recorder.store().spans("run-1")
    assert len(spans) == 6
    by_name = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    (run,) = by_name["dagster.step"]
    items = by_name["ai_orch.item"]
    calls = by_name["chat gpt-4o-mini"] + by_name["chat gpt-4o"]
    assert run["parent_span_id"] is None
    assert {i["parent_span_id"] for i in items} == {run["span_id"]}
    item_ids = {i["attributes"]["ai_orch.item_id"]: i["span_id"] for i in items}
    for call in calls:
        assert call["parent_span_id"] == item_ids[call["item_id"]]
    assert {s["trace_id"] for s in spans} == {run["trace_id"]}
    # Run id, step key and item id are inherited down and copied into their columns.
    assert all(s["run_id"] == "run-1" and s["step_key"] == "extract" for s in spans)
    assert sorted(c["item_id"] for c in calls) == ["inv-1", "inv-2", "inv-2"]

    tree = recorder.store().tree("run-1")
    assert len(tree) == 1 and tree[0]["span_id"] == run["span_id"]
    assert [i["attributes"]["ai_orch.item_id"] for i in tree[0]["children"]] == ["inv-1", "inv-2"]
    assert [c["name"] for c in tree[0]["children"][1]["children"]] == ["chat gpt-4o", "chat gpt-4o-mini"]


def test_genai_attributes_exact(recorder):
    _one_run(recorder)
    first = next(s for s in recorder.store().spans("run-1") if s["item_id"] == "inv-1" and s["name"].startswith("chat"))
    assert first["name"] == "chat gpt-4o-mini"
    assert first["status"] == "UNSET" and first["status_message"] is None
    assert first["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 812,
        "gen_ai.usage.output_tokens": 95,
        "gen_ai.response.finish_reasons": ["stop"],
        "ai_orch.cost_usd": 0.000182,
        "ai_orch.route.reason": "cheapest-eligible",
        "ai_orch.attempt": 1,
        "ai_orch.transport_attempts": 1,
        "ai_orch.check.passed": True,
        "dagster.run_id": "run-1",
        "dagster.step_key": "extract",
        "ai_orch.item_id": "inv-1",
    }
    assert first["duration_ms"] >= 0 and first["end_time"] >= first["start_time"]


def test_failed_call_is_an_error_span_and_counted_per_model_and_step(recorder):
    _one_run(recorder)
    _one_run(recorder, step_key="extract_retry")
    failed = [s for s in recorder.store().spans("run-1") if s["status"] == "ERROR"]
    assert len(failed) == 2 and {s["name"] for s in failed} == {"chat gpt-4o"}
    span = failed[0]
    assert span["attributes"]["error.type"] == "429"
    assert span["status_message"] == "HTTP 429 from gpt-4o: Rate limit reached [rate_limit_exceeded]"
    assert span["attributes"]["gen_ai.response.finish_reasons"] == ["error"]

    summary = recorder.store().error_summary("run-1")
    assert summary["by_model"] == [
        {"model_id": "gpt-4o", "calls": 2, "errors": 2, "first_error_type": "429",
         "first_error": "HTTP 429 from gpt-4o: Rate limit reached [rate_limit_exceeded]"},
        {"model_id": "gpt-4o-mini", "calls": 4, "errors": 0, "first_error": None, "first_error_type": None},
    ]
    assert [(s["step_key"], s["calls"], s["errors"]) for s in summary["by_step"]] == [("extract", 3, 1), ("extract_retry", 3, 1)]
    assert recorder.store().error_summary("other-run") == {"by_model": [], "by_step": [], "items_by_step": []}


def test_exception_in_a_call_marks_error_without_its_message(recorder):
    with pytest.raises(RuntimeError):
        with recorder.run_span("run-x", "extract"):
            with recorder.call_span("gemma", "llama.cpp"):
                raise RuntimeError(f"could not parse {DOCUMENT}")
    recorder.force_flush()
    call = next(s for s in recorder.store().spans("run-x") if s["name"] == "chat gemma")
    assert call["status"] == "ERROR" and call["attributes"]["error.type"] == "RuntimeError"
    assert MARKER not in json.dumps(call, default=str)


def test_render_tree_marks_failures(recorder):
    _one_run(recorder)
    text = recorder.store().render_tree("run-1")
    lines = text.splitlines()
    assert lines[0].startswith("step extract [invoices/extracted 2026-03-03]")
    assert lines[1].startswith("  item inv-1 (internal)")
    failed = [line for line in lines if "✗" in line]
    assert len(failed) == 1
    assert failed[0].startswith("    ✗ chat gpt-4o [openai]") and "FAILED [429]" in failed[0] and "Rate limit reached" in failed[0]
    ok = [line for line in lines if "✓ chat gpt-4o-mini" in line]
    assert len(ok) == 2 and "tokens 812→95" in ok[0] and "$0.000182" in ok[0] and " ms" in ok[0]
    assert "check FAILED" in ok[1]
    assert tracing.render_tree("run-1", recorder.store_path) == text


def test_no_document_text_is_stored(recorder, tmp_path):
    def fake_model(document: str) -> CallResult:  # the call sees the document; the trace must not
        return _ok(model="local-gemma3-270m") if "Total due" in document else _failed()

    with recorder.run_span("run-doc", "extract", "invoices/extracted", "2026-03-03"):
        with recorder.item_span("inv-1", item_hash(DOCUMENT), "confidential"):
            with recorder.call_span("local-gemma3-270m", "llama.cpp") as call:
                call.record(fake_model(DOCUMENT), check_passed=True)
            leaky = CallResult(model_id="local-gemma3-270m", error=f"KeyError: {MARKER}")
            with recorder.call_span("local-gemma3-270m", "llama.cpp", attempt=2) as call:
                call.record(leaky, error_message="KeyError: <PERSON_1>")  # as the ledger would store it
    with pytest.raises(ValueError, match="SHA-256"):
        with recorder.item_span("inv-2", DOCUMENT):  # raw text where a hash belongs is refused
            pass
    recorder.shutdown()

    rows = recorder.store().spans("run-doc")
    assert len(rows) == 4
    assert rows[-1]["status_message"] == "KeyError: <PERSON_1>" and rows[-1]["attributes"]["error.type"] == "KeyError"
    assert rows[1]["attributes"]["ai_orch.input_hash"] == item_hash(DOCUMENT)
    assert MARKER not in json.dumps(rows, default=str)
    con = duckdb.connect(str(recorder.store_path), read_only=True)
    try:
        everything = con.execute("SELECT * FROM spans").fetchall()
    finally:
        con.close()
    assert len(everything) == 4 and MARKER not in repr(everything)
    for path in tmp_path.iterdir():
        assert MARKER.encode() not in path.read_bytes(), path


def test_error_type_is_low_cardinality():
    assert error_type("HTTP 503 from x: overloaded") == "503"
    assert error_type("timed out after 30.0s calling x (ReadTimeout)") == "timeout"
    assert error_type("connection error calling x: ConnectError: refused") == "connection_error"
    assert error_type("could not start: no binary") == "model_unavailable"
    assert error_type("output does not match Invoice: field required") == "invalid_output"
    assert error_type("KeyError: 'total'") == "KeyError"
    assert error_type("something odd") == "_OTHER"


def test_configure_tracing_is_idempotent_and_reconfigurable(tmp_path):
    first = configure_tracing(tmp_path / "a.duckdb")
    assert configure_tracing() is first and configure_tracing(tmp_path / "a.duckdb") is first
    with tracing.run_span("run-a", "s"):
        with tracing.call_span("m", "rules") as call:
            call.record(_ok(model="m"))
    second = configure_tracing(tmp_path / "b.duckdb")  # flushes and shuts down the first
    assert second is not first
    assert len(TraceStore(tmp_path / "a.duckdb").spans("run-a")) == 2
    with tracing.run_span("run-b", "s"):
        pass
    tracing.recorder().force_flush()
    assert [s["name"] for s in TraceStore(tmp_path / "b.duckdb").spans("run-b")] == ["dagster.step"]
    tracing.recorder().shutdown()


def test_otlp_without_the_exporter_package_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_otlp(name, *args, **kwargs):
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otlp)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    rec = TraceRecorder(tmp_path / "t.duckdb")
    with rec.run_span("run-o", "s"):
        pass
    rec.shutdown()
    assert "opentelemetry-exporter-otlp-proto-http" in caplog.text
    assert len(rec.store().spans("run-o")) == 1


def _parser():
    parser = argparse.ArgumentParser(prog="ai-orch")
    runners = trace_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser, runners


def test_cli_prints_the_tree_and_errors_for_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    rec = TraceRecorder(tracing.default_trace_path(), otlp=False, console=False)
    assert rec.store_path == tmp_path / "home" / "ai_orchestration" / "traces.duckdb"
    _one_run(rec, run_id="run-cli")
    rec.shutdown()

    parser, runners = _parser()
    args = parser.parse_args(["trace", "run-cli"])
    assert runners[args.command](args) == 0
    out = capsys.readouterr().out
    assert "step extract [invoices/extracted 2026-03-03]" in out
    assert "    ✗ chat gpt-4o [openai]" in out and "FAILED [429]" in out
    model_lines = [line for line in out.splitlines() if line.startswith("gpt-4o ")]
    assert len(model_lines) == 1 and model_lines[0].split()[1:3] == ["1", "1✗"] and "Rate limit reached" in model_lines[0]
    assert any(line.split()[:3] == ["extract", "3", "1✗"] for line in out.splitlines())

    args = parser.parse_args(["trace", "run-cli", "--json"])
    assert runners["trace"](args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["run_id"] == "run-cli" and len(payload["tree"]) == 1
    assert len(payload["tree"][0]["children"]) == 2
    assert payload["errors"]["by_model"][0] == {"model_id": "gpt-4o", "calls": 1, "errors": 1, "first_error_type": "429",
                                                "first_error": "HTTP 429 from gpt-4o: Rate limit reached [rate_limit_exceeded]"}

    with pytest.raises(CliError, match="no spans for run 'nope'"):
        runners["trace"](parser.parse_args(["trace", "nope"]))


def test_cli_errors_when_there_is_no_store(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "empty"))
    parser, runners = _parser()
    with pytest.raises(CliError, match="no trace store yet"):
        runners["trace"](parser.parse_args(["trace", "run-1"]))


def test_export_soon_writes_the_finished_spans_while_the_run_goes_on(recorder):
    with recorder.run_span("run-soon", "extract"):
        with recorder.item_span("inv-1", item_hash(DOCUMENT)):
            pass
        recorder.export_soon().join(30)
        stored = recorder.store().spans("run-soon")
        assert [s["name"] for s in stored] == ["ai_orch.item"]  # the run span has not ended yet
    recorder.force_flush()
    assert sorted(s["name"] for s in recorder.store().spans("run-soon")) == ["ai_orch.item", "dagster.step"]


def test_recorded_spans_store_what_the_sdk_stored(recorder):
    """The recorder's own spans end as the SDK's ReadableSpan: times, kind, events, status and cleaned attributes."""
    from opentelemetry.trace import StatusCode

    with recorder.run_span("run-fields", "extract"):
        with recorder.item_span("inv-1", item_hash(DOCUMENT)) as item:
            item.set_attributes({"ai_orch.list": ["a", "b"], "ai_orch.none": None, "ai_orch.n": 3})
            item.add_event("ai_orch.note", {"ai_orch.k": 1})
            item.set_status(StatusCode.OK)
            item.set_status(StatusCode.ERROR, "ignored once OK")  # as the SDK: OK is final
        with recorder.call_span("gpt-4o-mini", "openai") as call:
            call.record(_failed("gpt-4o-mini"))
    recorder.force_flush()
    spans = {s["name"]: s for s in recorder.store().spans("run-fields")}
    item, call, run = spans["ai_orch.item"], spans["chat gpt-4o-mini"], spans["dagster.step"]
    assert item["attributes"]["ai_orch.list"] == ["a", "b"] and item["attributes"]["ai_orch.n"] == 3
    assert "ai_orch.none" not in item["attributes"]  # None is dropped, as the SDK drops it
    assert [e["name"] for e in item["events"]] == ["ai_orch.note"] and item["events"][0]["attributes"] == {"ai_orch.k": 1}
    assert item["status"] == "OK"
    assert call["status"] == "ERROR" and call["attributes"]["error.type"] == "429"
    assert call["attributes"]["gen_ai.response.finish_reasons"] == ["error"]
    for span in (item, call):
        assert run["start_time"] <= span["start_time"] <= span["end_time"] <= run["end_time"]
        assert span["duration_ms"] >= 0 and span["parent_span_id"] == run["span_id"]
        assert span["run_id"] == "run-fields" and span["step_key"] == "extract"


def test_spans_others_start_inside_a_recorded_span_nest_under_it_and_inherit_the_run(recorder):
    """Code that starts spans with the recorder's SDK tracer (an op of a chain, a library) nests as before."""
    with recorder.run_span("run-sdk", "extract"):
        with recorder.item_span("inv-9") as item:
            with recorder.tracer.start_as_current_span("library.work") as inner:
                inner.set_attribute("ai_orch.k", "v")
    recorder.force_flush()
    spans = {s["name"]: s for s in recorder.store().spans("run-sdk")}
    assert spans["library.work"]["parent_span_id"] == spans["ai_orch.item"]["span_id"] == format(
        item.get_span_context().span_id, "016x")
    assert spans["library.work"]["item_id"] == "inv-9" and spans["library.work"]["step_key"] == "extract"
    assert {s["trace_id"] for s in spans.values()} == {spans["dagster.step"]["trace_id"]}


def test_nothing_is_recorded_under_a_callers_unsampled_trace(recorder):
    """A caller's context that was not sampled stays unsampled, as the SDK's parent-based sampler keeps it."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT)))
    with trace.use_span(unsampled):
        with recorder.run_span("run-unsampled", "extract") as run:
            with recorder.item_span("inv-1") as item:
                item.set_attribute("ai_orch.k", "v")
    recorder.force_flush()
    assert not run.is_recording() and run.get_span_context().trace_id == 0x1234
    assert item.get_span_context().span_id != run.get_span_context().span_id
    assert recorder.store().spans("run-unsampled") == []


def test_attribute_values_are_cleaned_as_the_sdk_cleans_them(recorder, caplog):
    with recorder.run_span("run-clean", "extract"):
        with recorder.item_span("inv-1") as item:
            item.set_attributes({"ai_orch.ok": ("a", None, "b"), "ai_orch.mixed": ["a", 1], "ai_orch.map": {"k": 1},
                                 "ai_orch.bool": True, "ai_orch.float": 0.5})
    recorder.force_flush()
    (item,) = [s for s in recorder.store().spans("run-clean") if s["name"] == "ai_orch.item"]
    assert item["attributes"]["ai_orch.ok"] == ["a", None, "b"]
    assert item["attributes"]["ai_orch.bool"] is True and item["attributes"]["ai_orch.float"] == 0.5
    assert "ai_orch.mixed" not in item["attributes"] and "ai_orch.map" not in item["attributes"]
    assert "ai_orch.mixed dropped" in caplog.text and "ai_orch.map dropped" in caplog.text


def test_a_span_the_store_refuses_is_lost_alone_not_with_its_batch(tmp_path, caplog):
    """A lone surrogate in one span's attribute once cost every span exported with it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    collected = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("test")
    for item in ("a", "b\ud800", "c"):
        with tracer.start_as_current_span("item", attributes={tracing.RUN_ID: "refused", tracing.ITEM_ID: item}):
            pass
    exporter = tracing.DuckDBSpanExporter(tmp_path / "traces.duckdb")
    assert exporter.export(collected.get_finished_spans()).name == "FAILURE"  # one lost, and said so
    stored = TraceStore(tmp_path / "traces.duckdb").spans("refused")
    assert sorted(span["attributes"]["ai_orch.item_id"] for span in stored) == ["a", "c"]
