"""``ai-orch compliance``: see which workflows the compliance sensor has put on hold, and lift a hold.

A hold is the compliance sensor's brake: the workflow's schedules skip until a person who
has looked at the violation lifts it, with a note that stays in the ledger.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

from orchestration_assets.cli_errors import CliError


def add_commands(commands) -> dict[str, Callable[[argparse.Namespace], int]]:
    compliance = commands.add_parser("compliance", help="workflows on compliance hold; lift a hold")
    c = compliance.add_subparsers(dest="action", required=True)
    status = c.add_parser("status", help="workflows on hold, with why and since when")
    status.add_argument("--json", action="store_true")
    release = c.add_parser("release", help="lift a workflow's hold after review")
    release.add_argument("workflow")
    release.add_argument("--note", required=True, help="what was reviewed and why the workflow may run again")
    return {"compliance": run_compliance}


def run_compliance(args: argparse.Namespace) -> int:
    from orchestration_assets.finops_cli import _store

    store = _store()
    holds = store.holds()
    if args.action == "status":
        if args.json:
            print(json.dumps(holds))
        elif not holds:
            print("no workflow is on compliance hold")
        else:
            for workflow, hold in holds.items():
                print(f"{workflow}: on hold since {hold['since']}: {hold['reason']}")
        return 0
    if args.workflow not in holds:
        raise CliError(f"workflow {args.workflow!r} is not on hold (on hold: {', '.join(holds) or 'none'})")
    store.release_workflow(args.workflow, args.note)
    print(f"released {args.workflow}: {args.note}")
    return 0
