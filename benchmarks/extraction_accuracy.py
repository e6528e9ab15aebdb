"""Field accuracy, latency and cost per 1,000 documents of each offline model, on two data sets.

Generated invoices (ground truth from the generator) and, when ``../shared`` is present,
the real SROIE receipts, scored as SROIE scores (company, date, total). Every model is
called through the product's own gateway and adapters, as the assets call it.

    python benchmarks/extraction_accuracy.py [--count 100] [--sroie-limit 120] [--models a,b] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestration_assets.ai_task import AITask  # noqa: E402
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION  # noqa: E402
from orchestration_assets.invoices.generator import generate_invoices  # noqa: E402
from orchestration_assets.invoices.scoring import accuracy_table, score_extraction  # noqa: E402
from resources.catalog import ModelCatalog  # noqa: E402
from resources.model_call import StructuredRequest  # noqa: E402
from resources.model_gateway import ModelGateway  # noqa: E402

SROIE = REPO.parent / "shared" / "data" / "sroie" / "dev.jsonl"


def load_sets(count: int, sroie_limit: int) -> dict[str, list[tuple[str, str, dict]]]:
    sets = {"generated": [(g.id, g.text, g.truth.model_dump()) for g in generate_invoices(count, seed="benchmark")]}
    if SROIE.is_file():
        rows = [json.loads(line) for line in SROIE.read_text().splitlines() if line.strip()]
        sets["sroie"] = [(r["id"], r["text"], {"company": r["company"], "date": r["date"], "total": r["total"]}) for r in rows[:sroie_limit]]
    else:
        print(f"(SROIE skipped: {SROIE} not found)", file=sys.stderr)
    return sets


def evaluate(gateway: ModelGateway, model_id: str, task: AITask, docs: list[tuple[str, str, dict]]) -> dict:
    scores, latencies, costs, errors = [], [], [], 0
    for _, text, truth in docs:
        request = StructuredRequest(task=task.name, system=task.instructions, document=text,
                                    output_schema=task.output_schema, max_output_tokens=task.max_output_tokens)
        result = gateway.call(model_id, request)
        errors += result.error is not None
        latencies.append(result.latency_s)
        costs.append(result.cost_usd)
        scores.append(score_extraction(truth, result.output if result.ok else None))
    table = accuracy_table(scores)
    return {
        **{k: round(v, 3) for k, v in table.items()},
        "documents": len(docs),
        "errors": errors,
        "latency_p50_s": round(statistics.median(latencies), 4),
        "cost_per_1000_usd": round(1000 * sum(costs) / len(docs), 6),
    }


def add_baseline_ratios(report: dict[str, dict]) -> None:
    """Each model's accuracy and latency as a ratio of the first model's, measured in the same run."""
    if not report:
        return
    baseline_id = next(iter(report))
    for model_id, by_set in report.items():
        for name, row in by_set.items():
            base = report[baseline_id].get(name)
            if not base:
                continue
            row["baseline"] = baseline_id
            row["core_vs_baseline"] = round(row["core_mean"] / base["core_mean"], 3) if base["core_mean"] else None
            row["latency_vs_baseline"] = (
                round(row["latency_p50_s"] / base["latency_p50_s"], 1) if base["latency_p50_s"] else None
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="generated invoices (default 100)")
    parser.add_argument("--sroie-limit", type=int, default=400, help="SROIE receipts to score (default all)")
    parser.add_argument("--models", default="rules-invoice,local-gemma3-270m")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    catalog = ModelCatalog.load()
    sets = load_sets(args.count, args.sroie_limit)
    report: dict[str, dict] = {}
    with ModelGateway(catalog) as gateway:
        for model_id in args.models.split(","):
            availability = gateway.availability(catalog.get(model_id))
            if not availability.available:
                print(f"{model_id}: unavailable ({availability.reason})", file=sys.stderr)
                continue
            for name, docs in sets.items():
                started = time.perf_counter()
                report.setdefault(model_id, {})[name] = evaluate(gateway, model_id, INVOICE_EXTRACTION, docs)
                print(f"{model_id} on {name}: {report[model_id][name]} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    add_baseline_ratios(report)
    if args.json:
        print(json.dumps(report))
    else:
        for model_id, by_set in report.items():
            for name, row in by_set.items():
                fields = " ".join(f"{k}={v}" for k, v in row.items())
                print(f"{model_id:20s} {name:10s} {fields}")


if __name__ == "__main__":
    main()
