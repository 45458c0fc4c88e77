"""Alert rules: negative feedback, high-value purchase intent and abandoned carts.

``AlertRules`` turns one event (plus its features and model outputs) into alerts; it is pure.
``CartWatch`` is the one stateful piece: it remembers, per customer, when a filled cart turns
into an abandoned one (no ``checkout_start`` or purchase within ``cart_abandonment_minutes`` of
the last ``add_to_cart``). The caller drives it with event time: ``on_event`` for every event,
``due(watermark)`` to collect expired carts, and ``on_intent`` when the session model says
"abandon" early. Alert ids come from the trigger event, so a replay repeats them exactly.

>>> from features.events import Click, Feedback
>>> from models.settings import DecisionSettings
>>> settings = DecisionSettings(cart_abandonment_minutes=30)
>>> rules = AlertRules(settings)
>>> alert = rules.negative_feedback(Feedback("f1", "c1", 1700000000.0, "review", rating=1), None)
>>> alert.type, alert.severity, alert.score
('negative_feedback', 'high', 1.0)
>>> watch = CartWatch(settings)
>>> watch.on_event(Click("e1", "c1", "s1", 1700000000.0, "add_to_cart", "i1", "home"),
...                {"cart_value": 80.0})
>>> watch.due(1700000000.0 + 29 * 60)
[]
>>> [due] = watch.due(1700000000.0 + 30 * 60)
>>> due
DueCart(customer_id='c1', trigger_event_id='e1', cart_value=80.0, ts=1700001800.0)
>>> rules.cart_abandonment(due).severity
'medium'
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from features.events import Click, Event, Feedback
from models.ids import alert_id
from models.settings import DecisionSettings

__all__ = ["Alert", "AlertRules", "AlertType", "CartWatch", "DueCart", "Severity"]

logger = logging.getLogger(__name__)

AlertType = Literal[
    "negative_feedback", "high_value_intent", "cart_abandonment", "churn_risk", "anomaly"
]
Severity = Literal["low", "medium", "high"]
Detail = float | int | str | bool | None

_NO_ALERTS: Final[tuple[Alert, ...]] = ()
# Rebuild the heap when stale entries (re-armed or cancelled carts) outnumber live ones by this.
_HEAP_SLACK: Final = 1024


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
        """The per-event alerts (cart abandonment comes from ``CartWatch`` instead)."""
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
            alert_id=alert_id(event.event_id, "negative_feedback"),
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
            alert_id=alert_id(event.event_id, "high_value_intent"),
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
        """The alert for a cart from ``CartWatch``; pass ``abandon_prob`` for an early one.

        Both kinds share one id per trigger event, so an early alert and a late one for the
        same cart are duplicates downstream (``CartWatch`` already emits at most one).
        """
        early = abandon_prob is not None
        big = due.cart_value >= self.settings.high_value_intent_min_cart
        severity: Severity = "high" if big else "medium"
        return Alert(
            alert_id=alert_id(due.trigger_event_id, "cart_abandonment"),
            customer_id=due.customer_id,
            type="cart_abandonment",
            severity=severity,
            score=min(max(abandon_prob, 0.0), 1.0) if early else 1.0,
            trigger_event_id=due.trigger_event_id,
            ts=due.ts,
            details={"cart_value": due.cart_value, "early": early, "abandon_prob": abandon_prob},
        )


class _Cart:
    __slots__ = ("armed_ts", "cart_value", "deadline", "fired", "last_ts", "seq", "trigger")

    def __init__(self, trigger: str, cart_value: float, armed_ts: float, deadline: float) -> None:
        self.trigger = trigger
        self.cart_value = cart_value
        self.armed_ts = armed_ts
        self.last_ts = armed_ts
        self.deadline = deadline
        self.fired = False
        self.seq = 0


class CartWatch:
    """Per-customer abandonment deadlines, bounded to ``cart_watch_max_entries`` carts.

    A heap of ``(deadline, seq, customer_id)`` with lazy deletion: re-arming or cancelling a
    cart leaves its old heap item behind, recognised as stale by its ``seq``. When the bound is
    hit, the cart closest to its deadline is dropped (counted in ``evicted``). State lives in
    memory: a restarted worker forgets pending carts.
    """

    def __init__(self, settings: DecisionSettings) -> None:
        self.settings = settings
        self._window_s = settings.cart_abandonment_minutes * 60.0
        self._max_entries = settings.cart_watch_max_entries
        self._early_prob = settings.early_abandon_prob
        self._carts: dict[str, _Cart] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._carts)

    def deadline(self, customer_id: str) -> float | None:
        """When this customer's cart counts as abandoned, or None if none is watched."""
        cart = self._carts.get(customer_id)
        return None if cart is None else cart.deadline

    def on_event(self, event: Event, features: Mapping[str, float]) -> None:
        """Arm on ``add_to_cart`` with a filled cart; cancel on checkout, purchase or empty cart.

        ``features`` are the customer's features after this event. Events older than the
        watched cart's last ``add_to_cart`` neither move nor cancel it (out-of-order input).
        """
        if isinstance(event, Feedback):
            return
        customer = event.customer_id
        cart = self._carts.get(customer)
        if cart is not None:
            if event.ts < cart.armed_ts:
                return
            if event.ts > cart.last_ts:
                cart.last_ts = event.ts
        if not isinstance(event, Click):  # a purchase ends the cart
            if cart is not None:
                del self._carts[customer]
            return
        action = event.action
        cart_value = features.get("cart_value", 0.0)
        if action == "add_to_cart":
            if cart_value > 0.0:
                self._arm(customer, cart, event.event_id, cart_value, event.ts)
        elif action == "checkout_start" or (action == "remove_from_cart" and cart_value <= 0.0):
            if cart is not None:
                del self._carts[customer]
        elif action == "remove_from_cart" and cart is not None:
            cart.cart_value = cart_value

    def on_intent(
        self,
        customer_id: str,
        abandon_prob: float,
        cart_value: float,
        *,
        ts: float | None = None,
    ) -> DueCart | None:
        """Fire a watched cart early when ``abandon_prob >= early_abandon_prob``, once per cart.

        ``ts`` defaults to the customer's latest event time seen here. The cart stays watched
        (a later ``add_to_cart`` does not re-fire it) until it is checked out or emptied.
        """
        cart = self._carts.get(customer_id)
        if cart is None or cart.fired or cart_value <= 0.0:
            return None
        if not abandon_prob >= self._early_prob:
            return None
        cart.fired = True
        cart.cart_value = cart_value
        return DueCart(customer_id, cart.trigger, cart_value, cart.last_ts if ts is None else ts)

    def forget(self, customer_ids: Iterable[str]) -> int:
        """Stop watching these customers' carts (their partition moved to another worker,
        which sees their checkouts and purchases now); returns how many were dropped."""
        carts = self._carts
        return sum(carts.pop(c, None) is not None for c in customer_ids)

    def due(self, now_ts: float) -> list[DueCart]:
        """Pop the carts whose deadline is <= ``now_ts`` (an event-time watermark)."""
        out: list[DueCart] = []
        heap = self._heap
        carts = self._carts
        while heap and heap[0][0] <= now_ts:
            deadline, seq, customer = heapq.heappop(heap)
            cart = carts.get(customer)
            if cart is None or cart.seq != seq:
                continue  # stale: re-armed, cancelled or evicted since
            del carts[customer]
            if not cart.fired:
                out.append(DueCart(customer, cart.trigger, cart.cart_value, deadline))
        return out

    def _arm(
        self, customer: str, cart: _Cart | None, trigger: str, cart_value: float, ts: float
    ) -> None:
        deadline = ts + self._window_s
        if cart is None:
            cart = _Cart(trigger, cart_value, ts, deadline)
            self._carts[customer] = cart
        else:
            cart.trigger = trigger
            cart.cart_value = cart_value
            cart.armed_ts = ts
            cart.deadline = deadline
        self._seq += 1
        cart.seq = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, customer))
        if len(self._carts) > self._max_entries:
            self._evict_one()
        if len(self._heap) > 2 * len(self._carts) + _HEAP_SLACK:
            self._compact()

    def _evict_one(self) -> None:
        heap = self._heap
        while heap:
            _, seq, customer = heapq.heappop(heap)
            cart = self._carts.get(customer)
            if cart is not None and cart.seq == seq:
                del self._carts[customer]
                self.evicted += 1
                if self.evicted % 10_000 == 1:
                    logger.warning(
                        "cart watch full (%d carts): dropped the oldest, %d dropped so far",
                        self._max_entries,
                        self.evicted,
                    )
                return

    def _compact(self) -> None:
        self._heap = [(c.deadline, c.seq, cust) for cust, c in self._carts.items()]
        heapq.heapify(self._heap)
