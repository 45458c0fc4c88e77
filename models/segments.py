"""Customer segments: online k-means on a few scaled value and engagement features.

A River ``StandardScaler | KMeans`` over log spend, purchases and clicks in 30 days, log average
order value and log seconds since the last purchase. Segment ids are the k-means center indices,
plain ints ``0 .. n_clusters - 1``; a center drifts slowly (``halflife``) so a customer's segment
is stable from one event to the next.

>>> import random
>>> rng = random.Random(1)
>>> model = SegmentModel(n_clusters=3, seed=42)
>>> def customer(kind):
...     spend, buys, clicks = [(5, 0, 3), (80, 2, 40), (900, 12, 300)][kind]
...     return {"spend_30d": spend * rng.uniform(0.5, 1.5), "purchases_30d": buys,
...             "clicks_30d": clicks, "secs_since_last_purchase": 1e7 if buys == 0 else 3600}
>>> segments = model.assign_many([customer(i % 3) for i in range(600)])
>>> sorted(set(segments)) == [0, 1, 2]
True
>>> [model.predict_one(customer(k)) for k in range(3)] == [model.predict_one(customer(k))
...                                                      for k in range(3)]
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from river import cluster, preprocessing

from models.base import Proba
from models.settings import ModelSettings
from models.transform import NEVER_S, log1p_clipped

__all__ = ["SEGMENT_FEATURES", "SegmentModel"]

SEGMENT_FEATURES: Final[tuple[str, ...]] = (
    "spend_30d",
    "purchases_30d",
    "clicks_30d",
    "avg_order_value",
    "secs_since_last_purchase",
)


def _segment_inputs(x: Mapping[str, float]) -> dict[str, float]:
    get = x.get
    return {
        "spend_30d": log1p_clipped(get("spend_30d")),
        "purchases_30d": log1p_clipped(get("purchases_30d")),
        "clicks_30d": log1p_clipped(get("clicks_30d")),
        "avg_order_value": log1p_clipped(get("avg_order_value")),
        "secs_since_last_purchase": log1p_clipped(
            get("secs_since_last_purchase", NEVER_S), NEVER_S
        ),
    }


class SegmentModel:
    """Online customer segmentation with stable integer segment ids.

    Parameters
    ----------
    n_clusters
        Number of segments.
    halflife
        How far a center moves toward each point assigned to it (River ``KMeans``); small values
        keep segments stable.
    seed
        Seed of the initial centers (drawn from a standard normal in the scaled space).
    """

    def __init__(self, n_clusters: int = 6, halflife: float = 0.05, seed: int = 42) -> None:
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
        if not 0.0 < halflife <= 1.0:
            raise ValueError(f"halflife must be in (0, 1], got {halflife}")
        self.n_clusters = n_clusters
        self.halflife = halflife
        self.seed = seed
        self._pipeline = preprocessing.StandardScaler() | cluster.KMeans(
            n_clusters=n_clusters, halflife=halflife, seed=seed
        )
        kmeans: cluster.KMeans = self._pipeline["KMeans"]
        # KMeans draws a center coordinate the first time a feature is looked up, in set order
        # (hash-seed dependent); drawing them all now, in a fixed order, keeps runs reproducible.
        for c in range(n_clusters):
            for name in SEGMENT_FEATURES:
                _ = kmeans.centers[c][name]
        self._n_learned = 0

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> SegmentModel:
        return cls(n_clusters=settings.n_segments)

    def assign(self, x: Mapping[str, float]) -> int:
        """The customer's segment, then a k-means step toward these features."""
        inputs = _segment_inputs(x)
        segment = int(self._pipeline.predict_one(inputs))
        self._pipeline.learn_one(inputs)
        self._n_learned += 1
        return segment

    def assign_many(self, X: Sequence[Mapping[str, float]]) -> list[int]:
        """``assign`` on each record, in order."""
        return [self.assign(x) for x in X]

    def predict_one(self, x: Mapping[str, float]) -> int:
        """The customer's segment, without learning."""
        return int(self._pipeline.predict_one(_segment_inputs(x)))

    # -- the OnlineModel protocol: y is ignored, the "probabilities" are one-hot -------------

    def learn_one(self, x: Mapping[str, float], y: object = None) -> None:
        self._pipeline.learn_one(_segment_inputs(x))
        self._n_learned += 1

    def predict_proba_one(self, x: Mapping[str, float]) -> Proba:
        segment = self.predict_one(x)
        return {k: 1.0 if k == segment else 0.0 for k in range(self.n_clusters)}

    def learn_many(
        self, X: Sequence[Mapping[str, float]], y: Sequence[object] | None = None
    ) -> None:
        for x in X:
            self.learn_one(x)

    def predict_proba_many(self, X: Sequence[Mapping[str, float]]) -> list[Proba]:
        return [self.predict_proba_one(x) for x in X]

    @property
    def n_learned(self) -> int:
        return self._n_learned
