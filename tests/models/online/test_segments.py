"""SegmentModel: stable integer segments, reproducible, checkpointable."""

from __future__ import annotations

import pickle
import random

import pytest

from models.online.segments import SEGMENT_FEATURES, SegmentModel, _segment_inputs
from models.settings import ModelSettings

_KINDS = [(5, 0, 3, 1e7), (80, 2, 40, 86_400 * 5), (900, 12, 300, 3_600)]


def _customer(rng: random.Random, kind: int) -> dict[str, float]:
    spend, buys, clicks, since = _KINDS[kind]
    return {
        "spend_30d": spend * rng.uniform(0.6, 1.4),
        "purchases_30d": buys,
        "clicks_30d": clicks * rng.uniform(0.6, 1.4),
        "avg_order_value": spend / buys if buys else 0.0,
        "secs_since_last_purchase": since,
    }


def test_segments_are_ints_in_range() -> None:
    rng = random.Random(0)
    model = SegmentModel.from_settings(ModelSettings(n_segments=4))
    segments = model.assign_many([_customer(rng, i % 3) for i in range(500)])
    assert all(type(s) is int and 0 <= s < 4 for s in segments)
    assert model.n_learned == 500
    assert model.predict_proba_one({}).keys() == {0, 1, 2, 3}


def test_a_customer_keeps_its_segment() -> None:
    rng = random.Random(1)
    model = SegmentModel(n_clusters=3, seed=42)
    model.assign_many([_customer(rng, i % 3) for i in range(600)])  # warm up
    kinds = [i % 3 for i in range(900)]
    segments = model.assign_many([_customer(rng, k) for k in kinds])
    by_kind = {k: {s for kk, s in zip(kinds, segments, strict=True) if kk == k} for k in range(3)}
    assert all(len(s) == 1 for s in by_kind.values()), by_kind
    assert len(set.union(*by_kind.values())) == 3  # three kinds, three segments


def test_same_seed_same_segments_and_pickle_keeps_them() -> None:
    data = [_customer(random.Random(2), i % 3) for i in range(300)]
    a, b = SegmentModel(seed=7), SegmentModel(seed=7)
    assert a.assign_many(data) == b.assign_many(data)
    clone = pickle.loads(pickle.dumps(a))
    assert clone.assign_many(data[:50]) == a.assign_many(data[:50])


def test_centers_do_not_depend_on_the_hash_seed() -> None:
    """River's KMeans drew a center coordinate lazily, in set (hash-seed) order: SegmentModel
    draws them all up front, in a fixed order, so no draw happens while learning."""
    model = SegmentModel(n_clusters=4, seed=5)
    before = [list(center) for center in model._centers]
    assert len(before) == 4 and all(len(c) == len(SEGMENT_FEATURES) for c in before)
    rng = random.Random(5)  # River's draws: gauss(0, 1), center by center, feature by feature
    assert before == [[rng.gauss(0.0, 1.0) for _ in SEGMENT_FEATURES] for _ in range(4)]
    assert before == [list(c) for c in SegmentModel(n_clusters=4, seed=5)._centers]
    model.assign_many([{"spend_30d": 10.0 * i, "unknown": 1.0} for i in range(50)])
    assert all(len(c) == len(SEGMENT_FEATURES) for c in model._centers)


def test_matches_river_standard_scaler_and_kmeans() -> None:
    from river import cluster, preprocessing

    data = [_customer(random.Random(3), i % 3) for i in range(400)] + [{}]
    model = SegmentModel(n_clusters=4, halflife=0.1, seed=9)
    river = preprocessing.StandardScaler() | cluster.KMeans(n_clusters=4, halflife=0.1, seed=9)
    kmeans = river["KMeans"]
    for c in range(4):
        for name in SEGMENT_FEATURES:
            _ = kmeans.centers[c][name]
    expected = []
    for x in data:
        inputs = dict(zip(SEGMENT_FEATURES, _segment_inputs(x), strict=True))
        expected.append(river.predict_one(inputs))
        river.learn_one(inputs)
    assert model.assign_many(data) == expected


def test_predict_one_does_not_learn() -> None:
    model = SegmentModel(n_clusters=2)
    model.predict_one({"spend_30d": 10.0})
    model.predict_proba_many([{"spend_30d": 10.0}])
    assert model.n_learned == 0


@pytest.mark.parametrize("kwargs", [{"n_clusters": 0}, {"halflife": 0.0}, {"halflife": 1.5}])
def test_rejects_bad_hyperparameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SegmentModel(**kwargs)  # type: ignore[arg-type]
