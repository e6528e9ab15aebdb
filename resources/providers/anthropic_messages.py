"""Adapter for Anthropic's Messages API.

Structured output travels as tool use: one tool whose ``input_schema`` is the output schema,
forced with ``tool_choice``, so the reply's ``tool_use`` block carries the object.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import httpx

from resources.catalog import ModelSpec
from resources.model_call import CallResult, StructuredRequest
from resources.providers.http_call import DEFAULT_TIMEOUT, HttpModelClient, HttpReply, call_result, join_url, usage_tokens
from resources.providers.structured_reply import parse_structured_reply, shorten

ANTHROPIC_VERSION = "2023-06-01"


def tool_name(task: str) -> str:
    """``record_<task>``, as Anthropic accepts tool names: ``[a-zA-Z0-9_-]{1,64}``."""
    return ("record_" + re.sub(r"[^a-zA-Z0-9_-]+", "_", task).strip("_"))[:64]


class AnthropicMessagesClient(HttpModelClient):
    """``POST {base}/v1/messages``; never raises for provider faults."""

    def __init__(
        self,
        spec: ModelSpec,
        api_key: Optional[str],
        *,
        base_url: Optional[str] = None,
        timeout: "httpx.Timeout | float" = DEFAULT_TIMEOUT,
        http_client: Optional[httpx.Client] = None,
    ):
        base = (base_url or spec.endpoint or "").rstrip("/")
        if not base:
            raise ValueError(f"model {spec.id!r}: no base URL")
        self.spec = spec
        # The documented base is https://api.anthropic.com; tolerate one written with /v1.
        self.url = join_url(base, "messages" if base.endswith("/v1") else "v1/messages")
        self._api_key = api_key
        super().__init__(timeout, http_client)

    def request_body(self, request: StructuredRequest) -> dict[str, Any]:
        name = tool_name(request.task)
        schema = request.json_schema(max_list_items=self.spec.max_list_items)
        body: dict[str, Any] = {
            "model": self.spec.wire_model,
            "max_tokens": request.max_output_tokens,
            "temperature": 0,
            "system": request.system,
            "messages": [{"role": "user", "content": request.document}],
            "tools": [{
                "name": name,
                "description": f"Record the result of the {request.task} task. The input must match the schema exactly.",
                "input_schema": schema,
            }],
            "tool_choice": {"type": "tool", "name": name},
        }
        if self.spec.inline_system_prompt:
            del body["system"]
            body["messages"] = [{"role": "user", "content": f"{request.system}\n\n{request.document}"}]
        return body

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def parse_reply(self, reply: HttpReply, request: StructuredRequest) -> CallResult:
        payload = reply.payload or {}
        usage = payload.get("usage")
        tokens = usage_tokens(usage, "input_tokens", "output_tokens", request, reply)
        stop_reason = payload.get("stop_reason")
        blocks = payload.get("content") if isinstance(payload.get("content"), list) else []
        name = tool_name(request.task)
        tool_uses = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
        tool_use = next((b for b in tool_uses if b.get("name") == name), tool_uses[0] if tool_uses else None)
        if tool_use is None:
            if stop_reason == "max_tokens":
                error = f"reply was truncated at max tokens ({request.max_output_tokens}) before the {name} tool call"
            else:
                text = " ".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")
                error = f"reply from {self.spec.id} has no {name} tool call (stop_reason {stop_reason})"
                if text.strip():
                    error += f"; it said: {shorten(text, 120)}"
            return call_result(self.spec, latency_s=reply.latency_s, error=error, finish_reason=stop_reason, **tokens)
        output, error = parse_structured_reply(tool_use.get("input"), request.output_schema)
        if error is not None and stop_reason == "max_tokens":
            error = f"reply was truncated at max tokens ({request.max_output_tokens}): {error}"
        return call_result(self.spec, latency_s=reply.latency_s, output=output, error=error, finish_reason=stop_reason, **tokens)
