"""What goes into a model call and what comes out of it, whatever the provider.

Every adapter (hosted API, local server, deterministic rules) takes a
``StructuredRequest`` and returns a ``CallResult``: the routing, ledger, checks and
metadata code never needs to know which wire protocol served the item.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class StructuredRequest(BaseModel):
    """A request for output that must validate against ``output_schema``."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    task: str = Field(description="Task name, e.g. 'invoice_extraction'; models may be limited to tasks.")
    system: str = Field(description="Instructions for the model.")
    document: str = Field(description="The item's text.")
    output_schema: type[BaseModel] = Field(description="Pydantic model the reply must validate against.")
    max_output_tokens: int = 512

    def json_schema(self, max_list_items: Optional[int] = None) -> dict[str, Any]:
        """The schema as sent on the wire: see ``wire_schema``."""
        return wire_schema(self.output_schema, max_list_items=max_list_items)


def wire_schema(model: type[BaseModel], *, max_list_items: Optional[int] = None) -> dict[str, Any]:
    """The pydantic schema with every property required and no extras, lists optionally capped.

    Optional fields stay nullable, but the model must emit every key: OpenAI's strict mode
    demands it, and a grammar-constrained local model otherwise answers ``{}``. Built once per
    (model, cap) — generating it costs more than a fast provider's reply — and shared: never mutate it.
    """
    return _wire_schema(model, max_list_items)


@functools.lru_cache(maxsize=256)
def _wire_schema(model: type[BaseModel], max_list_items: Optional[int]) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema())

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"])
                node["additionalProperties"] = False
            if node.get("type") == "array" and max_list_items is not None:
                node["maxItems"] = max_list_items
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(schema)
    return schema


class CallResult(BaseModel):
    """The outcome of one model call: parsed output or an error, with its price and timing."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_id: str
    output: Optional[BaseModel] = None
    transport_attempts: int = Field(1, description="HTTP attempts made (retries of 429/5xx/timeouts included).")
    attempt_log: list[dict[str, Any]] = Field(default_factory=list, description=(
        "One entry per HTTP attempt: attempt, status, error_type, waited_s. Codes only, never a message: "
        "an error message can quote the document."))
    replayed: bool = Field(False, description="Answered from the idempotency cache: the call had completed before, nothing new to charge.")
    usage_estimated: bool = Field(False, description="The provider reported no usable token counts: tokens estimated from the text.")
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    compute_s: Optional[float] = Field(None, description=(
        "Seconds of on-prem compute charged, where that is not the latency: an in-process model's CPU time."))
    error: Optional[str] = None
    finish_reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.output is not None
