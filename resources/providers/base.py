"""The one interface every provider adapter implements."""

from __future__ import annotations

from typing import Protocol

from resources.catalog import ModelSpec
from resources.model_call import CallResult, StructuredRequest


class ModelClient(Protocol):
    """Serves one catalog model. ``call`` never raises for provider faults: they come back in ``CallResult.error``."""

    spec: ModelSpec

    def call(self, request: StructuredRequest) -> CallResult: ...

    def close(self) -> None: ...
