"""Pre-run estimates priced from the ledger's history: token calibration, latency-priced compute, totals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resources.catalog import ModelCatalog
from resources.classification import DataClassification
from resources.estimation import CostHistory, estimate_item, estimate_run
from resources.ledger import CallRecord, DuckDBLedger
from resources.routing import RoutingDecision

REPO = Path(__file__).resolve().parents[1]
CATALOG = ModelCatalog.load()


def _history(tmp_path, rows) -> CostHistory:
    ledger = DuckDBLedger(tmp_path / "ledger.duckdb")
    ledger.append([CallRecord(item_id=f"i{n}", task="t", provider="p", residency="cloud", classification="internal",
                              outcome="ok", **row) for n, row in enumerate(rows)])
    return CostHistory.from_calls(ledger.calls())


def test_tokens_are_calibrated_per_model_from_history(tmp_path):
    rows = [dict(model_id="gpt-4o-mini", input_chars=9 * n, input_tokens=2 * n, output_tokens=100 + n, latency_s=1.0)
            for n in range(10, 30)]
    history = _history(tmp_path, rows)
    seen = history.get("t", "gpt-4o-mini")
    assert seen.chars_per_token == pytest.approx(4.5)
    assert seen.chars_per_token_mape == pytest.approx(0.0, abs=1e-9)
    estimate = estimate_item(CATALOG.get("gpt-4o-mini"), "t", 4500, history, expected_output_tokens=500)
    assert estimate.input_tokens == 1000 and estimate.basis == "history"
    spec = CATALOG.get("gpt-4o-mini")
    assert estimate.p50_usd == pytest.approx(spec.token_cost(1000, round(seen.output_p50)))
    assert estimate.p95_usd > estimate.p50_usd
    cold = estimate_item(spec, "t", 4500, CostHistory(), expected_output_tokens=500)
    assert cold.basis == "catalog" and cold.input_tokens == 1125  # 4 characters a token


def test_compute_priced_models_use_recorded_latency(tmp_path):
    rows = [dict(model_id="local-gemma3-270m", input_chars=4000, input_tokens=1000, output_tokens=80, latency_s=s)
            for s in [2.0] * 18 + [10.0] * 2]
    history = _history(tmp_path, rows)
    spec = CATALOG.get("local-gemma3-270m")
    estimate = estimate_item(spec, "t", 4000, history, expected_output_tokens=200)
    assert estimate.p50_usd == pytest.approx(spec.compute_cost(2.0))
    assert estimate.p95_usd == pytest.approx(spec.compute_cost(history.get("t", spec.id).compute_p95_s))


def test_compute_time_follows_the_prompt_length_where_history_shows_it(tmp_path):
    """Prompt processing grows with the prompt: a long document's expected compute time is longer than the mean."""
    rows = [dict(model_id="local-gemma3-270m", input_chars=4 * t, input_tokens=t, output_tokens=80, latency_s=1.0 + 0.004 * t)
            for t in range(200, 1400, 100)]
    history = _history(tmp_path, rows)
    spec = CATALOG.get("local-gemma3-270m")
    seen = history.get("t", spec.id)
    assert seen.compute_fit == pytest.approx((1.0, 0.004)) and seen.compute_fit_unit == "tokens"  # per input token
    long_item = estimate_item(spec, "t", 4 * 3000, history, expected_output_tokens=80)
    short_item = estimate_item(spec, "t", 4 * 100, history, expected_output_tokens=80)
    assert long_item.expected_usd == pytest.approx(spec.compute_cost(1.0 + 0.004 * 3000))
    assert short_item.expected_usd == pytest.approx(spec.compute_cost(1.0 + 0.004 * 100))
    flat = _history(tmp_path / "flat", [dict(row, latency_s=3.0) for row in rows])
    assert flat.get("t", spec.id).compute_fit is None  # no slope: the mean serves


def test_compute_time_is_fitted_on_tokens_where_the_model_reports_them(tmp_path):
    """Seconds follow the tokens a model processes; characters per token vary between documents, so a
    fit on characters would misprice them. A model reporting no tokens (an in-process extractor) is
    fitted on characters."""
    ratios = [2.5, 3.1, 2.7, 3.0, 2.6, 2.9, 2.8, 3.1, 2.5, 2.7, 3.0, 2.6]
    rows = [dict(model_id="local-gemma3-270m", input_chars=int(r * t), input_tokens=t, output_tokens=80,
                 latency_s=1.0 + 0.004 * t) for t, r in zip(range(200, 1400, 100), ratios)]
    seen = _history(tmp_path, rows).get("t", "local-gemma3-270m")
    assert seen.compute_fit_unit == "tokens" and seen.compute_fit == pytest.approx((1.0, 0.004))
    assert seen.expected_seconds(characters=999_999, input_tokens=500) == pytest.approx(3.0)  # the tokens decide
    rules = [dict(model_id="rules-invoice", input_chars=c, input_tokens=0, output_tokens=0, latency_s=0.001 + 1e-6 * c)
             for c in range(500, 2900, 200)]
    by_chars = _history(tmp_path / "rules", rules).get("t", "rules-invoice")
    assert by_chars.compute_fit_unit == "chars" and by_chars.compute_fit == pytest.approx((0.001, 1e-6))
    assert by_chars.expected_seconds(characters=1000, input_tokens=None) == pytest.approx(0.002)


def test_local_gguf_input_tokens_equal_what_llama_cpp_counts():
    """The estimate counts a local model's prompt with its own vocabulary and chat template: the count
    equals the prompt tokens llama.cpp reports for the same chat request (the server's code path)."""
    from resources.estimation import _local_model_file, exact_input_tokens
    from resources.providers.openai_chat import chat_messages

    spec = CATALOG.get("local-gemma3-270m")
    server = spec.local_server
    path = _local_model_file(server)
    if path is None:
        pytest.skip("the local Gemma model (llama-cpp-python and its model package) is not installed")
    import llama_cpp

    instructions = "Extract the invoice as JSON."
    texts = ["ACME GmbH\nRechnung Nr. 2024-0042\nGesamtbetrag: 1.234,56 € — Straße 12\n", "x " * 300 + "\n合計 ¥1,200"]
    model = llama_cpp.Llama(model_path=path, chat_format=server.chat_format, n_ctx=2048, verbose=False)
    for text in texts:
        reply = model.create_chat_completion(messages=chat_messages(spec, instructions, text), max_tokens=1)
        assert exact_input_tokens(spec, (instructions, text)) == reply["usage"]["prompt_tokens"]
    estimate = estimate_item(spec, "t", len(instructions) + len(texts[0]), CostHistory(), 80, texts=(instructions, texts[0]))
    assert estimate.basis == "gguf+catalog" and estimate.input_tokens == exact_input_tokens(spec, (instructions, texts[0]))
    # Other named formats, as llama.cpp's server would render them ("llama-2" is format_llama2 there).
    from resources.tokenizers import count_gguf_chat_tokens

    turns = [{"role": "system", "content": instructions}, {"role": "user", "content": texts[0]}]
    for chat_format in ("chatml", "llama-2"):
        other = llama_cpp.Llama(model_path=path, chat_format=chat_format, n_ctx=2048, verbose=False)
        expected = other.create_chat_completion(messages=turns, max_tokens=1)["usage"]["prompt_tokens"]
        assert count_gguf_chat_tokens(path, chat_format, turns) == expected
    assert count_gguf_chat_tokens(path, "functionary-v2", turns) is None  # no plain formatter: the ratio serves
    # A lone surrogate is counted (as U+FFFD), not raised.
    assert exact_input_tokens(spec, (instructions, "total \ud800 12.50")) == exact_input_tokens(spec, (instructions, "total \ufffd 12.50"))


def test_a_file_that_is_not_a_gguf_gives_no_count(tmp_path):
    from resources.tokenizers import count_gguf_chat_tokens

    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model" * 100)
    assert count_gguf_chat_tokens(str(bogus), "gemma", [{"role": "user", "content": "hi"}]) is None
    later = tmp_path / "later.gguf"
    assert count_gguf_chat_tokens(str(later), "gemma", [{"role": "user", "content": "hi"}]) is None
    # A model file that appears while the process runs (a package assembled later) is read then.
    from resources.estimation import _local_model_file

    real = _local_model_file(CATALOG.get("local-gemma3-270m").local_server)
    if real is None:
        pytest.skip("the local Gemma model is not installed")
    later.symlink_to(real)
    assert count_gguf_chat_tokens(str(later), "gemma", [{"role": "user", "content": "hi"}]) == 10


def test_a_runs_first_call_is_priced_apart_and_added_once_per_run(tmp_path):
    """A fresh server's first call does work later calls reuse (prompt cache): per-item latency comes from
    the later calls, and the first call's excess is added once per run, not spread over every item."""
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 4, 1, tzinfo=timezone.utc)
    rows = []
    for run in range(3):
        for n, tokens in enumerate(range(300, 900, 100)):
            rows.append(dict(model_id="local-gemma3-270m", run_id=f"run{run}", input_chars=4 * tokens, input_tokens=tokens,
                             output_tokens=80, latency_s=1.0 + 0.004 * tokens + (2.5 if n == 0 else 0.0),
                             recorded_at=start + timedelta(hours=run, seconds=n)))
    history = _history(tmp_path, rows)
    spec = CATALOG.get("local-gemma3-270m")
    seen = history.get("t", spec.id)
    assert seen.compute_fit == pytest.approx((1.0, 0.004))  # net of the first calls' excess
    assert seen.session_start_s == pytest.approx(2.5)
    decisions = [RoutingDecision(item_id=str(i), model_id=spec.id, complexity=0.5, required_tier=2,
                                 classification=DataClassification.INTERNAL, estimated_cost_usd=None, reasons=[])
                 for i in range(4)]
    estimate = estimate_run(decisions, [("x" * 2000,)] * 4, "t", CATALOG, history, 80)
    assert estimate.p50_usd == pytest.approx(spec.compute_cost(4 * (1.0 + 0.004 * 500) + 2.5))
    without_runs = _history(tmp_path / "no-runs", [dict(row, run_id=None) for row in rows])
    assert without_runs.get("t", spec.id).session_start_s is None  # no run ids: nothing to tell first calls by

    # 3 runs of 20 calls: the 50-call window starts inside the first run, whose call 11 was not a first call.
    long_runs = [dict(model_id="local-gemma3-270m", run_id=f"run{run}", input_chars=2000, input_tokens=500,
                      output_tokens=80, latency_s=3.0 + (2.5 if n == 0 else 0.0),
                      recorded_at=start + timedelta(hours=run, seconds=n))
                 for run in range(3) for n in range(20)]
    assert _history(tmp_path / "long", long_runs).get("t", spec.id).session_start_s == pytest.approx(2.5)


def test_run_estimate_sums_items_and_adds_escalations(tmp_path):
    rows = [dict(model_id="rules-invoice", input_chars=1000, input_tokens=0, output_tokens=0, latency_s=0.001, run_id="r",
                 attempt=1) for _ in range(4)]
    rows += [dict(model_id="local-gemma3-270m", input_chars=1000, input_tokens=250, output_tokens=80, latency_s=3.0,
                  run_id="r", attempt=2)]
    history = _history(tmp_path, rows)
    assert history.escalation_rate["t"] == pytest.approx(0.2)  # 1 of 5 recorded items needed a second model
    history.escalation_rate["t"] = 0.25
    decision = lambda i, esc: RoutingDecision(  # noqa: E731
        item_id=str(i), model_id="rules-invoice", complexity=0.1, required_tier=1,
        classification=DataClassification.INTERNAL, estimated_cost_usd=None, reasons=[], escalation=esc)
    plain = estimate_run([decision(i, []) for i in range(10)], [("x" * 1000,)] * 10, "t", CATALOG, history, 200)
    cascade = estimate_run([decision(i, ["local-gemma3-270m"]) for i in range(10)], [("x" * 1000,)] * 10, "t", CATALOG, history,
                           200)
    gemma = CATALOG.get("local-gemma3-270m").compute_cost(3.0)
    assert cascade.p50_usd == pytest.approx(plain.p50_usd + 10 * 0.25 * gemma)
    assert cascade.p95_usd > cascade.p50_usd >= plain.p50_usd
    assert plain.by_model["rules-invoice"]["items"] == 10


def test_estimate_command_prices_a_partition_before_it_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AI_ORCH_CATALOG")}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "estimate", "--count", "8", "--date", "2026-03-03",
                           "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["items"] == summary["routed"] == 8 and summary["history_calls"] == 0
    assert sum(m["items"] for m in summary["by_model"].values()) == 8
    assert summary["p95_usd"] >= summary["p50_usd"] > 0
    bad = subprocess.run([sys.executable, "-m", "orchestration_assets.cli", "estimate", "--count", "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--count must be at least 1" in bad.stderr


def test_openai_input_tokens_are_counted_exactly_offline():
    """tiktoken's o200k_base, built from packaged rank files (no download), gives OpenAI's exact ids."""
    from resources.tokenizers import CHAT_OVERHEAD_TOKENS, count_chat_tokens, encoding

    enc = encoding("o200k_base")
    assert enc.encode("Hello world, invoice total 1,234.56 EUR") == [
        13225, 2375, 11, 36161, 3609, 220, 16, 11, 20771, 13, 5007, 30454]
    assert count_chat_tokens("gpt-4o-mini", "Hello world, invoice total 1,234.56 EUR") == 12 + CHAT_OVERHEAD_TOKENS
    assert count_chat_tokens("claude-haiku-4-5", "anything") is None  # no offline tokenizer: calibrated ratio instead

    spec = CATALOG.get("gpt-4o-mini")
    text = "Rechnung Nr. 2024-0042\nGesamtbetrag: 1.234,56 EUR\n" * 20
    exact = estimate_item(spec, "t", len(text), CostHistory(), expected_output_tokens=100, texts=("Extract.", text))
    assert exact.basis == "tiktoken+catalog"
    assert exact.input_tokens == count_chat_tokens("gpt-4o-mini", "Extract.", text)
    assert exact.input_tokens != estimate_item(spec, "t", len(text), CostHistory(), expected_output_tokens=100).input_tokens
