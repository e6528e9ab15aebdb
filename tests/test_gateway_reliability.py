"""The gateway retries transport failures of hosted models and bills every attempt; quality failures are not retried."""

import time

from orchestration_assets.invoices.schema import INVOICE_INSTRUCTIONS, INVOICE_TASK, InvoiceExtraction
from resources.catalog import ModelCatalog
from resources.model_call import StructuredRequest
from resources.model_gateway import ModelGateway
from resources.reliability import RetryPolicy
from tests.protocol_servers import InvalidJSON, OpenAIChatServer, RateLimited, ServerError, Success

KEY = "sk-test-gateway"
OUTPUT = {"vendor": "ACME Ltd", "invoice_number": "INV-42", "date": "2026-03-14", "currency": "EUR", "total": 12.0,
          "tax": 2.0, "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 5.0, "amount": 10.0}]}
REQUEST = StructuredRequest(task=INVOICE_TASK, system=INVOICE_INSTRUCTIONS, document="ACME Ltd\nTOTAL EUR 12.00",
                            output_schema=InvoiceExtraction, max_output_tokens=300)


def _gateway(tmp_path, server) -> ModelGateway:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"models:\n  - id: gpt-4o-mini\n    endpoint: {server.url}\n")
    return ModelGateway(ModelCatalog.load(catalog), {"OPENAI_API_KEY": KEY},
                        retry=RetryPolicy(base_delay_s=0.01, max_delay_s=0.05))


def test_429_and_500_are_retried_honouring_retry_after_and_every_attempt_is_billed(tmp_path):
    with OpenAIChatServer(api_key=KEY) as server:
        server.script(RateLimited(retry_after=0.3), ServerError(), Success(OUTPUT, input_tokens=100, output_tokens=50))
        with _gateway(tmp_path, server) as gateway:
            started = time.monotonic()
            result = gateway.call("gpt-4o-mini", REQUEST, idempotency_key="run:item:1")
            waited = time.monotonic() - started
            assert result.ok and result.transport_attempts == 3 and len(server.requests) == 3
            assert waited >= 0.3  # the server's Retry-After, not the 10 ms backoff
            assert result.cost_usd == gateway.catalog.get("gpt-4o-mini").token_cost(100, 50)
            again = gateway.call("gpt-4o-mini", REQUEST, idempotency_key="run:item:1")  # a re-run of the same call
            assert again.ok and len(server.requests) == 3  # answered from the completed call: no second charge


def test_schema_invalid_output_is_not_retried(tmp_path):
    with OpenAIChatServer(api_key=KEY) as server:
        server.script(InvalidJSON())
        with _gateway(tmp_path, server) as gateway:
            result = gateway.call("gpt-4o-mini", REQUEST)
            assert not result.ok and result.transport_attempts == 1 and len(server.requests) == 1


def test_retry_after_survives_a_long_provider_message(tmp_path):
    with OpenAIChatServer(api_key=KEY) as server:
        server.script(RateLimited(retry_after=0.3, message="Rate limit reached for requests. " * 12),
                      Success(OUTPUT, input_tokens=100, output_tokens=50))
        with _gateway(tmp_path, server) as gateway:
            started = time.monotonic()
            result = gateway.call("gpt-4o-mini", REQUEST)
            assert result.ok and result.transport_attempts == 2 and time.monotonic() - started >= 0.3
