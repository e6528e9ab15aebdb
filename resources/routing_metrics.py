"""RouteLLM's yardsticks for a router between a weak and a strong model: the quality/cost curve, CPT and APGR.

A router that ranks items by how much the strong model would help is replayed at every
share of strong-model calls, from 0 (always weak) to 1 (always strong). At each share the
quality is the mean correctness of the answers the router would have got. PGR (performance
gap recovered) rescales quality so the weak model is 0 and the strong one 1:

* CPT(x): the smallest share of strong calls whose PGR reaches x (lower is better; a
  random router needs x itself);
* APGR: the area under the PGR curve over the share axis (random ≈ 0.5).

The same function scores the benchmark replay and the ``routing_policy`` asset's holdout,
so the number in the UI and the number in the closing note mean the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoutingCurve:
    strong_share: np.ndarray  # x: share of items sent to the strong model
    quality: np.ndarray  # y: mean correctness at that share
    weak_quality: float
    strong_quality: float

    @property
    def pgr(self) -> np.ndarray:
        gap = self.strong_quality - self.weak_quality
        if gap <= 0:
            return np.zeros_like(self.quality)
        return (self.quality - self.weak_quality) / gap

    def apgr(self) -> float:
        pgr = self.pgr
        return float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(self.strong_share)))

    def cpt(self, level: float) -> float:
        """Smallest share of strong calls that recovers ``level`` of the gap (1.0 if never)."""
        reached = np.nonzero(self.pgr >= level - 1e-12)[0]
        return float(self.strong_share[reached[0]]) if len(reached) else 1.0

    def summary(self) -> dict[str, float]:
        return {
            "apgr": round(self.apgr(), 4),
            "cpt50": round(self.cpt(0.5), 4),
            "cpt80": round(self.cpt(0.8), 4),
            "weak_quality": round(self.weak_quality, 4),
            "strong_quality": round(self.strong_quality, 4),
        }


def routing_curve(strong_benefit: np.ndarray, weak_correct: np.ndarray, strong_correct: np.ndarray) -> RoutingCurve:
    """Replay a router that sends the items with the highest ``strong_benefit`` to the strong model first.

    Ties are broken by item order (stable), so a constant score behaves like always-weak
    until the share forces strong calls, which is the honest reading of "no information".
    """
    weak = np.asarray(weak_correct, dtype=float)
    strong = np.asarray(strong_correct, dtype=float)
    score = np.asarray(strong_benefit, dtype=float)
    if not (len(weak) == len(strong) == len(score)) or len(weak) == 0:
        raise ValueError("scores and outcomes must be non-empty and the same length")
    order = np.argsort(-score, kind="stable")
    gains = (strong - weak)[order]
    n = len(weak)
    quality = (weak.sum() + np.concatenate([[0.0], np.cumsum(gains)])) / n
    share = np.arange(n + 1) / n
    return RoutingCurve(share, quality, float(weak.mean()), float(strong.mean()))
