"""Model inputs cover the feature store's features, each transformed once."""

from __future__ import annotations

from features.store import FEATURE_NAMES as STORE_FEATURES
from models.online.transform import FEATURE_NAMES, LINEAR_FEATURES, RECENCY_FEATURES


def test_every_store_feature_is_a_model_input_once() -> None:
    assert sorted(FEATURE_NAMES) == sorted(STORE_FEATURES)
    assert set(RECENCY_FEATURES + LINEAR_FEATURES) <= set(STORE_FEATURES)
