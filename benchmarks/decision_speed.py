"""How long a routing decision takes: per-decision p50/p99 for rules and learned, and a 100k batch.

    python benchmarks/decision_speed.py [--items 2000] [--batch 100000] [--json]

Items are generated invoices (the template's real inputs); the learned policy is fitted
on synthetic outcomes for the catalog's offline models, so the measurement needs no
history. Two timings per policy: the decision given the item's complexity estimate (which
``run_ai_task`` computes once per item and shares with the features and the record), and
the whole thing including that estimate. Ratios are against the rules policy measured in
the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestration_assets.invoices.generator import generate_invoices  # noqa: E402
from resources.catalog import ModelCatalog  # noqa: E402
from resources.classification import DataClassification  # noqa: E402
from resources.complexity import estimate_complexity  # noqa: E402
from resources.learned_policy import LearnedPolicy  # noqa: E402
from resources.model_gateway import Availability  # noqa: E402
from resources.routing import LearnedRoutingPolicy, RoutingItem, RulesPolicy  # noqa: E402
from resources.routing_features import FeatureSpace  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def time_each(decide, items) -> list[float]:
    timings = []
    for item in items:
        started = time.perf_counter()
        decide(item)
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalog = ModelCatalog.load()
    availability = {s.id: Availability(available=s.residency.value == "on_prem", reason="no key") for s in catalog}
    docs = generate_invoices(min(args.items, 500), seed="speed")
    items = [RoutingItem(item_id=f"{i}", task="invoice_extraction", text=docs[i % len(docs)].text,
                         classification=DataClassification.INTERNAL) for i in range(args.items)]
    rules = RulesPolicy([0.25, 0.6, 0.8])
    space = FeatureSpace()
    sketches = [space.sketch(d.text, {"task": "invoice_extraction"}) for d in docs]
    rng = np.random.default_rng(0)
    outcomes = {s.id: (rng.random(len(docs)) < 0.7).astype(float) for s in catalog if availability[s.id].available}
    learned = LearnedRoutingPolicy(("bench", LearnedPolicy.fit(sketches, outcomes, space=space)), rules)

    complexity = {item.item_id: estimate_complexity(item.text) for item in items}
    report = {}
    for name, policy in (("rules", rules), ("learned", learned)):
        given = lambda item: policy.decide(item, catalog, availability, complexity[item.item_id])  # noqa: E731
        whole = lambda item: policy.decide(item, catalog, availability)  # noqa: E731
        time_each(given, items[:50])  # warm up
        timings, end_to_end = time_each(given, items), time_each(whole, items)
        report[name] = {
            "p50_us": round(percentile(timings, 50) * 1e6, 1), "p99_us": round(percentile(timings, 99) * 1e6, 1),
            "mean_us": round(statistics.fmean(timings) * 1e6, 1),
            "with_complexity_p50_us": round(percentile(end_to_end, 50) * 1e6, 1),
            "with_complexity_p99_us": round(percentile(end_to_end, 99) * 1e6, 1),
        }
    batch = [items[i % len(items)] for i in range(args.batch)]
    batch_complexity = [complexity[item.item_id] for item in batch]
    started = time.perf_counter()
    decisions = rules.decide_many(batch, catalog, availability, batch_complexity)
    report["rules"]["batch_s"] = round(time.perf_counter() - started, 2)
    assert len(decisions) == len(batch)
    report["rules"]["batch_items"] = len(batch)
    queries = learned.policy.query_matrix([space.sketch(i.text) for i in batch[:10_000]])
    started = time.perf_counter()
    learned.policy.predict_matrix(queries)
    report["learned"]["predict_10k_matrix_s"] = round(time.perf_counter() - started, 3)
    report["learned"]["p50_vs_rules"] = round(report["learned"]["p50_us"] / report["rules"]["p50_us"], 2)
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
