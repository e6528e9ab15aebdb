"""Compliance rules as plain functions over the ledger and over outputs, shared by checks and the sensor.

Routing makes violations impossible by construction (``data_policy``); these functions
verify it after the fact, from the records, so a misconfiguration, a bypassed router or
a bug is caught rather than trusted away:

* ``call_violations``: every recorded call's model was cleared by the catalog *and* the
  data policy for the item's classification, and a hosted call that the policy wants
  redacted was (the ledger's ``redaction`` column);
* ``pii_violations``: a persisted output of a classification that may not be persisted raw
  carries no detectable PII.

Violations name the item, the model and the rule — never the data.
"""

from __future__ import annotations

from typing import Iterable, Optional

import pandas as pd

from resources.catalog import ModelCatalog, Residency
from resources.classification import DataClassification
from resources.data_policy import DataPolicy


def call_violations(calls: pd.DataFrame, catalog: ModelCatalog, policy: DataPolicy) -> list[dict]:
    violations = []
    for call in calls.itertuples():
        classification = DataClassification.parse(call.classification)
        why: Optional[str] = None
        try:
            spec = catalog.get(call.model_id)
        except KeyError:
            spec, why = None, f"{call.model_id} is not in the catalog"
        if spec is not None:
            if not spec.may_see(classification):
                why = f"{spec.id} ({spec.residency.value}) is not cleared for {classification.value} data"
            else:
                why = policy.permits(spec, classification)
            if why is None and spec.residency is Residency.CLOUD and policy.must_redact(spec, classification):
                redaction = getattr(call, "redaction", None)
                if not isinstance(redaction, str) or not redaction.startswith("pseudonymised"):
                    why = f"{classification.value} data went to hosted {spec.id} without redaction"
        if why:
            violations.append({"run": getattr(call, "run_id", None), "item": call.item_id, "model": call.model_id,
                               "classification": classification.value, "why": why,
                               "call": getattr(call, "call_id", None)})
    return violations


def pii_violations(frame: pd.DataFrame, columns: Iterable[str], policy: DataPolicy, id_column: str = "id") -> list[dict]:
    if frame.empty or "classification" not in frame.columns:
        return []
    sensitive = frame[frame["classification"].map(lambda c: not policy.may_persist_raw(DataClassification.parse(c)))]
    if sensitive.empty:
        return []
    from resources.pii import detect_pii

    violations = []
    for row in sensitive.itertuples(index=False):
        kinds = sorted({f.kind for column in columns if isinstance(getattr(row, column, None), str)
                        for f in detect_pii(getattr(row, column))})
        if kinds:
            violations.append({"item": getattr(row, id_column), "classification": getattr(row, "classification"),
                               "why": f"persisted output carries PII: {', '.join(kinds)}"})
    return violations
