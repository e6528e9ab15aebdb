"""Where AI work runs: on which hardware, and how Dagster gets a step there.

Routing picks a model; placement picks the executor. This module answers three questions
at run time and keeps the answers as values a user can read:

1. What can this machine do? ``HostCapabilities.detect`` reads CPU cores and memory from
   the OS and GPUs from ``nvidia-smi`` (absent or failing ``nvidia-smi`` means no GPU, and
   the reason is kept). Detection stops at the OS boundary, so a test can put a fake
   ``nvidia-smi`` on ``PATH`` and exercise the rest for real.
2. Which endpoints answer? ``probe_endpoint`` times a ``GET /models`` on an on-prem
   OpenAI-compatible server; ``latency_profile`` reads p50/p95 per model from the ledger.
3. Where does a task go? ``place_task`` applies the data classification first (restricted
   data never leaves on-prem), then capability: a model that wants a GPU goes to a GPU
   placement only when a GPU with enough memory is present (``gpu: required`` models are
   dropped without one), otherwise the CPU. The result maps onto Dagster with
   ``Placement.tags``: an ``ai-orch/placement`` tag, a celery queue
   (``dagster-celery/queue``) and a Kubernetes node selector (``dagster-k8s/config``) per
   placement kind, so a deployment with GPU workers routes steps to them by configuration,
   not code. The queue and selector names are settings (``PlacementSettings``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from enum import Enum
from typing import Iterable, Optional

import httpx
import pandas as pd
from pydantic import BaseModel, Field

from resources.catalog import ModelSpec, Protocol, Residency
from resources.classification import DataClassification


class PlacementKind(str, Enum):
    IN_PROCESS = "in_process"  # python models: run inside the step's process
    LOCAL_CPU = "local_cpu"  # a local model server on this worker's CPU
    LOCAL_GPU = "local_gpu"  # a local model server on this worker's GPU
    ONPREM_ENDPOINT = "onprem_endpoint"  # a named on-prem server (vLLM, Ollama, TGI)
    CLOUD = "cloud"  # a hosted API


class GpuInfo(BaseModel):
    name: str
    memory_gb: float


class HostCapabilities(BaseModel):
    cpu_cores: int
    memory_gb: float
    gpus: list[GpuInfo] = Field(default_factory=list)
    gpu_probe: str = Field("", description="What nvidia-smi said, or why it could not say.")

    @property
    def gpu_memory_gb(self) -> float:
        return max((g.memory_gb for g in self.gpus), default=0.0)

    @classmethod
    def detect(cls, nvidia_smi: str = "nvidia-smi", timeout_s: float = 5.0) -> "HostCapabilities":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            memory_gb = 0.0
        gpus, probe = _detect_gpus(nvidia_smi, timeout_s)
        return cls(cpu_cores=cores, memory_gb=round(memory_gb, 1), gpus=gpus, gpu_probe=probe)


def _detect_gpus(nvidia_smi: str, timeout_s: float) -> tuple[list[GpuInfo], str]:
    binary = shutil.which(nvidia_smi)
    if binary is None:
        return [], f"{nvidia_smi} not found: no NVIDIA GPU"
    try:
        done = subprocess.run(
            [binary, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"{nvidia_smi} failed: {exc}"
    if done.returncode != 0:
        return [], f"{nvidia_smi} exited {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}"
    gpus = []
    for line in done.stdout.splitlines():
        name, _, memory = line.rpartition(",")
        try:
            gpus.append(GpuInfo(name=name.strip(), memory_gb=round(float(memory) / 1024, 1)))
        except ValueError:
            continue
    return gpus, f"{len(gpus)} GPU(s): " + ", ".join(f"{g.name} {g.memory_gb} GB" for g in gpus) if gpus else "no GPU listed"


class EndpointHealth(BaseModel):
    model_id: str
    healthy: bool
    latency_s: Optional[float] = None
    detail: str = ""


def probe_endpoint(spec: ModelSpec, timeout_s: float = 2.0, client: Optional[httpx.Client] = None) -> EndpointHealth:
    """``GET {endpoint}/models`` on an OpenAI-compatible server: reachable, healthy, and how fast."""
    if not spec.endpoint:
        return EndpointHealth(model_id=spec.id, healthy=False, detail="no endpoint (managed or in-process model)")
    url = spec.endpoint.rstrip("/") + "/models"
    started = time.perf_counter()
    try:
        reply = (client or httpx).get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return EndpointHealth(model_id=spec.id, healthy=False, detail=f"{url}: {type(exc).__name__}")
    latency = time.perf_counter() - started
    return EndpointHealth(model_id=spec.id, healthy=reply.status_code < 500, latency_s=round(latency, 4),
                          detail=f"{url}: HTTP {reply.status_code}")


def latency_profile(calls: pd.DataFrame) -> dict[str, dict[str, float]]:
    """p50/p95 latency and call count per model, from the ledger's successful calls."""
    if calls.empty:
        return {}
    ok = calls[calls["outcome"] == "ok"]
    return {
        model: {"p50_s": round(float(g.quantile(0.5)), 4), "p95_s": round(float(g.quantile(0.95)), 4), "calls": int(len(g))}
        for model, g in ok.groupby("model_id")["latency_s"]
    }


class PlacementSettings(BaseModel):
    """How placements map onto a deployment's workers. Defaults fit a single machine."""

    celery_queues: dict[PlacementKind, str] = Field(default_factory=lambda: {
        PlacementKind.IN_PROCESS: "dagster", PlacementKind.LOCAL_CPU: "cpu", PlacementKind.LOCAL_GPU: "gpu",
        PlacementKind.ONPREM_ENDPOINT: "dagster", PlacementKind.CLOUD: "dagster",
    })
    node_selectors: dict[PlacementKind, dict[str, str]] = Field(default_factory=lambda: {
        PlacementKind.LOCAL_GPU: {"nvidia.com/gpu.present": "true"},
    })


class Placement(BaseModel):
    kind: PlacementKind
    model_ids: list[str] = Field(description="Models that may serve the task from this placement, cheapest first.")
    reasons: list[str]

    def tags(self, settings: Optional[PlacementSettings] = None) -> dict[str, str]:
        """Op tags that send the step to matching workers (celery queue, Kubernetes node selector)."""
        import json

        settings = settings or PlacementSettings()
        tags = {"ai-orch/placement": self.kind.value, "dagster-celery/queue": settings.celery_queues.get(self.kind, "dagster")}
        selector = settings.node_selectors.get(self.kind)
        if selector:
            tags["dagster-k8s/config"] = json.dumps({"pod_spec_config": {"node_selector": selector}})
        return tags


def _kind_for(spec: ModelSpec, host: HostCapabilities) -> tuple[Optional[PlacementKind], str]:
    if spec.residency is Residency.CLOUD:
        return PlacementKind.CLOUD, f"{spec.id}: hosted"
    if spec.protocol is Protocol.PYTHON:
        return PlacementKind.IN_PROCESS, f"{spec.id}: runs in the step's process"
    if spec.endpoint and not spec.local_server:
        return PlacementKind.ONPREM_ENDPOINT, f"{spec.id}: on-prem endpoint {spec.endpoint}"
    fits_gpu = bool(host.gpus) and host.gpu_memory_gb >= spec.min_gpu_memory_gb
    if spec.gpu and fits_gpu:
        return PlacementKind.LOCAL_GPU, f"{spec.id}: GPU {spec.gpu}, {host.gpus[0].name} ({host.gpu_memory_gb} GB) detected"
    if spec.gpu == "required":
        return None, f"{spec.id}: needs a GPU with {spec.min_gpu_memory_gb} GB ({host.gpu_probe})"
    why = f"; {host.gpu_probe}" if spec.gpu else ""
    return PlacementKind.LOCAL_CPU, f"{spec.id}: local server on {host.cpu_cores} CPU cores{why}"


_PREFERENCE = [PlacementKind.LOCAL_GPU, PlacementKind.ONPREM_ENDPOINT, PlacementKind.LOCAL_CPU, PlacementKind.IN_PROCESS, PlacementKind.CLOUD]


def place_task(
    task: str,
    classification: DataClassification,
    models: Iterable[ModelSpec],
    host: HostCapabilities,
    available: Optional[set[str]] = None,
) -> Placement:
    """The placement for a task's AI step: the strongest hardware among the models the data allows.

    ``available``: the ids the gateway can call now (keys set, servers up); None means all.
    """
    reasons: list[str] = []
    candidates = [m for m in models if m.enabled and m.serves(task)]
    if available is not None:
        missing = [m.id for m in candidates if m.id not in available]
        if missing:
            reasons.append("unavailable: " + ", ".join(missing))
        candidates = [m for m in candidates if m.id in available]
    cleared = [m for m in candidates if m.may_see(classification)]
    refused = [m.id for m in candidates if not m.may_see(classification)]
    if refused:
        reasons.append(f"{classification.value} data: not placed on {', '.join(refused)}")
    by_kind: dict[PlacementKind, list[ModelSpec]] = {}
    for spec in cleared:
        kind, why = _kind_for(spec, host)
        reasons.append(why)
        if kind is not None:
            by_kind.setdefault(kind, []).append(spec)
    if classification is DataClassification.RESTRICTED:
        by_kind.pop(PlacementKind.CLOUD, None)
    # The highest capability tier decides; among equals, the stronger hardware.
    if not by_kind:
        raise ValueError(f"no placement can serve task {task!r} for {classification.value} data: " + "; ".join(reasons))
    best_tier = max(s.tier for specs in by_kind.values() for s in specs)
    kind = next(k for k in _PREFERENCE if any(s.tier == best_tier for s in by_kind.get(k, [])))
    ordered = sorted((s for specs in by_kind.values() for s in specs), key=lambda s: (s.price_input_per_mtok, s.tier, s.id))
    reasons.append(f"placed on {kind.value}: its models reach tier {best_tier}")
    return Placement(kind=kind, model_ids=[s.id for s in ordered], reasons=reasons)
