"""The synthetic invoice generator: deterministic, varied, and honest about its truth and PII."""

from __future__ import annotations

from collections import Counter

import pytest

from orchestration_assets.invoices.generator import PII_KINDS, generate_invoices, iban_is_valid
from orchestration_assets.invoices.normalize import normalize_date


def test_same_seed_gives_identical_documents_and_other_seeds_differ() -> None:
    first = generate_invoices(15, seed=3)
    again = generate_invoices(15, seed=3)
    other = generate_invoices(15, seed=4)
    assert [g.model_dump() for g in first] == [g.model_dump() for g in again]
    assert [g.text for g in first] != [g.text for g in other]
    assert first[0].id == "INV-3-0001" and first[-1].id == "INV-3-0015"


def test_a_batch_varies_layouts_currencies_date_formats_and_noise() -> None:
    batch = generate_invoices(200, seed=11)
    layouts = Counter(g.layout for g in batch)
    currencies = {g.truth.currency for g in batch}
    assert len(layouts) >= 5, layouts
    assert len(currencies) >= 4, currencies
    noisy_share = sum(g.noisy for g in batch) / len(batch)
    assert 0.15 < noisy_share < 0.45
    # the printed date is rarely the ISO form the truth holds: formats vary
    iso_printed = sum(g.truth.date in g.text for g in batch)
    assert iso_printed < len(batch) * 0.6


def test_truth_is_internally_consistent() -> None:
    invoices = generate_invoices(100, seed=5)
    counts = [len(invoice.truth.line_items) for invoice in invoices]
    assert min(counts) == 1 and max(counts) >= 7  # one-line receipts and long invoices both occur
    for invoice in invoices:
        truth = invoice.truth
        assert truth.vendor and truth.invoice_number and truth.currency
        assert normalize_date(truth.date) == truth.date
        assert truth.total is not None and truth.total > 0
        if not invoice.noisy:  # every billed line the truth holds is printed on the document
            assert all(item.description in invoice.text for item in truth.line_items), invoice.id
        items = truth.line_items_total()
        tax = truth.tax or 0.0
        assert items == pytest.approx(truth.total, abs=0.011) or items + tax == pytest.approx(truth.total, abs=0.011)


def test_every_document_carries_every_pii_kind_at_its_recorded_span() -> None:
    for invoice in generate_invoices(60, seed=9):
        assert {span.kind for span in invoice.pii} == set(PII_KINDS)
        for span in invoice.pii:
            assert invoice.text[span.start : span.end] == span.value
            if span.kind == "iban":
                assert iban_is_valid(span.value), span.value


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        generate_invoices(-1)
