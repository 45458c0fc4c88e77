"""Unusual purchases for fraud review: River ``HalfSpaceTrees`` on scaled purchase features.

Each purchase becomes ``log1p(amount)``, ``log1p(basket size)`` and ``log1p(hours since the
customer's previous purchase)`` (a first purchase counts as 30 days), scaled to ``[0, 1]`` by an
online ``MinMaxScaler`` and scored by ``HalfSpaceTrees`` (higher is stranger), then learned.
HalfSpaceTrees splits within ``limits`` = (-1, 2) per feature, wider than the scaler's
[0, 1]: normal purchases fill the middle third, so a value far beyond anything seen lands in an
empty cell instead of the boundary cell of the largest normal ones (with limits (0, 1) a 25 000
EUR basket scores like a 80 EUR one). A purchase is flagged when the model is past ``warmup``
purchases, its score is at least ``threshold`` and at least the running ``quantile`` of all
scores (a ``QuantileFilter``-style guard, so the alert rate stays near ``1 - quantile`` whatever
the score scale). The score is
taken before learning, so an outlier is judged against the past only.

The last purchase time per customer is kept in memory, bounded (least recently seen dropped).

The workers of a deployment share one detector (``shared_state``): the trees' masses, the
scaler's bounds and the score histogram behind the quantile are sums (bounds: min/max), so they
merge exactly. The trees' window pivot (the latest window's masses become the reference) is
then the deployment's, done when the merged count of purchases reaches ``window_size``
(``settle_shared_state``), not each worker's: ``share()`` turns the local pivot off.

>>> import random
>>> rng = random.Random(7)
>>> model = PurchaseAnomaly(warmup=300, seed=7)
>>> for n in range(600):
...     _ = model.score(f"c{n % 50}", 1e9 + n * 3600, rng.uniform(20, 80), rng.randint(1, 3))
>>> flagged, score = model.score("c1", 1e9 + 601 * 3600, 25_000.0, 40)
>>> flagged, score > 0.8
(True, True)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from river import anomaly, preprocessing
from river.compose import Pipeline
from river.tree.padded import make_padded_tree

from features.events import Purchase
from models.alerts.rules import Alert
from models.ids import alert_id
from models.shared import SharedState

__all__ = ["PurchaseAnomaly", "anomaly_alert"]

_FIRST_GAP_HOURS: Final = 30 * 24.0
_LIMITS: Final = (-1.0, 2.0)
_FEATURES: Final = ("amount", "basket", "gap_h")
_BINS: Final = 1000  # the score histogram behind the quantile: scores are in [0, 1]


class _Trees(anomaly.HalfSpaceTrees):
    """``HalfSpaceTrees`` whose window pivot can be left to the deployment (``pivot``)."""

    pivot = True

    def learn_one(self, x: dict[str, float]) -> None:
        if self.pivot:
            super().learn_one(x)
            return
        counter = self.counter
        self.counter = -2  # River pivots when the incremented counter equals window_size
        super().learn_one(x)
        self.counter = counter + 1

    def build(self) -> None:
        """The trees, as ``learn_one`` builds them on the first purchase (same seed: the same
        trees on every worker)."""
        if not self.trees:
            limits = {name: self.limits[name] for name in sorted(_FEATURES)}
            self.trees = [
                make_padded_tree(
                    limits=limits,
                    height=self.height,
                    padding=0.15,
                    rng=self.rng,
                    r_mass=0,
                    l_mass=0,
                )
                for _ in range(self.n_trees)
            ]
            self._tree_nodes = [list(t.iter_dfs()) for t in self.trees]


class _ScoreQuantile:
    """A quantile of scores in [0, 1] from a histogram of ``_BINS`` bins (mergeable by sum)."""

    def __init__(self, q: float) -> None:
        self.q = q
        self.bins = np.zeros(_BINS)

    def update(self, score: float) -> None:
        self.bins[min(max(int(score * _BINS), 0), _BINS - 1)] += 1.0

    def get(self) -> float | None:
        total = self.bins.sum()
        if total <= 0:
            return None
        i = int(np.searchsorted(np.cumsum(self.bins), self.q * total))
        return min(i + 1, _BINS) / _BINS  # the bin's upper edge


class PurchaseAnomaly:
    """HalfSpaceTrees over (amount, basket size, gap), with warm-up and a quantile guard.

    Parameters
    ----------
    warmup
        Purchases learned before any is flagged.
    threshold
        The minimum score (0..1) of a flagged purchase.
    quantile
        A flagged score is also at least this running quantile of the scores seen.
    n_trees, height, window_size, seed
        ``HalfSpaceTrees`` hyperparameters.
    max_customers
        Customers whose last purchase time is remembered.
    """

    def __init__(
        self,
        warmup: int = 300,
        threshold: float = 0.8,
        quantile: float = 0.995,
        n_trees: int = 25,
        height: int = 6,
        window_size: int = 250,
        seed: int = 42,
        max_customers: int = 100_000,
    ) -> None:
        self.warmup = warmup
        self.threshold = threshold
        self.quantile = quantile
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.max_customers = max_customers
        self._model: Pipeline = preprocessing.MinMaxScaler() | _Trees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            seed=seed,
            limits=dict.fromkeys(_FEATURES, _LIMITS),
        )
        self._quantile = _ScoreQuantile(quantile)
        self._last: OrderedDict[str, float] = OrderedDict()
        self.n_learned = 0

    def features(self, customer_id: str, ts: float, amount: float, basket: int) -> dict[str, float]:
        last = self._last.get(customer_id)
        gap_h = _FIRST_GAP_HOURS if last is None else max(ts - last, 0.0) / 3600.0
        return {
            "amount": math.log1p(max(amount, 0.0)),
            "basket": math.log1p(max(basket, 0)),
            "gap_h": math.log1p(gap_h),
        }

    def score(self, customer_id: str, ts: float, amount: float, basket: int) -> tuple[bool, float]:
        """``(flagged, score)`` for one new purchase, then learn it."""
        x = self.features(customer_id, ts, amount, basket)
        warm = self.n_learned >= self.warmup
        score = float(self._model.score_one(x)) if self.n_learned else 0.0
        cut = self._quantile.get()
        flagged = warm and score >= self.threshold and (cut is None or score >= cut)
        self._model.learn_one(x)
        self._quantile.update(score)
        self.n_learned += 1
        self._remember(customer_id, ts)
        return flagged, score

    def check(self, purchase: Purchase) -> Alert | None:
        """Score and learn one new purchase; its ``anomaly`` alert when flagged."""
        basket = sum(line.quantity for line in purchase.items)
        x = self.features(purchase.customer_id, purchase.ts, purchase.total, basket)
        flagged, score = self.score(purchase.customer_id, purchase.ts, purchase.total, basket)
        return anomaly_alert(purchase, score, x) if flagged else None

    # -- one detector per deployment ------------------------------------------------------

    def _trees(self) -> _Trees:
        trees = self._model[1]
        if not isinstance(trees, _Trees):  # pickled before _Trees existed
            trees.__class__ = _Trees
        return trees  # type: ignore[return-value]

    def share(self) -> None:
        """Leave the window pivot to ``settle_shared_state`` (the deployment's merge)."""
        self._trees().pivot = False

    def shared_state(self) -> SharedState:
        trees = self._trees()
        trees.build()
        scaler = self._model[0]
        return {
            "anomaly.l": np.array([[n.l_mass for n in nodes] for nodes in trees._tree_nodes]),
            "anomaly.r": np.array([[n.r_mass for n in nodes] for nodes in trees._tree_nodes]),
            "anomaly.counter": float(trees.counter),
            "anomaly.windows": 0.0 if trees._first_window else 1.0,
            "anomaly.scaler.min": np.array([scaler.min[f].get() for f in _FEATURES]),
            "anomaly.scaler.max": np.array([scaler.max[f].get() for f in _FEATURES]),
            "anomaly.scores": self._quantile.bins.copy(),
            "anomaly.n_learned": float(self.n_learned),
        }

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        trees = self._trees()
        trees.build()
        if "anomaly.l" in state:
            for nodes, ls, rs in zip(
                trees._tree_nodes, state["anomaly.l"], state["anomaly.r"], strict=True
            ):
                for node, lm, rm in zip(nodes, ls.tolist(), rs.tolist(), strict=True):
                    node.l_mass, node.r_mass = lm, rm
        trees.counter = round(float(state.get("anomaly.counter", 0.0)))
        trees._first_window = float(state.get("anomaly.windows", 0.0)) <= 0.0
        scaler = self._model[0]
        for f, lo, hi in zip(
            _FEATURES,
            state.get("anomaly.scaler.min", [math.inf] * 3),
            state.get("anomaly.scaler.max", [-math.inf] * 3),
            strict=True,
        ):
            scaler.min[f].min = float(lo)
            scaler.max[f].max = float(hi)
        if "anomaly.scores" in state:
            self._quantile.bins = np.array(state["anomaly.scores"], dtype=np.float64)
        self.n_learned = round(float(state.get("anomaly.n_learned", 0.0)))

    def settle_shared_state(self, state: SharedState) -> SharedState:
        """The deployment's window pivot: once the merged state counts ``window_size``
        purchases, the latest masses become the reference (scaled to one window when more
        came in between two merges) and a new window starts."""
        counter = float(state.get("anomaly.counter", 0.0))
        if counter < self.window_size or "anomaly.l" not in state:
            return state
        state = dict(state)
        state["anomaly.r"] = np.asarray(state["anomaly.l"]) * (self.window_size / counter)
        state["anomaly.l"] = np.zeros_like(state["anomaly.r"])
        state["anomaly.counter"] = 0.0
        state["anomaly.windows"] = 1.0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state.get("_quantile"), _ScoreQuantile):  # River's P2 quantile
            state["_quantile"] = _ScoreQuantile(state["quantile"])
        self.__dict__.update(state)

    def _remember(self, customer_id: str, ts: float) -> None:
        last = self._last.get(customer_id)
        if last is None or ts > last:
            self._last[customer_id] = ts
        self._last.move_to_end(customer_id)
        while len(self._last) > self.max_customers:
            self._last.popitem(last=False)


def anomaly_alert(purchase: Purchase, score: float, x: dict[str, float]) -> Alert:
    """The ``anomaly`` alert for fraud review (always high severity)."""
    return Alert(
        alert_id=alert_id(purchase.customer_id, purchase.event_id, "anomaly"),
        customer_id=purchase.customer_id,
        type="anomaly",
        severity="high",
        score=round(min(max(score, 0.0), 1.0), 6),
        trigger_event_id=purchase.event_id,
        ts=purchase.ts,
        details={
            "order_id": purchase.order_id,
            "total": purchase.total,
            "basket_size": sum(line.quantity for line in purchase.items),
            "hours_since_last_purchase": round(math.expm1(x["gap_h"]), 2),
            "review": "fraud",
        },
    )
