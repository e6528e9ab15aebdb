import pytest

from resources.catalog import CatalogError, ModelCatalog, Residency
from resources.classification import DataClassification


def test_shipped_catalog_has_offline_and_hosted_models():
    catalog = ModelCatalog.load()
    ids = {spec.id for spec in catalog}
    assert {"rules-invoice", "local-gemma3-270m", "gpt-4o-mini", "claude-haiku-4-5"} <= ids
    for spec in catalog:
        if spec.residency is Residency.CLOUD:
            assert not spec.may_see(DataClassification.RESTRICTED), spec.id
            assert spec.api_key_env, spec.id
            assert spec.price_input_per_mtok > 0 and spec.price_output_per_mtok > 0, spec.id
    assert catalog.get("gpt-4o-mini").token_cost(1_000_000, 1_000_000) == pytest.approx(0.75)


def test_user_file_overrides_by_id_adds_and_disables(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        """
models:
  - id: gpt-4o-mini
    price_input_per_mtok: 9.0
  - id: local-gemma3-270m
    enabled: false
  - id: onprem-vllm
    provider: vllm
    protocol: openai_chat
    endpoint: http://10.0.0.5:8000/v1
    context_window: 32000
    residency: on_prem
    classifications: [public, internal, confidential, restricted]
    tier: 3
"""
    )
    catalog = ModelCatalog.load(path)
    assert catalog.get("gpt-4o-mini").price_input_per_mtok == 9.0
    assert catalog.get("gpt-4o-mini").price_output_per_mtok == 0.60  # untouched fields kept
    assert "local-gemma3-270m" not in {s.id for s in catalog}
    assert catalog.get("onprem-vllm").may_see(DataClassification.RESTRICTED)


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: [", "not valid YAML"),
        ("models: {a: 1}", "must hold 'models:'"),
        ("models:\n  - id: x\n    protocol: openai_chat\n    provider: p\n    context_window: 10\n    residency: cloud\n"
         "    endpoint: http://h\n    classifications: [restricted]\n    tier: 1\n", "may not be cleared for restricted"),
        ("models:\n  - id: y\n    protocol: python\n    provider: p\n    context_window: 10\n    residency: on_prem\n"
         "    classifications: [public]\n    tier: 1\n", "needs 'callable"),
        # a quoted "false" is a true string: the model a compliance rule switched off would still be routed to
        ('models:\n  - id: gpt-4o-mini\n    enabled: "false"\n', "model 'gpt-4o-mini': enabled must be true or false"),
        ("models:\n  - id: gpt-4o-mini\n    tier: 2\n  - id: gpt-4o-mini\n    tier: 4\n", "'gpt-4o-mini' appears twice"),
        ("models:\n  - id: gpt-4o-mini\n    price_input_per_mtok: .inf\n", "bad.yaml: model 'gpt-4o-mini' is invalid: price_input_per_mtok: Input should be a finite number"),
    ],
)
def test_bad_catalog_files_get_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        ModelCatalog.load(path)


def test_missing_catalog_file_is_named(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        ModelCatalog.load(tmp_path / "nope.yaml")
