"""Budgets as materialization metadata: every AI asset shows what it spent against what is left."""


import dagster as dg

from resources.budgets import BudgetStatus


def budget_metadata(statuses: list[BudgetStatus]) -> dict[str, dg.MetadataValue]:
    """Spend and what is left of each covering budget: numbers Dagster plots across materializations."""
    metadata: dict[str, dg.MetadataValue] = {}
    for status in statuses:
        key = status.budget.budget_id.replace(":", "_").replace("/", "_")
        metadata[f"budget_{key}_spent_usd"] = dg.MetadataValue.float(round(status.spent_usd, 8))
        if status.remaining_usd is not None:
            metadata[f"budget_{key}_remaining_usd"] = dg.MetadataValue.float(round(status.remaining_usd, 8))
    if statuses:
        metadata["budgets"] = dg.MetadataValue.md(budget_table(statuses))
    return metadata


def budget_table(statuses: list[BudgetStatus]) -> str:
    rows = ["| budget | spent | reserved | cap | remaining | state |", "|---|---|---|---|---|---|"]
    for s in statuses:
        cap = "—" if s.budget.hard_usd is None else f"${s.budget.hard_usd:.6f}"
        left = "—" if s.remaining_usd is None else f"${s.remaining_usd:.6f}"
        rows.append(f"| {s.budget.budget_id} | ${s.spent_usd:.6f} | ${s.reserved_usd:.6f} | {cap} | {left} | {s.state} |")
    return "\n".join(rows)
