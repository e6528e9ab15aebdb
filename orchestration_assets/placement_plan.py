"""The placement of each template's AI step, decided when the code location loads.

Dagster reads op tags at definition time, so this is where the executor mapping is fixed:
the tags from ``resources.placement.Placement.tags`` send the step to the matching celery
queue or Kubernetes nodes. Detection runs on the machine that loads the code; when steps
run on other workers, declare their GPU with ``AI_ORCH_WORKER_GPU_GB`` (e.g. ``24``). The
step re-detects its own host at run time and reports both in its metadata.

Environment: ``AI_ORCH_CLASSIFICATION`` (the data the step is planned for; default
``internal``), ``AI_ORCH_CATALOG`` (catalog override), ``AI_ORCH_WORKER_GPU_GB``.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from resources.catalog import ModelCatalog
from resources.classification import DataClassification
from resources.environment import env_amount
from resources.placement import GpuInfo, HostCapabilities, Placement, place_task

log = logging.getLogger(__name__)


def planned_host() -> HostCapabilities:
    host = HostCapabilities.detect()
    declared = env_amount("AI_ORCH_WORKER_GPU_GB")  # "lots" is refused by name (and logged: the step goes unplaced)
    if declared:
        host = host.model_copy(update={
            "gpus": [GpuInfo(name="declared worker GPU", memory_gb=declared)],
            "gpu_probe": f"AI_ORCH_WORKER_GPU_GB={declared:g}",
        })
    return host


def available_models(catalog: ModelCatalog) -> set[str]:
    """Models whose key (if any) is set: the availability known before any server starts."""
    return {s.id for s in catalog if not s.api_key_env or os.environ.get(s.api_key_env)}


@lru_cache(maxsize=None)
def task_placement(task: str) -> "Placement | None":
    try:
        catalog = ModelCatalog.load(os.environ.get("AI_ORCH_CATALOG") or None)
        classification = DataClassification.parse(os.environ.get("AI_ORCH_CLASSIFICATION", "internal"))
        return place_task(task, classification, catalog, planned_host(), available_models(catalog))
    except Exception as exc:  # noqa: BLE001 - a placement problem must not stop the code location loading
        log.warning("no placement for %s: %s", task, exc)
        return None


def placement_tags(task: str) -> dict[str, str]:
    placement = task_placement(task)
    return placement.tags() if placement else {"ai-orch/placement": "unplaced"}


def placement_pool(task: str) -> str:
    """The Dagster concurrency pool of the task's AI step: ``ai/<placement>`` (``ai/cloud``, ``ai/local_cpu`` ...).

    Pools are unlimited until a limit is set, e.g. ``dagster instance concurrency set ai/cloud 4``
    (at most four hosted-model steps at once across runs) or ``ai/local_cpu 1`` (one step at a
    time on the CPU model server); calls within a step are bounded by the gateway's limits.
    """
    placement = task_placement(task)
    return f"ai/{placement.kind.value if placement else 'unplaced'}"
