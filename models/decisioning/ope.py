"""Off-policy evaluation: what another offer policy would have earned on the logged decisions.

``Logs.from_records`` packs decision-log records (``decision_log.py``) into padded arrays: n
decisions, up to K eligible actions each, a context vector per action. A target policy is a
function of the logs giving each decision's action probabilities (``targets.py``), and
``evaluate`` estimates its value (mean reward per decision) three ways:

* **IPS** (inverse propensity scoring): ``mean(w_i r_i)``, ``w_i = pi(a_i|x_i) / p_i``;
  unbiased when every action the target may take had a logged probability above 0;
* **SNIPS** (self-normalised IPS): ``sum(w r) / sum(w)``: slightly biased, lower variance;
* **DR** (doubly robust): ``mean(sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)))`` with
  ``q`` a per-action ridge regression of the reward on the action's context, cross-fitted
  (each decision's ``q`` is fitted on the other folds): unbiased if either the propensities
  or ``q`` are right, and the variance of IPS shrinks by what ``q`` explains.

Each comes with a normal (CLT) confidence interval on its per-decision terms (SNIPS: on its
linearisation, ``w_i (r_i - V) / mean(w)``). Decisions whose propensity is 1 among several
eligible actions were made deterministically (the fixed rule, a greedy bandit): they say
nothing about the other actions, so ``Logs.from_records`` leaves them out and counts them.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> n = 4000
>>> records = []
>>> for i in range(n):  # action "b" converts 30 %, "a" 10 %; logged 50/50
...     a = "ab"[int(rng.random() < 0.5)]
...     r = float(rng.random() < (0.3 if a == "b" else 0.1))
...     records.append({"decision_id": str(i), "eligible": ["a", "b"], "action": a,
...                     "propensity": 0.5, "reward": r})
>>> logs = Logs.from_records(records)
>>> est = evaluate(logs, logs.one_hot("b"))
>>> round(est["ips"].value, 2), round(est["dr"].value, 2), est["dr"].low < 0.3 < est["dr"].high
(0.3, 0.3, True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["ESTIMATORS", "Estimate", "Logs", "evaluate", "reward_model", "weight_stats"]

logger = logging.getLogger(__name__)

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """A policy value with its confidence interval (normal, on the per-decision terms)."""

    value: float
    low: float
    high: float
    se: float
    n: int

    @property
    def width(self) -> float:
        return self.high - self.low

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "se": self.se, "n": self.n}


@dataclass(frozen=True)
class Logs:
    """Logged decisions as padded arrays.

    ``actions[i, j]`` is decision i's j-th eligible action ("" past its ``k_i``), ``mask`` says
    which are real, ``X[i, j]`` is that action's context, ``chosen[i]`` the column chosen with
    probability ``propensity[i]``, earning ``reward[i]``.
    """

    actions: np.ndarray  # (n, K) str
    mask: np.ndarray  # (n, K) bool
    X: np.ndarray  # (n, K, d) float
    chosen: np.ndarray  # (n,) int
    propensity: np.ndarray  # (n,) float
    reward: np.ndarray  # (n,) float
    ids: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()
    has_contexts: bool = True
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.chosen.shape[0])

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], reward: str = "reward") -> Logs:
        """Pack decision-log records (``decision_log.py``); ``reward`` names the field
        used as the reward ("reward" or "revenue"). Invalid and deterministic decisions are
        left out and counted in ``dropped``."""
        rows: list[tuple[list[str], list[list[float]] | None, int, float, float, str, str]] = []
        dropped = {"invalid": 0, "deterministic": 0, "no_context": 0}
        d = 0
        for rec in records:
            eligible = rec.get("eligible")
            action, p, r = rec.get("action"), rec.get("propensity"), rec.get(reward)
            if (
                not isinstance(eligible, list)
                or not eligible
                or action not in eligible
                or not isinstance(p, (int, float))
                or not 0.0 < p <= 1.0
                or not isinstance(r, (int, float))
            ):
                dropped["invalid"] += 1
                continue
            if p >= 1.0 - 1e-9 and len(eligible) > 1:
                dropped["deterministic"] += 1
                continue
            ctx = rec.get("contexts")
            if ctx is None and rec.get("context") is not None:
                ctx = [rec["context"]] * len(eligible)
            if ctx is not None:
                if len(ctx) != len(eligible) or len({len(x) for x in ctx}) != 1:
                    dropped["invalid"] += 1
                    continue
                d = d or len(ctx[0])
                if len(ctx[0]) != d:
                    dropped["invalid"] += 1
                    continue
            rows.append(
                (
                    [str(a) for a in eligible],
                    ctx,
                    eligible.index(action),
                    float(p),
                    float(r),
                    str(rec.get("decision_id", len(rows))),
                    str(rec.get("arm") or ""),
                )
            )
        has_contexts = bool(rows) and all(row[1] is not None for row in rows)
        if rows and not has_contexts:
            dropped["no_context"] = sum(1 for row in rows if row[1] is None)
        n = len(rows)
        k = max((len(row[0]) for row in rows), default=1)
        dim = d if has_contexts else 1
        actions = np.full((n, k), "", dtype=object)
        mask = np.zeros((n, k), dtype=bool)
        X = np.zeros((n, k, dim))
        for i, (elig, ctx, _, _, _, _, _) in enumerate(rows):
            actions[i, : len(elig)] = elig
            mask[i, : len(elig)] = True
            X[i, : len(elig)] = np.asarray(ctx, dtype=np.float64) if has_contexts else 1.0
        return cls(
            actions=actions,
            mask=mask,
            X=X,
            chosen=np.array([row[2] for row in rows], dtype=np.int64),
            propensity=np.array([row[3] for row in rows]),
            reward=np.array([row[4] for row in rows]),
            ids=tuple(row[5] for row in rows),
            arms=tuple(row[6] for row in rows),
            has_contexts=has_contexts,
            dropped=dropped,
        )

    def one_hot(self, action: str) -> np.ndarray:
        """The policy "always ``action``" (the first eligible one where it is not eligible)."""
        pi = (self.actions == action) & self.mask
        pi[~pi.any(axis=1), 0] = True
        return pi.astype(np.float64)

    def action_names(self) -> list[str]:
        return sorted({a for a in self.actions[self.mask].tolist()})

    def subset(self, rows: np.ndarray) -> Logs:
        """The decisions ``rows`` (a boolean mask or indices)."""
        idx = np.arange(self.n)[rows]
        return Logs(
            actions=self.actions[idx],
            mask=self.mask[idx],
            X=self.X[idx],
            chosen=self.chosen[idx],
            propensity=self.propensity[idx],
            reward=self.reward[idx],
            ids=tuple(self.ids[i] for i in idx) if self.ids else (),
            arms=tuple(self.arms[i] for i in idx) if self.arms else (),
            has_contexts=self.has_contexts,
            dropped=dict(self.dropped),
        )


def reward_model(logs: Logs, folds: int = 2, l2: float = 1.0, seed: int = 0) -> np.ndarray:
    """Cross-fitted predicted reward of every eligible action, (n, K).

    Per action a ridge regression of the reward on that action's context, fitted on the
    decisions that chose it in the other folds (``folds=1``: on all of them, no
    cross-fitting); an action with fewer than ``2 d`` such decisions uses a ridge regression
    pooled over all actions instead. Predictions are clipped to the observed reward range.
    """
    n, k, d = logs.X.shape
    q = np.zeros((n, k))
    if n == 0:
        return q
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, size=n) if folds > 1 else np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    x_chosen = logs.X[rows, logs.chosen]
    a_chosen = logs.actions[rows, logs.chosen]
    lo, hi = float(logs.reward.min()), float(logs.reward.max())
    for f in range(max(folds, 1)):
        test = fold == f
        train = ~test if folds > 1 else np.ones(n, dtype=bool)
        if not test.any():
            continue
        pooled = _ridge(x_chosen[train], logs.reward[train], l2)
        for a in np.unique(logs.actions[logs.mask]):
            sel = train & (a_chosen == a)
            w = _ridge(x_chosen[sel], logs.reward[sel], l2) if sel.sum() >= 2 * d else pooled
            cells = (logs.actions == a) & logs.mask & test[:, None]
            q[cells] = logs.X[cells] @ w
    return np.clip(q, lo, hi) * logs.mask


def _ridge(X: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    d = X.shape[1]
    if X.shape[0] == 0:
        return np.zeros(d)
    return np.linalg.solve(X.T @ X + l2 * np.eye(d), X.T @ y)


def evaluate(
    logs: Logs,
    pi: np.ndarray,
    q: np.ndarray | None = None,
    confidence: float = 0.95,
    estimators: Sequence[str] = ESTIMATORS,
) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of the value of the target ``pi`` ((n, K) action
    probabilities, zero outside ``mask``); ``q`` is ``reward_model(logs)`` when not given."""
    n = logs.n
    if n == 0:
        raise ValueError("no decisions to evaluate")
    if pi.shape != logs.mask.shape:
        raise ValueError(f"target probabilities of shape {pi.shape}, logs {logs.mask.shape}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    rows = np.arange(n)
    w = pi[rows, logs.chosen] / logs.propensity
    r = logs.reward
    out: dict[str, Estimate] = {}
    if "ips" in estimators:
        out["ips"] = _clt(w * r, z)
    if "snips" in estimators:
        mw = float(w.mean())
        if mw > 0.0:
            v = float((w * r).sum() / w.sum())
            se = float(np.std(w * (r - v) / mw, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
            out["snips"] = Estimate(v, v - z * se, v + z * se, se, n)
        else:  # the target never takes a logged action: no information
            out["snips"] = Estimate(float("nan"), float("nan"), float("nan"), float("inf"), n)
    if "dr" in estimators:
        if q is None:
            q = reward_model(logs)
        terms = (pi * q).sum(axis=1) + w * (r - q[rows, logs.chosen])
        out["dr"] = _clt(terms, z)
    return out


def _clt(terms: np.ndarray, z: float) -> Estimate:
    n = terms.shape[0]
    v = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return Estimate(v, v - z * se, v + z * se, se, n)


def weight_stats(logs: Logs, pi: np.ndarray) -> dict[str, float]:
    """Importance-weight diagnostics: mean (1 when the target is supported), maximum, and the
    effective sample size ``(sum w)^2 / sum w^2``."""
    w = pi[np.arange(logs.n), logs.chosen] / logs.propensity
    s2 = float((w**2).sum())
    return {
        "mean_weight": float(w.mean()) if logs.n else float("nan"),
        "max_weight": float(w.max()) if logs.n else float("nan"),
        "ess": float(w.sum() ** 2 / s2) if s2 > 0 else 0.0,
    }
