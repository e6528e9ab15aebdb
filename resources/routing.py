"""The routing resource: for each item, which model, and why.

First policy (rules): drop the models that may not or cannot serve the item (wrong task,
not cleared for the data's classification, unavailable, context too small), then choose
the cheapest one whose capability tier covers the item's estimated complexity. Every
decision is a value carrying its reasons, recorded in the ledger with the call.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import BaseModel, Field

from resources.catalog import ModelCatalog, ModelSpec, Residency
from resources.classification import DataClassification
from resources.complexity import ComplexityEstimate, estimate_complexity, estimate_tokens
from resources.model_gateway import Availability


class RoutingItem(BaseModel):
    item_id: str
    task: str
    text: str
    classification: DataClassification
    instructions_tokens: int = 0
    expected_output_tokens: int = 300


class RoutingDecision(BaseModel):
    item_id: str
    model_id: Optional[str] = Field(description="None when no model may serve the item.")
    complexity: float
    required_tier: int
    classification: DataClassification
    estimated_cost_usd: Optional[float] = None
    reasons: list[str]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def route(self) -> str:
        """A short label for counting items per route in metadata."""
        return f"tier{self.required_tier}->{self.model_id or 'none'}"


def estimated_cost(spec: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    """Price before the call: list price on estimated tokens, plus estimated compute time on-prem."""
    seconds = 0.0
    if spec.compute_usd_per_hour:
        seconds = input_tokens / (spec.prompt_tokens_per_s or 500.0) + output_tokens / (spec.output_tokens_per_s or 20.0)
    return spec.call_cost(input_tokens, output_tokens, seconds)


def required_tier(score: float, thresholds: list[float]) -> int:
    """Tier 1 below the first threshold, tier 2 below the second, and so on."""
    return 1 + sum(1 for t in thresholds if score >= t)


class RulesPolicy:
    def __init__(self, tier_thresholds: list[float], allow_below_tier: bool = True):
        if sorted(tier_thresholds) != list(tier_thresholds):
            raise ValueError(f"tier_thresholds must increase: {tier_thresholds}")
        self.tier_thresholds = tier_thresholds
        self.allow_below_tier = allow_below_tier

    def decide(
        self,
        item: RoutingItem,
        catalog: ModelCatalog,
        availability: dict[str, Availability],
        complexity: Optional[ComplexityEstimate] = None,
    ) -> RoutingDecision:
        complexity = complexity or estimate_complexity(item.text)
        tier = required_tier(complexity.score, self.tier_thresholds)
        input_tokens = estimate_tokens(item.text) + item.instructions_tokens
        reasons: list[str] = []

        serving = [s for s in catalog if s.serves(item.task)]
        cleared = [s for s in serving if s.may_see(item.classification)]
        excluded = [s for s in serving if not s.may_see(item.classification)]
        if excluded:
            cloud = all(s.residency is Residency.CLOUD for s in excluded)
            what = "cloud models" if cloud else "models not cleared"
            reasons.append(f"{item.classification.value} data: {what} excluded ({', '.join(s.id for s in excluded)})")
        unavailable = [(s, availability[s.id]) for s in cleared if not availability[s.id].available]
        if unavailable:
            reasons.append("unavailable: " + ", ".join(f"{s.id} ({a.reason})" for s, a in unavailable))
        usable = [s for s in cleared if availability[s.id].available]
        too_small = [s for s in usable if s.context_window < input_tokens + item.expected_output_tokens]
        if too_small:
            reasons.append(f"~{input_tokens} input tokens exceed the context of " + ", ".join(s.id for s in too_small))
        usable = [s for s in usable if s not in too_small]

        reasons.append(f"complexity {complexity.score:.2f} ({complexity.describe()}) needs tier {tier}")
        costs = {s.id: estimated_cost(s, input_tokens, item.expected_output_tokens) for s in usable}
        covering = [s for s in usable if s.tier >= tier]
        if covering:
            chosen = min(covering, key=lambda s: (costs[s.id], s.tier, s.id))
        elif usable and self.allow_below_tier:
            best_tier = max(s.tier for s in usable)
            chosen = min((s for s in usable if s.tier == best_tier), key=lambda s: (costs[s.id], s.id))
            reasons.append(f"no usable model reaches tier {tier}; best available is tier {best_tier}")
        else:
            reasons.append("no model may serve this item")
            return RoutingDecision(
                item_id=item.item_id, model_id=None, complexity=complexity.score, required_tier=tier,
                classification=item.classification, reasons=reasons,
            )
        cost = costs[chosen.id]
        reasons.append(f"chose {chosen.id} (tier {chosen.tier}, {chosen.residency.value}), ${cost:.6f} est.")
        return RoutingDecision(
            item_id=item.item_id, model_id=chosen.id, complexity=complexity.score, required_tier=tier,
            classification=item.classification, estimated_cost_usd=cost, reasons=reasons,
        )


class RoutingResource(dg.ConfigurableResource):
    """Picks a model per item. ``tier_thresholds`` map complexity scores to required capability tiers."""

    policy: str = "rules"
    tier_thresholds: list[float] = [0.25, 0.6, 0.8]
    allow_below_tier: bool = True

    def build_policy(self) -> RulesPolicy:
        if self.policy != "rules":
            raise ValueError(f"unknown routing policy {self.policy!r}; available: rules")
        return RulesPolicy(self.tier_thresholds, self.allow_below_tier)
