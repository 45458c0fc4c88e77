"""Exploration with known probabilities: how the bandit turns UCB scores into a choice.

A deterministic argmax has no usable propensity (1 for the best offer, 0 for the rest), so
off-policy evaluation (``models/decisioning/ope.py``) could only ever judge that one policy.
``probabilities`` turns the scores of the eligible offers into a distribution; ``draw`` picks
from it with a uniform number the caller derives from a stable hash of (customer, trigger
event) (``bandit.bucket``), so a replay makes the same choice and logs the same propensity.

Rules (``DecisionSettings.bandit_exploration``):

* ``"epsilon_greedy"``: the best score (first on ties) gets ``1 - epsilon``, and ``epsilon`` is
  spread evenly over all offers: every offer has at least ``epsilon / k``;
* ``"softmax"``: ``exp(score / temperature)``, normalised, then mixed with ``epsilon`` of the
  uniform distribution (so ``epsilon > 0`` bounds the importance weights here too);
* ``"greedy"``: the argmax with probability 1 (today's behaviour; no evaluation possible).

>>> import numpy as np
>>> p = probabilities(np.array([0.2, 0.5, 0.1]), "epsilon_greedy", epsilon=0.3)
>>> p.round(3).tolist(), draw(p, 0.05), draw(p, 0.95)
([0.1, 0.8, 0.1], 0, 2)
>>> probabilities(np.array([0.2, 0.5]), "softmax", temperature=0.1, epsilon=0.0).round(3).tolist()
[0.047, 0.953]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Exploration", "draw", "probabilities"]

Exploration = Literal["epsilon_greedy", "softmax", "greedy"]


def probabilities(
    scores: np.ndarray,
    rule: Exploration = "epsilon_greedy",
    epsilon: float = 0.1,
    temperature: float = 0.05,
) -> np.ndarray:
    """The probability of each offer given its score (1-d array, same order)."""
    s = np.asarray(scores, dtype=np.float64)
    k = s.shape[0]
    if k == 0:
        raise ValueError("no scores")
    if rule == "softmax":
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        z = np.exp((s - s.max()) / temperature)
        p = z / z.sum()
    elif rule in ("epsilon_greedy", "greedy"):
        p = np.zeros(k)
        p[int(np.argmax(s))] = 1.0
    else:
        raise ValueError(f"unknown exploration rule {rule!r}")
    if rule != "greedy" and epsilon > 0.0:
        p = (1.0 - epsilon) * p + epsilon / k
    return p


def draw(p: np.ndarray, u: float) -> int:
    """The index that the uniform number ``u`` in [0, 1) picks from distribution ``p``."""
    c = np.cumsum(p)
    k = int(np.searchsorted(c, u * c[-1], side="right"))
    return min(k, len(p) - 1)
