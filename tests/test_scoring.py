"""Field scoring: the same rules SROIE uses, applied to every model alike."""

from __future__ import annotations

import pytest

from orchestration_assets.invoices.schema import InvoiceExtraction
from orchestration_assets.invoices.scoring import accuracy_table, score_extraction


def test_fields_match_after_normalisation() -> None:
    truth = {"company": "ACME  Trading sdn bhd", "date": "25/12/2018", "total": "9.00"}
    predicted = InvoiceExtraction(vendor="acme trading SDN BHD", date="2018-12-25", total=9.0)
    assert score_extraction(truth, predicted) == {"vendor": True, "date": True, "total": True}


def test_wrong_missing_and_unscored_fields() -> None:
    truth = {"vendor": "Acme", "invoice_number": "A-1", "date": "2024-01-02", "currency": "EUR", "total": 10.0}
    predicted = InvoiceExtraction(vendor="Acme Ltd", date="2024-02-01", currency="eur", total=10.004)
    assert score_extraction(truth, predicted) == {
        "vendor": False, "invoice_number": False, "date": False, "currency": True, "total": True,
    }
    # a failed call scores False on every field the truth has, and nothing else
    assert score_extraction({"total": 1.0}, None) == {"total": False}


def test_accuracy_table_averages_per_field_and_core() -> None:
    table = accuracy_table([
        {"vendor": True, "date": True, "total": False},
        {"vendor": False, "date": True, "total": False, "currency": True},
    ])
    assert table["vendor"] == 0.5 and table["date"] == 1.0 and table["total"] == 0.0
    assert table["currency"] == 1.0
    assert table["core_mean"] == pytest.approx(0.5)
