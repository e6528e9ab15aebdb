"""Before a hosted call the document is pseudonymised; the answer gets the originals back; the ledger says so.

A real HTTP server on 127.0.0.1 speaks OpenAI's chat completions protocol and plays the
hosted model: it echoes the pseudonyms it was sent into its answer. The test asserts on the
bytes that crossed the wire (no original PII), on the restored output, and on the records.
"""

import json
import re
from dataclasses import dataclass

import pytest

from orchestration_assets.ai_task import CallContext, run_ai_task
from orchestration_assets.invoices.assets import INVOICE_EXTRACTION
from resources.audit_log import DuckDBAuditLog
from resources.classification import DataClassification
from resources.documents import Document
from resources.ledger import DuckDBLedger
from resources.model_gateway import ModelGatewayResource
from resources.routing import RulesPolicy
from tests.protocol_servers import Behaviour, Exchange, OpenAIChatServer

KEY = "sk-test-redaction"
CUSTOMER, EMAIL, IBAN = "Marguerite Okonkwo-Lindqvist", "m.okonkwo@lindqvist-mail.example", "GB82WEST12345698765432"
DOCUMENT = (f"Northwind Traders Ltd\nInvoice No: INV-9001\nDate: 14/03/2026\nCustomer name: {CUSTOMER}\n"
            f"Email: {EMAIL}\nWidget 2 x 5.00 = 10.00\nVAT 2.00\nTOTAL EUR 12.00\nPay to IBAN {IBAN}\n")


@dataclass
class EchoPseudonyms(Behaviour):
    """A 'model' that quotes the customer and the IBAN it was shown back in its answer."""

    def serve(self, exchange: Exchange) -> None:
        seen = json.dumps(exchange.request.body)
        person = re.search(r"PERSON_\d+", seen)
        iban = re.search(r"IBAN_\d+", seen)
        exchange.send_success({
            "vendor": "Northwind Traders Ltd", "invoice_number": "INV-9001", "date": "2026-03-14", "currency": "EUR",
            "total": 12.0, "tax": 2.0, "line_items": [{"description": f"Widget for {person.group(0) if person else '?'}",
                                                        "quantity": 2, "unit_price": 5.0, "amount": 10.0}],
            "notes": iban.group(0) if iban else None,
        }, input_tokens=300, output_tokens=80)


@pytest.fixture
def hosted(tmp_path):
    with OpenAIChatServer(api_key=KEY, default=EchoPseudonyms()) as server:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(f"""models:
  - id: rules-invoice
    enabled: false
  - id: local-gemma3-270m
    enabled: false
  - id: gpt-4o-mini
    endpoint: {server.url}
""")
        resource = ModelGatewayResource(catalog_path=str(catalog), openai_api_key=KEY)
        yield server, resource.gateway()


def _run(tmp_path, gateway, classification):
    ledger = DuckDBLedger(tmp_path / f"ledger-{classification.value}.duckdb")
    audit = DuckDBAuditLog(tmp_path / f"audit-{classification.value}.duckdb")
    document = Document(id="doc-1", text=DOCUMENT, classification=classification)
    (outcome,) = run_ai_task(INVOICE_EXTRACTION, [document], policy=RulesPolicy([0.25, 0.6, 0.8]), gateway=gateway,
                             ledger=ledger, where=CallContext(run_id="r1"), audit=audit)
    return outcome, ledger.calls(), audit


def test_internal_data_is_pseudonymised_on_the_wire_and_restored_in_the_answer(tmp_path, hosted):
    server, gateway = hosted
    outcome, calls, audit = _run(tmp_path, gateway, DataClassification.INTERNAL)
    assert outcome.result is not None and outcome.result.model_id == "gpt-4o-mini" and outcome.result.ok, outcome.error
    wire = b"".join(r.raw for r in server.requests)
    for original in (CUSTOMER, EMAIL, IBAN, "Okonkwo"):
        assert original.encode() not in wire
    assert b"PERSON_1" in wire and b"IBAN_1" in wire and b"Northwind Traders Ltd" in wire  # the business data stays
    line = outcome.output.line_items[0].description
    assert line == f"Widget for {CUSTOMER}"  # restored from the in-memory mapping
    (redaction,) = calls["redaction"].tolist()
    assert re.fullmatch(r"pseudonymised \d+ values", redaction) and int(redaction.split()[1]) >= 3  # name, email, IBAN
    (entry,) = audit.entries()
    assert entry.redaction == "pseudonymised" and entry.model_id == "gpt-4o-mini" and entry.residency == "cloud"
    assert audit.verify().ok


def test_public_data_goes_as_it_is(tmp_path, hosted):
    server, gateway = hosted
    outcome, calls, _ = _run(tmp_path, gateway, DataClassification.PUBLIC)
    assert outcome.result.ok and CUSTOMER.encode() in server.requests[-1].raw
    assert calls["redaction"].tolist() == ["none"]


def test_restricted_data_never_reaches_the_hosted_model(tmp_path, hosted):
    server, gateway = hosted
    outcome, calls, audit = _run(tmp_path, gateway, DataClassification.RESTRICTED)
    assert outcome.result is None and server.requests == [] and len(calls) == 0
    assert "excluded by catalog clearance and data policy" in outcome.error
    assert [e.event for e in audit.entries()] == ["policy_refusal"]
