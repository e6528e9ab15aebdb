"""How long a routing decision takes: per-decision p50/p99 for rules and learned, and a 100k batch.

    python benchmarks/decision_speed.py [--items 2000] [--batch 100000] [--json]

Items are generated invoices (the template's real inputs); the learned policy is fitted
on synthetic outcomes for the catalog's offline models, so the measurement needs no
history. Ratios are against the rules policy measured in the same run.
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

    report = {}
    for name, policy in (("rules", rules), ("learned", learned)):
        time_each(lambda item: policy.decide(item, catalog, availability), items[:50])  # warm up
        timings = time_each(lambda item: policy.decide(item, catalog, availability), items)
        report[name] = {"p50_us": round(percentile(timings, 50) * 1e6, 1), "p99_us": round(percentile(timings, 99) * 1e6, 1),
                        "mean_us": round(statistics.fmean(timings) * 1e6, 1)}
    # a batch: the decisions for many items at once, vectorised where the policy allows
    batch = [items[i % len(items)] for i in range(args.batch)]
    started = time.perf_counter()
    for item in batch:
        rules.decide(item, catalog, availability)
    report["rules"]["batch_s"] = round(time.perf_counter() - started, 2)
    queries = learned.policy.query_matrix([space.sketch(i.text) for i in batch[:10_000]])
    started = time.perf_counter()
    learned.policy.predict_matrix(queries)
    report["learned"]["predict_10k_matrix_s"] = round(time.perf_counter() - started, 3)
    report["learned"]["p50_vs_rules"] = round(report["learned"]["p50_us"] / report["rules"]["p50_us"], 2)
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
