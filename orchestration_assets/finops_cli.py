"""``ai-orch credits``, ``ai-orch budgets``, ``ai-orch spend``: FinOps on the local instance's ledger.

Credits are bought by the organisation (``buy``, in credits at a USD rate), allocated to
departments and from departments to workflows (``allocate``, ``topup``); ``balance``
derives every account from the entries and the recorded calls. Budgets are set per scope
and period with a soft threshold and a hard cap (``set``, ``remove``, ``list``,
``status``). ``spend`` sums the ledger by department, workflow, model or day.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Callable

from pydantic import ValidationError

from orchestration_assets.cli_errors import CliError

BY = ("department", "workflow", "model_id", "day")


def add_commands(commands) -> dict[str, Callable[[argparse.Namespace], int]]:
    credits = commands.add_parser("credits", help="buy, allocate and top up credits; show balances")
    c = credits.add_subparsers(dest="action", required=True)
    buy = c.add_parser("buy", help="the organisation buys credits")
    buy.add_argument("amount", type=positive_number, help="credits bought")
    buy.add_argument("--usd-per-credit", type=positive_number, default=None,
                     help="conversion rate, set by the first purchase (default: that rate, else 1.0)")
    for name, text in (("allocate", "move credits to a department or workflow"), ("topup", "add credits to an account")):
        p = c.add_parser(name, help=text)
        p.add_argument("account", help="department:NAME or workflow:NAME")
        p.add_argument("amount", type=positive_number, help="credits")
        p.add_argument("--from", dest="source", default="org", help="where they come from: org (default) or department:NAME")
    bal = c.add_parser("balance", help="every account's received, allocated, spent and balance")
    bal.add_argument("--json", action="store_true")

    budgets = commands.add_parser("budgets", help="set, list and check budgets")
    b = budgets.add_subparsers(dest="action", required=True)
    put = b.add_parser("set", help="create or change a budget, e.g. department:finance/month")
    put.add_argument("budget_id", help="KIND:NAME/PERIOD (kind department|workflow|model; period day|month|quarter|total) or all/PERIOD")
    put.add_argument("--soft", type=usd_amount, default=None, help="alert threshold in USD")
    put.add_argument("--hard", type=usd_amount, default=None, help="hard cap in USD")
    put.add_argument("--on-hard", choices=("refuse", "downgrade"), default=None,
                     help="at the cap: refuse new calls, or downgrade them to cheaper models (default refuse); "
                          "changing a budget, what is not given keeps its value")
    rm = b.add_parser("remove", help="stop enforcing a budget (its history stays)")
    rm.add_argument("budget_id")
    for name in ("list", "status"):
        p = b.add_parser(name, help="budgets with spend, reservations and state")
        p.add_argument("--json", action="store_true")

    spend = commands.add_parser("spend", help="spend from the ledger by department, workflow, model or day")
    spend.add_argument("--by", choices=("department", "workflow", "model", "day"), default="department")
    spend.add_argument("--days", type=int, default=30, help="look back this many days (default 30)")
    spend.add_argument("--json", action="store_true")
    return {"credits": run_credits, "budgets": run_budgets, "spend": run_spend}


def positive_number(text: str) -> float:
    """An amount of credits or a rate: a finite number above zero (``nan`` and ``inf`` would spoil an append-only ledger)."""
    value = usd_amount(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be above zero")
    return value


def usd_amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number, 0 or more")
    return value


def _known_model(model_id: str) -> None:
    """A model budget names a catalog model: a typo would make a budget that never applies to any call."""
    from orchestration_assets.definitions import default_resources

    known = [spec.id for spec in default_resources()["models"].catalog()]
    if model_id not in known:
        raise CliError(f"no model {model_id!r} in the catalog; models: {', '.join(known)}")


def _store():
    from orchestration_assets.cli import _ensure_dagster_home
    from orchestration_assets.definitions import default_resources

    _ensure_dagster_home()
    return default_resources()["ledger"].store()


def run_credits(args: argparse.Namespace) -> int:
    from resources.budget_store import ORG, account_name

    store = _store()
    if args.action == "balance":
        balances, rate = store.credit_balances()
        if args.json:
            print(json.dumps({"usd_per_credit": rate, "accounts": balances}))
            return 0
        if not balances:
            print("no credits yet: ai-orch credits buy AMOUNT [--usd-per-credit RATE]")
            return 0
        print(f"{'account':32s} {'received':>12s} {'allocated':>12s} {'spent':>12s} {'balance':>12s}  (credits; 1 credit = ${rate:g})")
        for account, row in balances.items():
            print(f"{account:32s} " + " ".join(f"{row[k] / rate:12.4f}" for k in ("received_usd", "allocated_usd", "spent_usd", "balance_usd")))
        return 0
    if args.amount <= 0:
        raise CliError(f"amount must be positive, got {args.amount}")
    try:
        if args.action == "buy":
            # Balances are kept in USD and shown in credits at one rate: a second rate would silently
            # re-value every credit already bought (refused by add_credits, in its transaction).
            rate = args.usd_per_credit or store.credit_balances()[1]
            store.add_credits("purchase", ORG, args.amount * rate, usd_per_credit=rate, note="bought")
            print(f"bought {args.amount:g} credits (${args.amount * rate:.2f} at ${rate:g}/credit)")
            return 0
        kind, _, name = args.account.partition(":")
        account = account_name(kind, name)
        source = account_name(*args.source.partition(":")[::2])
        if account == ORG:  # credits come into org by buying them, never by moving them there
            raise CliError("credits go to a department or a workflow: org receives them by 'credits buy'")
        if source != ORG and not (source.startswith("department:") and account.startswith("workflow:")):
            raise CliError("credits flow org → department → workflow: --from a department only into a workflow")
        _, rate = store.credit_balances()
        if not math.isfinite(args.amount * rate):
            raise CliError(f"{args.amount:g} credits at ${rate:g} is not a finite amount")
        store.add_credits(args.action, account, args.amount * rate, source=source, note=args.action)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"{args.action}: {args.amount:g} credits {source} → {account}")
    return 0


def run_budgets(args: argparse.Namespace) -> int:
    from resources.budgets import Budget, ScopeKind

    store = _store()
    if args.action in ("set", "remove"):
        try:
            kind, value, period = Budget.parse_id(args.budget_id)
            # as stored: the name without the spaces around it ("department:finance /day" is department:finance/day)
            budget_id = Budget(scope_kind=kind, scope_value=value, period=period, hard_usd=0).budget_id
            held = {s.budget.budget_id: s.budget for s in store.budget_statuses()}
            if args.action == "remove":
                if budget_id not in held:
                    raise CliError(f"no budget {args.budget_id!r}; see ai-orch budgets list")
                store.set_budget(held[budget_id], remove=True)
                print(f"removed {budget_id}")
                return 0
            if args.action == "set" and kind is ScopeKind.MODEL:
                _known_model(value)
            # Changing a budget: what is not given keeps its value ("--soft 90" once dropped the hard cap, and
            # reset downgrading to refusing)
            current = held.get(budget_id)

            def kept(given, field: str, default=None):
                if given is not None:
                    return given
                return getattr(current, field) if current is not None else default

            budget = Budget(scope_kind=kind, scope_value=value, period=period, soft_usd=kept(args.soft, "soft_usd"),
                            hard_usd=kept(args.hard, "hard_usd"), on_hard=kept(args.on_hard, "on_hard", "refuse"))
        except ValidationError as exc:
            raise CliError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
        store.set_budget(budget)
        print(f"set {budget.budget_id}: soft {budget.soft_usd}, hard {budget.hard_usd}, {budget.on_hard.value} at cap")
        return 0
    statuses = store.budget_statuses()
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses]))
    elif not statuses:
        print("no budgets: ai-orch budgets set department:NAME/month --soft 80 --hard 100")
    else:
        for status in statuses:
            print(status.describe())
    return 0


def run_spend(args: argparse.Namespace) -> int:

    if args.days < 1:
        raise CliError(f"--days must be at least 1, got {args.days}")
    store = _store()
    since = (datetime.now(timezone.utc) - timedelta(days=args.days)).replace(tzinfo=None)
    daily = store.daily_spend(since)
    key = "model_id" if args.by == "model" else args.by
    table = daily.groupby(key, dropna=False)[["calls", "cost_usd"]].sum().sort_values("cost_usd", ascending=False) \
        if len(daily) else daily
    rows = [{args.by: str(k), "calls": int(r["calls"]), "cost_usd": round(float(r["cost_usd"]), 8)} for k, r in table.iterrows()]
    if args.json:
        print(json.dumps({"by": args.by, "days": args.days, "total_usd": round(float(daily["cost_usd"].sum()), 8) if len(daily) else 0.0,
                          "rows": rows}))
        return 0
    if not rows:
        print(f"no spend in the last {args.days} days")
        return 0
    for row in rows:
        print(f"{row[args.by]:32s} {row['calls']:8d} calls  ${row['cost_usd']:.6f}")
    print(f"{'total':32s} {int(daily['calls'].sum()):8d} calls  ${float(daily['cost_usd'].sum()):.6f}")
    return 0
