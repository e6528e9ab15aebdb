"""``ai-orch``: run the templates headless against the local Dagster instance.

``ai-orch demo`` materializes the invoice template for one partition on the instance at
``$DAGSTER_HOME`` (the one ``dagster dev`` shows, so the run appears in the UI) and prints
what it did: calls, models, cost, check results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
OUTPUT_FIELDS = ["vendor", "invoice_number", "date", "currency", "total"]


from orchestration_assets.cli_errors import CliError  # noqa: E402  (re-exported: ai-orch's one error type)
from resources.environment import SettingError  # noqa: E402


MAX_GENERATED = 100_000  # generated invoices a demo makes: more is a typo, and would fill memory before saying so


def _invoice_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--count must be a whole number, not {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--count must be at least 1, got {count}")
    if count > MAX_GENERATED:
        raise argparse.ArgumentTypeError(f"--count must be at most {MAX_GENERATED:,}, got {count}")
    return count


class _UsageError(Exception):
    """argparse's refusal of the arguments, raised instead of exiting so ``main`` answers it like a ``CliError``."""

    def __init__(self, usage: str, message: str):
        super().__init__(message)
        self.usage = usage


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(self.format_usage(), message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except SettingError as exc:  # a variable, the catalog, the data policy: the user can fix it, no traceback
        return _fail(argparse.Namespace(json="--json" in argv), str(exc), 2)


def _main(argv: list[str]) -> int:
    parser = _ArgumentParser(prog="ai-orch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="materialize the invoice template for one day, offline by default")
    demo.add_argument("--count", type=_invoice_count, default=20,
                      help=f"generated invoices (ignored with --input); default 20, at most {MAX_GENERATED:,}")
    demo.add_argument("--date", help="partition date YYYY-MM-DD; default today (UTC)")
    demo.add_argument("--input", help='JSONL of your own documents, one {"id", "text"} object a line')
    demo.add_argument("--output", help="write one JSONL row per document with the extracted fields")
    demo.add_argument("--classification", default="internal", help="data classification of the documents; default internal")
    demo.add_argument("--policy", choices=("rules", "learned", "cascade"), default=None,
                      help="routing policy (default: $AI_ORCH_ROUTING_POLICY or rules); learned uses the latest "
                           "routing_policy materialization (ai-orch fit-routing)")
    demo.add_argument("--department", default=None,
                      help="charge the run to this department (run tag ai_orch/department; default $AI_ORCH_DEPARTMENT or operations)")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.add_argument("--strict", action="store_true", help="exit non-zero when any check fails")
    estimate = commands.add_parser("estimate", help="what the invoice template will cost for a partition, before running it")
    estimate.add_argument("--count", type=_invoice_count, default=20,
                          help=f"generated invoices (ignored with --input); default 20, at most {MAX_GENERATED:,}")
    estimate.add_argument("--date", help="partition date YYYY-MM-DD; default today (UTC)")
    estimate.add_argument("--input", help='JSONL of your own documents, one {"id", "text"} object a line')
    estimate.add_argument("--classification", default="internal")
    estimate.add_argument("--policy", choices=("rules", "learned", "cascade"), default=None)
    estimate.add_argument("--json", action="store_true")
    fit = commands.add_parser("fit-routing", help="materialize routing_outcomes and routing_policy from the ledger")
    fit.add_argument("--json", action="store_true", help="print the policy's version and evaluation as JSON")
    from orchestration_assets import audit_cli, finops_cli, governance_cli, trace_cli

    extra = {**finops_cli.add_commands(commands), **governance_cli.add_commands(commands),
             **audit_cli.add_commands(commands), **trace_cli.add_commands(commands)}
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:  # bad arguments: usage and message on stderr, and JSON on stdout for --json callers
        sys.stderr.write(exc.usage)
        print(f"ai-orch: error: {exc}", file=sys.stderr)
        if "--json" in argv:
            print(json.dumps({"error": str(exc), "exit_code": 2}))
        return 2
    try:
        runners = {"demo": run_demo, "estimate": run_estimate, "fit-routing": run_fit_routing, **extra}
        return runners[args.command](args)
    except CliError as exc:
        return _fail(args, str(exc), 2)
    except OverflowError as exc:  # a number past what dates or the store hold ("spend --days 99999999")
        return _fail(args, f"a number is out of range: {exc}", 2)
    except Exception as exc:
        message = _store_problem(exc)
        if message is None:
            raise
        return _fail(args, message, 3)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"ai-orch: {message}", file=sys.stderr)
    if getattr(args, "json", False):  # a script reading --json output gets the error as JSON too
        print(json.dumps({"error": message, "exit_code": code}))
    return code


def _store_problem(exc: Exception) -> Optional[str]:
    """What a failure to read or write the project's files says to a user (exit 3), or None for a bug (traceback)."""
    import duckdb

    from resources.duckdb_file import LedgerBusyError

    if isinstance(exc, LedgerBusyError):
        return f"{exc} (another program, such as a notebook or the duckdb CLI, may hold it open)"
    if isinstance(exc, duckdb.ConversionException):
        return f"a value is out of range for the store: {exc}"
    if isinstance(exc, duckdb.Error):
        return (f"could not use the project's DuckDB files under {os.environ.get('DAGSTER_HOME', '.dagster_home')}"
                f"/ai_orchestration: {type(exc).__name__}: {exc} (is a file damaged, or written by another DuckDB version?)")
    return None


def run_fit_routing(args: argparse.Namespace) -> int:
    """Fit the learned routing policy on the ledger of the local instance, as the UI would."""
    home = _ensure_dagster_home()
    import dagster as dg

    from orchestration_assets import defs
    from orchestration_assets.routing_assets import outcomes_from_calls, routing_outcomes, routing_policy

    if outcomes_from_calls(defs.resources["ledger"].store().calls()).empty:  # said plainly, not as a failed run
        raise CliError("no judged outcomes in the ledger yet: run an AI asset first (e.g. ai-orch demo), then fit-routing")
    result = dg.materialize(
        [routing_outcomes, routing_policy], instance=dg.DagsterInstance.get(),
        resources={k: v for k, v in defs.resources.items() if k in ("ledger", "routing")}, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    if not result.success:
        failure = result.get_step_failure_events()[0].step_failure_data.error
        print(f"ai-orch: fitting the routing policy failed: {failure.message.strip().splitlines()[0]}", file=sys.stderr)
        return 1
    materialization = result.asset_materializations_for_node("routing_policy")[0]
    metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    summary = {"run_id": result.run_id, "dagster_home": str(home), **metadata}
    print(json.dumps(summary, default=str) if args.json else
          f"routing policy {metadata['version']}: {metadata['training_items']} items, "
          f"{metadata['trained_models']} models trained (run {result.run_id})")
    return 0


def _partition_date(text: Optional[str]) -> str:
    if not text:
        return datetime.now(timezone.utc).date().isoformat()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise CliError(f"--date must be YYYY-MM-DD, got {text!r}") from None
    from orchestration_assets.invoices.assets import invoice_partitions

    first = invoice_partitions.start.date()
    if day < first:
        raise CliError(f"--date {day} is before the first partition, {first}")
    if day.isoformat() not in invoice_partitions.get_partition_keys():
        raise CliError(f"--date {day} is not a partition yet (the last one is {invoice_partitions.get_last_partition_key()})")
    return day.isoformat()


def _ensure_dagster_home() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
        print(f"ai-orch: DAGSTER_HOME is not set; using {home} (export it to see this run in `dagster dev`)", file=sys.stderr)
    path = Path(home).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def _checked_inputs(args: argparse.Namespace):
    """Validate --classification/--input/--date the same way for every command (--count: ``_invoice_count``);
    returns (classification, partition)."""
    from resources.classification import DataClassification
    from resources.documents import DocumentInputError, read_documents_jsonl

    try:
        classification = DataClassification.parse(args.classification)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.input:
        try:
            read_documents_jsonl(args.input, classification)
        except DocumentInputError as exc:
            raise CliError(str(exc)) from None
    return classification, _partition_date(args.date)


def run_estimate(args: argparse.Namespace) -> int:
    """Route the partition's documents as the asset would and price them from the ledger's history."""
    classification, partition = _checked_inputs(args)
    home = _ensure_dagster_home()
    from orchestration_assets import defs
    from orchestration_assets.invoices.assets import INVOICE_EXTRACTION, RawInvoicesConfig, invoice_documents
    from resources.complexity import estimate_complexity
    from resources.estimation import CostHistory, estimate_run
    from resources.routing import RoutingItem, RulesPolicy

    config = RawInvoicesConfig(count=args.count, classification=classification.value,
                               input_path=str(Path(args.input).expanduser().resolve()) if args.input else None)
    documents, source = invoice_documents(config, partition)
    # Unreadable or empty lines fail as input errors before any route, as the asset does: never priced.
    checked = [d.checked() for d in documents]
    unreadable = [d for d in checked if d.input_error is not None]
    documents = [d for d in checked if d.input_error is None]
    routing = defs.resources["routing"]
    if args.policy:
        routing = routing.model_copy(update={"policy": args.policy})
    policy = routing.build_policy(INVOICE_EXTRACTION.name)
    gateway = defs.resources["models"].gateway()
    catalog = gateway.catalog
    availability = {spec.id: gateway.availability(spec) for spec in catalog}
    items = [RoutingItem(item_id=d.id, task=INVOICE_EXTRACTION.name, text=d.text, classification=d.classification,
                         attributes=dict(INVOICE_EXTRACTION.attributes)) for d in documents]
    if isinstance(policy, RulesPolicy):
        decisions = policy.decide_many(items, catalog, availability)
    else:
        decisions = [policy.decide(item, catalog, availability, estimate_complexity(item.text)) for item in items]
    calls = defs.resources["ledger"].store().calls()
    history = CostHistory.from_calls(calls)
    estimate = estimate_run(decisions, [INVOICE_EXTRACTION.request_texts(d.text) for d in documents],
                            INVOICE_EXTRACTION.name, catalog, history, INVOICE_EXTRACTION.expected_output_tokens)
    summary = {"partition": partition, "source": source, "policy": routing.policy_for(INVOICE_EXTRACTION.name),
               "history_calls": int(len(calls)), "dagster_home": str(home), **estimate.as_dict(),
               "unreadable_items": len(unreadable)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"invoice template, partition {partition}: {estimate.items} documents ({source}), policy {summary['policy']}"
              + (f"; {len(unreadable)} unreadable, not priced (they fail as input errors)" if unreadable else ""))
        print(f"  estimated ${estimate.p50_usd:.6f} (p95 ${estimate.p95_usd:.6f}) from {len(calls)} recorded calls")
        for model, row in estimate.by_model.items():
            print(f"  {model:22s} {row['items']:5d} items  ${row['p50_usd']:.6f}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    classification, partition = _checked_inputs(args)
    home = _ensure_dagster_home()

    import dagster as dg

    from orchestration_assets import defs

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("invoice_batch")
    raw_config: dict[str, Any] = {"count": args.count, "classification": classification.value}
    if args.input:
        raw_config["input_path"] = str(Path(args.input).expanduser().resolve())
    run_config: dict[str, Any] = {
        "ops": {"raw_invoices": {"config": raw_config}},
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }
    if args.policy:  # the same run config a user sets in the launchpad
        run_config["resources"] = {"routing": {"config": {"policy": args.policy}}}
    if args.department is not None and not args.department.strip():
        raise CliError("--department must name a department (or leave it out for $AI_ORCH_DEPARTMENT / operations)")
    tags = {"ai_orch/department": args.department.strip()} if args.department else None
    if args.output:
        _check_output_path(Path(args.output).expanduser())
    started = time.perf_counter()
    result = job.execute_in_process(run_config=run_config, instance=instance, partition_key=partition, raise_on_error=False,
                                    tags=tags)
    wall_s = time.perf_counter() - started

    failures = result.get_step_failure_events()
    blocking = [f for f in failures if f.step_failure_data.error and f.step_failure_data.error.cls_name != CHECK_FAILED_ERROR]
    if blocking:
        lines = [f"{f.step_key}: {_root_error(f.step_failure_data.error)}" for f in blocking]
        print(f"ai-orch: run {result.run_id} could not complete:\n  " + "\n  ".join(lines), file=sys.stderr)
        return 1

    summary = _summary(result, defs, partition, home, wall_s)
    if args.output:
        try:
            _write_output(result.asset_value("invoice_extractions"), Path(args.output))
        except OSError as exc:  # a full disk, a path gone meanwhile: the run is done and recorded, say where it is
            return _fail(args, f"run {result.run_id} completed (its results are in Dagster and the ledger), but its "
                               f"output could not be written to {args.output}: {exc.strerror or exc}", 3)
        summary["output"] = str(Path(args.output).resolve())
    if args.json:
        print(json.dumps(summary, indent=None, default=str))
    else:
        _print_summary(summary)
    if args.strict and not all(summary["checks"].values()):
        return 3
    return 0


def _summary(result, defs, partition: str, home: Path, wall_s: float) -> dict[str, Any]:
    from resources.ledger import LedgerResource

    ledger: LedgerResource = defs.resources["ledger"]
    calls = ledger.store().calls(run_id=result.run_id)
    checks = {e.check_name: bool(e.passed) for e in result.get_asset_check_evaluations()}
    extractions = result.asset_value("invoice_extractions")
    approved = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "approved_invoices"]
    return {
        "run_id": result.run_id,
        "partition": partition,
        "items": int(len(extractions)),
        "failed_items": int(extractions["error"].notna().sum()),
        "calls": int(len(calls)),
        "models": {k: int(v) for k, v in calls["model_id"].value_counts().items()} if len(calls) else {},
        "cost_usd": round(float(calls["cost_usd"].sum()), 8) if len(calls) else 0.0,
        "estimated_cost_usd": round(float(calls["estimated_cost_usd"].fillna(0).sum()), 8) if len(calls) else 0.0,
        "checks": checks,
        "budget_refusals": int(extractions["error"].fillna("").str.startswith("refused by budget").sum()),
        "budget_downgrades": int(calls["route_reason"].str.contains("budget downgrade", regex=False).sum()) if len(calls) else 0,
        "approved_invoices_materialized": bool(approved),
        "wall_s": round(wall_s, 2),
        "dagster_home": str(home),
        "ledger": str(ledger.resolved_path()),
    }


def _root_error(error) -> str:
    """What went wrong in the step, in one line: the innermost cause ("UnicodeEncodeError: ..."), not Dagster's
    "Error occurred while executing op" wrapper around it."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = (error.message or "").strip().splitlines()
    return lines[0] if lines else error.cls_name


def _check_output_path(path: Path) -> None:
    """Refuse an --output the run could not write, before the run (and its calls) happen."""
    if path.is_dir():
        raise CliError(f"--output {path} is a directory: give a file path, e.g. {path / 'extracted.jsonl'}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--output {path}: cannot create its folder ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"--output {path} is not writable")


def _write_output(frame, path: Path) -> None:
    """One JSONL row per document; a row that breaks a quality rule names it (``failed_checks``): the batch's
    checks pass at a pass rate, so a wrong row in a passing batch is still marked."""
    from orchestration_assets.invoices.quality import InvoiceQualityPolicy, failed_rules

    path.parent.mkdir(parents=True, exist_ok=True)
    failed = failed_rules(frame, InvoiceQualityPolicy().total_tolerance)
    with open(path, "w", encoding="utf-8") as handle:
        for row, rules in zip(frame.to_dict(orient="records"), failed):
            out = {"id": row["id"], **{k: _plain(row[k]) for k in OUTPUT_FIELDS}}
            out.update(model=_plain(row["model"]), route=_plain(row["route_reason"]), cost_usd=_plain(row["cost_usd"]))
            if _plain(row["error"]) is not None:
                out["error"] = row["error"]
            if rules and _plain(row["error"]) is None:
                out["failed_checks"] = rules
            # allow_nan=False: a missing value is null, never NaN, which strict JSON readers refuse
            handle.write(json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n")


def _plain(value: Any) -> Any:
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _print_summary(summary: dict[str, Any]) -> None:
    checks = ", ".join(f"{name} {'passed' if ok else 'FAILED'}" for name, ok in summary["checks"].items())
    models = ", ".join(f"{m} ×{n}" for m, n in summary["models"].items())
    print(
        f"run {summary['run_id']} · partition {summary['partition']} · {summary['wall_s']} s\n"
        f"  items {summary['items']} ({summary['failed_items']} failed) · calls {summary['calls']} · models {models}\n"
        f"  cost ${summary['cost_usd']:.6f} (estimated ${summary['estimated_cost_usd']:.6f})"
        f" · budget refusals {summary['budget_refusals']}, downgrades {summary['budget_downgrades']}\n"
        f"  checks: {checks}\n"
        f"  approved_invoices {'materialized' if summary['approved_invoices_materialized'] else 'blocked by a failed check'}\n"
        f"  ledger {summary['ledger']}\n"
        f"  see it in the UI: DAGSTER_HOME={summary['dagster_home']} dagster dev"
    )


if __name__ == "__main__":
    sys.exit(main())
