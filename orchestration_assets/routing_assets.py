"""Routing that improves with use, visible in lineage: ledger → routing_outcomes → routing_policy.

``routing_outcomes`` turns the ledger's calls into one row per (item, model) tried: the
item's hashed features (never its text), whether the answer passed the task's item check,
its cost and latency. ``routing_policy`` fits the learned policy on them, stores it as a
new version (``resources.policy_store``) and puts its holdout evaluation in the
materialization metadata; the routing resource with ``policy: learned`` loads the latest
version at the start of the next batch.
"""


import dagster as dg
import numpy as np
import pandas as pd

from resources.learned_policy import LearnedPolicy
from resources.ledger import LedgerResource
from resources.policy_store import PolicyStore
from resources.routing_features import decode_sketch
from resources.routing import RoutingResource

OUTCOME_COLUMNS = ["item_key", "task", "model_id", "success", "cost_usd", "latency_s", "features"]


def outcomes_from_calls(calls: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, item, model) with a judged answer; later attempts of a model on an item win."""
    if calls.empty or "accepted" not in calls:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    judged = calls[calls["accepted"].notna() & calls["features"].notna()].copy()
    judged["item_key"] = judged["run_id"].fillna("") + "/" + judged["item_id"]
    judged["success"] = judged["accepted"].astype(bool).astype(int)
    judged = judged.sort_values("recorded_at").drop_duplicates(["item_key", "model_id"], keep="last")
    return judged[OUTCOME_COLUMNS].reset_index(drop=True)


@dg.asset(group_name="routing", kinds={"duckdb"}, deps=[dg.AssetKey("invoice_extractions")])
def routing_outcomes(ledger: LedgerResource) -> dg.Output[pd.DataFrame]:
    """Every judged model answer in the ledger: features, model, passed the item check or not, cost."""
    outcomes = outcomes_from_calls(ledger.store().calls())
    by_model = outcomes.groupby("model_id")["success"].agg(["count", "mean"]) if not outcomes.empty else pd.DataFrame()
    return dg.Output(outcomes, metadata={
        "rows": len(outcomes),
        "items": int(outcomes["item_key"].nunique()) if not outcomes.empty else 0,
        "success_by_model": dg.MetadataValue.json(
            {m: {"answers": int(r["count"]), "success_rate": round(float(r["mean"]), 3)} for m, r in by_model.iterrows()}
        ),
    })


def fit_policy(outcomes: pd.DataFrame, seed: int = 0) -> LearnedPolicy:
    """Pivot outcomes to items × models (NaN where a model was not tried) and fit the learned policy."""
    if outcomes.empty:
        raise dg.Failure("no judged outcomes in the ledger yet: run an AI asset (e.g. invoice_extractions) first")
    table = outcomes.pivot_table(index="item_key", columns="model_id", values="success", aggfunc="last")
    features = outcomes.drop_duplicates("item_key").set_index("item_key")["features"].reindex(table.index)
    sketches = [decode_sketch(f) for f in features]
    return LearnedPolicy.fit(sketches, {m: table[m].to_numpy(dtype=float) for m in table.columns}, seed=seed)


@dg.asset(group_name="routing", kinds={"python"})
def routing_policy(context: dg.AssetExecutionContext, routing_outcomes: pd.DataFrame, routing: RoutingResource) -> dg.MaterializeResult:
    """The learned routing policy, fitted on recorded outcomes and stored as a new version."""
    policy = fit_policy(routing_outcomes)
    version = PolicyStore(routing.policy_dir).save(policy)
    evaluation = policy.evaluation()
    trained = [m for m, e in policy.estimators.items() if e.coef is not None]
    context.log.info(f"routing policy {version}: {policy.training_items} items, trained models {trained or 'none (priors only)'}")
    aucs = [e["holdout_auc"] for e in evaluation.values() if e["holdout_auc"] is not None]
    metadata = {
        "version": version,
        "training_items": policy.training_items,
        "models": dg.MetadataValue.json(evaluation),
        "trained_models": len(trained),
    }
    if aucs:
        metadata["mean_holdout_auc"] = round(float(np.mean(aucs)), 4)
    return dg.MaterializeResult(metadata=metadata)
