"""One contract test over every model class that follows ``models.base`` (River-style)."""

from __future__ import annotations

import ast
import inspect
import math
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from models.base import BatchModel, OnlineModel
from models.online.propensity import PropensityModel
from models.online.segments import SegmentModel

# Add a factory here for each new model class (a BatchModel-only class goes in BATCH_MODELS).
ONLINE_MODELS: dict[str, Callable[[], OnlineModel]] = {
    "PropensityModel": lambda: PropensityModel(horizon_minutes=10.0, max_pending=100),
    "SegmentModel": lambda: SegmentModel(n_clusters=3, seed=3),
}


def _stream(n: int, seed: int = 0) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {
            "clicks_1h": rng.randint(0, 20),
            "carts_1h": rng.randint(0, 3),
            "spend_30d": rng.expovariate(1 / 80),
            "purchases_30d": rng.randint(0, 5),
            "secs_since_last_purchase": rng.choice([1e7, rng.uniform(0, 1e6)]),
            "rating_avg": rng.uniform(1, 5),
        }
        out.append((x, rng.random() < 0.2 + 0.2 * x["carts_1h"]))
    return out


@pytest.fixture(params=sorted(ONLINE_MODELS))
def model(request: pytest.FixtureRequest) -> OnlineModel:
    return ONLINE_MODELS[request.param]()


def _check_proba(proba: dict) -> None:
    assert proba
    assert all(0.0 <= p <= 1.0 for p in proba.values())
    assert math.isclose(sum(proba.values()), 1.0, abs_tol=1e-9)


def test_follows_the_protocol(model: OnlineModel) -> None:
    assert isinstance(model, OnlineModel)
    assert isinstance(model, BatchModel)


def test_hyperparameters_are_stored_under_their_own_names(model: OnlineModel) -> None:
    for name, param in inspect.signature(type(model).__init__).parameters.items():
        if name == "self":
            continue
        assert hasattr(model, name), f"{type(model).__name__}.{name} is not stored"
        if param.default is not inspect.Parameter.empty:
            assert isinstance(getattr(model, name), type(param.default))


def test_learn_and_predict_one(model: OnlineModel) -> None:
    _check_proba(model.predict_proba_one({}))  # before any learning
    for x, y in _stream(200):
        _check_proba(model.predict_proba_one(x))
        model.learn_one(x, y)
    _check_proba(model.predict_proba_one({"clicks_1h": float("nan"), "spend_30d": -5.0}))


def test_many_equals_one_by_one(model: OnlineModel) -> None:
    data = _stream(300, seed=1)
    X, y = [x for x, _ in data], [yi for _, yi in data]
    model.learn_many(X[:200], y[:200])
    many = model.predict_proba_many(X[200:])
    one = [model.predict_proba_one(x) for x in X[200:]]
    assert len(many) == 100
    for a, b in zip(many, one, strict=True):
        assert a.keys() == b.keys()
        assert all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a)
    assert model.predict_proba_many([]) == []


def test_deterministic(model: OnlineModel) -> None:
    name = type(model).__name__
    twin = ONLINE_MODELS[name]()
    data = _stream(150, seed=2)
    for x, y in data:
        model.learn_one(x, y)
        twin.learn_one(x, y)
    probe = [x for x, _ in _stream(20, seed=3)]
    assert model.predict_proba_many(probe) == twin.predict_proba_many(probe)


def test_pickle_round_trip(model: OnlineModel) -> None:
    for x, y in _stream(100, seed=4):
        model.learn_one(x, y)
    clone = pickle.loads(pickle.dumps(model))
    probe = [x for x, _ in _stream(20, seed=5)]
    assert clone.predict_proba_many(probe) == model.predict_proba_many(probe)


def test_models_never_import_streams() -> None:
    package = Path(__file__).resolve().parents[2] / "models"
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "streams", f"{path.name} imports {name}"
