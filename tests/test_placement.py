"""Placement: classification first, then hardware; GPU detection faked only at the OS boundary (nvidia-smi on PATH)."""

import json
import os
import stat

import pytest

from resources.catalog import ModelCatalog
from resources.classification import DataClassification
from resources.placement import HostCapabilities, PlacementKind, latency_profile, place_task, probe_endpoint
from tests.protocol_servers import OpenAIChatServer

CATALOG = ModelCatalog.load()
ALL_IDS = {s.id for s in CATALOG}


def _fake_nvidia_smi(tmp_path, monkeypatch, body: str) -> None:
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


def test_detects_a_gpu_through_nvidia_smi(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA H100 80GB HBM3, 81559"')
    host = HostCapabilities.detect()
    assert [g.name for g in host.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert host.gpu_memory_gb == pytest.approx(79.6, abs=0.1)
    assert host.cpu_cores >= 1 and host.memory_gb > 0


def test_a_failing_or_missing_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    host = HostCapabilities.detect()
    assert host.gpus == [] and "exited 9" in host.gpu_probe
    missing = HostCapabilities.detect(nvidia_smi="no-such-nvidia-smi-binary")
    assert missing.gpus == [] and "not found" in missing.gpu_probe


def test_restricted_data_is_never_placed_in_the_cloud_even_with_keys():
    host = HostCapabilities(cpu_cores=2, memory_gb=8)
    internal = place_task("invoice_extraction", DataClassification.INTERNAL, CATALOG, host, available=ALL_IDS)
    assert internal.kind is PlacementKind.CLOUD  # hosted frontier models are allowed and strongest
    restricted = place_task("invoice_extraction", DataClassification.RESTRICTED, CATALOG, host, available=ALL_IDS)
    assert restricted.kind is PlacementKind.LOCAL_CPU
    assert all(CATALOG.get(m).residency.value == "on_prem" for m in restricted.model_ids)
    assert any("restricted data: not placed on" in r and "gpt-4o-mini" in r for r in restricted.reasons)


def test_gpu_placement_only_when_a_gpu_is_detected(tmp_path, monkeypatch):
    on_prem = {"rules-invoice", "local-gemma3-270m"}
    cpu_only = place_task("invoice_extraction", DataClassification.RESTRICTED, CATALOG,
                          HostCapabilities.detect(nvidia_smi="no-such-nvidia-smi-binary"), available=on_prem)
    assert cpu_only.kind is PlacementKind.LOCAL_CPU
    assert cpu_only.tags()["dagster-celery/queue"] == "cpu" and "dagster-k8s/config" not in cpu_only.tags()

    _fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA L4, 23034"')
    gpu = place_task("invoice_extraction", DataClassification.RESTRICTED, CATALOG, HostCapabilities.detect(), available=on_prem)
    assert gpu.kind is PlacementKind.LOCAL_GPU
    tags = gpu.tags()
    assert tags["ai-orch/placement"] == "local_gpu" and tags["dagster-celery/queue"] == "gpu"
    assert json.loads(tags["dagster-k8s/config"])["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}


def test_no_placement_is_a_clear_error():
    host = HostCapabilities(cpu_cores=2, memory_gb=8)
    with pytest.raises(ValueError, match="no placement can serve task 'invoice_extraction' for restricted data"):
        place_task("invoice_extraction", DataClassification.RESTRICTED, CATALOG, host, available={"gpt-4.1"})


def test_probe_and_latency_profile():
    with OpenAIChatServer() as server:
        spec = CATALOG.get("gpt-4o-mini").model_copy(update={"endpoint": server.url})
        health = probe_endpoint(spec)
    assert health.healthy and health.latency_s is not None
    dead = probe_endpoint(CATALOG.get("gpt-4o-mini").model_copy(update={"endpoint": "http://127.0.0.1:9/v1"}), timeout_s=0.5)
    assert not dead.healthy and "ConnectError" in dead.detail
    import pandas as pd

    calls = pd.DataFrame({"model_id": ["a"] * 20 + ["b"], "latency_s": [float(i) for i in range(20)] + [1.0],
                          "outcome": ["ok"] * 20 + ["error"]})
    profile = latency_profile(calls)
    assert profile == {"a": {"p50_s": 9.5, "p95_s": 18.05, "calls": 20}}
