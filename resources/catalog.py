"""The model catalog: every model the router may choose, with its price, residency and clearance.

The catalog ships as ``catalog.yaml`` inside the package; a user file (``catalog_path``)
adds entries or replaces shipped ones by ``id`` (``enabled: false`` removes one), so a
deployment can point a model at its own vLLM endpoint or update a price without code.
"""

from __future__ import annotations

from enum import Enum
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from resources.classification import DataClassification
from resources.environment import SettingError
from resources.providers.structured_reply import describe_validation_error


class Residency(str, Enum):
    ON_PREM = "on_prem"
    CLOUD = "cloud"


class Protocol(str, Enum):
    """The wire protocol, hence the adapter, that serves a model."""

    OPENAI_CHAT = "openai_chat"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    PYTHON = "python"


class StructuredOutputDialect(str, Enum):
    """How the output schema is sent: OpenAI's json_schema, llama.cpp's json_object+schema, or tool use."""

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT_SCHEMA = "json_object_schema"
    TOOL_USE = "tool_use"
    NATIVE = "native"


class LocalServerSpec(BaseModel):
    """A local model server the gateway starts on 127.0.0.1 when the model is first used."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("llama_cpp", description="Only 'llama_cpp' (llama-cpp-python's OpenAI-compatible server) for now.")
    model_package: Optional[str] = Field(None, description="Python package shipping the GGUF (with an assemble() function).")
    model_path: Optional[str] = Field(None, description="Path to a GGUF file; takes precedence over model_package.")
    chat_format: Optional[str] = None
    n_ctx: int = 4096
    n_threads: Optional[int] = None


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # an infinite price is a typo, not a price

    id: str
    provider: str = Field(description="Who serves it, as OpenTelemetry's gen_ai.provider.name: openai, anthropic, llama.cpp, rules.")
    protocol: Protocol
    remote_model: Optional[str] = Field(None, description="Model name sent on the wire; defaults to id.")
    endpoint: Optional[str] = Field(None, description="Base URL, e.g. https://api.openai.com/v1. None for managed local servers.")
    api_key_env: Optional[str] = Field(None, description="Environment variable holding the key; the model is unavailable while it is unset.")
    callable: Optional[str] = Field(None, description="'module:function' for protocol 'python' models.")
    local_server: Optional[LocalServerSpec] = None
    structured_output: StructuredOutputDialect = StructuredOutputDialect.JSON_SCHEMA
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens.")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens.")
    compute_usd_per_hour: float = Field(0.0, ge=0, description="For on-prem models: the machine's cost, charged on measured compute time.")
    prompt_tokens_per_s: Optional[float] = Field(None, gt=0, description="Throughput, for estimating on-prem compute time before a call.")
    output_tokens_per_s: Optional[float] = Field(None, gt=0)
    context_window: int = Field(gt=0)
    residency: Residency
    classifications: list[DataClassification] = Field(description="Data classifications this model may see.")
    tier: int = Field(ge=0, le=4, description="Capability tier: 1 simple layouts, 2 moderate, 3 hard, 4 frontier.")
    tasks: Optional[list[str]] = Field(None, description="Tasks it can serve; None means any.")
    inline_system_prompt: bool = Field(False, description="The chat template has no system role (Gemma): send instructions at the top of the user turn.")
    max_list_items: Optional[int] = Field(None, ge=0, description="Cap on every list in the output schema, for small models that loop on lists.")
    gpu: Optional[Literal["preferred", "required"]] = Field(
        None, description="On-prem models: runs faster on a GPU (preferred) or only on one (required); see resources.placement.")
    min_gpu_memory_gb: float = Field(0.0, ge=0, description="GPU memory the model needs when it runs on a GPU.")
    # Per-endpoint limits (resources.reliability.RateLimiter), shared by every model on the same endpoint.
    max_concurrency: Optional[int] = Field(None, gt=0, description="Calls in flight at once to this endpoint; None: the gateway's default.")
    requests_per_minute: Optional[float] = Field(None, gt=0, description="The provider's request rate limit for this key, if known.")
    tokens_per_minute: Optional[float] = Field(None, gt=0, description="The provider's token rate limit (input + output) for this key.")
    enabled: bool = True

    @model_validator(mode="after")
    def _protocol_needs(self) -> "ModelSpec":
        if self.protocol is Protocol.PYTHON and not self.callable:
            raise ValueError(f"model {self.id!r}: protocol 'python' needs 'callable: module:function'")
        if self.protocol is not Protocol.PYTHON and not (self.endpoint or self.local_server):
            raise ValueError(f"model {self.id!r}: protocol {self.protocol.value!r} needs an 'endpoint' or a 'local_server'")
        if self.residency is Residency.CLOUD and DataClassification.RESTRICTED in self.classifications:
            raise ValueError(f"model {self.id!r}: a cloud model may not be cleared for restricted data")
        return self

    @property
    def wire_model(self) -> str:
        return self.remote_model or self.id

    def may_see(self, classification: DataClassification) -> bool:
        return classification in self.classifications

    def serves(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def token_cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok) / 1_000_000

    def compute_cost(self, seconds: float) -> float:
        return seconds * self.compute_usd_per_hour / 3600.0

    def call_cost(self, input_tokens: int, output_tokens: int, seconds: float) -> float:
        """Exact cost of a finished call: tokens at list price plus on-prem compute time."""
        return self.token_cost(input_tokens, output_tokens) + self.compute_cost(seconds)


class CatalogError(SettingError):
    """The catalog file is missing, malformed or inconsistent."""


class ModelCatalog(BaseModel):
    models: list[ModelSpec]

    @model_validator(mode="after")
    def _unique_ids(self) -> "ModelCatalog":
        seen: set[str] = set()
        for spec in self.models:
            if spec.id in seen:
                raise ValueError(f"model id {spec.id!r} appears twice in the catalog")
            seen.add(spec.id)
        return self

    def get(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        known = ", ".join(s.id for s in self.models)
        raise KeyError(f"no model {model_id!r} in the catalog (known: {known})")

    def __iter__(self):  # type: ignore[override]
        return iter(self.models)

    @classmethod
    def load(cls, user_path: "str | Path | None" = None) -> "ModelCatalog":
        """The shipped catalog, with the user's file (if any) merged over it by id."""
        entries = {e["id"]: (e, "the shipped catalog") for e in _read_entries(_shipped_catalog_text(), "the shipped catalog")}
        if user_path:
            path = Path(user_path).expanduser()
            if not path.is_file():
                raise CatalogError(f"catalog file {path} does not exist")
            mentioned: set[str] = set()
            for entry in _read_entries(path.read_text(), str(path)):
                if entry["id"] in mentioned:  # merged silently, the second would quietly win over the first
                    raise CatalogError(f"{path}: model id {entry['id']!r} appears twice")
                mentioned.add(entry["id"])
                entries[entry["id"]] = ({**entries.get(entry["id"], ({}, ""))[0], **entry}, str(path))
        models = []
        for model_id, (entry, origin) in entries.items():
            enabled = entry.get("enabled", True)
            if not isinstance(enabled, bool):  # "false" in quotes is a true string: the model would stay routed to
                raise CatalogError(f"{origin}: model {model_id!r}: enabled must be true or false, not {enabled!r}")
            if not enabled:
                continue
            try:
                models.append(ModelSpec.model_validate(entry))
            except ValidationError as exc:  # named by the model and the file it came from, not a merged list's index
                raise CatalogError(f"{origin}: model {model_id!r} is invalid: {describe_validation_error(exc)}") from exc
        try:
            return cls(models=models)
        except ValidationError as exc:
            raise CatalogError(f"invalid model catalog: {exc}") from exc


def _shipped_catalog_text() -> str:
    return importlib_resources.files("resources").joinpath("catalog.yaml").read_text()


def _read_entries(text: str, origin: str) -> list[dict]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin} is not valid YAML: {exc}") from exc
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and "id" in m for m in models):
        raise CatalogError(f"{origin} must hold 'models:', a list of entries each with an 'id'")
    return models
