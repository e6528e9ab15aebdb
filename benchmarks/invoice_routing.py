"""Accuracy and cost per 1,000 invoices for each single model, the cascade and the learned policy.

    python benchmarks/invoice_routing.py [--count 60] [--sroie-limit 120] [--json]

Everything goes through the product's own loop (``orchestration_assets.ai_task.run_ai_task``)
with a real DuckDB ledger in a temporary folder, on the offline models of the catalog.
Each data set (generated invoices; SROIE receipts when ``../shared`` is present) is split
in two halves by position: the single-model runs on the first half are the recorded
outcomes the learned policy is fitted on (as ``routing_policy`` would fit them from the
ledger); every number reported is measured on the second half. Accuracy is the SROIE
core mean (vendor, date, total); "per $" is accuracy divided by cost per 1,000 documents.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestration_assets.ai_task import CallContext, run_ai_task  # noqa: E402
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION  # noqa: E402
from orchestration_assets.invoices.generator import generate_invoices  # noqa: E402
from orchestration_assets.invoices.scoring import accuracy_table, score_extraction  # noqa: E402
from orchestration_assets.routing_assets import fit_policy, outcomes_from_calls  # noqa: E402
from resources.catalog import ModelCatalog  # noqa: E402
from resources.classification import DataClassification  # noqa: E402
from resources.documents import Document  # noqa: E402
from resources.duckdb_file import scratch_directory  # noqa: E402
from resources.ledger import DuckDBLedger  # noqa: E402
from resources.model_gateway import ModelGateway  # noqa: E402
from resources.routing import CascadePolicy, LearnedRoutingPolicy, RulesPolicy  # noqa: E402

SROIE = REPO.parent / "shared" / "data" / "sroie" / "dev.jsonl"
THRESHOLDS = [0.25, 0.6, 0.8]


def load_sets(count: int, sroie_limit: int) -> dict[str, list[tuple[Document, dict]]]:
    internal = DataClassification.INTERNAL
    sets = {"generated": [(Document(id=g.id, text=g.text, classification=internal), g.truth.model_dump())
                          for g in generate_invoices(count, seed="benchmark")]}
    if SROIE.is_file():
        rows = [json.loads(line) for line in SROIE.read_text().splitlines() if line.strip()][:sroie_limit]
        sets["sroie"] = [(Document(id=r["id"], text=r["text"], classification=internal),
                          {"company": r["company"], "date": r["date"], "total": r["total"]}) for r in rows]
    else:
        print(f"(SROIE skipped: {SROIE} not found)", file=sys.stderr)
    return sets


def run(policy, catalog: ModelCatalog, docs, ledger: DuckDBLedger, label: str) -> dict:
    with ModelGateway(catalog) as gateway:
        started = time.perf_counter()
        outcomes = run_ai_task(INVOICE_EXTRACTION, [d for d, _ in docs], policy=policy, gateway=gateway, ledger=ledger,
                               where=CallContext(run_id=label))
        wall = time.perf_counter() - started
    table = accuracy_table(score_extraction(truth, o.output) for o, (_, truth) in zip(outcomes, docs))
    cost = sum(r.cost_usd for o in outcomes for r in o.attempts)
    per_1000 = 1000 * cost / len(docs)
    models: dict[str, int] = {}
    for o in outcomes:
        for r in o.attempts:
            models[r.model_id] = models.get(r.model_id, 0) + 1
    return {
        "accuracy": round(table["core_mean"], 4), "cost_per_1000_usd": round(per_1000, 6),
        "accuracy_per_dollar": round(table["core_mean"] / per_1000, 1) if per_1000 else None,
        "calls": models, "wall_s": round(wall, 1), "documents": len(docs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--sroie-limit", type=int, default=120)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalog = ModelCatalog.load()
    offline = [s for s in catalog if s.residency.value == "on_prem" and s.serves(INVOICE_EXTRACTION.name)]
    report: dict[str, dict] = {}
    with scratch_directory() as tmp:
        for name, docs in load_sets(args.count, args.sroie_limit).items():
            half = len(docs) // 2
            train, test = docs[:half], docs[half:]
            ledger = DuckDBLedger(Path(tmp) / f"{name}.duckdb")
            rows: dict[str, dict] = {}
            for spec in offline:
                single = ModelCatalog(models=[spec])
                run(RulesPolicy(THRESHOLDS), single, train, ledger, f"train-{spec.id}")
                rows[spec.id] = run(RulesPolicy(THRESHOLDS), single, test, ledger, f"test-{spec.id}")
                print(f"{name} {spec.id}: {rows[spec.id]}", file=sys.stderr)
            offline_catalog = ModelCatalog(models=offline)
            rows["cascade"] = run(CascadePolicy(RulesPolicy(THRESHOLDS)), offline_catalog, test, ledger, "test-cascade")
            calls = ledger.calls()
            outcomes = outcomes_from_calls(calls[calls["run_id"].str.startswith("train-")])
            policy = fit_policy(outcomes)
            learned = LearnedRoutingPolicy(("benchmark", policy), RulesPolicy(THRESHOLDS))
            rows["learned"] = run(learned, offline_catalog, test, ledger, "test-learned")
            rows["_learned_evaluation"] = policy.evaluation()
            for key in ("cascade", "learned"):
                print(f"{name} {key}: {rows[key]}", file=sys.stderr)
            report[name] = rows
    if args.json:
        print(json.dumps(report, default=float))
        return
    for name, rows in report.items():
        print(f"\n{name} (second half, {rows['cascade']['documents']} documents)")
        print(f"{'route':22s} {'accuracy':>9s} {'$/1000 docs':>12s} {'accuracy per $':>15s}  calls")
        for route, row in rows.items():
            if route.startswith("_"):
                continue
            per_dollar = "—" if row["accuracy_per_dollar"] is None else f"{row['accuracy_per_dollar']:.1f}"
            print(f"{route:22s} {row['accuracy']:9.3f} {row['cost_per_1000_usd']:12.6f} {per_dollar:>15s}  {row['calls']}")


if __name__ == "__main__":
    main()
