"""``ai-orch trace RUN_ID``: where a run's AI time went and which calls failed, from the local span store.

Reads ``$DAGSTER_HOME/ai_orchestration/traces.duckdb`` (written by ``resources.tracing``) and
prints the run's span tree — step → item → call, with durations, model, tokens and cost,
failed calls marked ✗ — then the calls and errors per model and per step.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from orchestration_assets.cli_errors import CliError


def add_commands(commands) -> dict[str, Callable[[argparse.Namespace], int]]:
    trace = commands.add_parser("trace", help="a run's span tree (step → item → call) with failures and an error summary")
    trace.add_argument("run_id", help="the Dagster run id, or its first characters as the UI shows them")
    trace.add_argument("--json", action="store_true", help="print the tree and the error summary as one JSON object")
    return {"trace": run_trace}


def run_trace(args: argparse.Namespace) -> int:
    from orchestration_assets.cli import _ensure_dagster_home
    from resources.tracing import TraceStore, default_trace_path

    _ensure_dagster_home()
    store = TraceStore(default_trace_path())
    run_id = _one_run(store, args.run_id.strip())
    tree = store.tree(run_id)
    summary = store.error_summary(run_id)
    if args.json:
        print(json.dumps({"run_id": run_id, "tree": tree, "errors": summary}, default=str))
        return 0
    print(store.render_tree(run_id))
    print()
    _print_table("model", "model_id", summary["by_model"])
    _print_table("step", "step_key", summary["by_step"])
    for row in summary["items_by_step"]:
        mark = "✗" if row["failed_items"] else " "
        first = f"  first: {row['first_item_error']}" if row["first_item_error"] else ""
        print(f"items of {row['step_key']}: {row['items']}, failed {row['failed_items']}{mark}{first}")
    return 0


def _one_run(store, given: str) -> str:
    """The run id ``given`` names: itself, or the one stored run id it begins (as the Dagster UI shortens them)."""
    if not given.isascii() or not given.isprintable():  # bytes the terminal could not decode, control characters
        raise CliError(f"{given.encode('utf-8', 'backslashreplace').decode()!r} is not a run id: Dagster run ids are "
                       "letters, digits and dashes")
    matches = store.run_ids_starting(given)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(f"{given!r} begins several runs' ids ({', '.join(matches[:5])}{', ...' if len(matches) > 5 else ''}); "
                       "give more of the run id")
    where = store.path if store.path.exists() else f"{store.path} (no trace store yet)"
    raise CliError(f"no spans for run {given!r} in {where}; check the run id, and that DAGSTER_HOME is the "
                   "instance that ran it")


def _print_table(title: str, key: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        print(f"no model calls recorded (by {title})")
        return
    width = max(len(title), *(len(str(r[key])) for r in rows))
    print(f"{title:{width}s} {'calls':>6s} {'errors':>6s}  first error")
    for row in rows:
        first = f"[{row['first_error_type']}] {row['first_error']}" if row["first_error"] else ""
        mark = "✗" if row["errors"] else " "
        print(f"{str(row[key]):{width}s} {row['calls']:6d} {row['errors']:6d}{mark} {first}")
    print()
