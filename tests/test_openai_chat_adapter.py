"""The OpenAI-compatible adapter against a real HTTP server on loopback that speaks the protocol."""

from __future__ import annotations

import json
import socket
from typing import Optional

import httpx
import pytest

from orchestration_assets.invoices.schema import INVOICE_INSTRUCTIONS, INVOICE_TASK, InvoiceExtraction
from resources.catalog import ModelSpec
from resources.model_call import StructuredRequest
from resources.providers.openai_chat import OpenAIChatClient
from tests.protocol_servers import (
    DropConnection,
    HTTPError,
    InvalidJSON,
    NotJSON,
    OpenAIChatServer,
    RateLimited,
    RawJSON,
    ServerError,
    Slow,
    Success,
    Trickle,
    Unauthorized,
    Unavailable,
)

KEY = "sk-test-0123456789"
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


def cloud_spec(url: str, **overrides) -> ModelSpec:
    fields = dict(
        id="gpt-4o-mini", provider="openai", protocol="openai_chat", endpoint=url, api_key_env="OPENAI_API_KEY",
        price_input_per_mtok=0.15, price_output_per_mtok=0.60, context_window=128000,
        residency="cloud", classifications=["public"], tier=3,
    )
    return ModelSpec(**{**fields, **overrides})


def llama_spec(url: str) -> ModelSpec:
    return ModelSpec(
        id="local-small", provider="llama.cpp", protocol="openai_chat", endpoint=url, remote_model="small-q4",
        structured_output="json_object_schema", inline_system_prompt=True, max_list_items=0,
        compute_usd_per_hour=0.10, context_window=4096, residency="on_prem", classifications=["public", "restricted"], tier=2,
    )


def invoice_request(**overrides) -> StructuredRequest:
    fields = dict(task=INVOICE_TASK, system=INVOICE_INSTRUCTIONS, document=DOCUMENT, output_schema=InvoiceExtraction, max_output_tokens=700)
    return StructuredRequest(**{**fields, **overrides})


@pytest.fixture
def server():
    with OpenAIChatServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def client(server):
    adapter = OpenAIChatClient(cloud_spec(server.url), KEY, timeout=5.0)
    yield adapter
    adapter.close()


# --- success ------------------------------------------------------------------------------


def test_success_parses_output_counts_tokens_and_prices_them(server, client):
    server.script(Success(INVOICE, input_tokens=1200, output_tokens=300))
    result = client.call(invoice_request())

    assert result.error is None and result.ok
    assert isinstance(result.output, InvoiceExtraction)
    assert result.output.vendor == "ACME Ltd"
    assert result.output.invoice_number == "INV-42"
    assert result.output.total == 12.0
    assert result.output.line_items[0].amount == 10.0
    assert (result.input_tokens, result.output_tokens) == (1200, 300)
    assert result.cost_usd == 0.00036  # 1200 × $0.15/M + 300 × $0.60/M
    assert result.finish_reason == "stop"
    assert result.model_id == "gpt-4o-mini"
    assert 0 < result.latency_s < 5


def test_request_shape_json_schema_dialect(server):
    spec = cloud_spec(server.url, remote_model="gpt-4o-mini-2024-07-18")
    request = invoice_request()
    adapter = OpenAIChatClient(spec, KEY)
    try:
        assert adapter.call(request).ok
    finally:
        adapter.close()

    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.header("authorization") == f"Bearer {KEY}"
    assert sent.header("content-type") == "application/json"
    body = sent.body
    assert body["model"] == "gpt-4o-mini-2024-07-18"  # the wire name, not the catalog id
    assert body["messages"] == [{"role": "system", "content": INVOICE_INSTRUCTIONS}, {"role": "user", "content": DOCUMENT}]
    assert body["temperature"] == 0
    assert body["max_tokens"] == 700
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "InvoiceExtraction", "schema": request.json_schema(), "strict": False},
    }
    schema = body["response_format"]["json_schema"]["schema"]
    assert set(schema["required"]) == set(InvoiceExtraction.model_fields)


def test_schema_name_is_sanitized_for_openai(server, client):
    from pydantic import BaseModel, ConfigDict

    class Odd(BaseModel):
        model_config = ConfigDict(title="Invoice extraction (v2)!")
        total: float | None = None

    server.script(Success({"total": 3}))
    result = client.call(invoice_request(output_schema=Odd))
    assert result.ok, result.error
    assert server.requests[-1].body["response_format"]["json_schema"]["name"] == "Invoice_extraction_v2"


def test_no_authorization_header_without_a_key():
    with OpenAIChatServer(api_key=None) as srv:
        adapter = OpenAIChatClient(cloud_spec(srv.url), None)
        try:
            assert adapter.call(invoice_request()).ok
        finally:
            adapter.close()
        assert srv.requests[0].header("authorization") is None


def test_llama_cpp_dialect_inlines_instructions_caps_lists_and_prices_compute_time():
    with OpenAIChatServer(rejects_json_schema=True) as srv:
        srv.script(Success({**INVOICE, "line_items": []}, input_tokens=400, output_tokens=60))
        spec = llama_spec(srv.url)
        adapter = OpenAIChatClient(spec, None, base_url=srv.url)
        try:
            result = adapter.call(invoice_request())
        finally:
            adapter.close()
        assert result.ok, result.error
        body = srv.requests[0].body
    request = invoice_request()
    assert body["model"] == "small-q4"
    assert body["response_format"] == {"type": "json_object", "schema": request.json_schema(max_list_items=0)}
    assert body["response_format"]["schema"]["properties"]["line_items"]["maxItems"] == 0
    assert body["messages"] == [{"role": "user", "content": f"{INVOICE_INSTRUCTIONS}\n\n{DOCUMENT}"}]
    assert result.cost_usd == spec.call_cost(400, 60, result.latency_s) == result.latency_s * 0.10 / 3600
    assert result.cost_usd > 0


def test_base_url_overrides_the_catalog_endpoint(server):
    adapter = OpenAIChatClient(cloud_spec("http://127.0.0.1:9/v1"), KEY, base_url=server.url)
    try:
        assert adapter.call(invoice_request()).ok
    finally:
        adapter.close()
    assert len(server.requests) == 1


def test_json_schema_sent_to_a_llama_cpp_server_fails_with_its_500():
    with OpenAIChatServer(rejects_json_schema=True) as srv:
        adapter = OpenAIChatClient(cloud_spec(srv.url), None)
        try:
            result = adapter.call(invoice_request())
        finally:
            adapter.close()
    assert result.error is not None and "HTTP 500" in result.error and "json_schema" in result.error


def test_a_fenced_reply_is_accepted(server, client):
    server.script(Success("```json\n" + json.dumps(INVOICE) + "\n```\n"))
    result = client.call(invoice_request())
    assert result.ok, result.error
    assert result.output.total == 12.0


def test_a_passed_http_client_is_used_and_left_open(server):
    http = httpx.Client()
    adapter = OpenAIChatClient(cloud_spec(server.url), KEY, http_client=http, timeout=2.0)
    assert adapter.call(invoice_request()).ok
    adapter.close()
    assert not http.is_closed
    http.close()


# --- provider errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour, expected",
    [
        (RateLimited(retry_after=7), ["HTTP 429 from gpt-4o-mini", "Rate limit reached for gpt-4o-mini", "retry after 7s"]),
        (ServerError(), ["HTTP 500 from gpt-4o-mini", "The server had an error while processing your request"]),
        (Unavailable(), ["HTTP 503", "The engine is currently overloaded"]),
        (Unauthorized(), ["HTTP 401", "Incorrect API key provided"]),
        (HTTPError(404, "The model `gpt-9` does not exist or you do not have access to it."), ["HTTP 404", "gpt-9` does not exist"]),
        (NotJSON(status=502), ["HTTP 502", "502 Bad Gateway"]),
    ],
    ids=["429", "500", "503", "401", "404", "502-html"],
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


def test_a_wrong_key_is_refused_by_the_server_with_openais_401(server):
    adapter = OpenAIChatClient(cloud_spec(server.url), "sk-wrong-key-9999")
    try:
        result = adapter.call(invoice_request())
    finally:
        adapter.close()
    assert "HTTP 401" in result.error and "Incorrect API key provided" in result.error
    assert server.requests[0].header("authorization") == "Bearer sk-wrong-key-9999"


def test_a_missing_key_is_refused_by_the_server(server):
    adapter = OpenAIChatClient(cloud_spec(server.url), None)
    try:
        result = adapter.call(invoice_request())
    finally:
        adapter.close()
    assert "HTTP 401" in result.error and "You didn't provide an API key" in result.error


def test_a_200_body_that_is_not_json(server, client):
    server.script(NotJSON())
    result = client.call(invoice_request())
    assert "HTTP 200" in result.error and "not JSON" in result.error


def test_a_completion_without_choices_keeps_the_billed_tokens(server, client):
    server.script(RawJSON({"id": "chatcmpl-x", "object": "chat.completion", "usage": {"prompt_tokens": 1000, "completion_tokens": 200}}))
    result = client.call(invoice_request())
    assert "no choices" in result.error
    assert (result.input_tokens, result.output_tokens) == (1000, 200)
    assert result.cost_usd == 0.00027


def _completion(content: str, finish_reason: object = "stop", prompt_tokens: int = 1000) -> RawJSON:
    return RawJSON({"id": "chatcmpl-x", "object": "chat.completion", "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": finish_reason}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 200}})


@pytest.mark.parametrize("finish_reason", [1, {"type": "stop"}, ["stop"]])
def test_a_finish_reason_in_a_proxys_own_shape_keeps_the_answer(server, client, finish_reason):
    server.script(_completion(json.dumps(INVOICE), finish_reason))
    result = client.call(invoice_request())
    assert result.ok and result.output.total == 12.0 and result.finish_reason == json.dumps(finish_reason)


def test_content_nested_too_deeply_to_read_is_an_error_and_its_tokens_are_charged(server, client):
    server.script(_completion("[" * 5000 + "]" * 5000))
    result = client.call(invoice_request())
    assert result.error == "reply is not valid JSON: nested too deeply to read"
    assert (result.input_tokens, result.output_tokens) == (1000, 200)


def test_a_lone_surrogate_a_model_wrote_is_a_replacement_character_not_a_lost_answer(server, client):
    server.script(_completion(json.dumps({**INVOICE, "vendor": "Caf\u00e9 \ud83d"})))  # the escape, half an emoji
    result = client.call(invoice_request())
    assert result.ok and result.output.vendor == "Café \ufffd"
    result.output.model_dump_json()  # what the ledger, the audit log and the output file need


def test_more_input_tokens_than_the_request_had_bytes_are_estimated_and_flagged(server, client):
    server.script(_completion(json.dumps(INVOICE), prompt_tokens=10**12))
    result = client.call(invoice_request())
    assert result.ok and result.usage_estimated and 0 < result.input_tokens <= len(DOCUMENT) + len(INVOICE_INSTRUCTIONS)
    assert result.cost_usd < 0.01  # not $150,000


def test_a_script_that_takes_more_tokens_than_characters_is_charged_as_reported(server, client):
    """Byte-level tokenizers split a Georgian or Amharic letter into 2-3 tokens: more tokens than characters is
    real there, and must be charged, never replaced by an estimate of a quarter of them."""
    georgian = "ქვითარი № 000731 თბილისი, რუსთაველის გამზ. 24 " * 400  # past a characters bound with its schema and framing
    tokens = 2 * len(georgian)
    server.script(_completion(json.dumps(INVOICE), prompt_tokens=tokens))
    result = client.call(invoice_request(document=georgian))
    assert result.ok and not result.usage_estimated and result.input_tokens == tokens


# --- bad content ----------------------------------------------------------------------------


def test_invalid_json_content_is_an_error_but_its_tokens_are_charged(server, client):
    server.script(InvalidJSON(input_tokens=1200, output_tokens=300))
    result = client.call(invoice_request())
    assert result.output is None
    assert result.error.startswith("reply is not valid JSON")
    assert (result.input_tokens, result.output_tokens) == (1200, 300)
    assert result.cost_usd == 0.00036
    assert result.finish_reason == "stop"


def test_invalid_json_cut_at_max_tokens_says_it_was_truncated(server, client):
    server.script(InvalidJSON(finish_reason="length"))
    result = client.call(invoice_request(max_output_tokens=64))
    assert "truncated at max tokens (64)" in result.error
    assert result.finish_reason == "length"
    assert result.cost_usd > 0


def test_prose_around_json_is_not_accepted(server, client):
    server.script(Success("Here is the invoice: " + json.dumps(INVOICE)))
    result = client.call(invoice_request())
    assert result.error.startswith("reply is not valid JSON")


def test_content_that_does_not_match_the_schema(server, client):
    server.script(Success({**INVOICE, "line_items": [{"amount": 10.0, "note": DOCUMENT}]}))
    result = client.call(invoice_request())
    assert result.output is None
    assert result.error.startswith("reply does not match the schema InvoiceExtraction: line_items.0.description: Field required")
    assert "SECRET-MARKER" not in result.error
    assert result.cost_usd > 0


# --- transport faults -----------------------------------------------------------------------


def test_a_slow_reply_times_out_and_the_next_call_works(server):
    adapter = OpenAIChatClient(cloud_spec(server.url), KEY, timeout=0.3)
    try:
        server.script(Slow(2.0, then=Success(INVOICE)))
        result = adapter.call(invoice_request())
        assert "timed out" in result.error and "gpt-4o-mini" in result.error
        assert 0.25 < result.latency_s < 1.5
        assert (result.input_tokens, result.cost_usd) == (0, 0.0)
        assert adapter.call(invoice_request()).ok
    finally:
        adapter.close()


def test_a_dropped_connection_is_an_error_and_the_next_call_works(server, client):
    server.script(DropConnection())
    result = client.call(invoice_request())
    assert result.error.startswith("connection error calling gpt-4o-mini")
    assert client.call(invoice_request()).ok


def test_nothing_listening_is_an_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = OpenAIChatClient(cloud_spec(f"http://127.0.0.1:{port}/v1"), KEY, timeout=2.0)
    try:
        result = adapter.call(invoice_request())
    finally:
        adapter.close()
    assert result.error.startswith("connection error calling gpt-4o-mini: ConnectError")


# --- the test server itself behaves like the provider -----------------------------------------


def test_server_refuses_bad_requests_with_openais_error_shape(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    wrong_path = httpx.post(server.url + "/completions", json={}, headers=auth)
    assert wrong_path.status_code == 404
    assert wrong_path.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"
    no_model = httpx.post(server.url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, headers=auth)
    assert no_model.status_code == 400 and no_model.json()["error"]["type"] == "invalid_request_error"
    bad_name = httpx.post(server.url + "/chat/completions", headers=auth, json={
        "model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "has spaces", "schema": {}}},
    })
    assert bad_name.status_code == 400 and "json_schema.name" in bad_name.json()["error"]["message"]
    models = httpx.get(server.url + "/models", headers=auth)
    assert models.status_code == 200 and models.json()["object"] == "list"
    assert server.pending == 0 and len(server.requests) == 4


# --- the concurrent path (aiohttp) reads every fault in the blocking path's (httpx's) words -----


def _both_paths(adapter: OpenAIChatClient, request: Optional[StructuredRequest] = None):
    """One call through ``call`` (httpx) and one through ``acall`` (aiohttp), on a fresh event loop."""
    import asyncio

    request = request or invoice_request()

    async def concurrent():
        try:
            return await adapter.acall(request)
        finally:
            await adapter.aclose()

    return adapter.call(request), asyncio.run(concurrent())


def _without_seconds(error: str) -> str:
    import re

    return re.sub(r"after \d+\.\ds", "after Ns", error)


@pytest.mark.parametrize("fault", ["timeout", "trickle", "dropped", "refused", "http-500"])
def test_the_blocking_and_concurrent_paths_word_a_fault_the_same(server, fault):
    if fault == "refused":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    else:
        url = server.url
        behaviour = {"timeout": lambda: Slow(2.0), "trickle": lambda: Trickle(3.0), "dropped": DropConnection,
                     "http-500": lambda: ServerError()}[fault]
        server.script(behaviour(), behaviour())
    adapter = OpenAIChatClient(cloud_spec(url), KEY, timeout=0.3)
    try:
        blocking, concurrent = _both_paths(adapter)
    finally:
        adapter.close()
    assert blocking.error and concurrent.error
    if fault == "refused":  # the OS's wording of the refusal differs between the clients; the kind does not
        assert blocking.error.startswith("connection error calling gpt-4o-mini: ConnectError")
        assert concurrent.error.startswith("connection error calling gpt-4o-mini: ConnectError")
    else:
        assert _without_seconds(blocking.error) == _without_seconds(concurrent.error)
    if fault == "trickle":  # a byte every 0.1 s never trips a read timeout: the whole request's limit ends it
        assert blocking.latency_s < 1.5 and concurrent.latency_s < 1.5
    expected = {"timeout": "timed out after Ns calling gpt-4o-mini (ReadTimeout)",
                "trickle": "timed out after Ns calling gpt-4o-mini (ReadTimeout)",
                "dropped": "connection error calling gpt-4o-mini: RemoteProtocolError: Server disconnected without sending a response.",
                "http-500": "HTTP 500 from gpt-4o-mini"}.get(fault)
    if expected:
        assert _without_seconds(concurrent.error).startswith(expected)


def test_the_concurrent_path_answers_like_the_blocking_one(server):
    server.script(Success(INVOICE), Success(INVOICE))
    adapter = OpenAIChatClient(cloud_spec(server.url), KEY, timeout=5.0)
    try:
        blocking, concurrent = _both_paths(adapter, invoice_request(document=DOCUMENT + "\nMüller GmbH – Köln, 12 €"))
    finally:
        adapter.close()
    assert blocking.ok and concurrent.ok
    sent_blocking, sent_concurrent = server.requests[-2:]
    assert sent_concurrent.raw == sent_blocking.raw  # the same bytes, non-ASCII text included
    assert sent_concurrent.header("authorization") == sent_blocking.header("authorization") == f"Bearer {KEY}"
    assert concurrent.output == blocking.output
    assert (concurrent.input_tokens, concurrent.output_tokens, concurrent.cost_usd) == \
        (blocking.input_tokens, blocking.output_tokens, blocking.cost_usd)


def test_the_proxy_comes_from_the_environment_with_no_proxy_honoured(monkeypatch):
    from resources.providers.http_call import env_proxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.openai.com/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.internal")
    assert env_proxy("https://api.openai.com/v1/chat/completions") == "http://proxy.corp:3128"
    assert env_proxy("http://api.openai.com/v1") is None  # only an https proxy is named
    assert env_proxy("https://llm.internal/v1") is None
    assert env_proxy("http://127.0.0.1:8080/v1") is None


@pytest.mark.parametrize("status,body", [
    (200, b'{"id": "x", "choices": [], "usage": {"prompt_tokens": 3}}'),
    (201, '{"note": "caf\u00e9 \u20ac"}'.encode("utf-16")),  # json.loads reads UTF-16 bytes, as httpx's .json() does
    (200, b'\xef\xbb\xbf{"bom": true}'),
    (200, b"[1, 2, 3]"),  # JSON, but not an object
    (200, b"not json at all"),
    (200, b"\xff\xfe\xfa broken bytes"),
    (200, b""),
    (429, b'{"error": {"message": "slow down", "type": "rate_limit_exceeded"}}'),
    (503, b"<html>upstream unavailable</html>"),
])
def test_a_read_reply_is_judged_as_the_blocking_path_judges_it(status, body):
    """``reply_from_read`` (the concurrent paths' shortcut, no ``httpx.Response`` for a JSON object) says what
    ``reply_from_response`` says of the same status, headers and bytes."""
    from resources.providers.http_call import decoded_response, reply_from_read, reply_from_response

    headers = [(b"Content-Type", b"application/json"), (b"Retry-After", b"7"), (b"Content-Length", str(len(body)).encode())]
    shortcut = reply_from_read(status, headers, body, 0.25, "gpt-4o-mini")
    judged = reply_from_response(decoded_response(status, headers, body), 0.25, "gpt-4o-mini")
    assert shortcut == judged
    assert (shortcut.error is None) == (status < 400 and body.startswith((b"{", b"\xef\xbb\xbf{", b"\xff\xfe{")))
