"""Alert rules and the cart-abandonment watch, plus the stable alert ids."""

from __future__ import annotations

import pytest

from features.events import Click, Feedback, Purchase, PurchaseItem
from models.alerts.rules import Alert, AlertRules, DueCart
from models.ids import alert_id, offer_event_id
from models.settings import DecisionSettings

TS = 1_700_000_000.0
WINDOW_S = 30 * 60.0


def click(
    action: str,
    ts: float = TS,
    event_id: str = "e1",
    customer: str = "c1",
    category: str = "home",
) -> Click:
    return Click(event_id, customer, "s1", ts, action, "i1", category)


def feedback(rating: int | None, event_id: str = "f1") -> Feedback:
    return Feedback(event_id, "c1", TS, "review", rating=rating, text="...")


def purchase(ts: float = TS, customer: str = "c1") -> Purchase:
    item = PurchaseItem("i1", "home", 10.0, 1)
    return Purchase("p1", customer, "s1", ts, "o1", (item,), 10.0, "EUR")


@pytest.fixture
def rules() -> AlertRules:
    return AlertRules(DecisionSettings())


# -- negative feedback ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rating", "sentiment", "severity", "score"),
    [
        (1, None, "high", 1.0),
        (2, None, "medium", 0.75),
        (None, -0.8, "high", 0.8),
        (4, -0.7, "high", 0.7),
        (None, -0.6, "medium", 0.6),
        (None, -0.3, "low", 0.3),
        (2, 0.9, "medium", 0.75),
    ],
)
def test_negative_feedback_severity(
    rules: AlertRules, rating: int | None, sentiment: float | None, severity: str, score: float
) -> None:
    alert = rules.negative_feedback(feedback(rating), sentiment)
    assert alert is not None
    assert (alert.type, alert.severity) == ("negative_feedback", severity)
    assert alert.score == pytest.approx(score)
    assert alert.alert_id == alert_id("c1", "f1", "negative_feedback")
    assert (alert.customer_id, alert.trigger_event_id, alert.ts) == ("c1", "f1", TS)
    assert alert.details == {"rating": rating, "sentiment": sentiment, "channel": "review"}


@pytest.mark.parametrize(
    ("rating", "sentiment"), [(3, None), (5, 0.8), (None, None), (None, -0.29), (3, float("nan"))]
)
def test_no_alert_for_neutral_or_positive_feedback(
    rules: AlertRules, rating: int | None, sentiment: float | None
) -> None:
    assert rules.negative_feedback(feedback(rating), sentiment) is None


def test_negative_feedback_thresholds_come_from_settings() -> None:
    strict = AlertRules(DecisionSettings(negative_rating_max=3, negative_sentiment_max=-0.1))
    assert strict.negative_feedback(feedback(3), None) is not None
    assert strict.negative_feedback(feedback(None), -0.15) is not None


# -- high-value intent ----------------------------------------------------------------------------


def test_high_value_intent_on_big_cart(rules: AlertRules) -> None:
    alert = rules.high_value_intent(click("add_to_cart"), {"cart_value": 250.0}, 0.8, None)
    assert alert is not None
    assert (alert.type, alert.severity, alert.score) == ("high_value_intent", "medium", 0.8)
    assert alert.details["cart_value"] == 250.0 and alert.details["intent_purchase"] is None
    assert alert.alert_id == alert_id("c1", "e1", "high_value_intent")


def test_high_value_intent_on_confident_purchase_intent(rules: AlertRules) -> None:
    intent = {"purchase": 0.85, "abandon": 0.05, "browse": 0.1}
    alert = rules.high_value_intent(click("checkout_start"), {"cart_value": 30.0}, 0.75, intent)
    assert alert is not None and alert.details["intent_purchase"] == 0.85


@pytest.mark.parametrize(
    ("action", "cart", "propensity", "intent"),
    [
        ("add_to_cart", 250.0, 0.69, None),  # propensity too low
        ("add_to_cart", 199.0, 0.9, None),  # cart too small, no intent
        ("add_to_cart", 199.0, 0.9, {"purchase": 0.79}),  # intent not confident enough
        ("view", 500.0, 0.95, {"purchase": 0.95}),  # not a cart action
    ],
)
def test_no_high_value_intent(
    rules: AlertRules,
    action: str,
    cart: float,
    propensity: float,
    intent: dict[str, float] | None,
) -> None:
    assert rules.high_value_intent(click(action), {"cart_value": cart}, propensity, intent) is None


def test_on_click_and_on_feedback(rules: AlertRules) -> None:
    [neg] = rules.on_feedback(feedback(2), {}, None)
    assert neg.type == "negative_feedback"
    assert rules.on_feedback(feedback(5), {}, 0.5) == ()
    [hvi] = rules.on_click(click("add_to_cart"), {"cart_value": 300.0}, 0.9, None)
    assert hvi.type == "high_value_intent"
    assert rules.on_click(click("add_to_cart"), {"cart_value": 300.0}, 0.1, None) == ()


def test_evaluate_dispatches_by_kind(rules: AlertRules) -> None:
    [neg] = rules.evaluate(feedback(1), {}, 0.0, None, None)
    assert neg.type == "negative_feedback"
    [hvi] = rules.evaluate(click("add_to_cart"), {"cart_value": 300.0}, 0.9, None, None)
    assert hvi.type == "high_value_intent"
    assert rules.evaluate(purchase(), {"cart_value": 300.0}, 0.9, None, None) == ()
    assert rules.evaluate(click("view"), {}, 0.1, None, None) == ()


# -- cart abandonment -----------------------------------------------------------------------------


def test_cart_abandonment_alert(rules: AlertRules) -> None:
    late = rules.cart_abandonment(DueCart("c1", "e1", 250.0, TS + WINDOW_S))
    assert (late.type, late.severity, late.score, late.ts) == (
        "cart_abandonment",
        "high",
        1.0,
        TS + WINDOW_S,
    )
    assert late.details == {"cart_value": 250.0, "early": False, "abandon_prob": None}
    early = rules.cart_abandonment(DueCart("c1", "e1", 40.0, TS), abandon_prob=0.9)
    assert (early.severity, early.score, early.details["early"]) == ("medium", 0.9, True)
    assert early.alert_id == late.alert_id == alert_id("c1", "e1", "cart_abandonment")


# -- ids ------------------------------------------------------------------------------------------


def test_ids_are_stable_distinct_and_32_hex() -> None:
    ids = [
        offer_event_id("c1", "e1"),
        offer_event_id("c2", "e1"),
        offer_event_id("c1", "e2"),
        alert_id("c1", "e1", "negative_feedback"),
        alert_id("c2", "e1", "negative_feedback"),
        alert_id("c1", "e1", "cart_abandonment"),
        alert_id("c1", "e2", "negative_feedback"),
    ]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Pinned: ids must not change between releases, or replays after an upgrade duplicate.
    assert offer_event_id("c1", "e1") == "e7becf14d4ee355bf426004894599db0"
    assert alert_id("c1", "e1", "negative_feedback") == alert_id("c1", "e1", "negative_feedback")


def test_ids_tell_customers_apart_whose_ids_concatenate_alike() -> None:
    """("c1", "2e") and ("c12", "e") must not share an input to the hash."""
    assert offer_event_id("c1", "2e") != offer_event_id("c12", "e")
    assert alert_id("c1", "2e", "anomaly") != alert_id("c12", "e", "anomaly")


def test_replayed_feedback_gives_an_equal_alert(rules: AlertRules) -> None:
    first = rules.negative_feedback(feedback(1, "f9"), -0.9)
    again = rules.negative_feedback(feedback(1, "f9"), -0.9)
    assert isinstance(first, Alert) and first == again
