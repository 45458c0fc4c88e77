"""From the feature store's raw per-customer features to model inputs.

The store gives ``dict[str, float]`` of counts, amounts, recencies and averages. Counts and amounts
are heavy-tailed, so they go through ``log1p``; recencies too, capped at ``NEVER_S`` (what the
store writes when something never happened, also used when the recency is missing). A missing or
non-finite feature is 0; unknown names are ignored, so the output always has the same keys in the
same order (``FEATURE_NAMES``), which lets batch paths build a fixed-column matrix. Every store
feature (``features.store.FEATURE_NAMES``) that is not a recency or one of ``LINEAR_FEATURES`` is
a count or an amount.

>>> x = model_inputs({"clicks_5m": 3, "spend_30d": 120.5, "rating_avg": 4.5, "other": 1})
>>> round(x["clicks_5m"], 4), round(x["spend_30d"], 4), x["rating_avg"], x["carts_1h"]
(1.3863, 4.7999, 4.5, 0.0)
>>> round(x["secs_since_last_purchase"], 4)  # missing recency means "never"
16.1181
>>> list(x) == list(FEATURE_NAMES)
True

``model_inputs_matrix`` does the same for a batch, one row per record, with numpy: within one
unit in the last place of ``model_inputs`` (numpy's ``log1p`` is not libm's;
``tests/models/online/test_transform.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from features.store import FEATURE_NAMES as STORE_FEATURES
from features.store import NEVER_SECONDS

__all__ = [
    "FEATURE_NAMES",
    "LINEAR_FEATURES",
    "LOG_FEATURES",
    "NEVER_S",
    "RECENCY_FEATURES",
    "log1p_clipped",
    "model_inputs",
    "model_inputs_matrix",
]

NEVER_S: Final = NEVER_SECONDS

RECENCY_FEATURES: Final[tuple[str, ...]] = ("secs_since_last_click", "secs_since_last_purchase")
LINEAR_FEATURES: Final[tuple[str, ...]] = ("rating_avg", "sentiment_avg", "category_affinity")
# Every other store feature is a count or an amount, in the store's order.
LOG_FEATURES: Final[tuple[str, ...]] = tuple(
    name for name in STORE_FEATURES if name not in RECENCY_FEATURES + LINEAR_FEATURES
)
FEATURE_NAMES: Final[tuple[str, ...]] = LOG_FEATURES + RECENCY_FEATURES + LINEAR_FEATURES


def log1p_clipped(value: float | None, high: float = math.inf) -> float:
    """``log1p`` of ``value`` clipped to ``[0, high]``; 0 for missing or non-finite values."""
    if value is None:
        return 0.0
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        return math.log1p(high) if v == math.inf and high != math.inf else 0.0
    return math.log1p(v if v < high else high)


def _finite(value: float | None) -> float:
    if value is None:
        return 0.0
    v = float(value)
    return v if math.isfinite(v) else 0.0


def model_inputs(features: Mapping[str, float]) -> dict[str, float]:
    """Transformed model inputs, keyed and ordered by ``FEATURE_NAMES``."""
    get = features.get
    out = {name: log1p_clipped(get(name)) for name in LOG_FEATURES}
    for name in RECENCY_FEATURES:
        out[name] = log1p_clipped(get(name, NEVER_S), NEVER_S)
    for name in LINEAR_FEATURES:
        out[name] = _finite(get(name))
    return out


# the columns of each kind of input, in FEATURE_NAMES order
_LOG: Final = slice(0, len(LOG_FEATURES))
_RECENCY: Final = slice(_LOG.stop, _LOG.stop + len(RECENCY_FEATURES))
_LINEAR: Final = slice(_RECENCY.stop, len(FEATURE_NAMES))
# (name, value when missing) in FEATURE_NAMES order: NaN becomes 0 below, NEVER_S "never"
_DEFAULTS: Final = tuple(
    (name, NEVER_S if name in RECENCY_FEATURES else math.nan) for name in FEATURE_NAMES
)


def model_inputs_matrix(features: Sequence[Mapping[str, float]]) -> np.ndarray:
    """``model_inputs`` of every record as one ``[n, len(FEATURE_NAMES)]`` float64 matrix."""
    raw = np.array(
        [[f.get(name, missing) for name, missing in _DEFAULTS] for f in features],
        dtype=np.float64,
    ).reshape(len(features), len(FEATURE_NAMES))  # None becomes NaN
    out = np.zeros_like(raw)
    with np.errstate(invalid="ignore"):
        counts = raw[:, _LOG]
        np.log1p(counts, out=out[:, _LOG], where=np.isfinite(counts) & (counts > 0.0))
        recency, into = raw[:, _RECENCY], out[:, _RECENCY]
        ok = np.isfinite(recency) & (recency > 0.0)
        np.log1p(np.minimum(recency, NEVER_S), out=into, where=ok)
        into[recency == math.inf] = math.log1p(NEVER_S)
        linear = raw[:, _LINEAR]
        np.copyto(out[:, _LINEAR], linear, where=np.isfinite(linear))
    return out
