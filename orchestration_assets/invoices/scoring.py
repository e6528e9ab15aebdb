"""Field accuracy of an extraction against ground truth, the way SROIE scores it.

Text fields match after upper-casing and collapsing whitespace; dates match when they
are the same calendar day however written; totals match to the cent. Fields the truth
does not have are not scored, so SROIE rows (company, date, total) and generated
invoices (every field) go through the same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

from orchestration_assets.invoices.normalize import normalize_currency, normalize_date, parse_amount
from orchestration_assets.invoices.schema import InvoiceExtraction

SCORED_FIELDS = ("vendor", "invoice_number", "date", "currency", "total")
CORE_FIELDS = ("vendor", "date", "total")
_TRUTH_ALIASES = {"vendor": ("vendor", "company")}


def _text_key(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = " ".join(str(value).upper().split())
    return text or None


def _date_key(value: Any) -> Optional[str]:
    if value is None or str(value).strip() == "":
        return None
    return normalize_date(value) or str(value).strip()


def _currency_key(value: Any) -> Optional[str]:
    return normalize_currency(None if value is None else str(value))


def _total_key(value: Any) -> Optional[int]:
    amount = parse_amount(value)
    return None if amount is None else round(amount * 100)


_KEYS = {
    "vendor": _text_key,
    "invoice_number": _text_key,
    "date": _date_key,
    "currency": _currency_key,
    "total": _total_key,
}


def _truth_value(truth: Mapping[str, Any], field: str) -> Any:
    for name in _TRUTH_ALIASES.get(field, (field,)):
        value = truth.get(name)
        if value is not None and str(value).strip() != "":
            return value
    return None


def score_extraction(
    truth: Union[Mapping[str, Any], InvoiceExtraction], predicted: Optional[InvoiceExtraction]
) -> dict[str, bool]:
    """One bool per field the truth has: does the prediction match it?"""
    truth_map = truth.model_dump() if isinstance(truth, InvoiceExtraction) else truth
    scores: dict[str, bool] = {}
    for field in SCORED_FIELDS:
        expected = _KEYS[field](_truth_value(truth_map, field))
        if expected is None:
            continue
        got = _KEYS[field](getattr(predicted, field, None)) if predicted is not None else None
        scores[field] = got is not None and got == expected
    return scores


def accuracy_table(rows: Iterable[Mapping[str, bool]]) -> dict[str, float]:
    """Share of True per field (over the rows that score it), plus ``core_mean`` of vendor/date/total."""
    hits: dict[str, int] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for field, ok in row.items():
            counts[field] = counts.get(field, 0) + 1
            hits[field] = hits.get(field, 0) + int(bool(ok))
    table = {field: hits[field] / counts[field] for field in SCORED_FIELDS if counts.get(field)}
    core = [table[field] for field in CORE_FIELDS if field in table]
    table["core_mean"] = sum(core) / len(core) if core else 0.0
    return table
