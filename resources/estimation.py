"""What a run will cost before it runs: per item and per batch, with a p50/p95 range.

For each item the router's chosen model is priced from what the ledger has seen of it:

* input tokens: counted exactly where the model's tokenizer is at hand offline
  (``tokenizers``): tiktoken for OpenAI models, the GGUF file's own vocabulary and chat
  template for a local llama.cpp model; for others, the item's characters divided by the model's characters-per-token,
  calibrated from the ledger's (input_chars, input_tokens) pairs for that model; without
  history a provider-neutral 4 characters a token (``complexity.estimate_tokens``). The
  calibration's own error (MAPE on history) is reported, so a user knows how far to trust it;
* output tokens: p50/p95 of the model's recorded output tokens for the task, else the
  task's declared expectation;
* on-prem compute time (models priced by the hour): p50/p95 of the seconds recorded calls
  were charged (a server's latency, an in-process model's CPU time) for the task, else the
  catalog's throughput figures; where request size explains them, a fit on the input
  tokens the model reported (characters sent where it reports none). Tokens, not characters,
  are what a model processes: on the local Gemma the token fit left 0.43 s of residual per call
  against 0.49 s for characters (27 calls measured here), since characters per token range from
  2.5 to 3.1 between invoices. A server's first call in a run does work the later ones reuse (llama.cpp keeps
  the shared instructions' prefix in its prompt cache), so the first call of each run is
  measured apart: later calls set the per-item seconds, and the first call's measured
  excess is added once per model and run (``ModelHistory.session_start_s``); a server
  that stays up between runs shows none.

A cascade's escalations are not in a first-choice estimate: the p95 takes the escalation
rate seen in the ledger into account by adding that share of the next model's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from resources.catalog import LocalServerSpec, ModelCatalog, ModelSpec, Protocol
from resources.complexity import estimate_tokens
from resources.routing import RoutingDecision
from resources.tokenizers import count_chat_tokens, count_gguf_chat_tokens

DEFAULT_CHARS_PER_TOKEN = 4.0
RECENT_CALLS = 50  # the window for expected output and compute seconds: recent enough to follow load, large enough to average


@dataclass(frozen=True)
class ModelHistory:
    calls: int = 0
    chars_per_token: Optional[float] = None
    chars_per_token_mape: Optional[float] = None
    output_p50: Optional[float] = None
    output_p95: Optional[float] = None
    compute_p50_s: Optional[float] = None
    output_mean: Optional[float] = None  # over the most recent calls: totals add means, and machines drift
    compute_mean_s: Optional[float] = None
    compute_p95_s: Optional[float] = None
    # seconds ≈ intercept + slope × request size, fitted on recent calls (prompt processing
    # grows with the prompt): a long document costs more compute time than the average call.
    # The size is ``compute_fit_unit``: "tokens" (input tokens) or "chars" (characters sent).
    compute_fit: Optional[tuple[float, float]] = None
    compute_fit_unit: str = "chars"
    # Extra seconds of a run's first call to this model over what its size predicts (a fresh
    # server's cold prompt cache, first grammar compile); added once per run using the model.
    session_start_s: Optional[float] = None

    def expected_seconds(self, characters: int, input_tokens: Optional[float] = None) -> Optional[float]:
        """A later (warm) call's expected seconds for a request of ``characters`` (``input_tokens``)."""
        if self.compute_fit is None:
            return self.compute_mean_s
        intercept, slope = self.compute_fit
        size = characters if self.compute_fit_unit == "chars" or input_tokens is None else input_tokens
        return max(0.0, intercept + slope * size)


@dataclass
class CostHistory:
    """What the ledger says about each (task, model), for pricing calls before they happen."""

    by_model: dict[tuple[str, str], ModelHistory] = field(default_factory=dict)
    escalation_rate: dict[str, float] = field(default_factory=dict)  # task → share of items escalated

    @classmethod
    def from_calls(cls, calls: pd.DataFrame) -> "CostHistory":
        history = cls()
        if calls.empty:
            return history
        ok = calls[calls["outcome"] == "ok"]
        for (task, model), group in ok.groupby(["task", "model_id"]):
            ordered = group.sort_values("recorded_at", kind="stable") if "recorded_at" in group else group
            recent = ordered.tail(RECENT_CALLS)
            # First-of-run is decided on the whole history: the window may start inside a run.
            first = _first_of_run(ordered)[len(ordered) - len(recent):]
            timing, seconds = fit_compute_time(recent, first), charged_seconds(group)
            ratio, mape = None, None
            if "input_chars" in group:
                paired = group[(group["input_chars"].fillna(0) > 0) & (group["input_tokens"] > 0)]
                if len(paired) >= 3:
                    ratio = float(paired["input_chars"].sum() / paired["input_tokens"].sum())
                    predicted = paired["input_chars"] / ratio
                    mape = float((abs(predicted - paired["input_tokens"]) / paired["input_tokens"]).mean())
            history.by_model[(task, model)] = ModelHistory(
                calls=len(group), chars_per_token=ratio, chars_per_token_mape=mape,
                output_p50=float(group["output_tokens"].quantile(0.5)), output_p95=float(group["output_tokens"].quantile(0.95)),
                compute_p50_s=float(np.quantile(seconds, 0.5)), compute_p95_s=float(np.quantile(seconds, 0.95)),
                output_mean=float(recent["output_tokens"].mean()), compute_mean_s=timing.warm_mean,
                compute_fit=timing.fit, compute_fit_unit=timing.unit, session_start_s=timing.session_start_s,
            )
        if "attempt" in calls:
            for task, group in calls.groupby("task"):
                items = group.groupby(["run_id", "item_id"])["attempt"].max()
                history.escalation_rate[task] = float((items > 1).mean()) if len(items) else 0.0
        return history

    def get(self, task: str, model_id: str) -> ModelHistory:
        return self.by_model.get((task, model_id), ModelHistory())


def charged_seconds(calls: pd.DataFrame) -> np.ndarray:
    """The compute seconds each call was charged: ``compute_s`` where recorded (an in-process model's CPU
    time), else its latency (a model server is busy for the whole call)."""
    if "compute_s" not in calls:
        return calls["latency_s"].to_numpy(dtype=float)
    return calls["compute_s"].astype(float).fillna(calls["latency_s"].astype(float)).to_numpy()


def _first_of_run(calls: pd.DataFrame) -> np.ndarray:
    """True for each run's first call (calls in recorded order); all False without run ids."""
    if "run_id" not in calls:
        return np.zeros(len(calls), dtype=bool)
    known = calls["run_id"].fillna("").astype(str) != ""
    return (known & ~calls["run_id"].duplicated()).to_numpy()


@dataclass(frozen=True)
class ComputeTimeModel:
    warm_mean: float  # mean seconds of calls that were not a run's first
    fit: Optional[tuple[float, float]]  # (intercept, seconds per unit of size) where size explains the seconds
    session_start_s: Optional[float]  # a run's first call's extra seconds
    unit: str = "chars"  # the size ``fit`` is on: "tokens" where every call reported its input tokens


def request_size(calls: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Each call's size as the compute-time fit sees it: input tokens where every call reported some
    (what the model processed), else characters sent (zeros where neither is known)."""
    if "input_tokens" in calls and len(calls):
        tokens = calls["input_tokens"].fillna(0).to_numpy(dtype=float)
        if (tokens > 0).all():
            return tokens, "tokens"
    if "input_chars" in calls:
        return calls["input_chars"].fillna(0).to_numpy(dtype=float), "chars"
    return np.zeros(len(calls)), "chars"


def fit_compute_time(recent: pd.DataFrame, first: Optional[np.ndarray] = None, min_calls: int = 8,
                     min_r2: float = 0.3) -> ComputeTimeModel:
    """Least squares of charged seconds on [1, request size, first call of its run] over ``recent`` calls.

    One fit for both effects, so each is measured net of the other (a run whose first call
    happened to be a long document does not inflate the session start). The size
    (``request_size``: input tokens, else characters) enters only where it explains the seconds (their partial R² ≥ ``min_r2``, positive slope): on a busy
    host the machine's load, not the prompt, moves the seconds, and a fitted slope would only add
    noise. The first-call term needs two runs with a first call and three later calls.
    ``first`` flags each row that was its run's first call (default: judged within ``recent``).
    """
    seconds = charged_seconds(recent)
    first = _first_of_run(recent) if first is None else np.asarray(first, dtype=bool)
    has_start = first.sum() >= 2 and (~first).sum() >= 3
    warm_mean = float(seconds[~first].mean()) if (~first).sum() >= 3 else float(seconds.mean())
    chars, unit = request_size(recent)
    base = [np.ones(len(seconds))] + ([first.astype(float)] if has_start else [])

    def solve(columns: list[np.ndarray]) -> tuple[np.ndarray, float]:
        matrix = np.column_stack(columns)
        coef = np.linalg.lstsq(matrix, seconds, rcond=None)[0]
        return coef, float(np.sum((seconds - matrix @ coef) ** 2))

    coef, sse = solve(base)
    fit = None
    if len(seconds) >= min_calls and (chars > 0).all() and np.ptp(chars) > 0 and np.ptp(seconds) > 0:
        sized, sized_sse = solve(base + [chars])
        slope = float(sized[-1])
        if np.isfinite(slope) and slope > 0 and sse > 0 and 1.0 - sized_sse / sse >= min_r2:
            coef, fit = sized, (float(sized[0]), slope)
    start = max(0.0, float(coef[1])) if has_start else None
    return ComputeTimeModel(warm_mean, fit, start, unit)


@dataclass(frozen=True)
class ItemEstimate:
    item_id: str
    model_id: Optional[str]
    input_tokens: int
    p50_usd: float
    p95_usd: float
    basis: str  # "history" or "catalog"
    expected_usd: Optional[float] = None  # the mean (recent calls): what a total of many items adds up


def _price(spec: ModelSpec, input_tokens: int, output_tokens: float, seconds: Optional[float]) -> float:
    if seconds is None:
        seconds = 0.0
        if spec.compute_usd_per_hour:
            seconds = input_tokens / (spec.prompt_tokens_per_s or 500.0) + output_tokens / (spec.output_tokens_per_s or 20.0)
    return spec.call_cost(input_tokens, int(round(output_tokens)), seconds)


def exact_input_tokens(spec: ModelSpec, texts: Sequence[str]) -> Optional[int]:
    """The request's input tokens as the model will count them, where its tokenizer is at hand offline:
    tiktoken for OpenAI's models, the GGUF file for a local llama.cpp server this project starts
    (with the chat turns the adapter sends); ``None`` otherwise."""
    if not texts:
        return None
    if spec.provider == "openai":
        return count_chat_tokens(spec.wire_model, *texts)
    if spec.local_server is not None and spec.protocol is Protocol.OPENAI_CHAT and len(texts) == 2:
        from resources.providers.openai_chat import chat_messages

        path = _local_model_file(spec.local_server)
        if path is not None:
            return count_gguf_chat_tokens(path, spec.local_server.chat_format, chat_messages(spec, *texts))
    return None


_MODEL_FILES: dict[tuple[str, Optional[str], Optional[str]], str] = {}


def _local_model_file(server: LocalServerSpec) -> Optional[str]:
    """The GGUF file a local server would load, if it is here (never downloads). Found files are
    remembered; a miss is not, so a model installed while the process runs is seen."""
    key = (server.kind, server.model_path, server.model_package)
    if key not in _MODEL_FILES:
        from resources.providers.local_server import local_server_unavailable_reason, resolve_model_path

        if local_server_unavailable_reason(server) is not None:
            return None
        try:
            _MODEL_FILES[key] = str(resolve_model_path(server))
        except (OSError, ValueError, ImportError):
            return None
    return _MODEL_FILES[key]


def estimate_item(
    spec: ModelSpec, task: str, characters: int, history: CostHistory, expected_output_tokens: int, item_id: str = "",
    texts: Sequence[str] = (),
) -> ItemEstimate:
    """One call's p50/p95 cost. ``texts`` (the request's instructions and document), when given, are
    counted exactly with the model's own tokenizer where one exists offline (``exact_input_tokens``)."""
    seen = history.get(task, spec.id)
    ratio = seen.chars_per_token or DEFAULT_CHARS_PER_TOKEN
    exact = exact_input_tokens(spec, texts)
    if exact is not None:
        input_tokens = exact
    elif seen.chars_per_token:
        input_tokens = max(1, int(round(characters / ratio)))
    else:
        input_tokens = estimate_tokens("x" * characters)
    out50 = seen.output_p50 if seen.output_p50 is not None else expected_output_tokens
    out95 = seen.output_p95 if seen.output_p95 is not None else expected_output_tokens * 1.5
    timed = spec.compute_usd_per_hour > 0 and seen.compute_p50_s is not None
    p50 = _price(spec, input_tokens, out50, seen.compute_p50_s if timed else None)
    p95 = _price(spec, input_tokens, out95, seen.compute_p95_s if timed else None)
    out_mean = seen.output_mean if seen.output_mean is not None else out50
    expected = _price(spec, input_tokens, out_mean, seen.expected_seconds(characters, input_tokens) if timed else None)
    counted = ("tiktoken+" if spec.provider == "openai" else "gguf+") if exact is not None else ""
    basis = counted + ("history" if seen.calls else "catalog")
    return ItemEstimate(item_id, spec.id, input_tokens, p50, max(p50, p95), basis, expected)


@dataclass(frozen=True)
class RunEstimate:
    items: int
    routed: int
    p50_usd: float
    p95_usd: float
    by_model: dict[str, dict[str, float]]
    calibration: dict[str, Optional[float]]  # model → chars-per-token MAPE on its history

    def as_dict(self) -> dict:
        return {"items": self.items, "routed": self.routed, "p50_usd": round(self.p50_usd, 8),
                "p95_usd": round(self.p95_usd, 8), "by_model": self.by_model, "token_calibration_mape": self.calibration}


def estimate_run(
    decisions: Sequence[RoutingDecision], texts: Sequence[Sequence[str]], task: str, catalog: ModelCatalog,
    history: CostHistory, expected_output_tokens: int,
) -> RunEstimate:
    """The batch's cost under the routes the policy chose: the sum of item expectations, and a p95 for the total.

    ``texts`` are each item's request parts (instructions, document): their characters are
    what the ledger's ``input_chars`` counts, so the calibrated characters-per-token applies,
    and OpenAI models count them exactly.

    The central figure (``p50_usd``) adds each item's *mean* cost over recent calls, not its
    median: a total of many items lands near the sum of their means (skewed latencies make
    item medians add up short), and recent calls follow a machine whose load changes. Each
    compute-priced model the run uses adds its measured session start once.

    The total's p95 is the p50 sum plus the root-sum-square of the items' (p95 − p50)
    spreads: items vary independently, so their worst cases do not all add up; escalations
    seen in history add their share of the next model on top.
    """
    p50 = 0.0
    spreads = []
    by_model: dict[str, dict[str, float]] = {}
    for decision, parts in zip(decisions, texts, strict=True):
        if decision.model_id is None:
            continue
        chars = sum(len(part) for part in parts)
        estimate = estimate_item(catalog.get(decision.model_id), task, chars, history, expected_output_tokens,
                                 decision.item_id, texts=parts)
        p50 += estimate.expected_usd
        spreads.append(max(0.0, estimate.p95_usd - estimate.expected_usd))
        row = by_model.setdefault(decision.model_id, {"items": 0, "p50_usd": 0.0})
        row["items"] += 1
        row["p50_usd"] = round(row["p50_usd"] + estimate.expected_usd, 8)
        if decision.escalation:
            # Escalation is a coin with the historical rate: its mean adds to p50, its
            # spread (normal approximation of a Bernoulli) to the p95.
            rate = history.escalation_rate.get(task, 0.0)
            nxt = estimate_item(catalog.get(decision.escalation[0]), task, chars, history, expected_output_tokens, texts=parts)
            p50 += rate * nxt.expected_usd
            spreads.append(1.645 * float(np.sqrt(rate * (1 - rate))) * nxt.expected_usd + rate * (nxt.p95_usd - nxt.expected_usd))
    for model_id, row in by_model.items():
        spec, seen = catalog.get(model_id), history.get(task, model_id)
        if spec.compute_usd_per_hour and seen.session_start_s:
            start = spec.compute_cost(seen.session_start_s)
            p50 += start
            row["p50_usd"] = round(row["p50_usd"] + start, 8)
    p95 = p50 + float(np.sqrt(np.sum(np.square(spreads)))) if spreads else p50
    calibration = {m: history.get(task, m).chars_per_token_mape for m in by_model}
    return RunEstimate(len(decisions), sum(1 for d in decisions if d.model_id), p50, p95, by_model, calibration)
