"""The Anthropic Messages adapter against a real HTTP server on loopback that speaks the protocol."""

from __future__ import annotations

import httpx
import pytest

from orchestration_assets.invoices.schema import INVOICE_INSTRUCTIONS, INVOICE_TASK, InvoiceExtraction
from resources.catalog import ModelSpec
from resources.model_call import StructuredRequest
from resources.providers.anthropic_messages import AnthropicMessagesClient
from tests.protocol_servers import (
    AnthropicMessagesServer,
    DropConnection,
    HTTPError,
    InvalidJSON,
    NotJSON,
    Overloaded,
    RateLimited,
    RawJSON,
    ServerError,
    Slow,
    Success,
    Unauthorized,
    Unavailable,
)

KEY = "sk-ant-test-0123456789"
DOCUMENT = "ACME Ltd\nInvoice No: INV-42\nDate: 14/03/2026\nWidget 2 x 5.00 = 10.00\nVAT 2.00\nTOTAL EUR 12.00\nSECRET-MARKER-7781"
INVOICE = {
    "vendor": "ACME Ltd",
    "invoice_number": "INV-42",
    "date": "2026-03-14",
    "currency": "EUR",
    "total": 12.0,
    "tax": 2.0,
    "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 5.0, "amount": 10.0}],
}
TOOL = "record_invoice_extraction"


def claude_spec(url: str, **overrides) -> ModelSpec:
    fields = dict(
        id="claude-haiku-4-5", provider="anthropic", protocol="anthropic_messages", endpoint=url,
        api_key_env="ANTHROPIC_API_KEY", structured_output="tool_use",
        price_input_per_mtok=1.00, price_output_per_mtok=5.00, context_window=200000,
        residency="cloud", classifications=["public", "internal"], tier=3,
    )
    return ModelSpec(**{**fields, **overrides})


def invoice_request(**overrides) -> StructuredRequest:
    fields = dict(task=INVOICE_TASK, system=INVOICE_INSTRUCTIONS, document=DOCUMENT, output_schema=InvoiceExtraction, max_output_tokens=700)
    return StructuredRequest(**{**fields, **overrides})


@pytest.fixture
def server():
    with AnthropicMessagesServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def client(server):
    adapter = AnthropicMessagesClient(claude_spec(server.url), KEY, timeout=5.0)
    yield adapter
    adapter.close()


# --- success ------------------------------------------------------------------------------


def test_success_parses_the_tool_input_counts_tokens_and_prices_them(server, client):
    server.script(Success(INVOICE, input_tokens=2000, output_tokens=400))
    result = client.call(invoice_request())

    assert result.error is None and result.ok
    assert isinstance(result.output, InvoiceExtraction)
    assert result.output.vendor == "ACME Ltd"
    assert result.output.date == "2026-03-14"
    assert result.output.tax == 2.0
    assert result.output.line_items[0].description == "Widget"
    assert (result.input_tokens, result.output_tokens) == (2000, 400)
    assert result.cost_usd == 0.004  # 2000 × $1/M + 400 × $5/M
    assert result.finish_reason == "tool_use"
    assert result.model_id == "claude-haiku-4-5"
    assert 0 < result.latency_s < 5


def test_request_shape(server):
    spec = claude_spec(server.url, remote_model="claude-haiku-4-5-20251001")
    request = invoice_request()
    adapter = AnthropicMessagesClient(spec, KEY)
    try:
        assert adapter.call(request).ok
    finally:
        adapter.close()

    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.header("x-api-key") == KEY
    assert sent.header("anthropic-version") == "2023-06-01"
    assert sent.header("content-type") == "application/json"
    assert sent.header("authorization") is None
    body = sent.body
    assert body["model"] == "claude-haiku-4-5-20251001"
    assert body["max_tokens"] == 700
    assert body["system"] == INVOICE_INSTRUCTIONS
    assert body["messages"] == [{"role": "user", "content": DOCUMENT}]
    [tool] = body["tools"]
    assert tool["name"] == TOOL and tool["description"]
    assert tool["input_schema"] == request.json_schema()
    assert body["tool_choice"] == {"type": "tool", "name": TOOL}


def test_an_endpoint_written_with_v1_still_reaches_messages(server):
    adapter = AnthropicMessagesClient(claude_spec("https://api.anthropic.com"), KEY, base_url=server.url + "/v1/")
    try:
        assert adapter.call(invoice_request()).ok
    finally:
        adapter.close()
    assert server.requests[0].path == "/v1/messages"


def test_a_missing_key_is_refused_by_the_server_with_anthropics_401(server):
    adapter = AnthropicMessagesClient(claude_spec(server.url), None)
    try:
        result = adapter.call(invoice_request())
    finally:
        adapter.close()
    assert server.requests[0].header("x-api-key") is None
    assert "HTTP 401 from claude-haiku-4-5" in result.error and "x-api-key header is required" in result.error
    assert "authentication_error" in result.error


# --- provider errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour, expected",
    [
        (RateLimited(retry_after=7), ["HTTP 429 from claude-haiku-4-5", "exceeded your per-minute rate limit", "rate_limit_error", "retry after 7s"]),
        (ServerError(), ["HTTP 500", "Internal server error", "api_error"]),
        (Unavailable(), ["HTTP 503", "Service unavailable"]),
        (Overloaded(), ["HTTP 529", "Overloaded", "overloaded_error"]),
        (Unauthorized(), ["HTTP 401", "invalid x-api-key", "authentication_error"]),
        (HTTPError(400, "prompt is too long: 210000 tokens > 200000 maximum"), ["HTTP 400", "prompt is too long", "invalid_request_error"]),
        (NotJSON(status=502), ["HTTP 502", "502 Bad Gateway"]),
    ],
    ids=["429", "500", "503", "529", "401", "400", "502-html"],
)
def test_error_statuses_come_back_with_status_and_provider_message(server, client, behaviour, expected):
    server.script(behaviour)
    result = client.call(invoice_request())
    assert result.output is None and not result.ok
    for fragment in expected:
        assert fragment in result.error
    assert (result.input_tokens, result.output_tokens, result.cost_usd) == (0, 0, 0.0)
    assert result.finish_reason == "error"
    assert len(result.error) <= 300


def test_a_200_body_that_is_not_json(server, client):
    server.script(NotJSON())
    result = client.call(invoice_request())
    assert "HTTP 200" in result.error and "not JSON" in result.error


def test_a_message_without_content_keeps_the_billed_tokens(server, client):
    server.script(RawJSON({"type": "message", "stop_reason": "end_turn", "usage": {"input_tokens": 1000, "output_tokens": 20}}))
    result = client.call(invoice_request())
    assert f"no {TOOL} tool call" in result.error
    assert (result.input_tokens, result.output_tokens) == (1000, 20)
    assert result.cost_usd == 0.0011


# --- bad content ----------------------------------------------------------------------------


def test_a_text_reply_instead_of_the_tool_call_is_an_error_but_its_tokens_are_charged(server, client):
    server.script(InvalidJSON(input_tokens=2000, output_tokens=400))
    result = client.call(invoice_request())
    assert result.output is None
    assert f"has no {TOOL} tool call (stop_reason end_turn)" in result.error
    assert '{"vendor"' in result.error  # what it said instead, shortened
    assert (result.input_tokens, result.output_tokens) == (2000, 400)
    assert result.cost_usd == 0.004
    assert result.finish_reason == "end_turn"


def test_a_reply_cut_at_max_tokens_says_it_was_truncated(server, client):
    server.script(Success("I will now record the", finish_reason="max_tokens"))
    result = client.call(invoice_request(max_output_tokens=32))
    assert "truncated at max tokens (32)" in result.error
    assert result.finish_reason == "max_tokens"
    assert result.cost_usd > 0


def test_a_truncated_tool_input_says_it_was_truncated(server, client):
    server.script(Success({"line_items": [{"amount": 1.0}]}, finish_reason="max_tokens"))
    result = client.call(invoice_request(max_output_tokens=32))
    assert result.error.startswith("reply was truncated at max tokens (32): reply does not match the schema")


def test_tool_input_that_does_not_match_the_schema(server, client):
    server.script(Success({**INVOICE, "line_items": "Widget 10.00 " + DOCUMENT}))
    result = client.call(invoice_request())
    assert result.output is None
    assert result.error.startswith("reply does not match the schema InvoiceExtraction: line_items: Input should be a valid list")
    assert "SECRET-MARKER" not in result.error
    assert result.cost_usd > 0


# --- transport faults -----------------------------------------------------------------------


def test_a_slow_reply_times_out_and_the_next_call_works(server):
    adapter = AnthropicMessagesClient(claude_spec(server.url), KEY, timeout=httpx.Timeout(0.3))
    try:
        server.script(Slow(2.0, then=Success(INVOICE)))
        result = adapter.call(invoice_request())
        assert "timed out" in result.error and "claude-haiku-4-5" in result.error
        assert 0.25 < result.latency_s < 1.5
        assert result.cost_usd == 0.0
        assert adapter.call(invoice_request()).ok
    finally:
        adapter.close()


def test_a_dropped_connection_is_an_error_and_the_next_call_works(server, client):
    server.script(DropConnection())
    result = client.call(invoice_request())
    assert result.error.startswith("connection error calling claude-haiku-4-5")
    assert client.call(invoice_request()).ok


# --- the test server itself behaves like the provider -----------------------------------------


def test_server_refuses_bad_requests_with_anthropics_error_shape(server):
    url = server.url + "/v1/messages"
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    no_version = httpx.post(url, json=body, headers={"x-api-key": KEY})
    assert no_version.status_code == 400
    assert no_version.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"}}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    no_max = httpx.post(url, json={k: v for k, v in body.items() if k != "max_tokens"}, headers=headers)
    assert no_max.status_code == 400 and no_max.json()["error"]["message"] == "max_tokens: Field required"
    unknown_tool = httpx.post(url, json={**body, "tool_choice": {"type": "tool", "name": "nope"}}, headers=headers)
    assert unknown_tool.status_code == 400
    wrong_key = httpx.post(url, json=body, headers={**headers, "x-api-key": "sk-ant-other"})
    assert wrong_key.status_code == 401 and wrong_key.json()["error"]["type"] == "authentication_error"
    ok = httpx.post(url, json=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["type"] == "message" and ok.headers["request-id"]
    assert len(server.requests) == 5
