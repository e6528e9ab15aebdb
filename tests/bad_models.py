"""Deliberately wrong 'models' for tests: real python-protocol catalog entries whose output fails checks."""

from orchestration_assets.invoices.rules_extractor import extract_invoice
from orchestration_assets.invoices.schema import InvoiceExtraction, LineItem


def inflated_totals(text: str) -> InvoiceExtraction:
    """The rules extractor's answer with a total that its one line item cannot explain."""
    extraction = extract_invoice(text)
    return extraction.model_copy(update={"total": 47.5, "tax": 0.0, "line_items": [LineItem(description="line", amount=10.0)]})


_CALLS = {"n": 0}


def crash_on_third_call(text: str) -> InvoiceExtraction:
    """Answers twice, then kills its process: a worker dying mid-batch, with sensitive data in memory."""
    import os

    _CALLS["n"] += 1
    if _CALLS["n"] >= 3:
        os._exit(17)
    return extract_invoice(text)


def fails_on_receipts(text: str) -> InvoiceExtraction:
    """Fails on documents that mention a receipt, answers the others: a model with a blind spot."""
    if "receipt" in text.lower():
        raise ValueError("layout not understood: receipt")
    return extract_invoice(text)


UNREADABLE_MARKER = "[page scan unreadable]"


def fails_on_unreadable_part(text: str) -> InvoiceExtraction:
    """Reads parts of long invoices, but fails on a part carrying the marker: one bad page in a long document."""
    from orchestration_assets.invoices.rules_extractor import extract_invoice_part

    if UNREADABLE_MARKER in text:
        raise ValueError("layout not understood: page scan unreadable")
    return extract_invoice_part(text)
