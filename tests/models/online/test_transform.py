"""Model inputs cover the feature store's features, each transformed once."""

from __future__ import annotations

from features.store import FEATURE_NAMES as STORE_FEATURES
from models.online.transform import FEATURE_NAMES, LINEAR_FEATURES, RECENCY_FEATURES


def test_every_store_feature_is_a_model_input_once() -> None:
    assert sorted(FEATURE_NAMES) == sorted(STORE_FEATURES)
    assert set(RECENCY_FEATURES + LINEAR_FEATURES) <= set(STORE_FEATURES)


def test_the_batch_matrix_equals_model_inputs_row_by_row() -> None:
    """``model_inputs_matrix`` (the scoring path) gives ``model_inputs`` for every row, within
    one unit in the last place (numpy's ``log1p`` against ``math.log1p``; the zeros, clips
    and linear values exactly): missing, None, NaN, +-inf, negative, zero, huge and unknown
    values."""
    import math
    import random

    import numpy as np

    from features.store import FEATURE_NAMES as STORE_FEATURES
    from models.online.transform import FEATURE_NAMES, NEVER_S, model_inputs, model_inputs_matrix

    rng = random.Random(7)
    specials = [None, math.nan, math.inf, -math.inf, -1.0, 0.0, 1e-300, 1e300, NEVER_S, 2 * NEVER_S]
    rows = []
    for _ in range(400):
        f: dict = {"unknown": 5.0}
        for name in STORE_FEATURES:
            r = rng.random()
            if r < 0.15:
                continue  # missing
            f[name] = rng.choice(specials) if r < 0.4 else rng.lognormvariate(0, 4)
        rows.append(f)
    rows.append({})
    got = model_inputs_matrix(rows)
    assert got.shape == (len(rows), len(FEATURE_NAMES)) and got.dtype == np.float64
    want = np.array([list(model_inputs(f).values()) for f in rows])
    assert np.array_equal(got == 0.0, want == 0.0)
    ulps = np.abs(got - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 1.0, ulps.max()
    assert model_inputs_matrix([]).shape == (0, len(FEATURE_NAMES))
