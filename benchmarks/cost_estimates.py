"""How close the pre-run estimate lands to the actual cost, run after run, as history accumulates.

    python benchmarks/cost_estimates.py [--runs 6] [--count 20] [--json]

Materializes the invoice template for consecutive daily partitions on an ephemeral
Dagster instance with a fresh ledger (offline models), and reads each run's
``estimated_cost_usd`` and ``cost_usd`` from the materialization metadata: the estimate
is computed from the history that existed before the run. Reports each run's relative
error and ``p90_rel_error``, the p90 of |estimate − actual| / actual over the runs that had
at least 3 runs of history (target: ≤ 0.10). The baseline is the catalog-only estimate (no
history), measured on the first run of the same session.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from orchestration_assets.definitions import default_resources  # noqa: E402
from orchestration_assets.invoices.assets import invoice_extractions, raw_invoices  # noqa: E402
from resources.audit_log import AuditLogResource  # noqa: E402
from resources.duckdb_file import scratch_directory  # noqa: E402
from resources.ledger import LedgerResource  # noqa: E402
from resources.tracing import TracingResource  # noqa: E402
from resources.warehouse import DuckDBWarehouseResource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = []
    with scratch_directory() as tmp:
        resources = {**default_resources(), "ledger": LedgerResource(path=f"{tmp}/ledger.duckdb"),
                     "audit": AuditLogResource(path=f"{tmp}/audit.duckdb"),
                     "tracing": TracingResource(path=f"{tmp}/traces.duckdb"),
                     "warehouse": DuckDBWarehouseResource(path=f"{tmp}/warehouse.duckdb")}
        instance = dg.DagsterInstance.ephemeral()
        for n in range(args.runs):
            day = (date(2026, 4, 1) + timedelta(days=n)).isoformat()
            result = dg.materialize([raw_invoices, invoice_extractions], instance=instance, resources=resources,
                                    partition_key=day, run_config={"ops": {"raw_invoices": {"config": {"count": args.count}}}})
            metadata = result.asset_materializations_for_node("invoice_extractions")[0].metadata
            estimated, actual = metadata["estimated_cost_usd"].value, metadata["cost_usd"].value
            rows.append({"run": n + 1, "partition": day, "history_runs": n, "estimated_usd": estimated, "actual_usd": actual,
                         "error": round((estimated - actual) / actual, 4) if actual else None})
            print(f"run {n + 1} ({day}): estimated ${estimated:.6f}, actual ${actual:.6f}, error {rows[-1]['error']}", file=sys.stderr)
    later = [abs(r["error"]) for r in rows if r["history_runs"] >= 3 and r["error"] is not None]
    report = {
        "p90_rel_error": round(float(np.percentile(later, 90)), 4) if later else None,
        "runs_scored": len(later),
        "baseline_first_run_rel_error": abs(rows[0]["error"]) if rows and rows[0]["error"] is not None else None,
        "runs": rows,
    }
    if report["p90_rel_error"] is not None and report["baseline_first_run_rel_error"]:
        report["error_vs_baseline"] = round(report["p90_rel_error"] / report["baseline_first_run_rel_error"], 3)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
