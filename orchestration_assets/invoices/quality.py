"""The quality rules for extracted invoices, defined once.

Each rule yields both a great-expectations expectation (the blocking asset check judges
the batch with it, with a minimum pass rate) and a pandas mask (``approved_invoices``
keeps only the rows that pass every rule), so the check and the filter cannot drift.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import dagster as dg
import pandas as pd

ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
REQUIRED_FIELDS = ("vendor", "date", "total")
EXPECTED_COLUMNS = ("id", "vendor", "invoice_number", "date", "currency", "total", "tax", "line_items_total", "model", "error")


class InvoiceQualityPolicy(dg.ConfigurableResource):
    """How strict the quality gate is. ``min_pass_rate``: share of items that must pass each rule."""

    min_pass_rate: float = 0.8
    total_tolerance: float = 0.02


@dataclass(frozen=True)
class Rule:
    name: str
    column: str
    kind: str  # "not_null" | "regex" | "between"
    regex: Optional[str] = None
    min_value: Optional[float] = None
    max_value: Optional[float] = None

    def expectation(self, mostly: float):
        import great_expectations.expectations as gxe

        if self.kind == "not_null":
            return gxe.ExpectColumnValuesToNotBeNull(column=self.column, mostly=mostly)
        if self.kind == "regex":
            return gxe.ExpectColumnValuesToMatchRegex(column=self.column, regex=self.regex, mostly=mostly)
        return gxe.ExpectColumnValuesToBeBetween(column=self.column, min_value=self.min_value, max_value=self.max_value, mostly=mostly)

    def passes(self, value) -> bool:
        """``mask`` for one value, without pandas (it runs per item, as each model answers)."""
        if self.kind == "not_null":
            return not _missing(value)
        if _missing(value):
            return True
        if self.kind == "regex":
            return re.match(self.regex or "", str(value)) is not None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return True  # like to_numeric(errors="coerce"): not a number is not out of range
        if math.isnan(number):
            return True
        return not ((self.min_value is not None and number < self.min_value)
                    or (self.max_value is not None and number > self.max_value))

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """True where the row passes; like GX, non-null rules let nulls through."""
        values = frame[self.column]
        if self.kind == "not_null":
            return values.notna()
        if self.kind == "regex":
            return values.isna() | values.astype("string").str.match(self.regex).fillna(False).astype(bool)
        numbers = pd.to_numeric(values, errors="coerce")
        ok = pd.Series(True, index=frame.index)
        if self.min_value is not None:
            ok &= ~(numbers < self.min_value)
        if self.max_value is not None:
            ok &= ~(numbers > self.max_value)
        return values.isna() | ok


def invoice_rules(total_tolerance: float) -> list[Rule]:
    return [
        *(Rule(f"{field}_present", field, "not_null") for field in REQUIRED_FIELDS),
        Rule("date_parses", "date", "regex", regex=ISO_DATE),
        Rule("total_not_negative", "total", "between", min_value=0),
        Rule("total_matches_line_items", "arithmetic_gap", "between", min_value=0, max_value=total_tolerance),
    ]


def with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``arithmetic_gap`` = |total − (sum of line items + tax)|, null where no line items were extracted."""
    total = pd.to_numeric(frame["total"], errors="coerce")
    lines = pd.to_numeric(frame["line_items_total"], errors="coerce")
    tax = pd.to_numeric(frame["tax"], errors="coerce").fillna(0.0)
    return frame.assign(arithmetic_gap=(total - (lines + tax)).abs().round(4))


def passing_rows(frame: pd.DataFrame, total_tolerance: float) -> pd.Series:
    derived = with_derived_columns(frame)
    ok = derived["error"].isna()
    for rule in invoice_rules(total_tolerance):
        ok &= rule.mask(derived)
    return ok


def failed_rules(frame: pd.DataFrame, total_tolerance: float) -> list[list[str]]:
    """For each row, the names of the rules it fails (empty when it passes all)."""
    derived = with_derived_columns(frame)
    masks = {rule.name: rule.mask(derived) for rule in invoice_rules(total_tolerance)}
    return [[name for name, mask in masks.items() if not bool(mask.iloc[i])] for i in range(len(frame))]


def invoice_item_check(extraction, total_tolerance: float = 0.02) -> Optional[str]:
    """The batch rules applied to one answer: ``None`` when it passes, else the failed rules.

    Used per item, as soon as a model answers: it labels the outcome for learned routing
    and tells a cascade to escalate, with the same rules the blocking check applies.
    """
    row = {field: getattr(extraction, field, None) for field in ("vendor", "date", "total", "tax")}
    row["line_items_total"] = extraction.line_items_total() if hasattr(extraction, "line_items_total") else None
    row["arithmetic_gap"] = _arithmetic_gap(row["total"], row["line_items_total"], row["tax"])
    failed = [rule.name for rule in invoice_rules(total_tolerance) if not rule.passes(row.get(rule.column))]
    return ("failed: " + ", ".join(failed)) if failed else None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _arithmetic_gap(total, lines, tax) -> Optional[float]:
    """``with_derived_columns``' gap for one row: null when total or line items are missing."""
    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    gap = abs(number(total) - (number(lines) + (0.0 if _missing(tax) or math.isnan(number(tax)) else number(tax))))
    return None if math.isnan(gap) else round(gap, 4)
