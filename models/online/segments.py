"""Customer segments: online k-means on a few scaled value and engagement features.

A running standard scaler and online k-means (River's ``StandardScaler | KMeans``, in plain
Python) over log spend, purchases and clicks in 30 days, log average order value and log
seconds since the last purchase. Segment ids are the k-means center indices,
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

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from models.base import Proba
from models.online.transform import NEVER_S, log1p_clipped
from models.settings import ModelSettings
from models.shared import SharedState, moments_from_sums, power_sums

__all__ = ["SEGMENT_FEATURES", "SegmentModel"]

SEGMENT_FEATURES: Final[tuple[str, ...]] = (
    "spend_30d",
    "purchases_30d",
    "clicks_30d",
    "avg_order_value",
    "secs_since_last_purchase",
)


def _segment_inputs(x: Mapping[str, float]) -> list[float]:
    get = x.get
    return [
        log1p_clipped(get("spend_30d")),
        log1p_clipped(get("purchases_30d")),
        log1p_clipped(get("clicks_30d")),
        log1p_clipped(get("avg_order_value")),
        log1p_clipped(get("secs_since_last_purchase", NEVER_S), NEVER_S),
    ]


class SegmentModel:
    """Online customer segmentation with stable integer segment ids.

    The same model as River's ``StandardScaler | KMeans(halflife, seed)``: inputs are scaled by a
    running mean and variance (updated before the learning step, as in a River pipeline), a point
    belongs to its nearest center (first on ties), and learning moves that center ``halflife`` of
    the way toward the point. Five plain-float lists: ~3x cheaper per event than River's dicts.

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
        # River's KMeans draws each coordinate with random.Random(seed).gauss(0, 1); drawing
        # them center by center in SEGMENT_FEATURES order keeps runs reproducible.
        rng = random.Random(seed)
        d = len(SEGMENT_FEATURES)
        self._centers = [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n_clusters)]
        self._count = 0
        self._mean = [0.0] * d
        self._var = [0.0] * d
        self._n_learned = 0

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> SegmentModel:
        return cls(n_clusters=settings.n_segments)

    def assign(self, x: Mapping[str, float]) -> int:
        """The customer's segment, then a k-means step toward these features."""
        inputs = _segment_inputs(x)
        segment = self._nearest(self._scaled(inputs))
        self._learn(inputs)
        return segment

    def assign_many(self, X: Sequence[Mapping[str, float]]) -> list[int]:
        """``assign`` on each record, in order."""
        return [self.assign(x) for x in X]

    def predict_one(self, x: Mapping[str, float]) -> int:
        """The customer's segment, without learning."""
        return self._nearest(self._scaled(_segment_inputs(x)))

    # -- the OnlineModel protocol: y is ignored, the "probabilities" are one-hot -------------

    def learn_one(self, x: Mapping[str, float], y: object = None) -> None:
        self._learn(_segment_inputs(x))

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

    def shared_state(self) -> SharedState:
        """The scaler as power sums (exact merge), the centers (summed moves), the count.

        Every worker starts from the same seeded centers and moves them by merged steps, so
        center ``k`` (segment id ``k``) is the same center on every worker."""
        state = power_sums("segments.scaler", self._count, self._mean, self._var)
        state["segments.centers"] = np.array(self._centers, dtype=np.float64)
        state["segments.n_learned"] = float(self._n_learned)
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        d = len(SEGMENT_FEATURES)
        n, mean, var = moments_from_sums(state, "segments.scaler", d)
        self._count = round(n)
        self._mean = mean.tolist()
        self._var = var.tolist()
        centers = state.get("segments.centers")
        if centers is not None:
            self._centers = np.asarray(centers, dtype=np.float64).tolist()
        self._n_learned = round(float(state.get("segments.n_learned", 0.0)))

    # -- internals ----------------------------------------------------------------------------

    def _scaled(self, inputs: list[float]) -> list[float]:
        return [
            (v - m) / var**0.5 if var else 0.0
            for v, m, var in zip(inputs, self._mean, self._var, strict=True)
        ]

    def _nearest(self, scaled: list[float]) -> int:
        best, best_d = 0, math.inf
        for k, center in enumerate(self._centers):
            d = 0.0
            for c, v in zip(center, scaled, strict=True):
                d += (c - v) * (c - v)
            if d < best_d:
                best, best_d = k, d
        return best

    def _learn(self, inputs: list[float]) -> None:
        # Welford's running mean and (population) variance, as River's StandardScaler.
        self._count = n = self._count + 1
        mean, var = self._mean, self._var
        for i, v in enumerate(inputs):
            old = mean[i]
            mean[i] = new = old + (v - old) / n
            var[i] += ((v - old) * (v - new) - var[i]) / n
        scaled = self._scaled(inputs)
        center = self._centers[self._nearest(scaled)]
        h = self.halflife
        for i, v in enumerate(scaled):
            center[i] += h * (v - center[i])
        self._n_learned += 1

    def __setstate__(self, state: dict[str, Any]) -> None:
        pipeline = state.pop("_pipeline", None)
        if pipeline is not None:  # a checkpoint of the River version: same state, converted
            scaler, kmeans = pipeline["StandardScaler"], pipeline["KMeans"]
            state["_count"] = max((scaler.counts.get(f, 0) for f in SEGMENT_FEATURES), default=0)
            state["_mean"] = [float(scaler.means.get(f, 0.0)) for f in SEGMENT_FEATURES]
            state["_var"] = [float(scaler.vars.get(f, 0.0)) for f in SEGMENT_FEATURES]
            state["_centers"] = [
                [float(kmeans.centers[c].get(f, 0.0)) for f in SEGMENT_FEATURES]
                for c in kmeans.centers
            ]
        self.__dict__.update(state)
