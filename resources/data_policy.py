"""The data policy: per classification, which models may see the data, where it may travel and rest.

Security reviews ask "where does our data live after processing?". The answer is this
file, enforced in three places so a violation cannot happen and, if configuration were
wrong anyway, is caught:

* routing: a model is a candidate only if the catalog clears it for the classification
  *and* the policy admits its residency and id (``permits``);
* the AI loop: text for a hosted model is pseudonymised first where ``redact_before_hosted``;
* storage: ``persist_raw: false`` keeps raw inputs in memory only (``sensitive_io``), and
  the compliance checks re-verify every call and every persisted output afterwards.

The policy ships as ``data_policy.yaml``; ``AI_ORCH_DATA_POLICY`` names a file merged over it.
"""

from __future__ import annotations

import functools
import os
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resources.catalog import ModelSpec, Residency
from resources.classification import DataClassification
from resources.environment import SettingError


class DataPolicyError(SettingError):
    """The policy file is missing, malformed, or leaves a classification undefined."""


class ClassificationRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    residencies: tuple[Residency, ...] = (Residency.ON_PREM,)
    models: Optional[tuple[str, ...]] = None
    redact_before_hosted: bool = True
    persist_raw: bool = False
    retention_days: int = Field(30, ge=0)


class DataPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    classifications: dict[DataClassification, ClassificationRules]

    def rules(self, classification: DataClassification) -> ClassificationRules:
        return self.classifications[classification]

    def permits(self, spec: ModelSpec, classification: DataClassification) -> Optional[str]:
        """None when ``spec`` may see data of ``classification`` under this policy, else why not."""
        rules = self.rules(classification)
        if spec.residency not in rules.residencies:
            allowed = ", ".join(r.value for r in rules.residencies)
            return f"{classification.value} data may only go to {allowed} models ({spec.id} is {spec.residency.value})"
        if rules.models is not None and spec.id not in rules.models:
            return f"{spec.id} is not on the {classification.value} allow-list"
        return None

    def must_redact(self, spec: ModelSpec, classification: DataClassification) -> bool:
        return spec.residency is Residency.CLOUD and self.rules(classification).redact_before_hosted

    def may_persist_raw(self, classification: DataClassification) -> bool:
        return self.rules(classification).persist_raw

    @classmethod
    def load(cls, user_path: "str | Path | None" = None) -> "DataPolicy":
        shipped = importlib_resources.files("resources").joinpath("data_policy.yaml").read_text()
        entries = _entries(shipped, "the shipped data policy")
        if user_path:
            path = Path(user_path).expanduser()
            if not path.is_file():
                raise DataPolicyError(f"data policy file {path} does not exist")
            for name, rules in _entries(path.read_text(), str(path)).items():
                entries[name] = {**entries.get(name, {}), **rules}
        try:
            policy = cls(classifications=entries)
        except ValidationError as exc:
            raise DataPolicyError(f"invalid data policy: {exc}") from exc
        missing = [c.value for c in DataClassification if c not in policy.classifications]
        if missing:
            raise DataPolicyError(f"data policy leaves {', '.join(missing)} undefined")
        return policy


def _entries(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DataPolicyError(f"{origin} is not valid YAML: {exc}") from exc
    entries = data.get("classifications") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise DataPolicyError(f"{origin} must hold 'classifications:', a mapping of classification → rules")
    return {str(k): dict(v or {}) for k, v in entries.items()}


@functools.lru_cache(maxsize=4)
def _load_cached(path: Optional[str]) -> DataPolicy:
    return DataPolicy.load(path)


def active_policy() -> DataPolicy:
    """The policy in force: the shipped file merged with ``$AI_ORCH_DATA_POLICY`` (cached per path)."""
    return _load_cached(os.environ.get("AI_ORCH_DATA_POLICY") or None)
