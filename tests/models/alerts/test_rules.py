"""Alert rules and the cart-abandonment watch, plus the stable alert ids."""

from __future__ import annotations

from typing import Any

import pytest

from features.events import Click, Feedback, Purchase, PurchaseItem
from models.alerts.rules import Alert, AlertRules, CartWatch, DueCart
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


def make_watch(**settings: Any) -> CartWatch:
    return CartWatch(DecisionSettings(cart_abandonment_minutes=30, **settings))


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
    assert alert.alert_id == alert_id("f1", "negative_feedback")
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
    assert alert.alert_id == alert_id("e1", "high_value_intent")


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


def test_cart_expires_after_the_window() -> None:
    watch = make_watch()
    watch.on_event(click("add_to_cart"), {"cart_value": 40.0})
    assert len(watch) == 1 and watch.deadline("c1") == TS + WINDOW_S
    assert watch.due(TS + WINDOW_S - 1) == []
    assert watch.due(TS + WINDOW_S) == [DueCart("c1", "e1", 40.0, TS + WINDOW_S)]
    assert watch.due(TS + 10 * WINDOW_S) == [] and len(watch) == 0


def test_add_to_cart_re_arms_with_the_latest_trigger() -> None:
    watch = make_watch()
    watch.on_event(click("add_to_cart"), {"cart_value": 40.0})
    watch.on_event(click("view", TS + 60, "e2"), {"cart_value": 40.0})  # views do not re-arm
    watch.on_event(click("add_to_cart", TS + 600, "e3"), {"cart_value": 90.0})
    assert watch.due(TS + WINDOW_S) == []
    assert watch.due(TS + 600 + WINDOW_S) == [DueCart("c1", "e3", 90.0, TS + 600 + WINDOW_S)]


@pytest.mark.parametrize(
    ("event", "features"),
    [
        (click("checkout_start", TS + 60, "e2"), {"cart_value": 40.0}),
        (purchase(TS + 60), {"cart_value": 0.0}),
        (click("remove_from_cart", TS + 60, "e2"), {"cart_value": 0.0}),
    ],
)
def test_checkout_purchase_or_empty_cart_cancels(event: Any, features: dict[str, float]) -> None:
    watch = make_watch()
    watch.on_event(click("add_to_cart"), {"cart_value": 40.0})
    watch.on_event(event, features)
    assert len(watch) == 0
    assert watch.due(TS + 2 * WINDOW_S) == []


def test_partial_removal_keeps_the_deadline_and_updates_the_value() -> None:
    watch = make_watch()
    watch.on_event(click("add_to_cart"), {"cart_value": 40.0})
    watch.on_event(click("remove_from_cart", TS + 60, "e2"), {"cart_value": 15.0})
    assert watch.due(TS + WINDOW_S) == [DueCart("c1", "e1", 15.0, TS + WINDOW_S)]


def test_ignored_events() -> None:
    watch = make_watch()
    watch.on_event(click("add_to_cart"), {"cart_value": 0.0})  # nothing in the cart
    watch.on_event(click("checkout_start"), {"cart_value": 10.0})  # nothing watched
    watch.on_event(feedback(1), {"cart_value": 10.0})
    assert len(watch) == 0
    watch.on_event(click("add_to_cart", TS, "e1"), {"cart_value": 40.0})
    # A late checkout from before the cart was filled neither cancels nor moves it.
    watch.on_event(click("checkout_start", TS - 5, "e0"), {"cart_value": 40.0})
    watch.on_event(click("add_to_cart", TS - 10, "e-1"), {"cart_value": 30.0})
    assert watch.deadline("c1") == TS + WINDOW_S
    assert watch.due(TS + WINDOW_S) == [DueCart("c1", "e1", 40.0, TS + WINDOW_S)]


def test_due_pops_in_deadline_order_across_customers() -> None:
    watch = make_watch()
    for i, customer in enumerate(["c3", "c1", "c2"]):
        watch.on_event(click("add_to_cart", TS - i * 10, f"e{i}", customer), {"cart_value": 1.0})
    due = watch.due(TS + WINDOW_S)
    assert [d.customer_id for d in due] == ["c2", "c1", "c3"]


def test_cart_watch_is_bounded() -> None:
    watch = make_watch(cart_watch_max_entries=3)
    for i in range(5):
        watch.on_event(click("add_to_cart", TS + i, f"e{i}", f"c{i}"), {"cart_value": 1.0})
    assert len(watch) == 3 and watch.evicted == 2
    assert watch.deadline("c0") is None and watch.deadline("c1") is None
    assert [d.customer_id for d in watch.due(TS + 2 * WINDOW_S)] == ["c2", "c3", "c4"]


def test_heap_stays_small_under_repeated_re_arming() -> None:
    watch = make_watch()
    for i in range(5_000):
        watch.on_event(click("add_to_cart", TS + i, f"e{i}"), {"cart_value": 1.0})
    assert len(watch) == 1
    assert len(watch._heap) <= 2 * len(watch) + 1024 + 1
    assert watch.due(TS + 10 * WINDOW_S) == [DueCart("c1", "e4999", 1.0, TS + 4999 + WINDOW_S)]


def test_early_trigger_fires_once_per_cart() -> None:
    watch = make_watch(early_abandon_prob=0.8)
    assert watch.on_intent("c1", 0.95, 40.0) is None  # no cart watched
    watch.on_event(click("add_to_cart"), {"cart_value": 40.0})
    watch.on_event(click("view", TS + 120, "e2"), {"cart_value": 40.0})
    assert watch.on_intent("c1", 0.79, 40.0) is None
    assert watch.on_intent("c1", 0.95, 0.0) is None  # empty cart
    early = watch.on_intent("c1", 0.9, 40.0)
    assert early == DueCart("c1", "e1", 40.0, TS + 120)  # at the latest event seen
    assert watch.on_intent("c1", 0.99, 40.0, ts=TS + 200) is None  # once per cart
    watch.on_event(click("add_to_cart", TS + 300, "e3"), {"cart_value": 60.0})
    assert watch.on_intent("c1", 0.99, 60.0) is None  # same cart, still fired
    assert watch.due(TS + 300 + WINDOW_S) == []  # no second alert when it expires
    # Once the fired cart has expired, a new cart can fire again.
    watch.on_event(click("add_to_cart", TS + 4000, "e4"), {"cart_value": 20.0})
    assert watch.on_intent("c1", 0.9, 20.0, ts=TS + 4100) == DueCart("c1", "e4", 20.0, TS + 4100)


def test_checkout_resets_the_early_trigger() -> None:
    watch = make_watch(early_abandon_prob=0.8)
    watch.on_event(click("add_to_cart"), {"cart_value": 40.0})
    assert watch.on_intent("c1", 0.9, 40.0) is not None
    watch.on_event(click("checkout_start", TS + 10, "e2"), {"cart_value": 40.0})
    assert len(watch) == 0
    watch.on_event(click("add_to_cart", TS + 20, "e3"), {"cart_value": 10.0})
    assert watch.on_intent("c1", 0.9, 10.0) == DueCart("c1", "e3", 10.0, TS + 20)


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
    assert early.alert_id == late.alert_id == alert_id("e1", "cart_abandonment")


# -- ids ------------------------------------------------------------------------------------------


def test_ids_are_stable_distinct_and_32_hex() -> None:
    ids = [
        offer_event_id("e1"),
        alert_id("e1", "negative_feedback"),
        alert_id("e1", "cart_abandonment"),
        alert_id("e2", "negative_feedback"),
    ]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Pinned: ids must not change between releases, or replays after an upgrade duplicate.
    assert offer_event_id("e1") == "824465dda3d679a06713108a5d231af3"
    assert alert_id("e1", "negative_feedback") == alert_id("e1", "negative_feedback")


def test_replayed_feedback_gives_an_equal_alert(rules: AlertRules) -> None:
    first = rules.negative_feedback(feedback(1, "f9"), -0.9)
    again = rules.negative_feedback(feedback(1, "f9"), -0.9)
    assert isinstance(first, Alert) and first == again
