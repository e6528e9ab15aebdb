"""``ai-orch audit verify`` and ``ai-orch audit show``: the local instance's audit log, as an auditor reads it.

``verify`` recomputes the hash chain of ``$DAGSTER_HOME/ai_orchestration/audit.duckdb``
and exits 4 when any entry was edited, deleted, inserted or reordered (2 stays the CLI's
"you typed something wrong"). Deleting the newest entries leaves a valid chain: pass a head
published earlier (``--expect-head COUNT:HASH``, from a materialization's metadata) to catch
that. ``show`` prints entries as stored, without verifying them.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

from orchestration_assets.cli_errors import CliError

TAMPERED_EXIT = 4


def add_commands(commands) -> dict[str, Callable[[argparse.Namespace], int]]:
    audit = commands.add_parser("audit", help="verify or show the tamper-evident audit log of AI calls")
    a = audit.add_subparsers(dest="action", required=True)
    verify = a.add_parser("verify", help=f"recompute the hash chain; exit {TAMPERED_EXIT} if any entry was edited, deleted or reordered")
    verify.add_argument("--expect-head", metavar="COUNT:HASH", default=None,
                        help="a head published earlier (e.g. in materialization metadata): also catches deleted newest entries")
    verify.add_argument("--json", action="store_true")
    show = a.add_parser("show", help="entries as stored (not verified), oldest first")
    show.add_argument("--run", dest="run_id", default=None, help="only this Dagster run's entries")
    show.add_argument("--limit", type=int, default=50, help="the newest N entries (default 50)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    return {"audit": run_audit}


def _log():
    from orchestration_assets.cli import _ensure_dagster_home
    from resources.audit_log import AuditLogResource

    _ensure_dagster_home()
    return AuditLogResource().log()


def run_audit(args: argparse.Namespace) -> int:
    return run_verify(args) if args.action == "verify" else run_show(args)


def run_verify(args: argparse.Namespace) -> int:
    from resources.audit_log import AuditHead

    try:
        expected = AuditHead.parse(args.expect_head) if args.expect_head else None
    except ValueError as exc:
        raise CliError(f"--expect-head: {exc}") from None
    log = _log()
    result = log.verify(expected_head=expected)
    if args.json:
        print(json.dumps({"path": str(log.path), **result.model_dump(mode="json")}))
    elif result.ok:
        print(f"audit log intact: {result.entries} entries, head {result.head} ({log.path})")
    else:
        print(f"audit log TAMPERED: {len(result.problems)} problem(s), first at entry {result.first_bad_seq} ({log.path})")
        for problem in result.problems:
            print(f"  {problem}")
    if not args.json:
        for warning in result.warnings:
            print(f"warning: {warning}")
    return 0 if result.ok else TAMPERED_EXIT


def run_show(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    entries = _log().entries(run_id=args.run_id, limit=args.limit)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.model_dump(mode="json")))
        return 0
    if not entries:
        print("no audit entries" + (f" for run {args.run_id}" if args.run_id else ""))
        return 0
    for e in entries:
        where = "/".join(p for p in (e.asset_key, e.partition_key) if p) or "-"
        checks = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(e.checks.items())) or "-"
        print(f"{e.seq:6d} {e.recorded_at:%Y-%m-%d %H:%M:%S}Z {e.event:15s} run {(e.run_id or '-')[:8]:8s} {where:28s} "
              f"{e.model_id or '-':20s} {e.classification or '-':12s} {e.residency or '-':10s} {e.redaction:14s} "
              f"item {(e.item_hash or '-')[:12]:12s} {checks}  {e.actor}")
    return 0
