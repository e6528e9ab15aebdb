"""In-process Python models (rules extractors) are charged for the CPU time they use, not for waiting."""

import time

import pytest
from pydantic import BaseModel

from resources.catalog import ModelSpec
from resources.model_call import StructuredRequest
from resources.providers.python_callable import PythonCallableClient


class Answer(BaseModel):
    value: str


def sleeping_model(document: str) -> Answer:
    time.sleep(0.2)  # the interpreter is free meanwhile: another thread could run, this model computes nothing
    return Answer(value=document)


def spinning_model(document: str) -> Answer:
    deadline = time.thread_time() + 0.05
    while time.thread_time() < deadline:
        pass
    return Answer(value=document)


def _client(function: str) -> tuple[PythonCallableClient, ModelSpec]:
    spec = ModelSpec(id="py", provider="rules", protocol="python", callable=f"tests.test_python_models:{function}",
                     structured_output="native", compute_usd_per_hour=36.0, residency="on_prem", tier=1,
                     context_window=1000, classifications=["public"])
    return PythonCallableClient(spec), spec


REQUEST = StructuredRequest(task="t", system="", document="doc", output_schema=Answer)


def test_waiting_is_not_charged_as_compute():
    client, spec = _client("sleeping_model")
    result = client.call(REQUEST)
    assert result.ok and result.latency_s >= 0.2
    assert result.compute_s < 0.05  # slept, did not compute
    assert result.cost_usd == pytest.approx(spec.compute_cost(result.compute_s))
    assert result.cost_usd < spec.compute_cost(0.05)


def test_computing_is_charged_by_cpu_seconds():
    client, spec = _client("spinning_model")
    result = client.call(REQUEST)
    assert result.ok and result.compute_s == pytest.approx(0.05, abs=0.01)
    assert result.cost_usd == pytest.approx(0.05 * 36.0 / 3600, rel=0.2)
