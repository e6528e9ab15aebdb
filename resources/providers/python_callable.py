"""Adapter for deterministic 'models' written in Python (a rules extractor, a classifier).

They sit in the catalog beside LLMs, priced at their compute time, so the router can
choose them when they suffice and the ledger and checks treat their output alike.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable

from pydantic import BaseModel, ValidationError

from resources.catalog import ModelSpec
from resources.model_call import CallResult, StructuredRequest


def load_callable(reference: str) -> Callable[[str], object]:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"callable {reference!r} must be written 'module:function'")
    return getattr(importlib.import_module(module_name), attribute)


class PythonCallableClient:
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._function = load_callable(spec.callable or "")

    def call(self, request: StructuredRequest) -> CallResult:
        """Run the function inline; charged for the CPU time this thread spent in it.

        CPU time, not wall time: other threads of the process (the ledger's writer, Dagster's
        event logging) can hold the interpreter mid-call, and that wait is not this model's
        compute (measured here: wall time per batch varied ±40 % between runs, CPU time far less).
        """
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            produced = self._function(request.document)
            output = produced if isinstance(produced, request.output_schema) else request.output_schema.model_validate(
                produced.model_dump() if isinstance(produced, BaseModel) else produced
            )
            error = None
        except ValidationError as exc:
            output, error = None, f"output does not match {request.output_schema.__name__}: {exc.errors()[0].get('msg')}"
        except Exception as exc:  # a rules model must never take the batch down
            output, error = None, f"{type(exc).__name__}: {exc}"[:300]
        latency, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
        return CallResult(
            model_id=self.spec.id, output=output, latency_s=latency, compute_s=cpu, cost_usd=self.spec.call_cost(0, 0, cpu),
            error=error, finish_reason="stop" if error is None else "error",
        )

    def close(self) -> None:
        return None
