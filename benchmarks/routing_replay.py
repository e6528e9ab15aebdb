"""Replay a routing data set of per-prompt outcomes and measure each policy with RouteLLM's metrics.

    python benchmarks/routing_replay.py --data ../shared/data/routing/mmlu.jsonl [--json] [--seed 0]

Rows: ``{"prompt": ..., "outcomes": {model: {"correct": bool}}, ...}``; any other string
field (``subject``, ``benchmark``, ``domain``) is passed to the learned policy as a declared
attribute, the way a task declares its domain in production. The two models are the
cheapest (weak) and the dearest (strong) by price (``--price MODEL=IN,OUT`` in USD per
million tokens; known defaults below); when prices are unknown the more accurate model on
the training split is taken as the strong one, at 20× the price.

The split is 70/30 with a fixed seed; the learned policy (the product's own
``resources.learned_policy.LearnedPolicy``) is fitted on the 70 % and every number is
measured on the 30 %. Policies, each replayed at every share of strong calls:

* ``random`` — a seeded random order; ``always_weak`` / ``always_strong`` — the fixed
  baselines (their ``apgr`` is their PGR, 0 and 1; their CPT is the strong share they pay);
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
import sys
import time
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


def attributes(row: dict) -> dict[str, str]:
    return {k: v for k, v in row.items() if k not in _RESERVED and isinstance(v, str) and len(v) <= 80}


def correct(rows: list[dict], model: str) -> np.ndarray:
    return np.array([float(bool(r["outcomes"].get(model, {}).get("correct"))) for r in rows])


def pick_models(train: list[dict], prices: dict[str, tuple[float, float]]) -> tuple[str, str, dict]:
    models = sorted({m for r in train for m in r["outcomes"]})
    if len(models) < 2:
        raise SystemExit(f"need outcomes for at least two models, found {models}")
    priced = [m for m in models if m in prices]
    if len(priced) >= 2:
        weak = min(priced, key=lambda m: sum(prices[m]))
        strong = max(priced, key=lambda m: sum(prices[m]))
        return weak, strong, prices
    by_accuracy = sorted(models, key=lambda m: correct(train, m).mean())
    weak, strong = by_accuracy[0], by_accuracy[-1]
    return weak, strong, {weak: (1.0, 1.0), strong: (20.0, 20.0)}


def item_costs(rows: list[dict], price: tuple[float, float], output_tokens: int) -> np.ndarray:
    return np.array([(estimate_tokens(r["prompt"]) * price[0] + output_tokens * price[1]) / 1e6 for r in rows])


def fixed_policy(weak_q: float, strong_q: float, strong: bool, cost: float) -> dict:
    return {
        "apgr": 1.0 if strong else 0.0, "cpt50": 1.0, "cpt80": 1.0,
        "quality": round(strong_q if strong else weak_q, 4), "cost_per_1000_usd": round(1000 * cost, 4),
    }


def attribute_ceiling(test: list[dict], weak: np.ndarray, strong: np.ndarray) -> dict:
    """A reference, not a policy: routing by each declared attribute's *true* gain on the test rows.

    It is fitted on the rows it is scored on, so no router can be expected to beat it with the
    attributes alone; where a target lies beyond it, only item-level signal (what the prompt
    says) can get there. One entry per attribute with more than one value.
    """
    out = {}
    for name in sorted({k for r in test for k in attributes(r)}):
        values = [attributes(r).get(name, "") for r in test]
        if len(set(values)) < 2:
            continue
        gain: dict[str, list[float]] = {}
        for value, g in zip(values, strong - weak):
            gain.setdefault(value, []).append(g)
        score = np.array([np.mean(gain[v]) for v in values])
        out[name] = {k: v for k, v in routing_curve(score, weak, strong).summary().items() if k in ("apgr", "cpt50", "cpt80")}
    return out


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
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: no such file")

    prices = dict(KNOWN_PRICES)
    for spec in args.price:
        try:
            model, pair = spec.rsplit("=", 1)
            prices[model] = tuple(float(x) for x in pair.split(","))  # type: ignore[assignment]
        except ValueError:
            raise SystemExit(f"--price {spec!r}: expected MODEL=IN,OUT") from None

    rows = load_rows(args.data)
    order = np.random.default_rng(args.seed).permutation(len(rows))
    cut = int(round(0.7 * len(rows)))
    train, test = [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]
    weak, strong, prices = pick_models(train, prices)
    w, s = correct(test, weak), correct(test, strong)
    cw, cs = item_costs(test, prices[weak], args.output_tokens), item_costs(test, prices[strong], args.output_tokens)

    space = FeatureSpace()
    started = time.perf_counter()
    train_sketches = [space.sketch(r["prompt"], attributes(r)) for r in train]
    policy = LearnedPolicy.fit(train_sketches, {m: correct(train, m) for m in (weak, strong)}, space=space, seed=args.seed)
    fit_s = time.perf_counter() - started
    predictions = policy.predict_matrix(policy.query_matrix([space.sketch(r["prompt"], attributes(r)) for r in test]))

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
        "weak": weak, "strong": strong, "fit_seconds": round(fit_s, 1),
        "perfect_router_quality": round(float(np.maximum(w, s).mean()), 4), "learned_evaluation": policy.evaluation(),
        "attribute_ceiling": attribute_ceiling(test, w, s),
    }
    png = save_plot(curves, args.out / f"routing_replay_{args.data.stem}.png")
    report["_meta"]["plot"] = str(png) if png else None

    if args.json:
        print(json.dumps(report, default=float))
        return
    print(f"{args.data.name}: {len(test)} test rows, weak={weak} ({w.mean():.3f}), strong={strong} ({s.mean():.3f})")
    print(f"{'policy':14s} {'APGR':>7s} {'CPT50':>7s} {'CPT80':>7s}   vs random APGR")
    random_apgr = report["random"]["apgr"]
    for name in ("random", "always_weak", "always_strong", "rules", "learned", "learned_per_dollar", "cascade"):
        row = report[name]
        ratio = row["apgr"] / random_apgr if random_apgr else float("nan")
        print(f"{name:14s} {row['apgr']:7.3f} {row['cpt50']:7.3f} {row['cpt80']:7.3f}   {ratio:5.2f}x")
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
