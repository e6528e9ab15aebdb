"""The routing resource: for each item, which model, and why.

Every policy first drops the models that may not or cannot serve the item (wrong task,
not cleared for the data's classification, unavailable, context too small): these are
hard constraints, never traded off. Then:

* rules: the cheapest model whose capability tier covers the item's estimated complexity;
* learned: the cheapest model whose success, predicted from recorded outcomes, clears a
  target (the fitted ``routing_policy`` asset);
* cascade: the cheapest model first, escalating along a chain when the item check fails.

Every decision is a value carrying its reasons, recorded in the ledger with the call.
"""

from __future__ import annotations

import bisect
import gc
from dataclasses import dataclass, field
from typing import Optional, Sequence

import dagster as dg
from pydantic import BaseModel, Field

from resources.catalog import ModelCatalog, ModelSpec, Residency
from resources.classification import DataClassification
from resources.data_policy import active_policy
from resources.complexity import (
    ComplexityEstimate, context_tokens, context_tokens_at_most, estimate_complexity, estimate_tokens,
)
from resources.learned_policy import LearnedPolicy
from resources.model_gateway import Availability
from resources.policy_store import PolicyStore
from resources.routing_features import FeatureSpace


class RoutingItem(BaseModel):
    item_id: str
    task: str
    text: str
    classification: DataClassification
    attributes: dict[str, str] = Field(default_factory=dict, description="Declared signals, e.g. domain.")
    instructions_tokens: int = 0
    expected_output_tokens: int = 300


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """One item's route and why. A plain value (no validation): thousands are made per second."""

    item_id: str
    model_id: Optional[str]  # None when no model may serve the item
    complexity: float
    required_tier: int
    classification: DataClassification
    estimated_cost_usd: Optional[float]
    reasons: list[str]
    policy: str = "rules"
    escalation: list[str] = field(default_factory=list)  # cascade: the next models, in order
    features: Optional[dict[int, float]] = None  # what the learned policy saw (hashed, no text)

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
    return 1 + bisect.bisect_right(thresholds, score)


@dataclass
class Eligibility:
    """The models that may and can serve an item, their estimated costs, and why others were dropped."""

    usable: list[ModelSpec]
    costs: dict[str, float]
    complexity: ComplexityEstimate
    tier: int
    reasons: list[str]


@dataclass(frozen=True)
class CandidatePool:
    """The models cleared and available for a (task, classification): the same for every item of a batch."""

    usable: tuple[ModelSpec, ...]
    reasons: tuple[str, ...]


def candidate_pool(task: str, classification: DataClassification, catalog: ModelCatalog,
                   availability: dict[str, Availability]) -> CandidatePool:
    reasons: list[str] = []
    policy = active_policy()
    serving = [s for s in catalog if s.serves(task)]
    cleared = [s for s in serving if s.may_see(classification) and policy.permits(s, classification) is None]
    excluded = [s for s in serving if s not in cleared]
    if excluded:
        cloud = all(s.residency is Residency.CLOUD for s in excluded)
        what = "cloud models" if cloud else "models not cleared"
        reasons.append(f"{classification.value} data: {what} excluded by catalog clearance and data policy "
                       f"({', '.join(s.id for s in excluded)})")
    unavailable = [(s, availability[s.id]) for s in cleared if not availability[s.id].available]
    if unavailable:
        reasons.append("unavailable: " + ", ".join(f"{s.id} ({a.reason})" for s, a in unavailable))
    return CandidatePool(tuple(s for s in cleared if availability[s.id].available), tuple(reasons))


@dataclass(frozen=True)
class _PricedPool:
    """A candidate pool priced for batches: each model's estimated cost as a line in input tokens.

    ``estimated_cost`` is linear in input tokens for a fixed output size, so ranking models
    for an item needs one multiply-add per model; the chosen model's cost is then computed
    exactly by ``estimated_cost``, so decisions equal ``decide``'s.
    """

    pool: CandidatePool
    lines: tuple[tuple[ModelSpec, float, float, int, str], ...]  # (model, cost at 0 tokens, per token, tier, id)
    smallest_context: int
    catalog: ModelCatalog
    availability: dict
    labels: dict  # model id → "(tier N, residency)", as decisions quote it

    @classmethod
    def of(cls, pool: CandidatePool, output_tokens: int, catalog: ModelCatalog, availability: dict) -> "_PricedPool":
        lines = []
        for spec in pool.usable:
            fixed = estimated_cost(spec, 0, output_tokens)
            lines.append((spec, fixed, estimated_cost(spec, 1_000_000, output_tokens) / 1_000_000 - fixed / 1_000_000,
                          spec.tier, spec.id))
        smallest = min((s.context_window for s in pool.usable), default=0)
        labels = {s.id: f"(tier {s.tier}, {s.residency.value})" for s in pool.usable}
        return cls(pool, tuple(lines), smallest, catalog, availability, labels)


class _PoolCache:
    """Candidate pools keyed by task, classification and the availability snapshot (a few µs per item saved)."""

    def __init__(self, size: int = 256):
        self.size = size
        self.pools: dict[tuple, CandidatePool] = {}

    def get(self, item: "RoutingItem", catalog: ModelCatalog, availability: dict[str, Availability]) -> CandidatePool:
        key = (item.task, item.classification, id(catalog), tuple((k, a.available, a.reason) for k, a in availability.items()))
        pool = self.pools.get(key)
        if pool is None:
            if len(self.pools) >= self.size:
                self.pools.clear()
            pool = self.pools[key] = candidate_pool(item.task, item.classification, catalog, availability)
        return pool


def eligible_models(
    item: RoutingItem,
    catalog: ModelCatalog,
    availability: dict[str, Availability],
    tier_thresholds: list[float],
    complexity: Optional[ComplexityEstimate] = None,
    max_cost_usd: Optional[float] = None,
    pool: Optional[CandidatePool] = None,
) -> Eligibility:
    """Hard constraints every policy obeys: task, classification, availability, context window, cost cap.

    ``max_cost_usd`` is how a budget forces cheaper routes: models whose estimated cost for
    the item exceeds it are dropped, and the decision says so.
    """
    complexity = complexity or estimate_complexity(item.text)
    tier = required_tier(complexity.score, tier_thresholds)
    input_tokens = estimate_tokens(item.text) + item.instructions_tokens
    pool = pool or candidate_pool(item.task, item.classification, catalog, availability)
    reasons = list(pool.reasons)
    smallest = min((s.context_window for s in pool.usable), default=0)
    window_tokens = context_tokens_at_most(item.text) + item.instructions_tokens
    if window_tokens + item.expected_output_tokens > smallest:  # counted (cautiously: a call over the window fails)
        window_tokens = context_tokens(item.text) + item.instructions_tokens
    needed = window_tokens + item.expected_output_tokens
    usable = [s for s in pool.usable if s.context_window >= needed]
    if len(usable) < len(pool.usable):
        reasons.append(f"up to {window_tokens} input + {item.expected_output_tokens} output tokens exceed the context window of "
                       + ", ".join(f"{s.id} ({s.context_window:,} tokens)" for s in pool.usable if s.context_window < needed))
    costs = {s.id: estimated_cost(s, input_tokens, item.expected_output_tokens) for s in usable}
    if max_cost_usd is not None:
        over = [s for s in usable if costs[s.id] > max_cost_usd]
        if over:
            reasons.append(f"cost cap ${max_cost_usd:g}/item: " + ", ".join(f"{s.id} (${costs[s.id]:.6f})" for s in over) + " excluded")
            usable = [s for s in usable if s not in over]
    return Eligibility(usable, costs, complexity, tier, reasons)


def _decision(item: RoutingItem, found: Eligibility, chosen: Optional[ModelSpec], reasons: list[str], policy: str,
              escalation: Optional[list[str]] = None, features: Optional[dict[int, float]] = None) -> RoutingDecision:
    if chosen is None:
        reasons = [*reasons, "no model may serve this item"]
    else:
        reasons = [*reasons, f"chose {chosen.id} (tier {chosen.tier}, {chosen.residency.value}), ${found.costs[chosen.id]:.6f} est."]
    return RoutingDecision(
        item_id=item.item_id, model_id=chosen.id if chosen else None, complexity=found.complexity.score,
        required_tier=found.tier, classification=item.classification,
        estimated_cost_usd=found.costs[chosen.id] if chosen else None, reasons=reasons, policy=policy,
        escalation=escalation or [], features=features,
    )


class RulesPolicy:
    """The cheapest usable model whose capability tier covers the item's estimated complexity."""

    name = "rules"

    def __init__(self, tier_thresholds: list[float], allow_below_tier: bool = True, max_item_cost_usd: Optional[float] = None):
        if sorted(tier_thresholds) != list(tier_thresholds):
            raise ValueError(f"tier_thresholds must increase: {tier_thresholds}")
        if max_item_cost_usd is not None and max_item_cost_usd < 0:
            raise ValueError(f"max_item_cost_usd must be non-negative, got {max_item_cost_usd}")
        self.tier_thresholds = tier_thresholds
        self.allow_below_tier = allow_below_tier
        self.max_item_cost_usd = max_item_cost_usd
        self._pools = _PoolCache()

    def eligible(self, item: RoutingItem, catalog: ModelCatalog, availability: dict[str, Availability],
                 complexity: Optional[ComplexityEstimate] = None) -> Eligibility:
        pool = self._pools.get(item, catalog, availability)
        return eligible_models(item, catalog, availability, self.tier_thresholds, complexity, self.max_item_cost_usd, pool)

    def choose(self, found: Eligibility) -> tuple[Optional[ModelSpec], list[str]]:
        reasons = [f"complexity {found.complexity.score:.2f} ({found.complexity.describe()}) needs tier {found.tier}"]
        covering = [s for s in found.usable if s.tier >= found.tier]
        if covering:
            return min(covering, key=lambda s: (found.costs[s.id], s.tier, s.id)), reasons
        if found.usable and self.allow_below_tier:
            best_tier = max(s.tier for s in found.usable)
            chosen = min((s for s in found.usable if s.tier == best_tier), key=lambda s: (found.costs[s.id], s.id))
            return chosen, [*reasons, f"no usable model reaches tier {found.tier}; best available is tier {best_tier}"]
        return None, reasons

    def decide_many(self, items: Sequence[RoutingItem], catalog: ModelCatalog, availability: dict[str, Availability],
                    complexities: Optional[Sequence[ComplexityEstimate]] = None) -> list[RoutingDecision]:
        """Decisions for a whole batch under one availability snapshot (estimates, replays, planning).

        The same decisions as ``decide`` item by item (a test holds them equal), made faster:
        each (task, classification, output size) pool is priced once as cost lines in the
        item's input tokens, so an item costs a comparison per model, not a pricing call.
        """
        plans: dict[tuple, _PricedPool] = {}
        decisions = []
        thresholds = self.tier_thresholds
        # A batch allocates hundreds of thousands of small objects and frees none: the cyclic
        # garbage collector would rescan them all again and again for nothing.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._decide_batch(items, catalog, availability, complexities, plans, decisions, thresholds)
        finally:
            if collecting:
                gc.enable()

    def _decide_batch(self, items: Sequence[RoutingItem], catalog: ModelCatalog, availability: dict[str, Availability],
                      complexities: Optional[Sequence[ComplexityEstimate]], plans: dict, decisions: list,
                      thresholds: list[float]) -> list[RoutingDecision]:
        for index, item in enumerate(items):
            key = (item.task, item.classification, item.expected_output_tokens)
            plan = plans.get(key)
            if plan is None:
                plan = plans[key] = _PricedPool.of(
                    candidate_pool(item.task, item.classification, catalog, availability), item.expected_output_tokens,
                    catalog, availability)
            complexity = complexities[index] if complexities is not None else estimate_complexity(item.text)
            decisions.append(self._decide_priced(item, plan, complexity, thresholds))
        return decisions

    def _decide_priced(self, item: RoutingItem, plan: "_PricedPool", complexity: ComplexityEstimate,
                       thresholds: list[float]) -> RoutingDecision:
        tier = 1 + bisect.bisect_right(thresholds, complexity.score)
        input_tokens = max(1, -(-len(item.text) // 4)) + item.instructions_tokens
        lines = plan.lines
        reasons = list(plan.pool.reasons)
        if context_tokens_at_most(item.text) + item.instructions_tokens + item.expected_output_tokens > plan.smallest_context:
            window_tokens = context_tokens(item.text) + item.instructions_tokens
            needed = window_tokens + item.expected_output_tokens
            fits = tuple(line for line in lines if line[0].context_window >= needed)
            if len(fits) < len(lines):
                reasons.append(f"up to {window_tokens} input + {item.expected_output_tokens} output tokens exceed the context window of "
                               + ", ".join(f"{line[0].id} ({line[0].context_window:,} tokens)" for line in lines
                                           if line[0].context_window < needed))
            lines = fits
        if self.max_item_cost_usd is not None or not lines:
            # Rare paths (a cost cap, nothing usable): the general function, same result.
            found = eligible_models(item, plan.catalog, plan.availability, thresholds, complexity,
                                    self.max_item_cost_usd, plan.pool)
            chosen, why = self.choose(found)
            return _decision(item, found, chosen, found.reasons + why, self.name)
        score = complexity.score
        reasons.append(f"complexity {score:.2f} ({complexity.describe()}) needs tier {tier}")
        best = None
        best_rank = None
        for spec, fixed, per_token, spec_tier, spec_id in lines:
            if spec_tier >= tier:
                rank = (fixed + per_token * input_tokens, spec_tier, spec_id)
                if best_rank is None or rank < best_rank:
                    best_rank, best = rank, spec
        if best is None:
            if not self.allow_below_tier:
                return RoutingDecision(item.item_id, None, score, tier, item.classification, None,
                                       [*reasons, "no model may serve this item"], self.name)
            top = max(line[3] for line in lines)
            for spec, fixed, per_token, spec_tier, spec_id in lines:
                if spec_tier == top:
                    rank = (fixed + per_token * input_tokens, spec_id)
                    if best_rank is None or rank < best_rank:
                        best_rank, best = rank, spec
            reasons.append(f"no usable model reaches tier {tier}; best available is tier {top}")
        cost = estimated_cost(best, input_tokens, item.expected_output_tokens)
        reasons.append(f"chose {best.id} {plan.labels[best.id]}, ${cost:.6f} est.")
        return RoutingDecision(item.item_id, best.id, score, tier, item.classification, cost, reasons, self.name)

    def decide(self, item: RoutingItem, catalog: ModelCatalog, availability: dict[str, Availability],
               complexity: Optional[ComplexityEstimate] = None) -> RoutingDecision:
        found = self.eligible(item, catalog, availability, complexity)
        chosen, reasons = self.choose(found)
        return _decision(item, found, chosen, found.reasons + reasons, self.name)


def item_features(item: RoutingItem, complexity: ComplexityEstimate, space: Optional[FeatureSpace] = None) -> dict[int, float]:
    """The one way an item becomes learned-routing features, at decision time and when recorded."""
    return (space or FeatureSpace()).sketch(*feature_inputs(item, complexity))


def feature_inputs(item: RoutingItem, complexity: ComplexityEstimate) -> tuple[str, dict[str, object], dict[str, float]]:
    """What ``item_features`` sketches, as plain values: the text, the task and declared attributes, the signals."""
    return item.text, {"task": item.task, **item.attributes}, complexity.signals


class LearnedRoutingPolicy:
    """Predicted success per model from recorded outcomes; the cheapest one predicted to clear ``target``.

    Models the fitted policy has never seen (a new catalog entry) get no estimate: while one
    is eligible and no model with outcomes is predicted to clear ``target``, the rules decide,
    so it gets tried. With no fitted policy at all, the rules decide and the decision says so.
    """

    name = "learned"

    def __init__(self, fitted: Optional[tuple[str, LearnedPolicy]], rules: RulesPolicy, target: float = 0.8,
                 space: Optional[FeatureSpace] = None):
        self.version, self.policy = fitted if fitted else (None, None)
        self.rules = rules
        self.target = target
        self.space = self.policy.space if self.policy else (space or FeatureSpace())

    def decide(self, item: RoutingItem, catalog: ModelCatalog, availability: dict[str, Availability],
               complexity: Optional[ComplexityEstimate] = None) -> RoutingDecision:
        found = self.rules.eligible(item, catalog, availability, complexity)
        features = item_features(item, found.complexity, self.space)
        known = {s.id: found.costs[s.id] for s in found.usable if self.policy and s.id in self.policy.estimators}
        if not known:
            chosen, reasons = self.rules.choose(found)
            why = "no routing_policy fitted yet" if self.policy is None else "no eligible model has recorded outcomes"
            return _decision(item, found, chosen, [*found.reasons, f"{why}: rules decide", *reasons], self.name, features=features)
        choice = self.policy.choose(self.policy.predict(features), known, mode="target", target=self.target)
        untried = [s.id for s in found.usable if s.id not in known]
        if untried and choice.success.get(choice.model_id, 0.0) < self.target:
            # No model with outcomes is predicted to clear the target: the rules decide, so models without
            # outcomes get tried and recorded. Picking the likeliest known model here once locked a batch onto
            # a model that had only failed, and the others never got an outcome to be learned from.
            chosen, rule_reasons = self.rules.choose(found)
            return _decision(item, found, chosen, [*found.reasons, f"learned policy {self.version}", *choice.reasons,
                                                   f"none reaches {self.target:.2f} and {', '.join(untried)} untried: "
                                                   "rules decide", *rule_reasons], self.name, features=features)
        chosen = next(s for s in found.usable if s.id == choice.model_id)
        reasons = [*found.reasons, f"learned policy {self.version}", *choice.reasons]
        return _decision(item, found, chosen, reasons, self.name, features=features)


class CascadePolicy:
    """Cheapest first, then escalate (FrugalGPT): the chain is every usable model by rising cost.

    The task's item check judges each answer; a failed check escalates to the next model
    (see ``run_ai_task``). ``max_steps`` bounds the chain, so one hard item cannot call
    every model in the catalog.
    """

    name = "cascade"

    def __init__(self, rules: RulesPolicy, max_steps: int = 3):
        if max_steps < 1:
            raise ValueError(f"cascade max_steps must be at least 1, got {max_steps}")
        self.rules = rules
        self.max_steps = max_steps

    def decide(self, item: RoutingItem, catalog: ModelCatalog, availability: dict[str, Availability],
               complexity: Optional[ComplexityEstimate] = None) -> RoutingDecision:
        found = self.rules.eligible(item, catalog, availability, complexity)
        chain = sorted(found.usable, key=lambda s: (found.costs[s.id], s.tier, s.id))[: self.max_steps]
        if not chain:
            return _decision(item, found, None, found.reasons, self.name)
        reasons = [*found.reasons, "cascade: " + " → ".join(s.id for s in chain) + ", escalating when the item check fails"]
        return _decision(item, found, chain[0], reasons, self.name, escalation=[s.id for s in chain[1:]])


POLICIES = ("rules", "learned", "cascade")


class RoutingResource(dg.ConfigurableResource):
    """Picks a model per item with the configured ``policy``: ``rules``, ``learned`` or ``cascade``.

    ``tier_thresholds`` map complexity scores to required capability tiers (rules, and the
    fallback of the others). ``learned_target``: the predicted success the learned policy
    asks of the cheapest model it picks. ``policy_dir``: where ``routing_policy`` stores its
    versions (default beside the ledger). ``cascade_max_steps``: the longest escalation chain.
    """

    policy: str = "rules"
    tier_thresholds: list[float] = [0.25, 0.6, 0.8]
    allow_below_tier: bool = True
    learned_target: float = 0.8
    policy_dir: Optional[str] = None
    cascade_max_steps: int = 3
    task_policies: dict[str, str] = {}
    max_item_cost_usd: Optional[float] = None

    def policy_for(self, task: Optional[str] = None) -> str:
        """The configured policy for ``task``: its entry in ``task_policies``, else ``policy``."""
        return self.task_policies.get(task, self.policy) if task else self.policy

    def build_policy(self, task: Optional[str] = None) -> "RulesPolicy | LearnedRoutingPolicy | CascadePolicy":
        rules = RulesPolicy(self.tier_thresholds, self.allow_below_tier, self.max_item_cost_usd)
        name = self.policy_for(task)
        if name == "rules":
            return rules
        if name == "learned":
            return LearnedRoutingPolicy(PolicyStore(self.policy_dir).load(), rules, self.learned_target)
        if name == "cascade":
            return CascadePolicy(rules, self.cascade_max_steps)
        raise ValueError(f"unknown routing policy {name!r}; available: {', '.join(POLICIES)}")
