"""A disjoint LinUCB contextual bandit in numpy: which eligible offer to show.

Each arm (offer id) has a ridge regression of the reward (conversion, 0 or 1) on a context
vector ``x``; ``select`` picks the arm with the highest upper confidence bound
``theta . x + alpha * sqrt(x' A^-1 x)`` (Li et al. 2010). ``A^-1`` is kept directly and
updated with Sherman-Morrison and stacked over arms, so a decision over k arms is one batched
mat-vec product and a learned outcome one rank-one update: a few microseconds at our dimension
(~20).
``alpha`` is the exploration knob; ``prior`` is the ridge (``A = prior * I`` for a new arm).
``A`` and ``b`` themselves are kept too: they are sums over outcomes, so the workers of a
deployment merge them exactly (``shared_state``, ``models/shared.py``).
Ties break towards the first arm, so pass arms in the fixed-rule order and an untrained
bandit starts as the fixed policy.

River's ``bandit.LinUCBDisjoint`` is the same algorithm; ``benchmarks/offer_policy.py``
measures both per decision and update.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> bandit = LinUCB(n_features=2, alpha=0.1)
>>> for _ in range(500):
...     x = np.array([1.0, rng.random()])
...     arm = bandit.select(["a", "b"], np.stack([x, x]))
...     good = x[1] > 0.5  # "b" converts when x[1] is high, "a" otherwise
...     reward = float(rng.random() < (0.6 if (arm == 1) == good else 0.1))
...     bandit.learn_one(["a", "b"][arm], x, reward)
>>> bandit.select(["a", "b"], np.array([[1.0, 0.9], [1.0, 0.9]])), bandit.select(
...     ["a", "b"], np.array([[1.0, 0.1], [1.0, 0.1]]))
(1, 0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any

import numpy as np

from models.shared import SEP, SharedState

__all__ = ["CONTEXT_NAMES", "LinUCB", "bucket", "context_vector"]

logger = logging.getLogger(__name__)

# The shared context features; segment one-hots follow them (see ``context_vector``).
CONTEXT_NAMES = (
    "bias",
    "propensity",
    "offer_affinity",  # the customer's affinity share in the offer's target categories
    "click_match",  # the offer targets the clicked category
    "generic",  # the offer has no target categories
    "log_spend_30d",
    "log_cart_value",
    "log_purchases_30d",
    "log_avg_order_value",
    "intent_purchase",
    "intent_abandon",
    "log_score",  # the fixed rule's score
)


def context_vector(
    features: Mapping[str, float],
    propensity: float,
    segment: int,
    n_segments: int,
    intent: Mapping[str, float] | None,
    offer_affinity: float,
    click_match: bool,
    generic: bool,
    score: float,
) -> list[float]:
    """The bandit's context for one (customer, offer) pair, ``CONTEXT_NAMES`` + segments."""
    g = features.get
    x = [
        1.0,
        float(propensity),
        float(offer_affinity),
        1.0 if click_match else 0.0,
        1.0 if generic else 0.0,
        math.log1p(max(g("spend_30d", 0.0), 0.0)) / 6.0,
        math.log1p(max(g("cart_value", 0.0), 0.0)) / 6.0,
        math.log1p(max(g("purchases_30d", 0.0), 0.0)) / 2.0,
        math.log1p(max(g("avg_order_value", 0.0), 0.0)) / 6.0,
        0.0 if intent is None else float(intent.get("purchase", 0.0)),
        0.0 if intent is None else float(intent.get("abandon", 0.0)),
        math.log1p(max(score, 0.0)) / 4.0,
    ]
    onehot = [0.0] * n_segments
    if 0 <= segment < n_segments:
        onehot[segment] = 1.0
    return x + onehot


def bucket(key: str, salt: str = "control") -> float:
    """A stable uniform number in [0, 1) for ``key`` (control-group and random draws)."""
    digest = blake2b(key.encode(), digest_size=8, person=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class LinUCB:
    """Disjoint LinUCB over string-named arms created on first sight."""

    def __init__(self, n_features: int, alpha: float = 0.3, prior: float = 1.0) -> None:
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if prior <= 0:
            raise ValueError(f"prior must be positive, got {prior}")
        self.n_features = n_features
        self.alpha = alpha
        self.prior = prior
        # Per arm (index self._index[name]) a (d + 1, d) block: A^-1 on top, theta as the last
        # row, so one gather and one batched mat-vec give A^-1 x and theta . x for every arm.
        self._index: dict[str, int] = {}
        self._w = np.empty((0, n_features + 1, n_features))
        self._b = np.empty((0, n_features))
        self._a = np.empty((0, n_features, n_features))  # A - prior * I: the outcomes' sum
        self._n: dict[str, int] = {}
        self._rewards: dict[str, float] = {}

    def _arm(self, arm: str) -> int:
        i = self._index.get(arm)
        if i is None:
            d = self.n_features
            i = self._index[arm] = len(self._index)
            block = np.zeros((1, d + 1, d))
            block[0, :d] = np.eye(d) / self.prior
            self._w = np.concatenate([self._w, block])
            self._b = np.concatenate([self._b, np.zeros((1, d))])
            self._a = np.concatenate([self._a, np.zeros((1, d, d))])
            self._n[arm] = 0
            self._rewards[arm] = 0.0
        return i

    def scores(self, arms: Sequence[str], X: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Upper confidence bound of each arm ``arms[i]`` at its context ``X[i]``."""
        X = np.asarray(X, dtype=np.float64)
        d = self.n_features
        idx = [self._arm(arm) for arm in arms]
        p = np.matmul(self._w.take(idx, axis=0), X[:, :, None])[:, :, 0]  # [A^-1 x, theta . x]
        width = (p[:, :d] * X).sum(axis=1)
        return p[:, d] + self.alpha * np.sqrt(np.maximum(width, 0.0))

    def select(self, arms: Sequence[str], X: np.ndarray | Sequence[Sequence[float]]) -> int:
        """Index of the arm with the highest upper confidence bound (first on ties)."""
        if not arms:
            raise ValueError("no arms to choose from")
        if len(arms) == 1:  # nothing to compare (the arm is still created on first sight)
            self._arm(arms[0])
            return 0
        return int(np.argmax(self.scores(arms, X)))

    def learn_one(self, arm: str, x: Sequence[float] | np.ndarray, reward: float) -> None:
        """Update ``arm`` with the observed ``reward`` at context ``x`` (Sherman-Morrison)."""
        xv = np.asarray(x, dtype=np.float64)
        if xv.shape != (self.n_features,):
            logger.warning("bandit: context of shape %s ignored for %s", xv.shape, arm)
            return
        i = self._arm(arm)
        a_inv = self._w[i, : self.n_features]  # a view: updated in place
        ax = a_inv @ xv
        a_inv -= np.outer(ax, ax) / (1.0 + xv @ ax)
        self._b[i] += reward * xv
        self._a[i] += np.outer(xv, xv)
        self._w[i, self.n_features] = a_inv @ self._b[i]
        self._n[arm] += 1
        self._rewards[arm] += reward

    @property
    def n_learned(self) -> int:
        return sum(self._n.values())

    def shared_state(self) -> SharedState:
        """Per arm ``A - prior * I``, ``b``, outcomes and summed reward: all sums."""
        state: SharedState = {}
        for arm, i in self._index.items():
            state[f"bandit.A{SEP}{arm}"] = self._a[i].copy()
            state[f"bandit.b{SEP}{arm}"] = self._b[i].copy()
            state[f"bandit.n{SEP}{arm}"] = float(self._n[arm])
            state[f"bandit.r{SEP}{arm}"] = float(self._rewards[arm])
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        """Take ``A``, ``b`` and the counts from ``state``; ``A^-1`` and theta follow."""
        head = f"bandit.A{SEP}"
        d = self.n_features
        eye = np.eye(d) * self.prior
        for name in state:
            if not name.startswith(head):
                continue
            arm = name[len(head) :]
            i = self._arm(arm)
            a = np.asarray(state[name], dtype=np.float64)
            b = np.asarray(state.get(f"bandit.b{SEP}{arm}", np.zeros(d)), dtype=np.float64)
            self._a[i] = a
            self._b[i] = b
            a_inv = np.linalg.inv(a + eye)
            self._w[i, :d] = a_inv
            self._w[i, d] = a_inv @ b
            self._n[arm] = round(float(state.get(f"bandit.n{SEP}{arm}", 0.0)))
            self._rewards[arm] = float(state.get(f"bandit.r{SEP}{arm}", 0.0))

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_a" not in state:  # pickled before A was kept: recover it from A^-1
            d = state["n_features"]
            inv = state["_w"][:, :d]
            eye = np.eye(d) * state["prior"]
            state["_a"] = np.stack([np.linalg.inv(m) - eye for m in inv]).reshape(-1, d, d)
        self.__dict__.update(state)

    def arm_stats(self) -> dict[str, dict[str, float]]:
        """Per arm: outcomes learned and their mean reward."""
        return {
            arm: {"n": n, "mean_reward": self._rewards[arm] / n if n else 0.0}
            for arm, n in self._n.items()
        }
