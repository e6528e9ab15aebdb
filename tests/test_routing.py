"""The rules router: classification, availability, context size and complexity decide, with reasons."""

import pytest

from resources.catalog import ModelCatalog
from resources.classification import DataClassification
from resources.complexity import estimate_complexity
from resources.model_gateway import Availability, ModelGateway
from resources.routing import RoutingItem, RulesPolicy, required_tier

CLEAN = "ACME Ltd\nInvoice No: INV-1\nDate: 2026-03-14\nWidget: 10.00\nTotal: 10.00\n"


def _item(text=CLEAN, classification=DataClassification.INTERNAL):
    return RoutingItem(item_id="doc-1", task="invoice_extraction", text=text, classification=classification)


def _all_available(catalog):
    return {s.id: Availability(available=True) for s in catalog}


def test_simple_item_goes_to_the_cheapest_covering_model():
    catalog = ModelCatalog.load()
    decision = RulesPolicy([0.3, 0.6, 0.8]).decide(_item(), catalog, _all_available(catalog))
    assert decision.required_tier == 1
    assert decision.model_id == "rules-invoice"
    assert "chose rules-invoice" in decision.reason


def test_hard_item_needs_a_higher_tier_and_pays_for_it():
    catalog = ModelCatalog.load()
    policy = RulesPolicy([0.3, 0.6, 0.8])
    complexity = estimate_complexity(CLEAN, declared=0.7)
    decision = policy.decide(_item(), catalog, _all_available(catalog), complexity)
    assert decision.required_tier == 3
    assert decision.model_id == "gpt-4o-mini"  # cheapest tier-3 model at list prices
    assert decision.estimated_cost_usd > 0


def test_restricted_data_never_routes_to_cloud_even_when_it_needs_more():
    catalog = ModelCatalog.load()
    complexity = estimate_complexity(CLEAN, declared=0.95)
    decision = RulesPolicy([0.3, 0.6, 0.8]).decide(
        _item(classification=DataClassification.RESTRICTED), catalog, _all_available(catalog), complexity
    )
    assert catalog.get(decision.model_id).residency.value == "on_prem"
    assert decision.model_id == "local-gemma3-270m"
    assert "restricted data: cloud models excluded" in decision.reason
    assert "no usable model reaches tier 4" in decision.reason


def test_missing_key_makes_a_model_unavailable_with_the_reason(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    catalog = ModelCatalog.load()
    gateway = ModelGateway(catalog)
    availability = {s.id: gateway.availability(s) for s in catalog}
    assert availability["gpt-4o-mini"] == Availability(available=False, reason="OPENAI_API_KEY is not set")
    assert availability["claude-haiku-4-5"].available
    decision = RulesPolicy([0.3, 0.6, 0.8]).decide(_item(), catalog, availability, estimate_complexity(CLEAN, declared=0.7))
    assert decision.model_id == "claude-haiku-4-5"
    assert "gpt-4o-mini (OPENAI_API_KEY is not set)" in decision.reason


def test_disallowed_strict_policy_refuses_rather_than_under_serves():
    catalog = ModelCatalog.load()
    availability = {s.id: Availability(available=s.residency.value == "on_prem") for s in catalog}
    decision = RulesPolicy([0.3, 0.6, 0.8], allow_below_tier=False).decide(
        _item(), catalog, availability, estimate_complexity(CLEAN, declared=0.9)
    )
    assert decision.model_id is None
    assert "no model may serve this item" in decision.reason


def test_context_window_excludes_models_too_small_for_the_item():
    catalog = ModelCatalog.load()
    long_text = "Line item widget 10.00\n" * 2000  # ~12k tokens: more than the local model's 4k context
    decision = RulesPolicy([0.3, 0.6, 0.8]).decide(
        _item(long_text), catalog, _all_available(catalog), estimate_complexity(long_text, declared=0.5)
    )
    assert decision.model_id != "local-gemma3-270m"
    assert "exceed the context window of local-gemma3-270m (4,096 tokens)" in decision.reason


def test_thresholds_map_scores_to_tiers():
    assert [required_tier(s, [0.3, 0.6, 0.8]) for s in (0.0, 0.3, 0.59, 0.6, 0.85)] == [1, 2, 2, 3, 4]
    with pytest.raises(ValueError):
        RulesPolicy([0.6, 0.3])


def test_complexity_rises_with_ocr_noise_and_length():
    clean = estimate_complexity(CLEAN)
    noisy = estimate_complexity("ACME Ltd\nlnv0ice N0: INV-1\nDa7e: 2026-03-14\nWidqet: 1O.0O\nT0ta1: 1O.0O\n")
    long = estimate_complexity(CLEAN * 60)
    assert noisy.score > clean.score and noisy.signals["noise"] > clean.signals["noise"]
    assert long.signals["length"] > clean.signals["length"]


def test_cost_cap_forces_a_cheaper_route_and_task_policies_override():
    from resources.routing import RoutingResource

    catalog = ModelCatalog.load()
    availability = {s.id: Availability(available=True) for s in catalog}
    item = RoutingItem(item_id="hard", task="invoice_extraction", text="Z" * 9000, classification=DataClassification.INTERNAL)
    free = RoutingResource().build_policy().decide(item, catalog, availability)
    capped = RoutingResource(max_item_cost_usd=free.estimated_cost_usd / 2).build_policy().decide(item, catalog, availability)
    assert capped.model_id != free.model_id
    assert capped.estimated_cost_usd <= free.estimated_cost_usd / 2
    assert f"cost cap" in capped.reason and free.model_id in capped.reason
    routing = RoutingResource(policy="rules", task_policies={"invoice_extraction": "cascade"})
    assert routing.build_policy("invoice_extraction").name == "cascade"
    assert routing.build_policy("ticket_triage").name == "rules"
    with pytest.raises(ValueError, match="unknown routing policy 'fast'"):
        RoutingResource(task_policies={"t": "fast"}).build_policy("t")


def test_decide_many_matches_one_by_one():
    catalog = ModelCatalog.load()
    availability = {s.id: Availability(available=s.residency.value == "on_prem", reason="no key") for s in catalog}
    texts = ["Invoice 1\nTotal: 5.00", "T0TAL ~~ 1,2|3 ^^ x" * 40, "Z" * 9000]
    items = [RoutingItem(item_id=str(i), task="invoice_extraction", text=t, classification=c)
             for i, t in enumerate(texts) for c in (DataClassification.INTERNAL, DataClassification.RESTRICTED)]
    items += [RoutingItem(item_id="long", task="invoice_extraction", text="word " * 30_000,
                          classification=DataClassification.INTERNAL, expected_output_tokens=50)]
    every_model = {s.id: Availability(available=True) for s in catalog}
    for policy, models in ((RulesPolicy([0.25, 0.6, 0.8]), availability), (RulesPolicy([0.1, 0.2, 0.3]), every_model),
                           (RulesPolicy([0.1, 0.2, 0.3], allow_below_tier=False), availability),
                           (RulesPolicy([0.25, 0.6, 0.8], max_item_cost_usd=0.0001), every_model)):
        batch = policy.decide_many(items, catalog, models)
        assert batch == [policy.decide(item, catalog, models) for item in items]
    assert len({d.model_id for d in RulesPolicy([0.25, 0.6, 0.8]).decide_many(items, catalog, availability)}) >= 2


def _number_heavy_invoice(items: int) -> str:
    rows = "".join(f"{i:03d} Part {i:05d}-{i * 7 % 1000:03d}  {i % 9 + 1}  x {i * 1.37:8.2f}  {(i % 9 + 1) * i * 1.37:10.2f}\n"
                   for i in range(1, items + 1))
    return f"ACME Supplies Ltd\nInvoice No: 2026-0042\nDate: 14/03/2026\n{rows}Total {sum((i % 9 + 1) * i * 1.37 for i in range(1, items + 1)):.2f}\n"


CJK_INVOICE = "上海星辰贸易有限公司\n发票号码：04412345\n" + "办公用品采购明细说明及数量单价合计金额\n" * 140 + "合计 ¥1,017.00\n"


@pytest.mark.parametrize("text", [_number_heavy_invoice(200), CJK_INVOICE], ids=["numbers", "chinese"])
def test_a_document_that_fits_at_four_characters_a_token_but_not_in_fact_skips_the_small_window(text):
    """The window check counts cautiously (digits and CJK characters a token each): a call over the window
    is refused by the model (HTTP 400), a cautious count at worst picks a model with a larger window."""
    from resources.complexity import context_tokens, estimate_tokens

    catalog = ModelCatalog.load()
    assert estimate_tokens(text) + 300 + 600 < 4096 < context_tokens(text)  # 4 characters a token would let it through
    complexity = estimate_complexity(text, declared=0.5)  # tier 2: the local model's tier
    for decide in (lambda p, i: p.decide(i, catalog, _all_available(catalog), complexity),
                   lambda p, i: p.decide_many([i], catalog, _all_available(catalog), [complexity])[0]):
        decision = decide(RulesPolicy([0.3, 0.6, 0.8]), _item(text, DataClassification.RESTRICTED))
        assert decision.model_id == "rules-invoice", decision.reason  # restricted: on-prem, and Gemma's 4k is too small
        assert "exceed the context window of local-gemma3-270m (4,096 tokens)" in decision.reason


def test_an_ordinary_invoice_still_fits_the_small_window():
    from resources.complexity import context_tokens

    text = _number_heavy_invoice(12)
    assert context_tokens(text) < 1000
    catalog = ModelCatalog.load()
    decision = RulesPolicy([0.3, 0.6, 0.8]).decide(_item(text, DataClassification.RESTRICTED), catalog,
                                                     _all_available(catalog), estimate_complexity(text, declared=0.5))
    assert decision.model_id == "local-gemma3-270m", decision.reason


def test_the_cautious_count_is_never_below_the_local_models_own_count():
    from resources.complexity import context_tokens
    from resources.estimation import _local_model_file
    from resources.tokenizers import gguf_vocabulary

    path = _local_model_file(ModelCatalog.load().get("local-gemma3-270m").local_server)
    if path is None:
        pytest.skip("the local Gemma model (llama-cpp-python and its model package) is not installed")
    vocabulary = gguf_vocabulary(path)
    texts = [_number_heavy_invoice(200), CJK_INVOICE, CLEAN * 40, "Rechnung Nr. 2026-0042\nGesamtbetrag: 1.234,56 €\n" * 50,
             "株式会社サンプル 請求書 合計金額 ￥12,345\n" * 60, "견적서 합계 1,234,000원\n" * 80, "T0TAL ~~ 1,2|3 ^^ x" * 100]
    for text in texts:
        assert context_tokens(text) >= vocabulary.count(text.encode("utf-8"), add_bos=False), text[:40]


@pytest.mark.parametrize("text", ["", "7", "Total 12.50", _number_heavy_invoice(50), CJK_INVOICE, "견적서 합계 1,234,000원\n" * 9,
                                  "١٢٣٤٥ مجموع", "x" * 5000, "৪৫৬ ₹ ١٢"])
def test_the_uncounted_bound_is_never_below_the_count(text):
    """Routing skips counting when the bound fits every window: the bound must hold for any script."""
    from resources.complexity import context_tokens, context_tokens_at_most, estimate_tokens

    assert context_tokens_at_most(text) >= context_tokens(text) >= estimate_tokens(text)
