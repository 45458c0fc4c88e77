"""The event contract: what upstream apps send, validated into typed, immutable events.

One JSON object per Kafka record (UTF-8), keyed by ``customer_id``. ``parse_event`` either
returns a ``Click``, ``Purchase`` or ``Feedback`` or raises ``InvalidEvent`` whose ``reason``
is a short human-readable sentence (it goes to the dead-letter topic).

>>> e = parse_event("clicks", b'{"event_id": "e1", "customer_id": "c1", "session_id": "s1",'
...                 b' "ts": 1700000000, "action": "view", "item_id": "i9", "category": "shoes"}',
...                 now=1700000001.0)
>>> e.kind, e.customer_id, e.ts, e.price
('click', 'c1', 1700000000.0, None)
>>> parse_event("clicks", b'{"event_id": "e1"}', now=1700000001.0)
Traceback (most recent call last):
...
features.events.InvalidEvent: missing required field 'customer_id'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from hashlib import blake2b
from typing import Any, Final, Literal

import orjson

__all__ = [
    "ACTIONS",
    "CHANNELS",
    "SCHEMA_VERSION",
    "Click",
    "Event",
    "EventKind",
    "Feedback",
    "InvalidEvent",
    "Limits",
    "Purchase",
    "PurchaseItem",
    "content_digest",
    "parse_event",
]

SCHEMA_VERSION: Final = 1
ACTIONS: Final = frozenset({"view", "add_to_cart", "remove_from_cart", "search", "checkout_start"})
CHANNELS: Final = frozenset({"survey", "review", "support", "social"})

EventKind = Literal["click", "purchase", "feedback"]


class InvalidEvent(ValueError):
    """An input record that breaks the contract; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on every input, so no single event can make the worker slow or large."""

    max_payload_bytes: int = 16_384
    max_id_length: int = 128
    max_text_length: int = 4_096
    max_items: int = 100
    max_amount: float = 1e7
    max_future_skew_s: float = 86_400.0
    min_ts: float = 946_684_800.0  # 2000-01-01T00:00:00Z


_DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class Click:
    event_id: str
    customer_id: str
    session_id: str
    ts: float
    action: str
    item_id: str
    category: str
    price: float | None = None
    schema_version: int = SCHEMA_VERSION
    kind: EventKind = field(default="click", init=False)


@dataclass(frozen=True, slots=True)
class PurchaseItem:
    item_id: str
    category: str
    price: float
    quantity: int


@dataclass(frozen=True, slots=True)
class Purchase:
    event_id: str
    customer_id: str
    session_id: str | None
    ts: float
    order_id: str
    items: tuple[PurchaseItem, ...]
    total: float
    currency: str
    schema_version: int = SCHEMA_VERSION
    kind: EventKind = field(default="purchase", init=False)


@dataclass(frozen=True, slots=True)
class Feedback:
    event_id: str
    customer_id: str
    ts: float
    channel: str
    rating: int | None = None
    text: str | None = None
    schema_version: int = SCHEMA_VERSION
    kind: EventKind = field(default="feedback", init=False)


Event = Click | Purchase | Feedback


def content_digest(event: Event) -> str:
    """16 hex characters that tell two events under one ``event_id`` apart: a digest of every
    field but ``ts``, which may stand in from the record's timestamp or be clamped, and so
    differ between two sends of one event.

    >>> a = Feedback("e1", "c1", 1.0, "review", 5, "great")
    >>> content_digest(a) == content_digest(Feedback("e1", "c1", 9.0, "review", 5, "great"))
    True
    >>> content_digest(a) == content_digest(Feedback("e1", "c1", 1.0, "review", 1, "great"))
    False
    """
    return blake2b(orjson.dumps(replace(event, ts=0.0)), digest_size=8).hexdigest()


# Topic-name-independent kinds; the worker maps its configured topic names onto these.
_KIND_BY_NAME: Final[dict[str, EventKind]] = {
    "clicks": "click",
    "click": "click",
    "purchases": "purchase",
    "purchase": "purchase",
    "feedback": "feedback",
}


def parse_event(
    kind: str,
    raw: bytes,
    *,
    now: float,
    kafka_ts: float | None = None,
    limits: Limits = _DEFAULT_LIMITS,
) -> Event:
    """Decode and validate one record of the given kind (``clicks``/``purchases``/``feedback``).

    ``now`` is the wall clock (epoch seconds) used to reject far-future timestamps;
    ``kafka_ts`` (epoch seconds) stands in for a missing ``ts``.
    """
    event_kind = _KIND_BY_NAME.get(kind)
    if event_kind is None:
        raise InvalidEvent(f"unknown event kind {kind!r}")
    if raw is None:
        raise InvalidEvent("empty record (null value)")
    if len(raw) > limits.max_payload_bytes:
        raise InvalidEvent(f"payload of {len(raw)} bytes exceeds {limits.max_payload_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidEvent(f"unsupported schema_version {_brief(version)}")
    v = _Validator(doc, limits)
    event_id = v.ident("event_id")
    customer_id = v.customer()
    ts = v.timestamp(now, kafka_ts)
    if event_kind == "click":
        action = v.string("action")
        if action not in ACTIONS:
            raise InvalidEvent(f"unknown action {_brief(action)}")
        return Click(
            event_id=event_id,
            customer_id=customer_id,
            session_id=v.ident("session_id"),
            ts=ts,
            action=action,
            item_id=v.ident("item_id"),
            category=v.ident("category"),
            price=v.amount("price", required=False),
        )
    if event_kind == "purchase":
        items = v.items()
        return Purchase(
            event_id=event_id,
            customer_id=customer_id,
            session_id=v.ident("session_id", required=False),
            ts=ts,
            order_id=v.ident("order_id"),
            items=items,
            total=v.amount("total"),
            currency=v.ident("currency"),
        )
    channel = v.string("channel")
    if channel not in CHANNELS:
        raise InvalidEvent(f"unknown channel {_brief(channel)}")
    rating = doc.get("rating")
    if rating is not None and (
        not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5
    ):
        raise InvalidEvent(f"rating must be an integer 1-5, got {_brief(rating)}")
    text = doc.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidEvent(f"text must be a string, got {type(text).__name__}")
        if len(text) > limits.max_text_length:
            raise InvalidEvent(f"text of {len(text)} chars exceeds {limits.max_text_length}")
    return Feedback(
        event_id=event_id,
        customer_id=customer_id,
        ts=ts,
        channel=channel,
        rating=rating,
        text=text,
    )


class _Validator:
    """Field accessors that raise ``InvalidEvent`` with the field's name in the reason."""

    __slots__ = ("_doc", "_limits")

    def __init__(self, doc: dict[str, Any], limits: Limits) -> None:
        self._doc = doc
        self._limits = limits

    def _get(self, name: str, required: bool) -> Any:
        value = self._doc.get(name)
        if value is None and required:
            raise InvalidEvent(f"missing required field {name!r}")
        return value

    def string(self, name: str) -> str:
        value = self._get(name, True)
        if not isinstance(value, str):
            raise InvalidEvent(f"{name} must be a string, got {type(value).__name__}")
        return value

    def ident(self, name: str, *, required: bool = True) -> Any:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):  # -1 and "-1" would otherwise be one customer
            raise InvalidEvent(f"{name} must be a string, got {type(value).__name__}")
        if not value:
            raise InvalidEvent(f"{name} must not be empty")
        if len(value) > self._limits.max_id_length:
            raise InvalidEvent(f"{name} longer than {self._limits.max_id_length} chars")
        return value

    def customer(self) -> str:
        """``customer_id``: an id that is also a Redis Cluster hash tag (``{<id>}``), so no
        braces (a leading ``}`` would leave the tag empty and split the customer's keys)."""
        value: str = self.ident("customer_id")
        if "{" in value or "}" in value:
            raise InvalidEvent(f"customer_id must not contain braces, got {_brief(value)}")
        return value

    def amount(self, name: str, *, required: bool = True) -> Any:
        value = self._get(name, required)
        if value is None:
            return None
        return _amount(name, value, self._limits)

    def timestamp(self, now: float, kafka_ts: float | None) -> float:
        value = self._doc.get("ts")
        if value is None:
            if kafka_ts is None:
                raise InvalidEvent("missing ts and no record timestamp")
            ts = float(kafka_ts)
        elif isinstance(value, bool):
            raise InvalidEvent("ts must be RFC 3339 or epoch seconds, got bool")
        elif isinstance(value, int | float):
            ts = float(value)
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise InvalidEvent(f"ts {value[:40]!r} is not an RFC 3339 timestamp") from None
            if parsed.tzinfo is None:
                raise InvalidEvent(f"ts {value[:40]!r} has no timezone offset")
            ts = parsed.timestamp()
        else:
            raise InvalidEvent(f"ts must be RFC 3339 or epoch seconds, got {type(value).__name__}")
        if not math.isfinite(ts):
            raise InvalidEvent("ts is not a finite number")
        if ts > now + self._limits.max_future_skew_s:
            raise InvalidEvent(f"ts {ts:.0f} is too far in the future (now {now:.0f})")
        if ts < self._limits.min_ts:
            raise InvalidEvent(f"ts {ts:.0f} is before 2000-01-01")
        return ts

    def items(self) -> tuple[PurchaseItem, ...]:
        raw_items = self._get("items", True)
        if not isinstance(raw_items, list) or not raw_items:
            raise InvalidEvent("items must be a non-empty list")
        if len(raw_items) > self._limits.max_items:
            raise InvalidEvent(f"{len(raw_items)} items exceeds {self._limits.max_items}")
        out = []
        for i, item in enumerate(raw_items):
            if not isinstance(item, dict):
                raise InvalidEvent(f"items[{i}] must be an object")
            sub = _Validator(item, self._limits)
            quantity = item.get("quantity", 1)
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
                raise InvalidEvent(f"items[{i}].quantity must be a positive integer")
            if quantity > 10_000:
                raise InvalidEvent(f"items[{i}].quantity {quantity} exceeds 10000")
            out.append(
                PurchaseItem(
                    item_id=sub.ident("item_id"),
                    category=sub.ident("category"),
                    price=sub.amount("price"),
                    quantity=quantity,
                )
            )
        return tuple(out)


def _brief(value: Any) -> str:
    """A short rendering of an input value for a reason: never a deep ``repr`` (a record of
    ~1000 nested brackets would raise RecursionError there) nor a 16 KiB one."""
    if value is None or isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:37]}..."
    return type(value).__name__


def _amount(name: str, value: Any, limits: Limits) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{name} must be a number, got {type(value).__name__}")
    amount = float(value)
    if not math.isfinite(amount):
        raise InvalidEvent(f"{name} is not a finite number")
    if amount < 0:
        raise InvalidEvent(f"{name} must not be negative, got {amount}")
    if amount > limits.max_amount:
        raise InvalidEvent(f"{name} {amount} exceeds {limits.max_amount}")
    return amount
