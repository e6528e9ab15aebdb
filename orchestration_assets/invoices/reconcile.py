"""One invoice back from the answers for its parts: which part each field comes from, and whether it adds up.

Why it exists: a long invoice is split (``resources.chunking``) and each part is extracted on
its own; no single answer is the document's. Merging follows where an invoice states things:

* vendor, invoice number and date come from the first part that has them (the header, which
  every part repeats, so a later part can fill in what an earlier answer missed);
* total, and with it tax and currency, from the last part that states a total (the totals
  block closes the invoice; a page's "carried forward" earlier on is not the amount due);
* line items are the parts' items in order; items a later part read from the repeated
  header (``chunking.only_in_header``) are dropped, so the header is counted once, while a
  line that really occurs twice in the document is kept twice.

Disagreements (two invoice numbers) are reported by field and chunk id, not resolved silently. The merged
extraction then goes through the same item check as a single-call extraction
(``quality.invoice_item_check``), which is where "line items + tax = total" is enforced.
"""

from dataclasses import dataclass, field
from typing import Optional, Sequence

from orchestration_assets.invoices.quality import invoice_item_check
from orchestration_assets.invoices.schema import InvoiceExtraction, LineItem
from resources.chunking import Chunk, normalized, only_in_header

HEADER_FIELDS = ("vendor", "invoice_number", "date")


@dataclass(frozen=True)
class PartAnswer:
    """A part of a document and what a model read in it."""

    chunk: Chunk
    output: InvoiceExtraction


@dataclass
class Merged:
    extraction: InvoiceExtraction
    parts: int
    totals_from: Optional[str] = None  # the chunk id whose total was taken
    header_items_dropped: int = 0
    conflicts: list[str] = field(default_factory=list)

    def failed_rules(self, total_tolerance: float) -> Optional[str]:
        """``None`` when the merged invoice passes the invoice rules, else their names (no values: fit for a span)."""
        return invoice_item_check(self.extraction, total_tolerance)

    def check(self, total_tolerance: float) -> Optional[str]:
        """``failed_rules``, with the sums when the arithmetic rule fails (for the output row, not for spans)."""
        problem = self.failed_rules(total_tolerance)
        gap = arithmetic(self.extraction)
        if problem and gap and "total_matches_line_items" in problem:
            problem += f" ({gap})"
        return problem

    def describe(self) -> str:
        """What the merge did, in counts and chunk ids only: spans hold no values read from the document."""
        text = f"merged {self.parts} parts: {len(self.extraction.line_items)} line items, "
        text += f"total from {self.totals_from}" if self.totals_from else "no part states a total"
        if self.header_items_dropped:
            text += f", {self.header_items_dropped} header repeats dropped"
        if self.conflicts:
            text += "; conflicts: " + "; ".join(self.conflicts)
        return text


def arithmetic(extraction: InvoiceExtraction) -> Optional[str]:
    """'line items 100.00 + tax 19.00 = 119.00 vs total 120.00' when both sides are known, else None."""
    lines = extraction.line_items_total()
    if lines is None or extraction.total is None:
        return None
    tax = extraction.tax or 0.0
    return f"line items {lines:.2f} + tax {tax:.2f} = {lines + tax:.2f} vs total {extraction.total:.2f}"


def merge_parts(parts: Sequence[PartAnswer]) -> Merged:
    """The document's extraction from its parts' answers (in any order; merged in chunk order)."""
    ordered = sorted(parts, key=lambda p: p.chunk.index)
    values: dict[str, Optional[object]] = {}
    conflicts: list[str] = []
    for name in HEADER_FIELDS:
        values[name], clash = _first_stated(ordered, name)
        if clash:
            conflicts.append(clash)
    stating_total = [p for p in ordered if p.output.total is not None]
    closing = stating_total[-1] if stating_total else None
    values["total"] = closing.output.total if closing else None
    values["tax"] = closing.output.tax if closing and closing.output.tax is not None else _last_stated(ordered, "tax")
    values["currency"] = (closing.output.currency if closing and closing.output.currency
                          else _first_stated(ordered, "currency")[0])
    items: list[LineItem] = []
    dropped = 0
    for part in ordered:
        for item in part.output.line_items:
            if only_in_header(part.chunk, item.description):
                dropped += 1
                continue
            items.append(item)
    extraction = InvoiceExtraction.model_validate({**values, "line_items": [i.model_dump() for i in items]})
    return Merged(extraction, len(ordered), closing.chunk.id if closing else None, dropped, conflicts)


def _first_stated(parts: Sequence[PartAnswer], name: str) -> tuple[Optional[object], Optional[str]]:
    stated = [(p.chunk.id, getattr(p.output, name)) for p in parts if getattr(p.output, name) is not None]
    if not stated:
        return None, None
    first_id, first = stated[0]
    other = next(((cid, v) for cid, v in stated[1:] if normalized(str(v)) != normalized(str(first))), None)
    # Ids only, never the values: the note goes into spans and metadata, which hold no document content.
    clash = f"{name} differs between {first_id} and {other[0]}" if other else None
    return first, clash


def _last_stated(parts: Sequence[PartAnswer], name: str) -> Optional[object]:
    stated = [getattr(p.output, name) for p in parts if getattr(p.output, name) is not None]
    return stated[-1] if stated else None
