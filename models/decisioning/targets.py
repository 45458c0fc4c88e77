"""Target policies for off-policy evaluation: each gives the action probabilities of every
logged decision, an (n, K) array over ``Logs.actions`` (zero outside ``Logs.mask``).

* ``uniform``: every eligible offer alike (what the control group does);
* ``fixed_rule``: the first eligible offer, i.e. the best ``OfferPolicy`` score;
* ``always(offer_id)``: that offer where it is eligible, else the fixed rule's;
* ``from_scores(scores)``: the highest-scored eligible offer by a static score per offer
  (unknown offers score below all known ones; ties go to the first eligible);
* ``bandit_policy(bandit, ...)``: a LinUCB re-scoring the logged contexts, with the same
  exploration rule as the worker (``exploration.py``); ``"greedy"`` for its argmax.

>>> from models.decisioning.ope import Logs
>>> logs = Logs.from_records([{"eligible": ["a", "b", "c"], "action": "b",
...                            "propensity": 0.5, "reward": 1.0}])
>>> uniform(logs).round(3).tolist(), fixed_rule(logs).tolist()
([[0.333, 0.333, 0.333]], [[1.0, 0.0, 0.0]])
>>> from_scores(logs, {"c": 2.0, "a": 1.0}).tolist()
[[0.0, 0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.decisioning.bandit import LinUCB
from models.decisioning.exploration import Exploration, probabilities
from models.decisioning.ope import Logs

__all__ = ["always", "bandit_policy", "fixed_rule", "from_scores", "uniform"]


def uniform(logs: Logs) -> np.ndarray:
    m = logs.mask.astype(np.float64)
    return m / m.sum(axis=1, keepdims=True)


def fixed_rule(logs: Logs) -> np.ndarray:
    pi = np.zeros(logs.mask.shape)
    pi[:, 0] = 1.0
    return pi


def always(logs: Logs, offer_id: str) -> np.ndarray:
    return logs.one_hot(offer_id)


def from_scores(logs: Logs, scores: Mapping[str, float]) -> np.ndarray:
    table = np.vectorize(lambda a: float(scores.get(a, -np.inf)), otypes=[np.float64])
    s = np.where(logs.mask, table(logs.actions), -np.inf)
    s[~logs.mask] = -np.inf
    known = np.isfinite(s).any(axis=1)
    pi = np.zeros(logs.mask.shape)
    rows = np.arange(logs.n)
    pi[rows[known], np.argmax(s[known], axis=1)] = 1.0
    pi[rows[~known], 0] = 1.0
    return pi


def bandit_policy(
    logs: Logs,
    bandit: LinUCB,
    rule: Exploration = "epsilon_greedy",
    epsilon: float = 0.1,
    temperature: float = 0.05,
) -> np.ndarray:
    """``bandit``'s action probabilities on the logged contexts (it is not changed, except
    that arms it has never seen are created untrained, as the worker would)."""
    if not logs.has_contexts:
        raise ValueError("the decision log has no contexts: the bandit cannot re-score it")
    if logs.X.shape[2] != bandit.n_features:
        raise ValueError(
            f"contexts have {logs.X.shape[2]} features, the bandit {bandit.n_features}"
        )
    pi = np.zeros(logs.mask.shape)
    for i in range(logs.n):
        k = int(logs.mask[i].sum())
        arms = logs.actions[i, :k].tolist()
        if k == 1:
            pi[i, 0] = 1.0
            continue
        pi[i, :k] = probabilities(bandit.scores(arms, logs.X[i, :k]), rule, epsilon, temperature)
    return pi
