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
from typing import Final

from river import anomaly, preprocessing, stats
from river.compose import Pipeline

from features.events import Purchase
from models.alerts.rules import Alert
from models.ids import alert_id

__all__ = ["PurchaseAnomaly", "anomaly_alert"]

_FIRST_GAP_HOURS: Final = 30 * 24.0
_LIMITS: Final = (-1.0, 2.0)


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
        self._model: Pipeline = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            seed=seed,
            limits=dict.fromkeys(("amount", "basket", "gap_h"), _LIMITS),
        )
        self._quantile = stats.Quantile(quantile)
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
        alert_id=alert_id(purchase.event_id, "anomaly"),
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
