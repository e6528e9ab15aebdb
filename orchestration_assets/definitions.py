"""Everything wired: the invoice template's assets (and its chain for long invoices), checks, jobs, schedule,
the budget sensor, resources.

Hosted-model keys are read with ``EnvVar`` (never stored in run config); a key that is
not set leaves its models unavailable, which the router reports per item.
"""

from __future__ import annotations

import os

import dagster as dg

from orchestration_assets import finops_assets, routing_assets
from orchestration_assets.invoices import assets as invoice_assets
from orchestration_assets.invoices import chain as invoice_chain
from orchestration_assets.invoices.checks import extraction_compliance, extraction_no_pii, extraction_quality
from orchestration_assets.invoices.quality import InvoiceQualityPolicy
from orchestration_assets.invoices.schedules import invoice_batch_job, invoice_daily_schedule
from resources.audit_log import AuditLogResource
from resources.budget import BudgetResource
from resources.environment import env_amount, env_choice
from resources.ledger import LedgerResource
from resources.model_gateway import ModelGatewayResource
from resources.routing import POLICIES as ROUTING_POLICIES
from resources.routing import RoutingResource
from resources.sensitive_io import SensitiveIOManager
from resources.tracing import TracingResource
from resources.warehouse import DuckDBWarehouseResource
from sensors.budget_sensor import BUDGET_ASSETS, ai_budget_sensor
from sensors.compliance_sensor import COMPLIANCE_ASSETS, ai_compliance_sensor


def _key(name: str):
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict:
    return {
        "models": ModelGatewayResource(
            catalog_path=os.environ.get("AI_ORCH_CATALOG") or None,
            openai_api_key=_key("OPENAI_API_KEY"),
            anthropic_api_key=_key("ANTHROPIC_API_KEY"),
        ),
        "routing": RoutingResource(policy=env_choice("AI_ORCH_ROUTING_POLICY", ROUTING_POLICIES, "rules")),
        "ledger": LedgerResource(),
        "audit": AuditLogResource(),
        "tracing": TracingResource(),
        "warehouse": DuckDBWarehouseResource(),
        "quality": InvoiceQualityPolicy(),
        # Zero persistence: raw inputs the data policy forbids persisting stay in the run's memory.
        "io_manager": SensitiveIOManager(),
        "budget": BudgetResource(
            department=os.environ.get("AI_ORCH_DEPARTMENT", "operations"),
            daily_cap_usd=env_amount("AI_ORCH_DAILY_BUDGET_USD"),
            alert_webhook_url=_key("AI_ORCH_ALERT_WEBHOOK_URL"),
        ),
    }


def build_definitions(resources: "dict | None" = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules([invoice_assets, invoice_chain, routing_assets, finops_assets]),
                *BUDGET_ASSETS, *COMPLIANCE_ASSETS],
        asset_checks=[extraction_quality, extraction_compliance, extraction_no_pii],
        jobs=[invoice_batch_job, invoice_chain.invoice_chain_job],
        schedules=[invoice_daily_schedule],
        sensors=[ai_budget_sensor, ai_compliance_sensor],
        resources={**default_resources(), **(resources or {})},
        # In-process: memory-only values (restricted raw inputs) must reach the next step.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
