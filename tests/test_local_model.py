"""The real local LLM (Gemma 3 270M) behind llama.cpp's server, through the OpenAI-compatible adapter."""

import pytest

from orchestration_assets.invoices.schema import INVOICE_INSTRUCTIONS, InvoiceExtraction
from resources.catalog import ModelCatalog
from resources.model_call import StructuredRequest
from resources.model_gateway import ModelGateway

DOCUMENT = "ACME Ltd\n12 High Street, London\nInvoice No: INV-42\nDate: 14/03/2026\nVAT 2.00\nTOTAL EUR 12.00\n"


@pytest.fixture(scope="module")
def gateway():
    catalog = ModelCatalog.load()
    gateway = ModelGateway(catalog)
    if not gateway.availability(catalog.get("local-gemma3-270m")).available:
        pytest.skip(f"local model unavailable: {gateway.availability(catalog.get('local-gemma3-270m')).reason}")
    yield gateway
    gateway.close()


def test_local_model_extracts_priced_by_compute_time(gateway):
    spec = gateway.catalog.get("local-gemma3-270m")
    request = StructuredRequest(task="invoice_extraction", system=INVOICE_INSTRUCTIONS, document=DOCUMENT, output_schema=InvoiceExtraction)
    result = gateway.call(spec.id, request)
    assert result.error is None, result.error
    assert isinstance(result.output, InvoiceExtraction)
    assert result.output.line_items == []  # the catalog caps lists for this model
    assert result.input_tokens > 100  # instructions are inlined: Gemma's template has no system role
    assert result.output_tokens > 10
    assert result.cost_usd == pytest.approx(result.latency_s * spec.compute_usd_per_hour / 3600, rel=1e-9)
    assert result.cost_usd > 0
    # What a 270M base model gets right on a clean invoice: the header fields it can copy.
    assert result.output.invoice_number == "INV-42"
    assert result.output.currency == "EUR"


def test_gateway_stops_the_server_on_close():
    catalog = ModelCatalog.load()
    gateway = ModelGateway(catalog)
    if not gateway.availability(catalog.get("local-gemma3-270m")).available:
        pytest.skip("local model unavailable")
    gateway.client("local-gemma3-270m")
    server = gateway._servers["local-gemma3-270m"]
    process = server._process
    assert process.poll() is None
    gateway.close()
    assert process.poll() is not None


KILLED_PARENT = """
import sys
sys.path.insert(0, {repo!r})
from resources.catalog import ModelCatalog
from resources.model_gateway import ModelGateway
gateway = ModelGateway(ModelCatalog.load())
gateway.client("local-gemma3-270m")
print("SERVER", gateway._servers["local-gemma3-270m"]._process.pid, flush=True)
import os, signal
os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit: as an OOM kill or kill -9 of a step
"""


def test_the_server_stops_when_the_process_that_started_it_is_killed():
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    catalog = ModelCatalog.load()
    if not ModelGateway(catalog).availability(catalog.get("local-gemma3-270m")).available:
        pytest.skip("local model unavailable")
    parent = subprocess.run([sys.executable, "-c", KILLED_PARENT.format(repo=str(Path(__file__).resolve().parents[1]))],
                            capture_output=True, text=True, timeout=300)
    assert "SERVER" in parent.stdout, parent.stderr[-2000:]
    pid = int(parent.stdout.split("SERVER")[1].split()[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break  # exited, awaiting its new parent's reaping
        time.sleep(0.2)
    else:
        os.kill(pid, 9)
        raise AssertionError("the llama.cpp server outlived the process that started it by 30 s")


def test_a_model_that_cannot_start_is_reported_and_then_unavailable(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "models:\n  - id: local-gemma3-270m\n    local_server:\n      kind: llama_cpp\n      model_path: "
        + str(tmp_path / "missing.gguf")
        + "\n"
    )
    catalog = ModelCatalog.load(path)
    gateway = ModelGateway(catalog)
    spec = catalog.get("local-gemma3-270m")
    assert gateway.availability(spec).reason.endswith("missing.gguf not found")
