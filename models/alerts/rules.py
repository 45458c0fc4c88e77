"""Alert rules: negative feedback, high-value purchase intent and abandoned carts.

``AlertRules`` turns one event (plus its features and model outputs) into alerts; it is pure.
Which carts are abandoned is decided by ``models.alerts.carts`` (the carts live in Redis, by
input partition); ``cart_abandonment`` turns one into its alert. Alert ids come from the
trigger event, so a replay repeats them exactly.

>>> from features.events import Feedback
>>> from models.settings import DecisionSettings
>>> settings = DecisionSettings(cart_abandonment_minutes=30)
>>> rules = AlertRules(settings)
>>> alert = rules.negative_feedback(Feedback("f1", "c1", 1700000000.0, "review", rating=1), None)
>>> alert.type, alert.severity, alert.score
('negative_feedback', 'high', 1.0)
>>> due = DueCart(customer_id="c1", trigger_event_id="e1", cart_value=80.0, ts=1700001800.0)
>>> rules.cart_abandonment(due).severity
'medium'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from features.events import Click, Event, Feedback
from models.ids import alert_id
from models.settings import DecisionSettings

__all__ = ["Alert", "AlertRules", "AlertType", "DueCart", "Severity"]

logger = logging.getLogger(__name__)

AlertType = Literal[
    "negative_feedback", "high_value_intent", "cart_abandonment", "churn_risk", "anomaly"
]
Severity = Literal["low", "medium", "high"]
Detail = float | int | str | bool | None

_NO_ALERTS: Final[tuple[Alert, ...]] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert for operators or downstream automation; ``alert_id`` is stable under replay."""

    alert_id: str
    customer_id: str
    type: AlertType
    severity: Severity
    score: float  # 0..1, how strong the signal is
    trigger_event_id: str
    ts: float  # event time the alert refers to
    details: dict[str, Detail]


class DueCart(NamedTuple):
    """A cart that counts as abandoned: ``ts`` is the deadline (or the early-trigger time)."""

    customer_id: str
    trigger_event_id: str
    cart_value: float
    ts: float


class AlertRules:
    """Stateless alert rules over ``settings`` thresholds."""

    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings
        self._hvi_actions = frozenset(settings.high_value_intent_actions)

    def evaluate(
        self,
        event: Event,
        features: Mapping[str, float],
        propensity: float,
        intent: Mapping[str, float] | None,
        sentiment: float | None,
    ) -> tuple[Alert, ...]:
        """The per-event alerts (cart abandonment comes from ``models.alerts.carts``)."""
        if isinstance(event, Feedback):
            alert = self.negative_feedback(event, sentiment)
        elif isinstance(event, Click):
            alert = self.high_value_intent(event, features, propensity, intent)
        else:
            return _NO_ALERTS
        return _NO_ALERTS if alert is None else (alert,)

    def on_click(
        self,
        event: Click,
        features: Mapping[str, float],
        propensity: float,
        intent: Mapping[str, float] | None,
    ) -> tuple[Alert, ...]:
        """The alerts a click raises (``high_value_intent``), as a possibly empty tuple."""
        alert = self.high_value_intent(event, features, propensity, intent)
        return _NO_ALERTS if alert is None else (alert,)

    def on_feedback(
        self, event: Feedback, features: Mapping[str, float], sentiment: float | None
    ) -> tuple[Alert, ...]:
        """The alerts a feedback event raises (``negative_feedback``); ``features`` unused."""
        alert = self.negative_feedback(event, sentiment)
        return _NO_ALERTS if alert is None else (alert,)

    def negative_feedback(self, event: Feedback, sentiment: float | None) -> Alert | None:
        """Rating <= ``negative_rating_max`` or sentiment <= ``negative_sentiment_max``."""
        s = self.settings
        rating = event.rating
        bad_rating = rating is not None and rating <= s.negative_rating_max
        bad_text = sentiment is not None and sentiment <= s.negative_sentiment_max
        if not (bad_rating or bad_text):
            return None
        if rating == 1 or (sentiment is not None and sentiment <= s.negative_high_sentiment_max):
            severity: Severity = "high"
        elif bad_rating or (sentiment is not None and sentiment <= s.negative_medium_sentiment_max):
            severity = "medium"
        else:
            severity = "low"
        score = 0.0
        if rating is not None:
            score = (5 - rating) / 4
        if sentiment is not None:
            score = max(score, -sentiment)
        return Alert(
            alert_id=alert_id(event.customer_id, event.event_id, "negative_feedback"),
            customer_id=event.customer_id,
            type="negative_feedback",
            severity=severity,
            score=min(max(score, 0.0), 1.0),
            trigger_event_id=event.event_id,
            ts=event.ts,
            details={"rating": rating, "sentiment": sentiment, "channel": event.channel},
        )

    def high_value_intent(
        self,
        event: Click,
        features: Mapping[str, float],
        propensity: float,
        intent: Mapping[str, float] | None,
    ) -> Alert | None:
        """A likely buyer with a big cart (or a confident "purchase" intent), on a cart action.

        Only clicks whose action is in ``high_value_intent_actions`` are considered, so a
        customer browsing with a full cart does not raise an alert per page view.
        """
        s = self.settings
        if event.action not in self._hvi_actions:
            return None
        if not propensity >= s.high_value_intent_min_propensity:
            return None
        cart = features.get("cart_value", 0.0)
        p_purchase = None if intent is None else intent.get("purchase")
        big_cart = cart > 0.0 and cart >= s.high_value_intent_min_cart
        sure_buyer = p_purchase is not None and p_purchase >= s.high_value_intent_min_purchase_prob
        if not (big_cart or sure_buyer):
            return None
        return Alert(
            alert_id=alert_id(event.customer_id, event.event_id, "high_value_intent"),
            customer_id=event.customer_id,
            type="high_value_intent",
            severity="medium",
            score=min(max(propensity, 0.0), 1.0),
            trigger_event_id=event.event_id,
            ts=event.ts,
            details={
                "propensity": propensity,
                "cart_value": cart,
                "intent_purchase": p_purchase,
                "action": event.action,
                "category": event.category,
            },
        )

    def cart_abandonment(self, due: DueCart, *, abandon_prob: float | None = None) -> Alert:
        """The alert for an abandoned cart; pass ``abandon_prob`` for an early one.

        Both kinds share one id per trigger event, so an early alert and a late one for the
        same add are duplicates downstream (``CartStore`` already emits at most one).
        """
        early = abandon_prob is not None
        big = due.cart_value >= self.settings.high_value_intent_min_cart
        severity: Severity = "high" if big else "medium"
        return Alert(
            alert_id=alert_id(due.customer_id, due.trigger_event_id, "cart_abandonment"),
            customer_id=due.customer_id,
            type="cart_abandonment",
            severity=severity,
            score=min(max(abandon_prob, 0.0), 1.0) if early else 1.0,
            trigger_event_id=due.trigger_event_id,
            ts=due.ts,
            details={"cart_value": due.cart_value, "early": early, "abandon_prob": abandon_prob},
        )
