"""What a model's answer must be to pass as an invoice extraction: single values, storable text, amounts read as written."""

import pytest
from pydantic import ValidationError

from orchestration_assets.invoices.normalize import parse_amount
from orchestration_assets.invoices.schema import InvoiceExtraction
from resources.documents import Document


@pytest.mark.parametrize("answer", [
    {"vendor": {"name": "Acme Ltd", "vat": "DE123"}}, {"invoice_number": ["INV-1", "INV-2"]},
    {"total": {"gross": 12.0, "net": 10.0}}, {"total": [12.0, 999]}, {"tax": [2.0]}, {"date": ["2026-03-14"]},
    {"currency": {"code": "EUR"}}, {"line_items": [{"description": "Widget", "amount": [10.0, 5.0]}]},
])
def test_an_object_or_an_array_where_one_value_belongs_is_refused_not_read_as_text(answer: dict) -> None:
    """Read as text, {'name': ...} reached the output as a vendor, and [12.0, 999] the total 120999."""
    with pytest.raises(ValidationError, match="expected a single value"):
        InvoiceExtraction.model_validate(answer)


def test_text_fields_hold_no_control_characters_or_lone_surrogates() -> None:
    answer = InvoiceExtraction.model_validate({"vendor": "Ac\x00me\x07 Ltd \ud83d", "invoice_number": "INV\x00-1",
                                               "line_items": [{"description": "Wid\x00get", "amount": 1}]})
    assert (answer.vendor, answer.invoice_number, answer.line_items[0].description) == ("Acme Ltd \ufffd", "INV-1", "Widget")
    answer.model_dump_json()  # storable: what the ledger and the output file need


@pytest.mark.parametrize("written,value", [("1e5", 100000.0), ("1.5E3", 1500.0), ("-2e2", -200.0), ("12, 0", 120.0),
                                           ("1e400", None)])
def test_amounts_in_scientific_notation_or_with_a_stray_space_are_read_never_raise(written: str, value) -> None:
    assert parse_amount(written) == value


def test_a_document_built_in_code_has_a_storable_id_and_text() -> None:
    document = Document(id="inv\ud800-7\x00", text="ACME\x00 Ltd\nTotal 5.00\x0c")
    assert (document.id, document.text) == ("inv\ufffd-7", "ACME Ltd\nTotal 5.00")
