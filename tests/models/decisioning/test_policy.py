"""The offer policy: eligibility, score order, intent boosts, reasons and stable ids."""

from __future__ import annotations

import math
from typing import Any

import pytest

from features.events import Click, Feedback, Purchase, PurchaseItem
from models.decisioning.catalog import Catalog
from models.decisioning.policy import ClickContext, OfferDecision, OfferPolicy
from models.ids import offer_event_id
from models.settings import DecisionSettings
from streams.simulator import CATEGORIES

TS = 1_700_000_000.0
INTENT_NEUTRAL = {"purchase": 0.2, "abandon": 0.2, "browse": 0.6}


def offer(offer_id: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"offer_id": offer_id, "name": offer_id, "kind": "discount"}
    doc["value"] = 10.0
    doc.update(overrides)
    return doc


def make_policy(*offers: dict[str, Any], **settings: Any) -> OfferPolicy:
    return OfferPolicy(Catalog.from_dict({"offers": list(offers)}), DecisionSettings(**settings))


def click(
    action: str = "view", category: str = "books", event_id: str = "e1", customer: str = "c1"
) -> Click:
    return Click(event_id, customer, "s1", TS, action, "i1", category)


def decide(
    policy: OfferPolicy,
    event: Any = None,
    features: dict[str, float] | None = None,
    top: tuple[tuple[str, float], ...] = (),
    propensity: float = 0.5,
    segment: int = 0,
    intent: dict[str, float] | None = None,
) -> OfferDecision | None:
    return policy.decide(
        ClickContext(
            click() if event is None else event,
            {} if features is None else features,
            top,
            propensity,
            segment,
            intent,
            "v1",
        )
    )


def chosen(policy: OfferPolicy, **kwargs: Any) -> str | None:
    d = decide(policy, **kwargs)
    return None if d is None else d.offer_id


# -- triggers ---------------------------------------------------------------------------------


def test_only_clicks_trigger() -> None:
    policy = make_policy(offer("any"))
    purchase = Purchase(
        "p1", "c1", "s1", TS, "o1", (PurchaseItem("i1", "books", 5.0, 1),), 5.0, "EUR"
    )
    feedback = Feedback("f1", "c1", TS, "review", rating=5)
    assert chosen(policy, event=purchase) is None
    assert chosen(policy, event=feedback) is None
    assert chosen(policy, event=click()) == "any"


def test_actions_outside_the_weights_do_not_trigger() -> None:
    policy = make_policy(offer("any"), offer_action_weights={"add_to_cart": 1.0})
    assert chosen(policy, event=click("view")) is None
    assert chosen(policy, event=click("add_to_cart")) == "any"


@pytest.mark.parametrize("propensity", [0.0, -0.1, math.nan])
def test_no_offer_without_a_positive_propensity(propensity: float) -> None:
    assert chosen(make_policy(offer("any")), propensity=propensity) is None


# -- eligibility --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "eligible", "ineligible"),
    [
        ({"min_spend_30d": 100}, {"features": {"spend_30d": 100.0}}, {"features": {}}),
        (
            {"max_spend_30d": 0},
            {"features": {"spend_30d": 0.0}},
            {"features": {"spend_30d": 0.01}},
        ),
        ({"segments": [2, 3]}, {"segment": 3}, {"segment": 1}),
        (
            {"min_cart_value": 50},
            {"features": {"cart_value": 50.0}},
            {"features": {"cart_value": 49.9}},
        ),
        ({"requires_cart": True}, {"features": {"cart_value": 1.0}}, {"features": {}}),
        ({"min_propensity": 0.6}, {"propensity": 0.6}, {"propensity": 0.59}),
        (
            {"intent": "browse"},
            {"intent": {"purchase": 0.1, "abandon": 0.1, "browse": 0.8}},
            {"intent": None},
        ),
        (
            {"intent": "purchase"},
            {"intent": {"purchase": 0.5, "abandon": 0.1, "browse": 0.4}},
            {"intent": {"purchase": 0.49, "abandon": 0.1, "browse": 0.41}},
        ),
        (
            {"intent": "abandon"},
            {"intent": {"abandon": 0.9}, "features": {"cart_value": 5.0}},
            {"intent": {"abandon": 0.9}, "features": {"cart_value": 0.0}},
        ),
        (
            {"target_categories": ["books"]},
            {"event": click(category="books")},
            {"event": click(category="toys")},
        ),
    ],
)
def test_eligibility_rules(
    rule: dict[str, Any], eligible: dict[str, Any], ineligible: dict[str, Any]
) -> None:
    policy = make_policy(offer("o", **rule))
    assert chosen(policy, **eligible) == "o"
    assert chosen(policy, **ineligible) is None


# -- scoring --------------------------------------------------------------------------------------


def test_score_is_propensity_value_category_intent_action() -> None:
    policy = make_policy(offer("books", value=20.0, target_categories=["books"]))
    d = decide(policy, event=click("add_to_cart"), propensity=0.4)
    assert d is not None
    assert d.score == pytest.approx(0.4 * 20.0 * 1.0 * 1.0 * 1.25)
    boosted = decide(policy, propensity=0.4, intent={"purchase": 0.8, "abandon": 0.1})
    assert boosted is not None
    assert boosted.score == pytest.approx(0.4 * 20.0 * (1 + 0.5 * 0.8))
    assert "intent_purchase_high" in boosted.reasons
    assert "intent_purchase_high" not in d.reasons


def test_category_match_order_event_then_top_then_any() -> None:
    policy = make_policy(
        offer("generic"),
        offer("top", target_categories=["toys"]),
        offer("event", target_categories=["books"]),
    )
    assert chosen(policy, top=(("toys", 3.0),)) == "event"
    assert chosen(policy, event=click(category="home"), top=(("toys", 3.0),)) == "top"
    assert chosen(policy, event=click(category="home")) == "generic"
    d = decide(policy, event=click(category="home"), top=(("toys", 3.0),))
    assert d is not None and d.reasons[0] == "top_cat:toys"


def test_top_category_factor_scales_with_affinity() -> None:
    policy = make_policy(
        offer("toys", value=10.0, target_categories=["toys"]),
        offer("home", value=14.0, target_categories=["home"]),
    )
    event = click(category="grocery")
    # toys: 0.6 * 1.0 * 10 = 6.0; home: 0.6 * 0.5 * 14 = 4.2
    assert chosen(policy, event=event, top=(("toys", 2.0), ("home", 1.0))) == "toys"
    # home: 0.6 * 1.0 * 14 = 8.4 > toys 0.6 * 0.5 * 10
    assert chosen(policy, event=event, top=(("toys", 1.0), ("home", 2.0))) == "home"
    assert chosen(policy, event=event, top=(("toys", 0.0), ("home", -1.0))) is None


def test_higher_value_wins_and_ties_keep_catalog_order() -> None:
    policy = make_policy(
        offer("a", value=10.0, target_categories=["books"]),
        offer("b", value=12.0, target_categories=["books"]),
        offer("c", value=12.0, target_categories=["books"]),
    )
    assert chosen(policy) == "b"


def test_min_score_is_a_strict_floor() -> None:
    policy = make_policy(offer("o", value=10.0, target_categories=["books"]), min_score=5.0)
    assert chosen(policy, propensity=0.5) is None  # score exactly 5.0
    assert chosen(policy, propensity=0.51) == "o"


def test_cart_saver_wins_when_abandon_is_high_and_the_cart_is_full() -> None:
    policy = make_policy(
        offer("books", value=20.0, target_categories=["books"]),
        offer("saver", kind="cart_saver", value=12.0, intent="abandon", requires_cart=True),
    )
    full = {"cart_value": 60.0}
    assert chosen(policy, features=full, intent=INTENT_NEUTRAL) == "books"
    high = {"purchase": 0.05, "abandon": 0.9, "browse": 0.05}
    d = decide(policy, features=full, intent=high)
    assert d is not None and d.offer_id == "saver"
    assert d.score == pytest.approx(0.5 * 12.0 * (1 + 2.0 * 0.9))
    assert "intent_abandon_high" in d.reasons and "cart_nonempty" in d.reasons
    assert chosen(policy, features={}, intent=high) == "books"  # empty cart: no saver
    assert chosen(policy, features=full, intent=None) == "books"  # LSTM off: no saver


def test_default_catalog_decisions_make_sense() -> None:
    policy = OfferPolicy(Catalog.load(), DecisionSettings())
    features = {"spend_30d": 120.0, "cart_value": 150.0}
    d = decide(policy, event=click("add_to_cart", "electronics"), features=features)
    assert d is not None and d.offer_id.startswith("elec-")
    saver = decide(
        policy,
        event=click("view", "books"),
        features=features,
        intent={"purchase": 0.05, "abandon": 0.9, "browse": 0.05},
    )
    assert saver is not None and saver.offer_kind == "cart_saver"
    newcomer = decide(policy, event=click("view", "garden"), features={})
    assert newcomer is not None and newcomer.offer_id == "welcome-10off"
    for category in CATEGORIES:
        assert decide(policy, event=click("add_to_cart", category), features=features)


# -- the decision -------------------------------------------------------------------------------


def test_reasons_and_fields() -> None:
    policy = make_policy(
        offer("home", target_categories=["home"], min_cart_value=50, min_spend_30d=10)
    )
    intent = {"purchase": 0.7, "abandon": 0.1, "browse": 0.2}
    features = {"cart_value": 80.0, "spend_30d": 40.0, "carts_1h": 5.0, "clicks_1h": 30.0}
    d = decide(
        policy,
        event=click("checkout_start", "home", event_id="ev-9", customer="c7"),
        features=features,
        segment=3,
        intent=intent,
    )
    assert d is not None
    assert d.reasons == (
        "cat_match:home",
        "action:checkout_start",
        "intent_purchase_high",
        "cart_value>=50",
        "spend_30d>=10",
        "segment:3",
        "top_feature:carts_1h",
    )
    assert d.offer_event_id == offer_event_id("c7", "ev-9")
    assert (d.customer_id, d.trigger_event_id, d.ts, d.segment) == ("c7", "ev-9", TS, 3)
    assert (d.offer_kind, d.propensity, d.model_version) == ("discount", 0.5, "v1")
    assert d.intent == intent and d.intent is not intent  # a copy: the caller may reuse its dict


def test_no_top_feature_when_nothing_stands_out() -> None:
    d = decide(make_policy(offer("any")), features={"clicks_1h": 3.0})
    assert d is not None and not any(r.startswith("top_feature:") for r in d.reasons)
    assert d.reasons == ("any_cat", "segment:0")


def test_replayed_event_gives_the_same_decision() -> None:
    policy = make_policy(offer("any"), offer("books", target_categories=["books"]))
    first = decide(policy, event=click(event_id="e42"), top=(("books", 1.0),))
    again = decide(policy, event=click(event_id="e42"), top=(("books", 1.0),))
    other = decide(policy, event=click(event_id="e43"), top=(("books", 1.0),))
    assert first == again
    assert first is not None and other is not None
    assert first.offer_event_id == again.offer_event_id != other.offer_event_id
    assert len(first.offer_event_id) == 32 and int(first.offer_event_id, 16) >= 0
