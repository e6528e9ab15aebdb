"""Replay a routing data set of per-prompt outcomes and measure each policy with RouteLLM's metrics.

    python benchmarks/routing_replay.py --data ../shared/data/routing/mmlu.jsonl [--json] [--seed 0]

Rows: ``{"prompt": ..., "outcomes": {model: {"correct": bool}}, ...}``; ``correct`` may also be
0/1, a graded score in [0, 1] or the bare value, and a model missing from a row was not run
on it (the policy learns from the outcomes it has; only test rows with both models' outcomes
are scored). Any other short string field that groups rows (``subject``, ``benchmark``,
``domain``; not an id-like field with a value per row) is passed to the learned policy as a
declared attribute, the way a task declares its domain in production. Warnings (no quality
gap, few test rows, unscored rows) are printed beside the numbers and listed in ``_meta``. The two models are the
cheapest (weak) and the dearest (strong) by price (``--price MODEL=IN,OUT`` in USD per
million tokens; known defaults below); when prices are unknown the more accurate model on
the training split is taken as the strong one, at 20× the price.

The split is 70/30 with a fixed seed; the learned policy (the product's own
``resources.learned_policy.LearnedPolicy``) is fitted on the 70 % and every number is
measured on the 30 %. Policies, each replayed at every share of strong calls:

* ``random`` — a seeded random order; ``always_weak`` / ``always_strong`` — the fixed
  baselines (their ``apgr`` is their PGR, 0 and 1; their CPT is 1.0: always-weak never
  recovers the gap, always-strong pays every call);
* ``rules`` — the product's complexity score (``resources.complexity``), highest first;
* ``learned`` — predicted gain in success from the strong model, per call (RouteLLM's
  axis is the share of calls); ``learned_per_dollar`` ranks by gain per extra dollar, the
  ranking the policy's ``utility`` mode uses when prompts differ in length;
* ``cascade`` — call the weak model on every item, escalate those whose learned success
  estimate for the weak model is lowest; it pays the weak call on every item.

Beside them, ``_meta.attribute_ceiling`` is a reference, not a policy: routing by each
declared attribute's true per-value gain on the test rows themselves, the most any router
could get from the attributes alone (where a target lies beyond it, only what the prompts
say can reach it).

It prints a table (or one JSON object with ``--json``) and saves the curves as
``routing_replay.png`` beside the data's name under ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Optional
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resources.complexity import estimate_complexity, estimate_tokens  # noqa: E402
from resources.documents import DocumentInputError, jsonl_rows  # noqa: E402
from resources.learned_policy import LearnedPolicy, success_gap  # noqa: E402
from resources.routing_features import FeatureSpace  # noqa: E402
from resources.routing_metrics import routing_curve  # noqa: E402

KNOWN_PRICES = {  # USD per million tokens (input, output), from ../shared/README.md
    "gpt-4-1106-preview": (10.0, 30.0),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (0.6, 0.6),
}
_RESERVED = {"id", "prompt", "outcomes"}


def load_rows(path: Path) -> list[dict]:
    rows = []
    try:
        for number, row in jsonl_rows(path):
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("outcomes"), dict):
                raise SystemExit(f"{path}:{number}: a row needs a 'prompt' string and an 'outcomes' object")
            rows.append(row)
    except DocumentInputError as exc:
        raise SystemExit(str(exc)) from None
    if len(rows) < 20:
        raise SystemExit(f"{path}: {len(rows)} rows; a replay needs at least 20")
    return rows


def attributes(row: dict, names: Optional[set[str]] = None) -> dict[str, str]:
    """The row's declared attributes: short string fields, limited to ``names`` (see ``attribute_names``)."""
    return {k: v for k, v in row.items()
            if k not in _RESERVED and isinstance(v, str) and len(v) <= 80 and (names is None or k in names)}


def attribute_names(rows: list[dict]) -> set[str]:
    """String fields that group rows (a subject, a domain), not ones that name each row (an id, a hash).

    A field with a distinct value on more than half of the rows that carry it says which row it
    is, not what kind: fed to a policy it is noise, and its "ceiling" would be perfect routing.
    """
    values: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for name, value in attributes(row).items():
            values.setdefault(name, set()).add(value)
            counts[name] = counts.get(name, 0) + 1
    return {name for name in values if len(values[name]) <= max(2, 0.5 * counts[name])}


_TRUE, _FALSE = {"true", "yes", "1", "correct"}, {"false", "no", "0", "incorrect", "wrong"}


def outcome_value(outcome: object, where: str) -> float:
    """One model's result on one row as a quality in [0, 1]; NaN when the model was not run on it.

    Accepted: ``{"correct": ...}`` or the bare value; ``true``/``false``, 0/1, a graded score in
    [0, 1] (kept as is: the metrics average it), and the strings "true"/"false". Anything else
    stops the replay with the row and model named, rather than being read as a success.
    """
    if isinstance(outcome, dict) and outcome and not {"correct", "score"} & outcome.keys():
        raise SystemExit(f"{where}: outcome {outcome!r} has neither 'correct' nor 'score' "
                         "(an empty object or null means the model was not run)")
    value = outcome.get("correct", outcome.get("score")) if isinstance(outcome, dict) else outcome
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return float(value.strip().lower() in _TRUE)
    raise SystemExit(f"{where}: outcome {value!r} is not a result: expected true/false, 0/1 or a score in [0, 1]")


def correct(rows: list[dict], model: str) -> np.ndarray:
    """Each row's quality for ``model`` (NaN where the row has no outcome for it)."""
    return np.array([outcome_value(r["outcomes"].get(model), f"row {r.get('id', i)!r}, model {model!r}")
                     for i, r in enumerate(rows)])


def pick_models(train: list[dict], prices: dict[str, tuple[float, float]]) -> tuple[str, str, dict]:
    """The weak and the strong model: the cheapest and dearest priced ones, else the least and most accurate.

    Only models with outcomes on at least half as many rows as the most-run one take part: a
    model run on a few rows (a specialist, a late addition) says little about routing the rest.
    """
    models = sorted({m for r in train for m in r["outcomes"]})
    if len(models) < 2:
        raise SystemExit(f"need outcomes for at least two models, found {models}")
    coverage = {m: int(np.count_nonzero(~np.isnan(correct(train, m)))) for m in models}
    models = [m for m in models if coverage[m] >= 0.5 * max(coverage.values())]
    if len(models) < 2:
        raise SystemExit(f"only {models} has outcomes on most rows; per model: {coverage}")
    priced = [m for m in models if m in prices]
    if len(priced) >= 2:
        weak = min(priced, key=lambda m: sum(prices[m]))
        strong = max(priced, key=lambda m: sum(prices[m]))
        if sum(prices[weak]) < sum(prices[strong]):  # equal prices say nothing about which is the strong one
            return weak, strong, prices
    by_accuracy = sorted(models, key=lambda m: np.nan_to_num(np.nanmean(correct(train, m)), nan=-1.0))
    weak, strong = by_accuracy[0], by_accuracy[-1]
    return weak, strong, {weak: (1.0, 1.0), strong: (20.0, 20.0)}


def parse_price(spec: str) -> tuple[float, float]:
    """``MODEL=IN,OUT`` (USD per million input and output tokens): two finite numbers, neither negative."""
    model, _, pair = spec.rpartition("=")
    try:
        numbers = tuple(float(x) for x in pair.split(","))
    except ValueError:
        numbers = ()
    if not model or len(numbers) != 2 or not all(math.isfinite(x) and x >= 0 for x in numbers):
        raise SystemExit(f"--price {spec!r}: expected MODEL=IN,OUT, two prices in USD per million tokens, "
                         "finite and not negative (e.g. gpt-4o=2.5,10)")
    return numbers  # type: ignore[return-value]


def item_costs(rows: list[dict], price: tuple[float, float], output_tokens: int) -> np.ndarray:
    return np.array([(estimate_tokens(r["prompt"]) * price[0] + output_tokens * price[1]) / 1e6 for r in rows])


def fixed_policy(weak_q: float, strong_q: float, strong: bool, cost: float) -> dict:
    return {
        "apgr": 1.0 if strong else 0.0, "cpt50": 1.0, "cpt80": 1.0,
        "quality": round(strong_q if strong else weak_q, 4), "cost_per_1000_usd": round(1000 * cost, 4),
    }


def attribute_ceiling(test: list[dict], weak: np.ndarray, strong: np.ndarray, names: Optional[set[str]] = None) -> dict:
    """A reference, not a policy: routing by each declared attribute's *true* gain on the test rows.

    It is fitted on the rows it is scored on, so no router can be expected to beat it with the
    attributes alone; where a target lies beyond it, only item-level signal (what the prompt
    says) can get there. One entry per attribute with more than one value.
    """
    out = {}
    for name in sorted({k for r in test for k in attributes(r, names)}):
        values = [attributes(r, names).get(name, "") for r in test]
        if len(set(values)) < 2:
            continue
        gain: dict[str, list[float]] = {}
        for value, g in zip(values, strong - weak):
            gain.setdefault(value, []).append(g)
        score = np.array([np.mean(gain[v]) for v in values])
        out[name] = {k: v for k, v in routing_curve(score, weak, strong).summary().items() if k in ("apgr", "cpt50", "cpt80")}
    return out


def success_threshold(qualities: list[np.ndarray]) -> float:
    """Where a graded score counts as a success for the policy to learn: 0.5 for right/wrong outcomes, else the
    mean of every score the training rows hold. Scores all in 0.5-1.0 would otherwise all be successes, leaving
    nothing to learn; the mean lies between any two values that occur, so two-valued scores split as they read."""
    seen = np.concatenate([q[~np.isnan(q)] for q in qualities]) if qualities else np.array([])
    if not len(seen) or np.isin(seen, (0.0, 1.0)).all():
        return 0.5
    return round(float(seen.mean()), 4)


def passed(quality: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """What the policy learns: success (a score of at least ``threshold``), failure, or NaN for not run."""
    return np.where(np.isnan(quality), np.nan, (quality >= threshold).astype(float))


def replay_warnings(test: list[dict], w: np.ndarray, s: np.ndarray, weak: str, strong: str, unscored: int) -> list[str]:
    """What makes this replay's numbers weak evidence, said beside them rather than left for the reader to spot."""
    out = []
    if s.mean() <= w.mean():
        out.append(f"{strong} is not better than {weak} on the test rows ({s.mean():.3f} vs {w.mean():.3f}): there is "
                   "no quality gap to recover, so APGR and CPT say nothing here")
    if len(test) < 200:
        out.append(f"only {len(test)} test rows: expect APGR and CPT to move by several points with --seed")
    if unscored:
        out.append(f"{unscored} test rows lack an outcome for {weak} or {strong} and are not scored")
    return out


RANDOM_DRAWS = 200


def split_rows(rows: list[dict], seed: int, share: float = 0.7) -> tuple[list[dict], list[dict]]:
    """``share`` of the rows to train on, the rest to test on, in a seeded random order; a prompt's rows all on one side.

    A prompt asked twice (MMLU holds 105 such pairs) split across the sides would let the policy
    recall the answer it was trained on. Prompts are taken in the order their first rows come, each
    with all its rows, into training until it holds ``share`` of the rows; the rest are the test.
    """
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(round(share * len(rows)))
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(rows[i]["prompt"], []).append(int(i))
    train: list[dict] = []
    test: list[dict] = []
    for members in groups.values():
        (train if len(train) < cut else test).extend(rows[i] for i in members)
    return train, test


def cost_at(curve_share: float, order_costs: tuple[np.ndarray, np.ndarray], score: np.ndarray, base: float = 0.0) -> float:
    """Mean cost per item when the top ``curve_share`` of items (by score) go to the strong model."""
    weak_cost, strong_cost = order_costs
    order = np.argsort(-score, kind="stable")
    k = int(round(curve_share * len(score)))
    chosen = np.zeros(len(score), dtype=bool)
    chosen[order[:k]] = True
    return float(np.where(chosen, strong_cost, weak_cost).mean() + base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-tokens", type=int, default=5, help="assumed answer length for costs (default 5)")
    parser.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args()
    if args.data.is_dir() or not args.data.is_file():
        raise SystemExit(f"--data {args.data}: " + ("a directory, not a JSONL file" if args.data.is_dir() else "no such file"))

    prices = dict(KNOWN_PRICES)
    for spec in args.price:
        prices[spec.rsplit("=", 1)[0]] = parse_price(spec)
    if args.output_tokens < 0:
        raise SystemExit(f"--output-tokens {args.output_tokens}: must be 0 or more")

    rows = load_rows(args.data)
    train, test = split_rows(rows, args.seed)
    known = set(prices)
    weak, strong, prices = pick_models(train, prices)
    names = attribute_names(train)
    # Scored: the test rows with an outcome for both models (a row one of them never answered
    # says nothing about routing between them); the policy learns from every outcome it has.
    w_all, s_all = correct(test, weak), correct(test, strong)
    both = ~np.isnan(w_all) & ~np.isnan(s_all)
    unscored = int((~both).sum())
    test = [r for r, keep in zip(test, both) if keep]
    w, s = w_all[both], s_all[both]
    if len(test) < 20:
        raise SystemExit(f"{args.data}: {len(test)} test rows have outcomes for both {weak} and {strong}; "
                         "a replay needs at least 20")
    cw, cs = item_costs(test, prices[weak], args.output_tokens), item_costs(test, prices[strong], args.output_tokens)
    warnings = replay_warnings(test, w, s, weak, strong, unscored)
    if not {weak, strong} <= known:
        warnings.append(f"no price known for {', '.join(sorted({weak, strong} - known))}: the dollar columns use placeholder "
                        f"prices ({weak} ${prices[weak][0]:g}/{prices[weak][1]:g}, {strong} ${prices[strong][0]:g}/"
                        f"{prices[strong][1]:g} per million tokens in/out); pass --price MODEL=IN,OUT for real ones")

    space = FeatureSpace()
    started = time.perf_counter()
    train_sketches = [space.sketch(r["prompt"], attributes(r, names)) for r in train]
    threshold = success_threshold([correct(train, m) for m in (weak, strong)])
    labels = {m: passed(correct(train, m), threshold) for m in (weak, strong)}
    policy = LearnedPolicy.fit(train_sketches, labels, space=space, seed=args.seed)
    fit_s = time.perf_counter() - started
    predictions = policy.predict_matrix(policy.query_matrix([space.sketch(r["prompt"], attributes(r, names)) for r in test]))

    scores = {
        "random": np.random.default_rng(args.seed + 1).random(len(test)),
        "rules": np.array([estimate_complexity(r["prompt"]).score for r in test]),
        # RouteLLM's axis is the share of strong calls, so rank by predicted gain per call;
        # the cost-aware ranking (gain per extra dollar) is reported as learned_per_dollar.
        "learned": predictions[strong] - predictions[weak],
        "learned_per_dollar": success_gap(predictions, weak, strong, cw, cs),
        "cascade": 1.0 - predictions[weak],
    }
    report: dict[str, dict] = {
        "always_weak": fixed_policy(w.mean(), s.mean(), False, cw.mean()),
        "always_strong": fixed_policy(w.mean(), s.mean(), True, cs.mean()),
    }
    draws = [routing_curve(np.random.default_rng(args.seed + 2 + i).random(len(test)), w, s).apgr() for i in range(RANDOM_DRAWS)]
    random_spread = {"draws": RANDOM_DRAWS, "mean": round(float(np.mean(draws)), 4), "sd": round(float(np.std(draws)), 4)}
    if random_spread["sd"] > 0.05:
        warnings.append(f"random routing's APGR varies by ±{random_spread['sd']:.2f} between draws on these test rows "
                        f"({RANDOM_DRAWS} draws, mean {random_spread['mean']:.2f}): differences smaller than that are noise")
    curves = {}
    for name, score in scores.items():
        curve = routing_curve(score, w, s)
        curves[name] = curve
        row = curve.summary()
        base = cw.mean() if name == "cascade" else 0.0  # the cascade pays the weak call on every item first
        row["cost_per_1000_usd_at_cpt50"] = round(1000 * cost_at(row["cpt50"], (cw, cs), score, base), 4)
        report[name] = row
    report["_meta"] = {
        "data": str(args.data), "rows": len(rows), "train": len(train), "test": len(test), "seed": args.seed,
        "weak": weak, "strong": strong, "fit_seconds": round(fit_s, 1), "success_threshold": threshold,
        "prices_usd_per_mtok": {m: list(prices[m]) for m in (weak, strong)},
        "random_apgr_over_draws": random_spread,
        "perfect_router_quality": round(float(np.maximum(w, s).mean()), 4), "learned_evaluation": policy.evaluation(),
        "attribute_ceiling": attribute_ceiling(test, w, s, names),
        "attributes": sorted(names), "test_rows_scored": len(test), "test_rows_without_both_outcomes": unscored,
        "warnings": warnings,
    }
    png = save_plot(curves, args.out / f"routing_replay_{args.data.stem}.png")
    report["_meta"]["plot"] = str(png) if png else None

    if args.json:
        print(json.dumps(report, default=float))
        return
    print(f"{args.data.name}: {len(test)} test rows, weak={weak} ({w.mean():.3f}), strong={strong} ({s.mean():.3f})")
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"{'policy':14s} {'APGR':>7s} {'CPT50':>7s} {'CPT80':>7s}   vs random APGR (mean of {RANDOM_DRAWS} draws)")
    random_apgr = random_spread["mean"]
    for name in ("random", "always_weak", "always_strong", "rules", "learned", "learned_per_dollar", "cascade"):
        row = report[name]
        ratio = f"{row['apgr'] / random_apgr:5.2f}x" if random_apgr > 0 else "  n/a"
        print(f"{name:14s} {row['apgr']:7.3f} {row['cpt50']:7.3f} {row['cpt80']:7.3f}   {ratio}")
    for name, row in report["_meta"]["attribute_ceiling"].items():
        print(f"(ceiling with '{name}' alone, its true per-value gain on the test rows: "
              f"APGR {row['apgr']:.3f}, CPT50 {row['cpt50']:.3f}, CPT80 {row['cpt80']:.3f})")
    if png:
        print(f"curves: {png}")


def save_plot(curves: dict, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no PNG; pip install -e '.[dev]')", file=sys.stderr)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, curve in curves.items():
        ax.plot(curve.strong_share * 100, curve.quality * 100, label=f"{name} (APGR {curve.apgr():.3f})")
    any_curve = next(iter(curves.values()))
    ax.axhline(any_curve.weak_quality * 100, color="grey", linestyle=":", label="always weak")
    ax.axhline(any_curve.strong_quality * 100, color="black", linestyle="--", label="always strong")
    ax.set_xlabel("calls to the strong model (%)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
