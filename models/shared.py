"""What the models of one deployment share, in a form that merges.

Every model that all workers improve together exposes ``shared_state()``: a flat dict of
name -> number or numpy array (``SharedState``), chosen so that **what a worker learned since
it last merged is the difference of two such states**. ``load_shared_state`` puts a state
back. ``merge(current, local, base)`` is then one rule for every model: the deployment's
current state plus this worker's own learning, ``current + (local - base)``, key by key.

What that rule means depends on what a model exposes:

- **Sufficient statistics merge exactly**: counts, sums, the LinUCB Gram matrix ``A`` and
  vector ``b``, naive Bayes counts, the running means and variances of the scalers (shared as
  power sums ``n``, ``sum x``, ``sum x^2``). The merged state is the one a single model would
  have after seeing every worker's events (up to float rounding).
- **Weights trained by gradient steps merge as summed updates**: logistic regression weights,
  k-means centers, the intent LSTM's fine-tuned weights. This is asynchronous SGD: each worker
  steps from a view of the weights at most one merge interval old. It is not the sequence of
  steps one model would have taken, but it converges to the same place when steps are small
  (``benchmarks/multi_worker.py`` measures how close).
- **Keys ending in ``.min`` or ``.max``** (a min-max scaler's bounds) merge by min and max.

A key a state lacks counts as zero (an arm or a token nobody had seen yet), so models must
expose values whose "nothing learned" is zero.

>>> base = {"n": 10.0, "w": np.array([1.0, 1.0]), "x.max": 3.0}
>>> current = {"n": 15.0, "w": np.array([1.5, 1.0]), "x.max": 4.0}  # another worker's learning
>>> local = {"n": 12.0, "w": np.array([1.0, 0.5]), "x.max": 5.0, "new": 1.0}  # this one's
>>> merged = merge(current, local, base)
>>> merged["n"], merged["w"].tolist(), float(merged["x.max"]), merged["new"]
(17.0, [1.5, 0.5], 5.0, 1.0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import numpy as np
import orjson

__all__ = [
    "SEP",
    "Shared",
    "SharedState",
    "counter_of",
    "counts_state",
    "load_counts",
    "merge",
    "moments_from_sums",
    "power_sums",
]

SharedState = dict[str, Any]  # name -> float | np.ndarray

# Separates a table's name from its row key (a token, an arm) in a state key.
SEP: Final = "\x1f"


class Shared(Protocol):
    def shared_state(self) -> SharedState: ...

    def load_shared_state(self, state: Mapping[str, Any]) -> None: ...


def merge(
    current: Mapping[str, Any], local: Mapping[str, Any], base: Mapping[str, Any]
) -> SharedState:
    """``current + (local - base)`` key by key (min/max for ``.min``/``.max`` keys)."""
    out: SharedState = dict(current)
    for name, mine in local.items():
        if name.endswith(".min"):
            theirs = current.get(name)
            out[name] = mine if theirs is None else np.minimum(theirs, mine)
            continue
        if name.endswith(".max"):
            theirs = current.get(name)
            out[name] = mine if theirs is None else np.maximum(theirs, mine)
            continue
        was = base.get(name)
        delta = mine if was is None else mine - was
        theirs = current.get(name)
        out[name] = delta if theirs is None else theirs + delta
    return out


def power_sums(prefix: str, count: float, mean: np.ndarray, var: np.ndarray) -> dict[str, Any]:
    """A running mean and population variance as ``n``, ``sum x`` and ``sum x^2``."""
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    return {
        f"{prefix}.n": float(count),
        f"{prefix}.s1": count * mean,
        f"{prefix}.s2": count * (var + mean * mean),
    }


def moments_from_sums(
    state: Mapping[str, Any], prefix: str, size: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """``(n, mean, variance)`` back from ``power_sums``."""
    n = float(state.get(f"{prefix}.n", 0.0))
    if n <= 0:
        return 0.0, np.zeros(size), np.zeros(size)
    mean = np.asarray(state[f"{prefix}.s1"], dtype=np.float64) / n
    var = np.asarray(state[f"{prefix}.s2"], dtype=np.float64) / n - mean * mean
    return n, mean, np.maximum(var, 0.0)


def counts_state(prefix: str, table: Mapping[Any, Mapping[Any, float]]) -> dict[str, float]:
    """A two-level count table (token -> class -> count) as flat keys."""
    return {
        f"{prefix}{SEP}{row}{SEP}{orjson.dumps(col).decode()}": float(count)
        for row, cols in table.items()
        for col, count in cols.items()
    }


def load_counts(state: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, Any, float]]:
    """``(row, class, count)`` of the keys ``counts_state`` wrote under ``prefix``."""
    head = f"{prefix}{SEP}"
    for name, value in state.items():
        if name.startswith(head):
            row, col = name[len(head) :].rsplit(SEP, 1)
            yield row, orjson.loads(col), float(value)


def counter_of(pairs: Iterable[tuple[Any, float]]) -> Counter[Any]:
    """A ``Counter`` of integral counts (naive Bayes keeps ints)."""
    out: Counter[Any] = Counter()
    for key, value in pairs:
        out[key] += round(value)
    return out
