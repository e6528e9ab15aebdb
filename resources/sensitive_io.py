"""An IO manager that will not put sensitive data on disk: zero persistence for raw inputs.

Dagster's default IO manager pickles every asset value under ``$DAGSTER_HOME/storage``.
For data whose classification forbids persisting raw inputs (``persist_raw: false`` in
the data policy: confidential and restricted by default) that file would be exactly the
copy a security review asks about. This IO manager:

* keeps an asset's value **in the run's memory only** when the asset is a raw input
  (``ai_orch/raw_input`` in its definition metadata) and any item in it may not be
  persisted — the next step of the same run reads it from memory; it never touches disk;
* **refuses to pickle** any other value of such a classification that still carries
  detectable PII (emails, phones, IBANs, card numbers, national ids, …): the step fails
  with the asset, the classification and the PII *kinds* — never the values;
* persists everything else like Dagster's filesystem IO manager.

Memory-only values live as long as the process that ran the step, so the assets that
read them must run in the same process: the project's ``Definitions`` use the
in-process executor. Loading a memory-only value in another run says so and how to fix it.

The same rules hold for the outputs of the ops inside a graph-backed asset (a multi-step
chain passes chunks of the raw text from op to op): such an output has no asset key, so it
is keyed and stored by run, step and output name, as Dagster's filesystem IO manager does;
an op output declared with ``ai_orch/raw_input`` metadata stays in memory for sensitive data.
"""

from __future__ import annotations

import pickle
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from resources.classification import DataClassification
from resources.data_policy import active_policy

RAW_INPUT = "ai_orch/raw_input"
_MEMORY: "OrderedDict[tuple, Any]" = OrderedDict()
_MEMORY_LOCK = threading.Lock()
_MEMORY_LIMIT = 64  # values; a long-lived process drops the oldest runs' values first


class SensitiveDataError(RuntimeError):
    """A value that the data policy forbids persisting was about to be written to disk."""


def classifications_in(obj: Any) -> set[DataClassification]:
    """The classifications of the items a value carries: Documents, a frame's column, or a declared one."""
    found: set[DataClassification] = set()
    if isinstance(obj, pd.DataFrame) and "classification" in obj.columns:
        found |= {DataClassification.parse(c) for c in obj["classification"].dropna().unique()}
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            classification = getattr(item, "classification", None)
            if classification is not None:
                found.add(DataClassification.parse(classification))
    return found


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, pd.DataFrame):
        for column in obj.columns:
            if obj[column].dtype == object:
                yield from (v for v in obj[column].dropna() if isinstance(v, str))
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from _strings(value)
    elif hasattr(obj, "model_dump"):
        yield from _strings(obj.model_dump())


def pii_kinds_in(obj: Any) -> set[str]:
    """Which kinds of PII the value's strings still carry (the values themselves are never returned)."""
    from resources.pii import detect_pii

    kinds: set[str] = set()
    for text in _strings(obj):
        kinds |= {f.kind for f in detect_pii(text)}
    return kinds


def _key(context) -> tuple:
    """An asset's value: (asset path, partition). An op's output inside a graph: (step, output name), run-scoped."""
    if not context.has_asset_key:
        output = _op_output(context)
        return ("__op_output__", output.step_key, output.name), None
    partition = context.asset_partition_key if context.has_asset_partitions else None
    return tuple(context.asset_key.path), partition


def _op_output(context) -> dg.OutputContext:
    """The op output a context writes (an OutputContext) or reads (an InputContext's upstream)."""
    return context if isinstance(context, dg.OutputContext) else context.upstream_output


def _label(context) -> str:
    if context.has_asset_key:
        return context.asset_key.to_user_string()
    output = context if isinstance(context, dg.OutputContext) else context.upstream_output
    return f"output {output.name!r} of step {output.step_key}"


class SensitiveIOManager(dg.ConfigurableIOManager):
    """Dagster's filesystem IO manager, with the data policy's zero-persistence and no-PII rules in front."""

    base_dir: Optional[str] = None
    _storage: Optional[str] = PrivateAttr(None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._storage = self.base_dir or (context.instance.storage_directory() if context.instance else None)

    def _path(self, context) -> Path:
        base = Path(self._storage or self.base_dir or dg.DagsterInstance.get().storage_directory())
        if not context.has_asset_key:  # Dagster's own layout for op outputs: <run id>/<step key>/<output name>
            output = _op_output(context)
            return base.joinpath(*output.get_identifier())
        asset_key, partition = _key(context)
        return base.joinpath(*asset_key, *([partition] if partition else []))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        policy = active_policy()
        sensitive = {c for c in classifications_in(obj) if not policy.may_persist_raw(c)}
        if sensitive and (context.definition_metadata or {}).get(RAW_INPUT):
            with _MEMORY_LOCK:
                _MEMORY[(context.run_id, *_key(context))] = obj
                while len(_MEMORY) > _MEMORY_LIMIT:
                    _MEMORY.popitem(last=False)
            context.add_output_metadata({"storage": "memory only (data policy: no raw persistence for "
                                                    + ", ".join(sorted(c.value for c in sensitive)) + ")"})
            return
        if sensitive:
            kinds = pii_kinds_in(obj)
            if kinds:
                raise SensitiveDataError(
                    f"refusing to persist {_label(context)}: it holds "
                    f"{', '.join(sorted(c.value for c in sensitive))} items that still carry PII "
                    f"({', '.join(sorted(kinds))}); redact it before returning it")
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        context.add_output_metadata({"storage": "disk", "path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        key = _key(context)
        with _MEMORY_LOCK:
            for stored_key, value in reversed(_MEMORY.items()):
                if stored_key[1:] == key and (upstream is None or upstream.run_id in (None, stored_key[0])):
                    return value
        path = self._path(context)
        if not path.exists():
            if (upstream and (upstream.definition_metadata or {}).get(RAW_INPUT)):
                fix = ("materialize it together with its downstream assets in one run (the invoice_batch job does)"
                       if context.has_asset_key else "materialize the whole asset again, not this step alone")
                raise SensitiveDataError(
                    f"{_label(context)} holds sensitive raw input kept in memory only during the "
                    f"run that produced it; {fix}")
            raise FileNotFoundError(f"no stored value for {_label(context)} at {path}")
        with open(path, "rb") as handle:
            return pickle.load(handle)


def redact_for_persistence(frame: pd.DataFrame, columns: Iterable[str],
                           sources: Optional[Mapping[str, str]] = None) -> tuple[pd.DataFrame, int]:
    """Rows whose classification forbids raw persistence get PII in ``columns`` replaced by tokens.

    What a model returns can quote the document (a customer's name in the vendor field, an
    IBAN in an error message); a derived output is only safe to persist once that is gone.
    A bare value out of its context ("Lukas Schmidt" alone in a field) often cannot be told
    to be a name, so with ``sources`` (row ``id`` → the document's text) every PII value
    found in the row's document is also replaced wherever a field repeats it.
    The token mapping is dropped: these values are for storage, not for restoring.
    Returns the frame and how many values were changed.
    """
    if frame.empty or "classification" not in frame.columns:
        return frame, 0
    policy = active_policy()
    sensitive = frame["classification"].map(lambda c: not policy.may_persist_raw(DataClassification.parse(c)))
    if not sensitive.any():
        return frame, 0
    from resources.pii import pseudonymize

    frame = frame.copy()
    changed = 0
    known = {index: _source_pii(sources.get(str(frame.at[index, "id"]), "")) if sources is not None and "id" in frame.columns
             else [] for index in frame.index[sensitive]}
    for column in columns:
        if column not in frame.columns:
            continue
        for index in frame.index[sensitive]:
            value = frame.at[index, column]
            if isinstance(value, str) and value:
                redacted = pseudonymize(value)[0]
                for pattern, token in known[index]:
                    redacted = pattern.sub(token, redacted)
                if redacted != value:
                    frame.at[index, column] = redacted
                    changed += 1
    return frame, changed


def _source_pii(text: str) -> list[tuple[re.Pattern[str], str]]:
    """Each PII value in a document as a pattern that finds it again in an output, whatever its case
    and spacing ("LUKAS  SCHMIDT"), with the token of its kind; the longest values first."""
    from resources.pii import TOKEN_PREFIXES, detect_pii

    values = {}
    for finding in detect_pii(text):
        words = text[finding.start:finding.end].split()
        if sum(map(len, words)) >= 4:  # too short a value would match inside ordinary words
            values[tuple(w.lower() for w in words)] = (words, TOKEN_PREFIXES[finding.kind])
    ordered = sorted(values.values(), key=lambda item: -sum(map(len, item[0])))
    return [(re.compile(r"(?<!\w)" + r"\s*".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE), token)
            for words, token in ordered]
