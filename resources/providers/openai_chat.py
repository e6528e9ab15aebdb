"""Adapter for OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, llama.cpp's server.

The schema travels as ``response_format`` in the catalog entry's dialect: OpenAI's
``json_schema``, or ``json_object`` with a ``schema`` beside it, which is what llama.cpp's
server understands (it answers ``json_schema`` with HTTP 500).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import httpx

from resources.catalog import ModelSpec, StructuredOutputDialect
from resources.model_call import CallResult, StructuredRequest
from resources.providers.http_call import DEFAULT_TIMEOUT, HttpModelClient, HttpReply, call_result, join_url, usage_tokens
from resources.providers.structured_reply import parse_structured_reply


def schema_name(schema: dict[str, Any], fallback: str) -> str:
    """The schema's title as OpenAI accepts a ``json_schema.name``: ``[a-zA-Z0-9_-]{1,64}``."""
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", str(schema.get("title") or fallback)).strip("_")
    return (name or "output")[:64]


def chat_messages(spec: ModelSpec, system: str, document: str) -> list[dict[str, str]]:
    """The chat turns a call sends: pre-run token counts (``estimation``) read the same ones."""
    if spec.inline_system_prompt:  # no system role in the chat template (Gemma)
        return [{"role": "user", "content": f"{system}\n\n{document}"}]
    return [{"role": "system", "content": system}, {"role": "user", "content": document}]


def response_format(dialect: StructuredOutputDialect, schema: dict[str, Any], fallback_name: str) -> dict[str, Any]:
    if dialect is StructuredOutputDialect.JSON_OBJECT_SCHEMA:
        return {"type": "json_object", "schema": schema}
    if dialect is StructuredOutputDialect.JSON_SCHEMA:
        return {"type": "json_schema", "json_schema": {"name": schema_name(schema, fallback_name), "schema": schema, "strict": False}}
    raise ValueError(f"structured output {dialect.value!r} cannot be sent over the OpenAI chat protocol")


class OpenAIChatClient(HttpModelClient):
    """``POST {base}/chat/completions``; never raises for provider faults."""

    def __init__(
        self,
        spec: ModelSpec,
        api_key: Optional[str],
        *,
        base_url: Optional[str] = None,
        timeout: "httpx.Timeout | float" = DEFAULT_TIMEOUT,
        http_client: Optional[httpx.Client] = None,
    ):
        base = base_url or spec.endpoint
        if not base:
            raise ValueError(f"model {spec.id!r}: no base URL (no endpoint and no local server URL)")
        # Fail at construction, not per call, on a dialect this protocol cannot carry.
        response_format(spec.structured_output, {}, spec.id)
        self.spec = spec
        self.url = join_url(base, "chat/completions")
        self._api_key = api_key
        super().__init__(timeout, http_client)

    def request_body(self, request: StructuredRequest) -> dict[str, Any]:
        schema = request.json_schema(max_list_items=self.spec.max_list_items)
        return {
            "model": self.spec.wire_model,
            "messages": chat_messages(self.spec, request.system, request.document),
            "temperature": 0,
            "max_tokens": request.max_output_tokens,
            "response_format": response_format(self.spec.structured_output, schema, request.task),
        }

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    def parse_reply(self, reply: HttpReply, request: StructuredRequest) -> CallResult:
        payload = reply.payload or {}
        usage = payload.get("usage")
        tokens = usage_tokens(usage, "prompt_tokens", "completion_tokens", request, reply)
        choices = payload.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is None:
            return call_result(self.spec, latency_s=reply.latency_s, error=f"reply from {self.spec.id} has no choices", **tokens)
        finish_reason = choice.get("finish_reason")
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            refusal = message.get("refusal")
            error = f"model refused: {refusal}" if refusal else f"reply from {self.spec.id} has no content (finish_reason {finish_reason})"
            return call_result(self.spec, latency_s=reply.latency_s, error=error, finish_reason=finish_reason, **tokens)
        output, error = parse_structured_reply(content, request.output_schema)
        if error is not None and finish_reason == "length":
            error = f"reply was truncated at max tokens ({request.max_output_tokens}): {error}"
        return call_result(self.spec, latency_s=reply.latency_s, output=output, error=error, finish_reason=finish_reason, **tokens)
