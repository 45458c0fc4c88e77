"""Hostile input against the event contract (``features.events.parse_event``), with hypothesis.

Every malformed record must raise ``InvalidEvent`` with a short, non-empty reason (it goes to
the dead-letter topic); nothing else may escape, since any other exception would stop the
agent instead of dead-lettering one record. Valid generated events must parse and keep their
fields. Pure: no servers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from features.events import (
    ACTIONS,
    CHANNELS,
    Click,
    Event,
    Feedback,
    InvalidEvent,
    Limits,
    Purchase,
    parse_event,
)

NOW = 1_800_000_000.0  # 2027-01-15
LIMITS = Limits()
# The longest reason we accept: a reason is one line of a dead letter, not a copy of the input.
MAX_REASON = 400

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
# Broad properties (any JSON, valid events) get more examples than the narrow corruptions.
fuzz = settings(max_examples=100, deadline=None, suppress_health_check=_HEALTH)
broad = settings(max_examples=200, deadline=None, suppress_health_check=_HEALTH)

KINDS = ("clicks", "purchases", "feedback")
TOPIC_KIND = {"clicks": "click", "purchases": "purchase", "feedback": "feedback"}


def invalid(kind: str, raw: bytes, *, kafka_ts: float | None = None) -> InvalidEvent:
    """Parse, expecting ``InvalidEvent`` and only that; return it."""
    with pytest.raises(InvalidEvent) as info:
        parse_event(kind, raw, now=NOW, kafka_ts=kafka_ts)
    check_reason(info.value)
    return info.value


def check_reason(exc: InvalidEvent) -> None:
    assert isinstance(exc.reason, str)
    assert exc.reason.strip(), "empty reason"
    assert len(exc.reason) <= MAX_REASON, f"reason of {len(exc.reason)} chars"
    assert str(exc) == exc.reason


def parse_or_reject(kind: str, raw: bytes, kafka_ts: float | None = None) -> Event | None:
    """Either an event that keeps the contract's bounds, or ``InvalidEvent``; nothing else."""
    try:
        event = parse_event(kind, raw, now=NOW, kafka_ts=kafka_ts)
    except InvalidEvent as exc:
        check_reason(exc)
        return None
    check_bounds(event)
    return event


def check_bounds(event: Event) -> None:
    ids = [event.event_id, event.customer_id]
    amounts: list[float | None] = []
    if isinstance(event, Click):
        ids += [event.session_id, event.item_id, event.category]
        assert event.action in ACTIONS
        amounts.append(event.price)
    elif isinstance(event, Purchase):
        ids += [event.order_id, event.currency]
        if event.session_id is not None:
            ids.append(event.session_id)
        assert 1 <= len(event.items) <= LIMITS.max_items
        for item in event.items:
            ids += [item.item_id, item.category]
            amounts.append(item.price)
            assert isinstance(item.quantity, int) and 1 <= item.quantity <= 10_000
        amounts.append(event.total)
    else:
        assert event.channel in CHANNELS
        assert event.rating is None or (type(event.rating) is int and 1 <= event.rating <= 5)
        assert event.text is None or len(event.text) <= LIMITS.max_text_length
    for i in ids:
        assert isinstance(i, str) and 1 <= len(i) <= LIMITS.max_id_length
    for a in amounts:
        assert a is None or (type(a) is float and 0.0 <= a <= LIMITS.max_amount)
    assert type(event.ts) is float and math.isfinite(event.ts)
    assert LIMITS.min_ts <= event.ts <= NOW + LIMITS.max_future_skew_s


# -- valid events ----------------------------------------------------------------------------

_chars = st.characters(exclude_categories=("Cs",))  # lone surrogates cannot be UTF-8
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # orjson writes no wider ints
ids = st.text(_chars, min_size=1, max_size=LIMITS.max_id_length)
# a customer id is a Redis Cluster hash tag too: no braces
customer_ids = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="{}"),
    min_size=1,
    max_size=LIMITS.max_id_length,
)
amounts = st.one_of(
    st.floats(min_value=0.0, max_value=LIMITS.max_amount, allow_nan=False),
    st.integers(min_value=0, max_value=int(LIMITS.max_amount)),
)
epoch = st.one_of(
    st.floats(min_value=LIMITS.min_ts, max_value=NOW + LIMITS.max_future_skew_s),
    st.integers(min_value=int(LIMITS.min_ts) + 1, max_value=int(NOW)),
)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
rfc3339 = st.builds(
    lambda d, tz: d.replace(tzinfo=tz).isoformat(),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2027, 1, 1)),
    offsets,
)
timestamps = st.one_of(epoch, rfc3339)
extras = st.dictionaries(
    st.text(_chars, max_size=12).map(lambda k: f"x_{k}"),
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.text(_chars, max_size=20)),
    max_size=3,
)


def _docs(ids: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """A valid document strategy per topic, with identifiers drawn from ``ids``."""
    common = {"event_id": ids, "customer_id": customer_ids, "ts": timestamps}
    items = st.fixed_dictionaries(
        {"item_id": ids, "category": ids, "price": amounts},
        optional={"quantity": st.integers(min_value=1, max_value=10_000)},
    )
    return {
        "clicks": st.fixed_dictionaries(
            {
                **common,
                "session_id": ids,
                "action": st.sampled_from(sorted(ACTIONS)),
                "item_id": ids,
                "category": ids,
            },
            optional={"price": amounts, "schema_version": st.just(1)},
        ),
        "purchases": st.fixed_dictionaries(
            {
                **common,
                "order_id": ids,
                "items": st.lists(items, min_size=1, max_size=8),
                "total": amounts,
                "currency": ids,
            },
            optional={"session_id": ids},
        ),
        "feedback": st.fixed_dictionaries(
            {**common, "channel": st.sampled_from(sorted(CHANNELS))},
            optional={
                "rating": st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
                "text": st.one_of(st.none(), st.text(_chars, max_size=300)),
            },
        ),
    }


DOCS = _docs(ids)
# Cheaper bases for the malformed-input tests: what matters there is the corruption.
SMALL_DOCS = _docs(st.text(_chars, min_size=1, max_size=12))
valid_docs = st.sampled_from(KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), DOCS[kind], extras)
)


def _id(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _ts(value: Any) -> float:
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else float(value)


def _amount(value: Any) -> float | None:
    return None if value is None else float(value)


@broad
@given(valid_docs)
def test_valid_events_parse_and_keep_their_fields(case: tuple[str, dict[str, Any], dict]):
    kind, doc, extra = case
    raw = orjson.dumps({**extra, **doc})
    assume(len(raw) <= LIMITS.max_payload_bytes)
    event = parse_event(kind, raw, now=NOW)
    check_bounds(event)
    assert event.kind == TOPIC_KIND[kind]
    assert (event.event_id, event.customer_id) == (_id(doc["event_id"]), _id(doc["customer_id"]))
    assert event.ts == _ts(doc["ts"])
    assert event.schema_version == 1
    if isinstance(event, Click):
        assert (event.session_id, event.item_id, event.category) == (
            _id(doc["session_id"]),
            _id(doc["item_id"]),
            _id(doc["category"]),
        )
        assert event.action == doc["action"]
        assert event.price == _amount(doc.get("price"))
    elif isinstance(event, Purchase):
        assert event.order_id == _id(doc["order_id"])
        assert event.currency == _id(doc["currency"])
        assert event.session_id == (None if "session_id" not in doc else _id(doc["session_id"]))
        assert event.total == float(doc["total"])
        assert len(event.items) == len(doc["items"])
        for got, want in zip(event.items, doc["items"], strict=True):
            assert (got.item_id, got.category) == (_id(want["item_id"]), _id(want["category"]))
            assert got.price == float(want["price"])
            assert got.quantity == want.get("quantity", 1)
    else:
        assert isinstance(event, Feedback)
        assert event.channel == doc["channel"]
        assert event.rating == doc.get("rating")
        assert event.text == doc.get("text")


@fuzz
@given(valid_docs, st.floats(min_value=LIMITS.min_ts, max_value=NOW))
def test_record_timestamp_stands_in_for_a_missing_ts(
    case: tuple[str, dict[str, Any], dict], kafka_ts: float
):
    kind, doc, _ = case
    del doc["ts"]
    event = parse_event(kind, orjson.dumps(doc), now=NOW, kafka_ts=kafka_ts)
    assert event.ts == kafka_ts
    invalid(kind, orjson.dumps(doc), kafka_ts=None)


# -- malformed records -----------------------------------------------------------------------

# Fields each kind reads (and so rejects when malformed); others are ignored.
KNOWN = {
    "clicks": (
        "event_id",
        "customer_id",
        "ts",
        "session_id",
        "action",
        "item_id",
        "category",
        "price",
        "schema_version",
    ),
    "purchases": (
        "event_id",
        "customer_id",
        "ts",
        "session_id",
        "order_id",
        "items",
        "total",
        "currency",
        "schema_version",
    ),
    "feedback": ("event_id", "customer_id", "ts", "channel", "rating", "text", "schema_version"),
}
REQUIRED = {
    "clicks": ("event_id", "customer_id", "ts", "session_id", "action", "item_id", "category"),
    "purchases": ("event_id", "customer_id", "ts", "order_id", "items", "total", "currency"),
    "feedback": ("event_id", "customer_id", "ts", "channel"),
}
kind_and_doc = st.sampled_from(KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), SMALL_DOCS[kind])
)


def known_field(kind: str) -> st.SearchStrategy[str]:
    return st.sampled_from(KNOWN[kind])


@broad
@given(st.sampled_from(KINDS), st.binary(max_size=4096))
def test_random_bytes(kind: str, raw: bytes):
    invalid(kind, raw)


@broad
@given(st.sampled_from(KINDS), st.text(max_size=2000))
def test_random_text(kind: str, text: str):
    # Lone surrogates are encoded with surrogatepass: bytes that are not valid UTF-8.
    invalid(kind, text.encode("utf-8", "surrogatepass"))


BAD_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\x28",
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\x80",
]


@fuzz
@given(kind_and_doc, st.data(), st.sampled_from(BAD_UTF8), st.binary(max_size=8))
def test_bad_utf8_inside_a_string(
    case: tuple[str, dict], data: st.DataObject, bad: bytes, tail: bytes
):
    kind, doc = case
    field = data.draw(st.sampled_from(sorted(doc)), label="field")
    doc[field] = "@@BAD@@"
    raw = orjson.dumps(doc).replace(b"@@BAD@@", bad + tail.replace(b'"', b""))
    invalid(kind, raw)


def nested(depth: int, leaf: bytes, as_object: bool) -> bytes:
    if as_object:
        return b'{"a":' * depth + leaf + b"}" * depth
    return b"[" * depth + leaf + b"]" * depth


@fuzz
@given(
    kind_and_doc,
    st.data(),
    st.integers(min_value=1, max_value=1500),
    st.booleans(),
    st.sampled_from([b"1", b'"x"', b"null", b"{}", b"[]"]),
)
def test_deep_nesting_in_a_field(
    case: tuple[str, dict], data: st.DataObject, depth: int, as_object: bool, leaf: bytes
):
    kind, doc = case
    field = data.draw(known_field(kind), label="field")
    doc[field] = "@@DEEP@@"
    raw = orjson.dumps(doc).replace(b'"@@DEEP@@"', nested(depth, leaf, as_object))
    assume(len(raw) <= LIMITS.max_payload_bytes)
    invalid(kind, raw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("depth", [1, 100, 900, 1000, 1023, 1024, 1025, 5000])
def test_deep_nesting_of_the_whole_record(kind: str, depth: int):
    invalid(kind, nested(depth, b"1", as_object=False))
    invalid(kind, nested(depth, b"1", as_object=True))


@pytest.mark.parametrize("field", ["schema_version", "rating", "channel"])
def test_deep_nesting_is_not_echoed_into_the_reason(field: str):
    # Regression: these reasons used repr(value), and repr of ~1000 nested lists raised
    # RecursionError out of parse_event instead of InvalidEvent.
    doc = {
        "event_id": "e",
        "customer_id": "c",
        "ts": 1_700_000_000,
        "channel": "survey",
        field: "@@DEEP@@",
    }
    raw = orjson.dumps(doc).replace(b'"@@DEEP@@"', nested(1010, b"1", as_object=False))
    invalid("feedback", raw)


# Minimum length at which a string in this field is certainly too long.
_TOO_LONG = {"text": LIMITS.max_text_length + 1}


@fuzz
@given(kind_and_doc, st.data(), st.integers(min_value=0, max_value=40_000))
def test_huge_strings(case: tuple[str, dict], data: st.DataObject, extra: int):
    kind, doc = case
    field = data.draw(known_field(kind).filter(lambda f: f != "items"), label="field")
    size = _TOO_LONG.get(field, LIMITS.max_id_length + 1) + extra
    doc[field] = data.draw(st.sampled_from("x\u00e9\u4e2d\U0001f600"), label="char") * size
    invalid(kind, orjson.dumps(doc))


@fuzz
@given(kind_and_doc, st.integers(min_value=1, max_value=200_000))
def test_oversized_payloads(case: tuple[str, dict], size: int):
    kind, doc = case
    doc["x_padding"] = "p" * (LIMITS.max_payload_bytes + size)
    assert "exceeds" in invalid(kind, orjson.dumps(doc)).reason


NON_FINITE = [
    b"NaN",
    b"-NaN",
    b"Infinity",
    b"-Infinity",
    b"inf",
    b"nan",
    b"1e400",
    b"-1e400",
    b"1e999999",
    b"Infinity1",
    b"+1",
    b"01",
    b"1.",
    b".5",
    b"0x10",
    b"1_000",
]


@fuzz
@given(kind_and_doc, st.data(), st.sampled_from(NON_FINITE))
def test_nan_infinity_and_other_non_json_numbers(
    case: tuple[str, dict], data: st.DataObject, literal: bytes
):
    kind, doc = case
    field = data.draw(st.sampled_from([*sorted(doc), "x_unknown"]), label="field")
    doc[field] = "@@NUM@@"
    invalid(kind, orjson.dumps(doc).replace(b'"@@NUM@@"', literal))


@fuzz
@given(kind_and_doc, st.data(), st.integers(min_value=2**64, max_value=10**300))
def test_integers_wider_than_64_bits(case: tuple[str, dict], data: st.DataObject, big: int):
    # orjson reads them as floats, which no field accepts (ids would become "1e+30").
    kind, doc = case
    field = data.draw(known_field(kind), label="field")
    doc[field] = "@@BIG@@"
    sign = data.draw(st.sampled_from(["", "-"]), label="sign")
    invalid(kind, orjson.dumps(doc).replace(b'"@@BIG@@"', f"{sign}{big}".encode()))


def _wrong_types(kind: str, field: str) -> st.SearchStrategy[Any]:
    containers = st.one_of(
        st.lists(i64, max_size=3), st.dictionaries(st.text(max_size=3), i64, max_size=3)
    )
    floats = st.floats(allow_nan=False, allow_infinity=False)
    required = field in REQUIRED[kind]
    none = st.none() if required else st.nothing()
    if field in ("action", "channel"):
        return st.one_of(
            none,
            st.booleans(),
            i64,
            floats,
            containers,
            st.text(max_size=20).filter(lambda s: s not in ACTIONS | CHANNELS),
        )
    if field == "ts":
        return st.one_of(none, st.booleans(), containers)
    if field in ("price", "total"):
        return st.one_of(
            none,
            st.booleans(),
            st.text(max_size=10),
            containers,
            st.floats(max_value=-1e-9, allow_infinity=False),
            st.floats(min_value=1e7, exclude_min=True, allow_infinity=False),
        )
    if field == "rating":
        return st.one_of(
            st.booleans(),
            st.text(max_size=5),
            containers,
            floats,
            i64.filter(lambda i: not 1 <= i <= 5),
        )
    if field == "text":
        return st.one_of(st.booleans(), i64, floats, containers)
    if field == "items":
        return st.one_of(
            none,
            st.just([]),
            st.booleans(),
            i64,
            st.text(max_size=5),
            st.dictionaries(st.text(max_size=3), i64, max_size=2),
            st.lists(st.one_of(i64, st.text(max_size=3), st.none()), min_size=1, max_size=3),
        )
    if field == "schema_version":
        return st.one_of(
            st.booleans(),
            st.text(max_size=3),
            containers,
            i64.filter(lambda i: i != 1),
            floats.filter(lambda f: f != 1.0),
        )
    # identifiers: strings only (-1 and "-1" would be one customer); "" is not one either
    wrong = st.one_of(none, st.just(""), st.booleans(), i64, floats, containers)
    if field == "customer_id":  # a hash tag too: no braces
        braces = st.sampled_from(["}c", "{c}", "c}", "a{b", "}"])
        return st.one_of(wrong, braces)
    return wrong


@fuzz
@given(kind_and_doc, st.data())
def test_wrong_types(case: tuple[str, dict], data: st.DataObject):
    kind, doc = case
    field = data.draw(known_field(kind), label="field")
    doc[field] = data.draw(_wrong_types(kind, field), label="value")
    invalid(kind, orjson.dumps(doc))


bad_items = st.one_of(
    st.fixed_dictionaries(
        {
            "item_id": ids,
            "category": ids,
            "price": amounts,
            "quantity": st.one_of(
                st.integers(min_value=-(2**63), max_value=0),
                st.integers(min_value=10_001, max_value=2**63 - 1),
                st.booleans(),
                st.floats(),
                st.text(max_size=3),
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "item_id": ids,
            "category": ids,
            "price": st.one_of(st.floats(max_value=-0.01), st.text(max_size=3)),
        }
    ),
    st.fixed_dictionaries({"item_id": ids, "price": amounts}),
    st.fixed_dictionaries({"category": ids, "price": amounts}),
    st.fixed_dictionaries({"item_id": ids, "category": ids}),
)


@fuzz
@given(SMALL_DOCS["purchases"], bad_items, st.data())
def test_bad_purchase_items(doc: dict, bad: dict, data: st.DataObject):
    position = data.draw(st.integers(min_value=0, max_value=len(doc["items"])), label="at")
    doc["items"].insert(position, bad)
    invalid("purchases", orjson.dumps(doc))


def test_too_many_items():
    item = {"item_id": "i", "category": "c", "price": 1}
    doc = {
        "event_id": "e",
        "customer_id": "c",
        "ts": 1_700_000_000,
        "order_id": "o",
        "items": [item] * (LIMITS.max_items + 1),
        "total": 1,
        "currency": "EUR",
    }
    assert "exceeds" in invalid("purchases", orjson.dumps(doc)).reason


@fuzz
@given(kind_and_doc, st.data())
def test_missing_required_keys(case: tuple[str, dict], data: st.DataObject):
    kind, doc = case
    drop = data.draw(st.sets(st.sampled_from(REQUIRED[kind]), min_size=1), label="drop")
    for key in drop:
        doc.pop(key, None)
    invalid(kind, orjson.dumps(doc))


far_future = st.one_of(
    st.floats(
        min_value=NOW + LIMITS.max_future_skew_s,
        exclude_min=True,
        allow_infinity=False,
        allow_nan=False,
    ),
    st.integers(min_value=int(NOW + LIMITS.max_future_skew_s) + 1, max_value=2**63 - 1),
    st.datetimes(min_value=datetime(2027, 1, 18), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.replace(tzinfo=UTC).isoformat()
    ),
)
too_old = st.one_of(
    st.floats(max_value=LIMITS.min_ts, exclude_max=True, allow_infinity=False, allow_nan=False),
    st.integers(min_value=-(2**63), max_value=int(LIMITS.min_ts) - 1),
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(1999, 12, 30)),
        offsets,
    ),
)
bad_ts_strings = st.one_of(
    st.text(max_size=40),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2026, 1, 1)).map(
        datetime.isoformat
    ),  # naive: no offset
    st.sampled_from(
        [
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "1700000000",
            "now",
            "",
            "T",
            "2024-01-01T00:00:00+24:00",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
        ]
    ),
)


@fuzz
@given(kind_and_doc, st.one_of(far_future, too_old, bad_ts_strings))
def test_bad_timestamps(case: tuple[str, dict], ts: Any):
    kind, doc = case
    doc["ts"] = ts
    invalid(kind, orjson.dumps(doc))


@fuzz
@given(kind_and_doc, st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e300]))
def test_bad_record_timestamps(case: tuple[str, dict], kafka_ts: float):
    kind, doc = case
    del doc["ts"]
    invalid(kind, orjson.dumps(doc), kafka_ts=kafka_ts)


@fuzz
@given(
    kind_and_doc,
    st.text(max_size=30).filter(
        lambda k: k not in ("clicks", "click", "purchases", "purchase", "feedback")
    ),
)
def test_unknown_topics(case: tuple[str, dict], kind: str):
    _, doc = case
    assert "unknown event kind" in invalid(kind, orjson.dumps(doc)).reason


@fuzz
@given(kind_and_doc, st.data())
def test_payload_of_another_topic(case: tuple[str, dict], data: st.DataObject):
    kind, doc = case
    other = data.draw(st.sampled_from([k for k in KINDS if k != kind]), label="topic")
    invalid(other, orjson.dumps(doc))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | i64
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_chars, max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(_chars, max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@broad
@given(st.sampled_from(KINDS), json_values)
def test_any_json_document(kind: str, value: Any):
    assert parse_or_reject(kind, orjson.dumps(value)) is None


@fuzz
@given(kind_and_doc, st.data(), st.sampled_from(KINDS))
def test_any_json_in_any_field(case: tuple[str, dict], data: st.DataObject, as_kind: str):
    kind, doc = case
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="n")):
        field = data.draw(st.sampled_from([*KNOWN[kind], "quantity", "x"]), label="field")
        doc[field] = data.draw(json_values, label="value")
    parse_or_reject(as_kind, orjson.dumps(doc))


@fuzz
@given(kind_and_doc, st.data())
def test_byte_flips(case: tuple[str, dict], data: st.DataObject):
    kind, doc = case
    raw = bytearray(orjson.dumps(doc))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="n")):
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="at")
        raw[at] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    parse_or_reject(kind, bytes(raw))


@fuzz
@given(kind_and_doc, st.data())
def test_truncated_records(case: tuple[str, dict], data: st.DataObject):
    kind, doc = case
    raw = orjson.dumps(doc)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="cut")
    invalid(kind, raw[:cut])


@pytest.mark.parametrize("kind", KINDS)
def test_null_record(kind: str):
    # A tombstone (null value) arrives as None even though the signature says bytes.
    invalid(kind, None)  # type: ignore[arg-type]
