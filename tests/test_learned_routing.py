"""Learned routing and the cascade: fitted on outcomes, they choose differently than the rules."""

import json

import dagster as dg
import numpy as np
import pytest

from orchestration_assets.invoices.assets import approved_invoices, invoice_extractions, raw_invoices
from orchestration_assets.invoices.checks import extraction_compliance, extraction_quality
from orchestration_assets.routing_assets import routing_outcomes, routing_policy
from resources.catalog import ModelCatalog
from resources.classification import DataClassification
from resources.learned_policy import LearnedPolicy
from resources.ledger import DuckDBLedger
from resources.model_gateway import Availability
from resources.policy_store import PolicyStore
from resources.routing import LearnedRoutingPolicy, RoutingItem, RoutingResource, RulesPolicy
from resources.routing_features import FeatureSpace
from resources.routing_metrics import routing_curve
from tests.pipeline_support import isolated_resources

DAY = "2026-03-02"
SPACE = FeatureSpace(bits=14)
_RNG = np.random.default_rng(7)
_EASY = ["coffee beans", "office paper", "desk lamp", "printer toner", "water bottles"]
_HARD = ["derivative pricing swap", "arbitration clause indemnity", "tensor eigenvalue proof"]


def _texts(kind: str, n: int) -> list[str]:
    words = _EASY if kind == "easy" else _HARD
    return [f"order {i}: {words[i % len(words)]} qty {int(_RNG.integers(1, 9))}" for i in range(n)]


def _fitted() -> LearnedPolicy:
    easy, hard = _texts("easy", 60), _texts("hard", 60)
    sketches = [SPACE.sketch(t) for t in easy + hard]
    cheap = [1.0] * 60 + [0.0] * 60  # the cheap model solves easy items only
    strong = [1.0] * 120
    return LearnedPolicy.fit(sketches, {"cheap": cheap, "strong": strong}, space=SPACE)


def test_fitted_policy_predicts_who_succeeds_on_unseen_items():
    policy = _fitted()
    easy = policy.predict(SPACE.sketch("order 99: coffee beans qty 3"))
    hard = policy.predict(SPACE.sketch("order 98: arbitration clause indemnity qty 2"))
    assert easy["cheap"] > 0.7 and hard["cheap"] < 0.3
    costs = {"cheap": 0.001, "strong": 0.02}
    assert policy.choose(easy, costs, target=0.8).model_id == "cheap"
    assert policy.choose(hard, costs, target=0.8).model_id == "strong"
    # utility mode: when success is worth less than the price gap, the cheap model wins even on hard items
    assert policy.choose(hard, costs, mode="utility", value_per_success=0.001).model_id == "cheap"
    with pytest.raises(ValueError, match="unknown learned routing mode"):
        policy.choose(easy, costs, mode="greedy")


def test_models_with_too_few_outcomes_fall_back_to_their_success_rate():
    sketches = [SPACE.sketch(t) for t in _texts("easy", 10)]
    policy = LearnedPolicy.fit(sketches, {"m": [1.0] * 7 + [0.0] * 3, "untried": [float("nan")] * 10}, space=SPACE)
    assert policy.estimators["m"].coef is None
    assert policy.predict(SPACE.sketch("anything"))["m"] == pytest.approx(8 / 12)
    assert policy.estimators["untried"].observed == 0


def test_policy_survives_the_store_round_trip(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.load() is None
    original = _fitted()
    version = store.save(original)
    loaded_version, loaded = store.load()
    assert loaded_version == version == store.latest_version()
    probe = SPACE.sketch("order 5: tensor eigenvalue proof qty 1")
    assert loaded.predict(probe) == pytest.approx(original.predict(probe))


CATALOG = """
models:
  - id: rules-invoice
    enabled: false
  - id: local-gemma3-270m
    enabled: false
  - id: cheap
    provider: test
    protocol: python
    callable: "tests.bad_models:inflated_totals"
    structured_output: native
    context_window: 100000
    residency: on_prem
    classifications: [public, internal, confidential, restricted]
    tier: 3
    tasks: [invoice_extraction]
  - id: strong
    provider: test
    protocol: python
    callable: "orchestration_assets.invoices.rules_extractor:extract_invoice"
    structured_output: native
    context_window: 100000
    compute_usd_per_hour: 50.0
    residency: on_prem
    classifications: [public, internal, confidential, restricted]
    tier: 3
    tasks: [invoice_extraction]
"""


def test_learned_routing_chooses_differently_than_the_rules(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CATALOG)
    catalog = ModelCatalog.load(path)
    availability = {s.id: Availability(available=s.id in ("cheap", "strong"), reason="no key") for s in catalog}
    rules = RulesPolicy([0.25, 0.6, 0.8])
    item = RoutingItem(item_id="x", task="invoice_extraction", text="order 1: arbitration clause indemnity qty 2",
                       classification=DataClassification.INTERNAL)
    assert rules.decide(item, catalog, availability).model_id == "cheap"  # both tier 3: the cheaper one
    learned = LearnedRoutingPolicy(("v1", _fitted()), rules, target=0.8)
    decision = learned.decide(item, catalog, availability)
    assert decision.model_id == "strong"
    assert "learned policy v1" in decision.reason and "predicted success" in decision.reason
    unfitted = LearnedRoutingPolicy(None, rules).decide(item, catalog, availability)
    assert unfitted.model_id == "cheap" and "no routing_policy fitted yet: rules decide" in unfitted.reason


def test_a_model_that_only_failed_is_not_locked_in_while_an_eligible_model_is_untried(tmp_path):
    """Outcomes only for 'cheap', all failed: picking the likeliest known model sent every item to it, and
    'strong' never got an outcome to learn from. The rules decide until a known model clears the target."""
    path = tmp_path / "c.yaml"
    path.write_text(CATALOG)
    catalog = ModelCatalog.load(path)
    availability = {s.id: Availability(available=s.id in ("cheap", "strong"), reason="no key") for s in catalog}
    failed = LearnedPolicy.fit([SPACE.sketch(t) for t in _texts("hard", 3)], {"cheap": [0.0] * 3}, space=SPACE)
    rules = RulesPolicy([0.25, 0.6, 0.8])
    item = RoutingItem(item_id="x", task="invoice_extraction", text="order 1: arbitration clause indemnity qty 2",
                       classification=DataClassification.INTERNAL)
    decision = LearnedRoutingPolicy(("v1", failed), rules, target=0.8).decide(item, catalog, availability)
    assert decision.model_id == rules.decide(item, catalog, availability).model_id
    assert "none reaches 0.80 and strong untried: rules decide" in decision.reason
    # once every eligible model has outcomes, the likeliest one is chosen even below the target
    both = LearnedPolicy.fit([SPACE.sketch(t) for t in _texts("hard", 3)], {"cheap": [0.0] * 3, "strong": [1.0, 0.0, 0.0]},
                             space=SPACE)
    assert LearnedRoutingPolicy(("v2", both), rules, target=0.8).decide(item, catalog, availability).model_id == "strong"


def _run(instance, resources, policy: str, count: int = 8):
    resources = {**resources, "routing": RoutingResource(policy=policy, policy_dir=resources["routing"].policy_dir)}
    return dg.materialize(
        [raw_invoices, invoice_extractions, approved_invoices, extraction_quality, extraction_compliance],
        instance=instance, resources=resources, partition_key=DAY, raise_on_error=False,
        run_config={"ops": {"raw_invoices": {"config": {"count": count}}}},
    )


def test_cascade_escalates_when_the_item_check_fails_and_records_every_step(tmp_path):
    resources = isolated_resources(tmp_path, CATALOG)
    with dg.instance_for_test() as instance:
        result = _run(instance, resources, "cascade")
        assert result.success
        calls = DuckDBLedger(tmp_path / "ledger.duckdb").calls(run_id=result.run_id)
        # the cheap model's totals fail the item check on every invoice: each item costs two calls
        assert len(calls) == 16
        first, second = calls[calls["attempt"] == 1], calls[calls["attempt"] == 2]
        assert set(first["model_id"]) == {"cheap"} and not first["accepted"].any()
        assert set(second["model_id"]) == {"strong"}
        assert second["route_reason"].str.contains("escalated from cheap").all()
        assert second["route_reason"].str.contains("total_matches_line_items").all()
        assert set(calls["policy"]) == {"cascade"}
        frame = result.asset_value("invoice_extractions")
        assert set(frame["model"]) == {"strong"} and (frame["attempts"] == 2).all()
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["extraction_quality"]


def test_outcomes_feed_the_policy_asset_and_the_next_batch_uses_it(tmp_path):
    resources = isolated_resources(tmp_path, CATALOG)
    resources["routing"] = RoutingResource(policy_dir=str(tmp_path / "policies"))
    with dg.instance_for_test() as instance:
        assert _run(instance, resources, "cascade", count=30).success
        fitted = dg.materialize([routing_outcomes, routing_policy], instance=instance, resources=resources)
        metadata = fitted.asset_materializations_for_node("routing_policy")[0].metadata
        assert metadata["training_items"].value == 30
        models = metadata["models"].value
        assert models["cheap"]["prior"] < 0.1 and models["strong"]["prior"] > 0.9

        learned = _run(instance, resources, "learned")
        assert learned.success
        calls = DuckDBLedger(tmp_path / "ledger.duckdb").calls(run_id=learned.run_id)
        # the policy learned the cheap model fails this task: one call per item, straight to strong
        assert len(calls) == 8 and set(calls["model_id"]) == {"strong"}
        assert calls["route_reason"].str.contains(metadata["version"].value).all()


def test_replay_metrics_match_their_definitions():
    weak = np.array([1, 0, 0, 1, 0], dtype=float)
    strong = np.array([1, 1, 1, 1, 0], dtype=float)
    oracle = routing_curve(strong - weak, weak, strong)
    assert oracle.cpt(1.0) == pytest.approx(0.4)  # two strong calls recover the whole gap
    assert oracle.cpt(0.5) == pytest.approx(0.2)
    reverse = routing_curve(weak - strong, weak, strong)
    assert reverse.apgr() < 0.5 < oracle.apgr()


def test_sketches_are_stored_packed_and_read_back_from_either_format():
    from resources.routing_features import FeatureSpace, decode_sketch, encode_sketch

    sketch = FeatureSpace().sketch("ACME Ltd\nInvoice INV-7\nWidget 2 x 5.00\nTOTAL EUR 10.00", {"domain": "invoices"})
    packed = encode_sketch(sketch)
    assert packed.startswith("f32:") and len(packed) < len(json.dumps(sketch))
    back = decode_sketch(packed)
    assert back.keys() == sketch.keys() and all(abs(back[k] - v) < 1e-6 for k, v in sketch.items())
    assert decode_sketch(json.dumps(sketch)) == sketch  # rows written before the packed format


def test_the_sketch_is_the_token_by_token_definition():
    """``sketch`` computes in bulk what the module docstring defines one token at a time."""
    import math
    import re
    import zlib

    space = FeatureSpace(bits=10)  # small: colliding slots are merged, as the definition says

    def reference(text, attributes, signals):
        # Chinese and Japanese characters are words of their own, as if written with spaces between them
        spaced = re.sub(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])", r" \1 ", text[: space.max_chars].lower())
        tokens = re.findall(r"[^\W_]+(?:['.][^\W_]+)*|[^\w\s]", spaced)
        slot = lambda key: 7 + zlib.crc32(key.encode("utf-8", "replace")) % (space.size - 7)
        counts = {}
        for key in tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]:
            counts[slot(key)] = counts.get(slot(key), 0) + 1
        vector = {s: 1.0 + math.log(c) for s, c in counts.items()}
        for name, value in attributes.items():
            key = slot(f"@{name}={value}")
            vector[key] = vector.get(key, 0.0) + space.attribute_weight
        for index, value in enumerate(FeatureSpace._numeric(text[: space.max_chars], signals)):
            if value:
                vector[index] = value
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        return {s: v / norm for s, v in vector.items()}

    texts = ["", "a", "a a a a b a", "Total: EUR 1.234,56 (incl. 19% MwSt)\nINV-2026-0042",
             "Ünïcode 東京 tokens, and an ‘odd’ surrogate \ud800 here", "word " * 3000, "发票号码：04412345 合计¥1,017.00",
             "東京タワーのチケット代金abc.東京 x'東"]
    for text in texts:
        for attributes in ({}, {"task": "invoice_extraction", "domain": "tax"}):
            signals = {"length": 0.4, "noise": 0.1} if text else {}
            got, want = space.sketch(text, attributes, signals), reference(text, attributes, signals)
            assert got.keys() == want.keys()
            assert all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
