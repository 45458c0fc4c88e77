"""Delayed labels, duplicates, the pending bound, batch scoring and learning of PropensityModel."""

from __future__ import annotations

import heapq
import math
import pickle
import random

import pytest

from models.online.propensity import PropensityModel
from models.settings import ModelSettings

T0 = 1_700_000_000.0
H = 30 * 60.0  # the horizon in seconds
X = {"clicks_1h": 4.0, "carts_1h": 1.0}


def _model(**kwargs: object) -> PropensityModel:
    return PropensityModel(horizon_minutes=30.0, **kwargs)  # type: ignore[arg-type]


def _learned_label(model: PropensityModel) -> bool:
    """After exactly one learned example, its label: the logit is just the intercept then."""
    return model.predict_proba_one(X)[True] > 0.5


def test_from_settings() -> None:
    settings = ModelSettings(
        propensity_horizon_minutes=5, propensity_learning_rate=0.1, max_pending_labels=7
    )
    model = PropensityModel.from_settings(settings)
    assert (model.horizon_minutes, model.learning_rate, model.max_pending) == (5, 0.1, 7)


def test_purchase_within_horizon_is_a_positive() -> None:
    model = _model()
    p = model.score_click("c1", "e1", T0, X)
    assert 0.0 < p < 1.0 and model.n_pending == 1
    assert model.observe_purchase("c1", T0 + H) == 1  # the horizon's end is inside it
    assert (model.n_pending, model.n_learned) == (0, 0)  # labelled, learned when it closes
    assert model.expire(T0 + 10 * H) == 0  # no negatives
    assert model.n_learned == 1
    assert _learned_label(model) is True


def test_no_purchase_is_a_negative_once_the_watermark_passes() -> None:
    model = _model()
    model.score_click("c1", "e1", T0, X)
    assert model.expire(T0 + H - 1) == 0
    assert model.n_pending == 1
    assert model.expire(T0 + H) == 1
    assert (model.n_pending, model.n_learned) == (0, 1)
    assert _learned_label(model) is False


def test_purchase_after_the_horizon_is_not_a_positive() -> None:
    model = _model()
    model.score_click("c1", "e1", T0, X)
    assert model.observe_purchase("c1", T0 + H + 1) == 0
    assert model.n_pending == 1
    assert model.expire(T0 + H + 1) == 1
    assert _learned_label(model) is False


def test_purchase_before_the_click_or_by_someone_else_is_not_a_positive() -> None:
    model = _model()
    model.score_click("c1", "e1", T0, X)
    assert model.observe_purchase("c1", T0 - 1) == 0
    assert model.observe_purchase("c2", T0 + 60) == 0
    assert model.n_pending == 1


def test_one_purchase_labels_every_click_in_its_window() -> None:
    model = _model()
    for i in range(3):
        model.score_click("c1", f"e{i}", T0 + i * 600, X)
    model.score_click("c1", "late", T0 + 4_000, X)  # after the purchase: stays pending
    assert model.observe_purchase("c1", T0 + 1_900) == 2  # e1, e2; e0's horizon ended at 1800
    assert model.n_pending == 2
    assert model.expire(T0 + 4_000 + H) == 2


def test_replayed_click_is_not_stored_twice() -> None:
    model = _model()
    p = model.score_click("c1", "e1", T0, X)
    assert model.score_click("c1", "e1", T0, X) == p
    assert (model.n_pending, model.n_duplicates) == (1, 1)
    assert model.observe_purchase("c1", T0 + 10) == 1
    model.score_click("c1", "e1", T0, X)  # replayed after it was labelled
    model.expire(T0 + 10 * H)
    model.score_click("c1", "e1", T0, X)  # replayed after its label was learned
    assert (model.n_pending, model.n_learned, model.n_duplicates) == (0, 1, 3)


def test_replays_in_a_batch_are_not_stored_twice() -> None:
    model = _model()
    model.score_click("c1", "e1", T0, X)
    items = [("c1", "e1", T0, X), ("c2", "e2", T0, X), ("c2", "e2", T0, X)]
    probas = model.score_clicks(items)
    assert probas[1] == probas[2]
    assert (model.n_pending, model.n_duplicates) == (2, 2)


def test_pending_is_bounded_and_drops_the_oldest() -> None:
    model = _model(max_pending=3)
    for i in range(5):
        model.score_click(f"c{i}", f"e{i}", T0 + i, X)
    assert (model.n_pending, model.n_dropped) == (3, 2)
    assert model.observe_purchase("c0", T0 + 10) == 0  # dropped
    assert model.observe_purchase("c4", T0 + 10) == 1
    assert model.expire(T0 + 10 * H) == 2
    assert model.n_learned == 3


def test_deadline_heap_stays_bounded() -> None:
    model = _model(max_pending=10)
    for i in range(5_000):
        model.score_click("c", f"e{i}", T0 + i, X)
        model.observe_purchase("c", T0 + i)
        model.expire(T0 + i)
    assert len(model._pending) <= 10 and model.n_learned + model.n_dropped + 10 >= 5_000
    assert len(model._deadlines) <= 2 * 10 + 1_024


def test_out_of_order_clicks_expire_by_their_own_deadline() -> None:
    model = _model()
    model.score_click("c1", "late", T0 + 100, X)
    model.score_click("c2", "early", T0, X)
    assert model.expire(T0 + H) == 1
    assert model.observe_purchase("c1", T0 + 200) == 1


def _customer(rng: random.Random) -> tuple[dict[str, float], float]:
    """A click's features and the true probability that the customer buys soon after."""
    carts = rng.randint(0, 4) if rng.random() < 0.5 else 0
    clicks = rng.randint(0, 30)
    spend = rng.expovariate(1 / 100) if rng.random() < 0.6 else 0.0
    since = rng.uniform(0, 3e6) if spend else 1e7
    logit = -3.5 + 1.2 * carts + 0.05 * clicks + 0.2 * math.log1p(spend)
    x = {"carts_1h": carts, "clicks_1h": clicks, "spend_30d": spend,
         "secs_since_last_purchase": since, "sentiment_avg": rng.uniform(-1, 1)}  # fmt: skip
    return x, 1 / (1 + math.exp(-logit))


def test_learns_a_synthetic_stream_with_delayed_labels() -> None:
    rng = random.Random(42)
    model = _model()
    t = T0
    purchases: list[tuple[float, str]] = []  # a heap of (ts, customer)
    for i in range(4_000):
        t += 5.0
        while purchases and purchases[0][0] <= t:
            ts, customer = heapq.heappop(purchases)
            model.observe_purchase(customer, ts)
        model.expire(t - 60.0)  # a watermark a minute behind
        x, p = _customer(rng)
        model.score_click(f"c{i}", f"e{i}", t, x)
        if rng.random() < p:  # about 30% of clicks
            heapq.heappush(purchases, (t + rng.uniform(30, 1_500), f"c{i}"))
    assert model.n_learned > 3_500
    assert model.auc > 0.75  # 0.84 here; the true probabilities themselves score 0.87
    assert model.log_loss < 0.55


def test_batch_scoring_equals_one_by_one() -> None:
    rng = random.Random(1)
    model = _model()
    for _ in range(300):
        x, p = _customer(rng)
        model.learn_one(x, rng.random() < p)
    items = [(f"c{i}", f"e{i}", T0, _customer(rng)[0]) for i in range(50)]
    twin = pickle.loads(pickle.dumps(model))
    batch = model.score_clicks(items)
    single = [twin.score_click(*item) for item in items]
    assert batch == pytest.approx(single, rel=1e-9, abs=1e-12)
    assert model.n_pending == twin.n_pending == 50


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -3.0, None])
def test_bad_feature_values_give_a_finite_probability(bad: float | None) -> None:
    model = _model()
    model.learn_one(X, True)
    x = {"clicks_1h": bad, "spend_30d": bad, "rating_avg": bad}
    p = model.score_click("c1", "e1", T0, x)  # type: ignore[arg-type]
    assert 0.0 <= p <= 1.0
    assert model.score_clicks([("c1", "e2", T0, x)])[0] == pytest.approx(p)  # type: ignore[list-item]


def test_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="horizon_minutes"):
        PropensityModel(horizon_minutes=0)
    with pytest.raises(ValueError, match="max_pending"):
        PropensityModel(max_pending=0)


def test_pending_labels_survive_pickling() -> None:
    model = _model()
    for i in range(6):
        model.score_click(f"c{i % 2}", f"e{i}", T0 + i, {"carts_1h": float(i)})
    clone = pickle.loads(pickle.dumps(model))
    assert clone.n_pending == 6
    assert clone.score_click("c0", "e0", T0, X) == model.score_click("c0", "e0", T0, X)
    assert clone.observe_purchase("c0", T0 + 100) == model.observe_purchase("c0", T0 + 100) == 3
    assert clone.expire(T0 + 10 * H) == model.expire(T0 + 10 * H) == 3
    probe = [{"carts_1h": 2.0}, {}]
    assert clone.predict_proba_many(probe) == model.predict_proba_many(probe)


def test_predictions_made_before_any_learning_are_left_out_of_the_metrics() -> None:
    """An untrained model scores every click 0.5, and those clicks' labels resolve first: they
    would report an AUC of 0.500 that says nothing about the model."""
    rng = random.Random(7)
    model = _model()
    for i in range(200):  # all scored before any label resolves
        x, p = _customer(rng)
        assert model.score_click(f"c{i}", f"e{i}", T0, x) == 0.5
        if rng.random() < p:
            model.observe_purchase(f"c{i}", T0 + 10)
    model.expire(T0 + H)
    assert (model.n_learned, model.n_scored) == (200, 0)
    for i in range(200, 2_000):
        x, p = _customer(rng)
        model.score_click(f"c{i}", f"e{i}", T0 + H + i, x)
        if rng.random() < p:
            model.observe_purchase(f"c{i}", T0 + H + i + 10)
    model.expire(T0 + 3 * H + 2_000)
    assert (model.n_learned, model.n_scored) == (2_000, 1_800)
    assert model.auc > 0.6, "the AUC of the trained model's predictions only"


def test_the_demo_says_learning_until_an_auc_means_something() -> None:
    from streams.cli import _auc

    assert _auc({"propensity_auc": None}) == _auc({}) == "learning"
    assert _auc({"propensity_auc": 0.71234}) == "0.712"
