"""A routing policy fitted to recorded outcomes: each model's chance of success on an item.

Why this shape: the router has to answer, for an item it has never seen, "will the cheap
model do, or is the expensive one worth it?". Two estimators that fail differently are
blended per model:

* a logistic regression over the item's hashed features (words, declared attributes,
  complexity signals), which generalises across items;
* the smoothed success rate of the item's nearest recorded neighbours (cosine similarity),
  which remembers local pockets a linear model averages away.

The regularisation strength and the blend weight are chosen on a holdout of the training
outcomes (log-loss), never on data the policy is evaluated on, so nothing here is tuned to
one benchmark. A model with too few recorded outcomes, or only successes or only failures,
falls back to its smoothed success rate, said in the decision's reasons.

Decisions (see :meth:`LearnedPolicy.choose`):

* ``target``: the cheapest model whose predicted success clears ``target``;
* ``utility``: the model maximising ``value_per_success * p(success) - cost`` (a cost cap
  or a budget constraint is a smaller ``value_per_success``).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

import numpy as np
from scipy import sparse

from resources.routing_features import FeatureSpace

FORMAT_VERSION = 1
MIN_OUTCOMES = 20
SIMILARITY_CELLS = 4_000_000  # dense query × item similarities held at once (32 MB)
_C_GRID = (0.3, 1.0, 3.0)
_BLEND_GRID = (0.5, 0.75, 1.0)


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(p: np.ndarray, y: np.ndarray) -> Optional[float]:
    positives, negatives = p[y == 1], p[y == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    ranks = np.argsort(np.argsort(np.concatenate([positives, negatives]), kind="stable"), kind="stable") + 1
    return float((ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def _select_hyperparameters(
    table: np.ndarray, candidates: dict[int, tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]]
) -> tuple[float, float]:
    """Regularisation and blend shared by all models, chosen on the holdout for the router's own objective.

    With two or more trained models the objective is routing quality: for every pair, how
    well ``p(stronger) - p(weaker)`` ranks the items where the stronger one really helps
    (APGR on the holdout, averaged over pairs). With one model it is calibration (log-loss).
    Per-model log-loss alone favours weak regularisation that sharpens each model's own
    estimate but not the difference between two, which is what a routing decision uses.
    """
    from resources.routing_metrics import routing_curve

    columns = list(candidates)
    best: Optional[tuple[float, float, float]] = None
    for c in _C_GRID:
        for blend in _BLEND_GRID:
            p = {col: blend * candidates[col][2][c] + (1 - blend) * candidates[col][1] for col in columns}
            scores = []
            for i, a in enumerate(columns):
                for b in columns[i + 1:]:
                    both = candidates[a][0] & candidates[b][0]
                    if both.sum() < MIN_OUTCOMES:
                        continue
                    weak, strong = sorted((a, b), key=lambda col: np.nanmean(table[both, col]))
                    if np.nanmean(table[both, strong]) <= np.nanmean(table[both, weak]):
                        continue
                    curve = routing_curve(p[strong][both] - p[weak][both], table[both, weak], table[both, strong])
                    scores.append(curve.apgr())
            if scores:
                score = float(np.mean(scores))
            else:
                score = -float(np.mean([_log_loss(p[col][candidates[col][0]], table[candidates[col][0], col]) for col in columns]))
            if best is None or score > best[0]:
                best = (score, c, blend)
    return best[1], best[2]


@dataclass
class ModelEstimator:
    """One model's success estimator; ``coef is None`` means 'prior only'."""

    model_id: str
    prior: float
    observed: int
    coef: Optional[np.ndarray] = None
    intercept: float = 0.0
    blend: float = 1.0  # weight of the linear model; the rest goes to the neighbours
    c: Optional[float] = None
    holdout_auc: Optional[float] = None
    holdout_log_loss: Optional[float] = None


@dataclass(frozen=True)
class LearnedChoice:
    model_id: Optional[str]
    success: dict[str, float]
    reasons: list[str]


@dataclass
class LearnedPolicy:
    space: FeatureSpace
    estimators: dict[str, ModelEstimator]
    memory: sparse.csr_matrix  # training items, for the neighbour estimate
    memory_outcomes: np.ndarray  # items × models, 1/0, NaN where a model was not tried
    neighbours: int = 40
    idf: Optional[np.ndarray] = None
    fitted_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    training_items: int = 0
    format_version: int = FORMAT_VERSION

    @property
    def model_ids(self) -> list[str]:
        return list(self.estimators)

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        sketches: Sequence[Mapping[int, float]],
        outcomes: Mapping[str, Sequence[float]],
        *,
        space: Optional[FeatureSpace] = None,
        holdout_share: float = 0.2,
        seed: int = 0,
        neighbours: int = 40,
    ) -> "LearnedPolicy":
        """Fit on items × models outcomes (1 success, 0 failure, NaN not tried)."""
        from sklearn.linear_model import LogisticRegression  # import cost paid only when fitting

        space = space or FeatureSpace()
        if not sketches:
            raise ValueError("no outcomes to fit a routing policy on")
        raw = space.matrix(list(sketches))
        document_frequency = np.bincount(raw.indices, minlength=space.size)
        idf = np.log((1.0 + raw.shape[0]) / (1.0 + document_frequency)) + 1.0
        matrix = space.weighted(raw, idf)
        ids = list(outcomes)
        table = np.column_stack([np.asarray(outcomes[m], dtype=float) for m in ids])
        if table.shape[0] != matrix.shape[0]:
            raise ValueError(f"{matrix.shape[0]} items but {table.shape[0]} outcome rows")
        rng = np.random.default_rng(seed)
        is_holdout = rng.random(matrix.shape[0]) < holdout_share
        policy = cls(space, {}, matrix, table, neighbours=neighbours, idf=idf, training_items=matrix.shape[0])
        candidates: dict[int, tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]] = {}
        for column, model_id in enumerate(ids):
            y = table[:, column]
            seen = ~np.isnan(y)
            prior = (float(np.nansum(y)) + 1.0) / (seen.sum() + 2.0)
            policy.estimators[model_id] = ModelEstimator(model_id, prior=prior, observed=int(seen.sum()))
            train, hold = seen & ~is_holdout, seen & is_holdout
            if seen.sum() < MIN_OUTCOMES or len(set(y[train])) < 2 or len(set(y[hold])) < 2:
                continue
            near = policy._neighbour_rates(matrix, column, rows_mask=train)
            linear = {
                c: LogisticRegression(C=c, max_iter=2000).fit(matrix[train], y[train]).predict_proba(matrix)[:, 1]
                for c in _C_GRID
            }
            candidates[column] = (hold, near, linear)
        if not candidates:
            return policy
        c, blend = _select_hyperparameters(table, candidates)
        for column, (hold, near, linear) in candidates.items():
            y, seen = table[:, column], ~np.isnan(table[:, column])
            final = LogisticRegression(C=c, max_iter=2000).fit(matrix[seen], y[seen])
            estimator = policy.estimators[ids[column]]
            estimator.coef = final.coef_.ravel().astype(np.float64)
            estimator.intercept = float(final.intercept_[0])
            estimator.blend, estimator.c = blend, c
            p = blend * linear[c][hold] + (1 - blend) * near[hold]
            estimator.holdout_log_loss, estimator.holdout_auc = round(_log_loss(p, y[hold]), 4), _auc(p, y[hold])
        return policy

    # ------------------------------------------------------------------ predicting

    def _neighbour_rates(
        self, queries: sparse.csr_matrix, column: int, *, rows_mask: Optional[np.ndarray] = None,
        similarity: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Similarity-weighted success rate of each query's nearest recorded items, shrunk to the prior.

        ``similarity`` (queries × all recorded items) may be passed in when several models
        are scored for the same queries, so it is computed once.
        """
        y = self.memory_outcomes[:, column]
        usable = ~np.isnan(y) if rows_mask is None else rows_mask & ~np.isnan(y)
        labels = y[usable]
        prior = float(labels.mean()) if len(labels) else 0.5
        if len(labels) == 0:
            return np.full(queries.shape[0], prior)
        if similarity is not None:
            return self._rates(similarity[:, usable], labels, prior)
        rates = np.empty(queries.shape[0])
        for start, stop in self._query_blocks(queries.shape[0]):
            rates[start:stop] = self._rates(self.similarity(queries[start:stop])[:, usable], labels, prior)
        return rates

    def _query_blocks(self, queries: int) -> list[tuple[int, int]]:
        """Row ranges of at most ``SIMILARITY_CELLS`` similarities each: the dense block is queries × recorded
        items, so all at once it grew with the square of a data set (14k items: 1.6 GB, 28k: 6 GB)."""
        step = max(1, SIMILARITY_CELLS // max(1, self.memory.shape[0]))
        return [(start, min(start + step, queries)) for start in range(0, queries, step)]

    def _rates(self, similarity: np.ndarray, labels: np.ndarray, prior: float) -> np.ndarray:
        k = min(self.neighbours, len(labels))
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(similarity, top, axis=1).clip(min=0) ** 2
        hits = (weights * labels[top]).sum(axis=1)
        return (hits + 2.0 * prior) / (weights.sum(axis=1) + 2.0)

    def similarity(self, queries: sparse.csr_matrix) -> np.ndarray:
        """Cosine similarity of each query to every recorded item (dense, queries × items)."""
        memory_t = self.__dict__.get("_memory_t")
        if memory_t is None:
            memory_t = self.__dict__["_memory_t"] = sparse.csr_matrix(self.memory.T)
        return (queries @ memory_t).toarray()

    def query_matrix(self, sketches: Sequence[Mapping[int, float]]) -> sparse.csr_matrix:
        """Sketches as rows, weighted the way the training items were."""
        return self.space.weighted(self.space.matrix(list(sketches)), self.idf)

    def _uses_neighbours(self) -> bool:
        return any(e.coef is not None and e.blend < 1.0 for e in self.estimators.values())

    def predict_matrix(self, queries: sparse.csr_matrix) -> dict[str, np.ndarray]:
        """P(success) per model for many items at once (rows of ``queries``)."""
        out: dict[str, np.ndarray] = {}
        near: dict[int, np.ndarray] = {}
        blended = [column for column, est in enumerate(self.estimators.values()) if est.coef is not None and est.blend < 1.0]
        if blended:  # one similarity block for every model, a block of queries at a time
            near = {column: np.empty(queries.shape[0]) for column in blended}
            for start, stop in self._query_blocks(queries.shape[0]):
                similarity = self.similarity(queries[start:stop])
                for column in blended:
                    near[column][start:stop] = self._neighbour_rates(queries[start:stop], column, similarity=similarity)
        for column, (model_id, est) in enumerate(self.estimators.items()):
            if est.coef is None:
                out[model_id] = np.full(queries.shape[0], est.prior)
                continue
            linear = _sigmoid(queries @ est.coef + est.intercept)
            out[model_id] = est.blend * linear + (1 - est.blend) * near[column] if column in near else linear
        return out

    def predict(self, sketch: Mapping[int, float]) -> dict[str, float]:
        """P(success) per model for one item; cheap enough to run inside every routing decision."""
        slots = np.fromiter(sketch.keys(), dtype=np.int64, count=len(sketch))
        values = np.fromiter(sketch.values(), dtype=np.float64, count=len(sketch))
        if self.idf is not None:
            values = values * self.idf[slots]
            values /= np.sqrt(values @ values) or 1.0
        similarity = None
        if self._uses_neighbours():
            query = sparse.csr_matrix((values, slots, [0, len(slots)]), shape=(1, self.space.size))
            similarity = self.similarity(query)
        out: dict[str, float] = {}
        for column, (model_id, est) in enumerate(self.estimators.items()):
            if est.coef is None:
                out[model_id] = est.prior
                continue
            p = float(_sigmoid(float(est.coef[slots] @ values) + est.intercept))
            if est.blend < 1.0:
                p = est.blend * p + (1 - est.blend) * float(self._neighbour_rates(query, column, similarity=similarity)[0])
            out[model_id] = p
        return out

    # ------------------------------------------------------------------ deciding

    def choose(
        self,
        success: Mapping[str, float],
        costs: Mapping[str, float],
        *,
        mode: str = "target",
        target: float = 0.8,
        value_per_success: float = 0.01,
    ) -> LearnedChoice:
        """Pick among ``costs``' models (already filtered for clearance and availability)."""
        known = {m: success.get(m, self.estimators[m].prior if m in self.estimators else None) for m in costs}
        untrained = [m for m, p in known.items() if p is None]
        scored = {m: p for m, p in known.items() if p is not None}
        reasons = []
        if untrained:
            reasons.append("no recorded outcomes for " + ", ".join(untrained))
        if not scored:
            return LearnedChoice(None, {}, reasons + ["no candidate has a learned estimate"])
        shown = ", ".join(f"{m} {p:.2f}" for m, p in sorted(scored.items(), key=lambda kv: costs[kv[0]]))
        reasons.append(f"predicted success: {shown}")
        if mode == "target":
            clearing = [m for m, p in scored.items() if p >= target]
            if clearing:
                chosen = min(clearing, key=lambda m: (costs[m], -scored[m]))
                reasons.append(f"cheapest with predicted success ≥ {target:.2f}")
            else:
                chosen = max(scored, key=lambda m: (scored[m], -costs[m]))
                reasons.append(f"none reaches {target:.2f}: most likely to succeed")
        elif mode == "utility":
            chosen = max(scored, key=lambda m: (value_per_success * scored[m] - costs[m], -costs[m]))
            reasons.append(f"best value at ${value_per_success:g} per success")
        else:
            raise ValueError(f"unknown learned routing mode {mode!r}; use 'target' or 'utility'")
        return LearnedChoice(chosen, dict(scored), reasons)

    # ------------------------------------------------------------------ storing

    def evaluation(self) -> dict[str, dict[str, Optional[float]]]:
        return {
            m: {"observed": e.observed, "prior": round(e.prior, 4), "holdout_auc": None if e.holdout_auc is None else round(e.holdout_auc, 4),
                "holdout_log_loss": e.holdout_log_loss, "C": e.c, "blend": e.blend if e.coef is not None else None}
            for m, e in self.estimators.items()
        }

    def to_bytes(self) -> bytes:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_memory")}
        clone = object.__new__(LearnedPolicy)
        clone.__dict__.update(state)
        return pickle.dumps(clone, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(blob: bytes) -> "LearnedPolicy":
        policy = pickle.loads(blob)
        if not isinstance(policy, LearnedPolicy) or getattr(policy, "format_version", None) != FORMAT_VERSION:
            raise ValueError("stored routing policy has an unknown format; re-materialize routing_policy")
        return policy


def success_gap(predictions: Mapping[str, np.ndarray], weak: str, strong: str, weak_cost, strong_cost) -> np.ndarray:
    """How much a strong call is worth per extra dollar, item by item: the ranking the utility mode implies."""
    extra = np.maximum(np.asarray(strong_cost, dtype=float) - np.asarray(weak_cost, dtype=float), 1e-12)
    return (predictions[strong] - predictions[weak]) / extra


__all__ = ["FeatureSpace", "LearnedPolicy", "LearnedChoice", "ModelEstimator", "success_gap"]
