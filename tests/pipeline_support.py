"""Resources and catalogs for running the invoice graph in tests on real files under tmp_path."""

from pathlib import Path
from typing import Optional

from orchestration_assets.definitions import default_resources
from resources.audit_log import AuditLogResource
from resources.ledger import LedgerResource
from resources.tracing import TracingResource
from resources.model_gateway import ModelGatewayResource
from resources.warehouse import DuckDBWarehouseResource

# Offline and fast: only the rules extractor (the local LLM is covered by its own tests).
RULES_ONLY = """
models:
  - id: local-gemma3-270m
    enabled: false
"""

# The rules entry pointed at a model that returns inconsistent totals.
BAD_RULES = RULES_ONLY + """
  - id: rules-invoice
    callable: "tests.bad_models:inflated_totals"
"""


def write_catalog(tmp_path: Path, text: str) -> str:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    return str(path)


def isolated_resources(tmp_path: Path, catalog_text: Optional[str] = RULES_ONLY) -> dict:
    resources = default_resources()
    resources.update(
        models=ModelGatewayResource(catalog_path=write_catalog(tmp_path, catalog_text) if catalog_text else None),
        ledger=LedgerResource(path=str(tmp_path / "ledger.duckdb")),
        audit=AuditLogResource(path=str(tmp_path / "audit.duckdb")),
        tracing=TracingResource(path=str(tmp_path / "traces.duckdb")),
        warehouse=DuckDBWarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
    )
    return resources
