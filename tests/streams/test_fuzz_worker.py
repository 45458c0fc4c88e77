"""Hostile input through a real worker: hypothesis-generated malformed records among valid ones,
then 10,000 hostile records at the Kafka edge.

Every generated record breaks the contract in one way (bad UTF-8, deep nesting, huge strings,
NaN/Infinity, wrong types, missing keys, far-future or pre-2000 timestamps, another topic's
payload, null values); each carries a unique record key ``bad-<i>`` so its dead letter can be
matched. Valid simulated events (some sent twice: duplicate ids) are interleaved. Checks: every
malformed record is in ``dead-letters`` exactly once with a reason, the features equal the
ground truth of the valid events (duplicates counted once), and the worker's RSS stays bounded.

The second test adds what only a Kafka client can send or an app can get wrong: tombstones, null
keys, headers, records near the broker's maximum size, customer ids made of braces, 23-digit and
1e300 numbers, invalid UTF-8, and events that reuse a customer's event id with other content.
Dead letters are matched to hostile records by payload SHA-256 (null keys carry no marker).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.streams.faultkit import (
    compare_features,
    produce_all,
    read_features,
    read_outputs,
    record,
    simulate,
    wait_drained,
)

pytestmark = pytest.mark.slow

_NOW = time.time()
_CLICK: dict[str, Any] = {
    "event_id": "fz-1",
    "customer_id": "cfz",
    "session_id": "s1",
    "ts": _NOW - 3600,
    "action": "view",
    "item_id": "i1",
    "category": "toys",
    "price": 9.5,
}
_PURCHASE: dict[str, Any] = {
    "event_id": "fz-2",
    "customer_id": "cfz",
    "ts": _NOW - 3600,
    "order_id": "o1",
    "items": [{"item_id": "i1", "category": "toys", "price": 9.5, "quantity": 1}],
    "total": 9.5,
    "currency": "EUR",
}
_FEEDBACK: dict[str, Any] = {
    "event_id": "fz-3",
    "customer_id": "cfz",
    "ts": _NOW - 3600,
    "channel": "review",
    "rating": 4,
}
_IDENTS = ("event_id", "customer_id", "session_id", "item_id", "category")
_JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)
)
_WRONG = st.one_of(
    st.lists(_JSON_LEAF, max_size=4),
    st.dictionaries(st.text(max_size=5), _JSON_LEAF, max_size=3),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
)

Bad = tuple[str, bytes | None]  # (input kind, raw value)


def _dump(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


@st.composite
def _bad_utf8(draw: st.DrawFn) -> Bad:
    raw = _dump({**_CLICK, "category": "CAT"})
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))
    return "clicks", raw.replace(b"CAT", b"ok" + junk + draw(st.binary(max_size=8)))


@st.composite
def _deep(draw: st.DrawFn) -> Bad:
    depth = draw(st.integers(1_025, 8_000))  # past orjson's nesting limit, under 16 KB
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    if draw(st.booleans()):
        return "clicks", opener * depth + b"1" + closer * depth
    nested = opener * 50 + b"1" + closer * 50  # parses, but is the wrong type
    return "clicks", _dump(_CLICK).replace(b'"toys"', nested)


@st.composite
def _huge(draw: st.DrawFn) -> Bad:
    what = draw(st.sampled_from(["id", "text", "payload", "items"]))
    if what == "id":
        field = draw(st.sampled_from(_IDENTS))
        return "clicks", _dump({**_CLICK, field: "x" * draw(st.integers(129, 5_000))})
    if what == "text":
        return "feedback", _dump({**_FEEDBACK, "text": "y" * draw(st.integers(4_097, 12_000))})
    if what == "items":
        item = _PURCHASE["items"][0]
        return "purchases", _dump({**_PURCHASE, "items": [item] * draw(st.integers(101, 150))})
    return "clicks", _dump({**_CLICK, "pad": "z" * draw(st.integers(16_400, 200_000))})


@st.composite
def _non_finite(draw: st.DrawFn) -> Bad:
    lit = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]))
    field = draw(st.sampled_from([b"price", b"ts"]))
    raw = _dump({**_CLICK, "price": 1.25, "ts": 1.5e9})
    old = b'"price":1.25' if field == b"price" else b'"ts":1500000000.0'
    return "clicks", raw.replace(old, b'"' + field + b'":' + lit)


@st.composite
def _wrong_type(draw: st.DrawFn) -> Bad:
    field = draw(st.sampled_from([*_IDENTS, "ts", "action"]))
    value = draw(_WRONG)
    if field == "ts" and isinstance(value, float):
        value = [value]
    return "clicks", _dump({**_CLICK, field: value})


@st.composite
def _missing(draw: st.DrawFn) -> Bad:
    kind, doc, required = draw(
        st.sampled_from(
            [
                ("clicks", _CLICK, (*_IDENTS, "action")),
                ("purchases", _PURCHASE, ("event_id", "customer_id", "order_id", "items")),
                ("feedback", _FEEDBACK, ("event_id", "customer_id", "channel")),
            ]
        )
    )
    drop = draw(st.sampled_from(required))
    return kind, _dump({k: v for k, v in doc.items() if k != drop})


@st.composite
def _bad_ts(draw: st.DrawFn) -> Bad:
    ts = draw(
        st.one_of(
            st.floats(_NOW + 2 * 86_400, 1e15),
            st.floats(-1e12, 946_684_799),
            st.sampled_from(["3026-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "yesterday"]),
        )
    )
    return "clicks", _dump({**_CLICK, "ts": ts})


@st.composite
def _other_topic(draw: st.DrawFn) -> Bad:
    return draw(
        st.sampled_from(
            [
                ("clicks", _dump(_PURCHASE)),
                ("clicks", _dump(_FEEDBACK)),
                ("feedback", _dump(_CLICK)),
                ("purchases", _dump(_CLICK)),
                ("clicks", None),
                ("clicks", b""),
                ("clicks", b"[1, 2, 3]"),
                ("purchases", b'"just a string"'),
            ]
        )
    )


_MALFORMED = st.one_of(
    _bad_utf8(),
    _deep(),
    _huge(),
    _non_finite(),
    _wrong_type(),
    _missing(),
    _bad_ts(),
    _other_topic(),
)


def _generate(n: int) -> list[Bad]:
    out: list[Bad] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(_MALFORMED)
    def collect(bad: Bad) -> None:
        out.append(bad)

    collect()
    return out


class _RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(0.1):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return


def _send_and_drain(
    w: Any, stream: Sequence[tuple[Any, ...]], timeout: float
) -> tuple[int, int, float, float]:
    """Send ``stream`` to a ready worker and wait until its group committed all of it,
    sampling its RSS; (RSS before, peak RSS, seconds in all, seconds waiting to drain)."""
    w.wait_ready()
    assert w.proc is not None
    base_rss = psutil.Process(w.proc.pid).memory_info().rss
    sampler = _RssSampler(w.proc.pid)
    sampler.start()
    t0 = time.monotonic()
    ends = asyncio.run(produce_all(w.env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], stream))
    drain_s = wait_drained(w.env, ends, timeout=timeout)
    sampler.stop_flag.set()
    sampler.join()
    assert w.proc.poll() is None, f"worker died:\n{w.log()}"
    return base_rss, sampler.peak, time.monotonic() - t0, drain_s


@pytest.mark.timeout(240)
def test_fuzzed_malformed_records_all_dead_lettered_valid_all_scored(
    worker_factory: Any, tmp_path: Path
) -> None:
    w = worker_factory()
    env = w.env
    topic = {
        "clicks": env["STREAMSCORE_TOPICS__CLICKS"],
        "purchases": env["STREAMSCORE_TOPICS__PURCHASES"],
        "feedback": env["STREAMSCORE_TOPICS__FEEDBACK"],
    }
    valid, truth = simulate(env, 3_000, seed=53, customers=200)
    bad = _generate(2_000)
    rng = random.Random(53)
    replays = rng.sample(valid, 300)  # duplicate event ids: applied once
    stream: list[tuple[str, bytes, bytes | None]] = [*valid, *replays]
    rng.shuffle(stream)
    keyed_bad = [(topic[k], f"bad-{i}".encode(), raw) for i, (k, raw) in enumerate(bad)]
    for rec in keyed_bad:
        stream.insert(rng.randrange(len(stream) + 1), rec)

    base_rss, peak_rss, elapsed, drain_s = _send_and_drain(w, stream, timeout=150)
    stats = w.stats() or {}
    out = read_outputs(env, quiet_s=2.0)
    dl_keys = [d["key"] for d in out.dead]
    bad_keys = {k.decode() for _, k, _ in keyed_bad}
    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    reasons: dict[str, int] = {}
    for d in out.dead:
        head = d["reason"].split(":")[0][:40]
        reasons[head] = reasons.get(head, 0) + 1
    numbers: dict[str, Any] = {
        "records_sent": len(stream),
        "malformed_sent": len(keyed_bad),
        "valid_sent": len(valid),
        "duplicate_ids_sent": len(replays),
        "dead_letters": len(out.dead),
        "malformed_missing_from_dead_letters": len(bad_keys - set(dl_keys)),
        "dead_letters_of_valid": len(set(dl_keys) - bad_keys),
        "valid_scored": stats.get("valid"),
        "duplicates_ignored": stats.get("duplicates"),
        "lost": cmp.lost,
        "double_counted": cmp.doubled,
        "rss_mb_base": round(base_rss / 2**20),
        "rss_mb_peak": round(peak_rss / 2**20),
        "seconds": round(elapsed, 1),
        "drain_wait_s": round(drain_s, 1),
        "distinct_reasons": len(reasons),
    }
    record(tmp_path, "fuzz_worker", numbers)
    assert sorted(dl_keys) == sorted(bad_keys), f"dead letters != malformed records: {numbers}"
    assert all(d["reason"] for d in out.dead), "a dead letter without a reason"
    assert stats.get("valid") == len(valid) + len(replays), f"valid not all scored: {numbers}"
    assert stats.get("duplicates") == len(replays), f"duplicate ids not deduplicated: {numbers}"
    assert cmp.lost == cmp.doubled == cmp.customers_wrong == 0, (
        f"{cmp.summary()}; {cmp.example}; {numbers}"
    )
    assert peak_rss < base_rss + 256 * 2**20, f"worker memory grew without bound: {numbers}"


# A hostile or valid record at the Kafka edge: (topic, key, value, headers).
Edge = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]


def _edge_hostile(rng: random.Random, n: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """``n`` hostile (kind, key, value) records of the kinds only the Kafka edge shows."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    kinds = ("clicks", "purchases", "feedback")
    for i in range(n):
        what = i % 6
        kind = kinds[i % 3]
        key: bytes | None = f"edge-{i}".encode()
        if what == 0:  # a tombstone (aiokafka sends none without a key)
            value: bytes | None = None
        elif what == 1:  # no key, and bytes that are not JSON (or not UTF-8)
            key, value = None, rng.randbytes(rng.randrange(1, 300))
        elif what == 2:  # a customer id made of braces: it would break the hash tag
            kind, cid = "clicks", rng.choice(["{}", "}", "{", "}{", "{{}}", "a{b}", "{c1}", "}x"])
            value = orjson.dumps({**_CLICK, "event_id": f"edge-{i}", "customer_id": cid})
        elif what == 3:  # huge numbers
            kind = "purchases"
            raw = orjson.dumps({**_PURCHASE, "event_id": f"edge-{i}"})
            value = rng.choice(
                [
                    raw.replace(b'"total":9.5', b'"total":1e300'),
                    raw.replace(b'"total":9.5', b'"total":123456789012345678901234'),
                    raw.replace(b'"quantity":1', b'"quantity":1000000000000000000000000000000'),
                    raw.replace(f'"edge-{i}"'.encode(), b"12345678901234567890123"),
                    orjson.dumps({**_PURCHASE, "event_id": f"edge-{i}", "ts": 1e20}),
                ]
            )
        elif what == 4:  # invalid UTF-8 inside otherwise valid JSON
            kind = "feedback"
            raw = orjson.dumps({**_FEEDBACK, "event_id": f"edge-{i}", "text": "TEXT"})
            value = raw.replace(b"TEXT", b"ok \xff" + rng.choice([b"", b"\xc3(", b"\xed\xa0\x80"]))
        else:  # deeply nested JSON, past the parser's limit
            depth = rng.randrange(1_100, 2_600)  # under the 16 KB payload limit
            value = b'{"a":' * depth + b"1" + b"}" * depth
        out.append((kind, key, value))
    return out


@pytest.mark.timeout(420)
def test_ten_thousand_hostile_records_at_the_kafka_edge(
    worker_factory: Any, tmp_path: Path
) -> None:
    w = worker_factory()
    env = w.env
    topic = {
        "clicks": env["STREAMSCORE_TOPICS__CLICKS"],
        "purchases": env["STREAMSCORE_TOPICS__PURCHASES"],
        "feedback": env["STREAMSCORE_TOPICS__FEEDBACK"],
    }
    rng = random.Random(71)
    sim, truth = simulate(env, 3_000, seed=71, customers=200)
    # the valid events: a tenth without a key, a tenth with headers, a tenth with event ids
    # made of braces (allowed: only customer ids are hash tags)
    valid: list[Edge] = []
    for n, (t, k, v) in enumerate(sim):
        if n % 10 == 3:
            valid.append((t, None, v, []))
        elif n % 10 == 5:
            junk = [("trace", rng.randbytes(16)), ("", b""), ("x" * 200, b"\xff\x00")]
            valid.append((t, k, v, junk))
        elif n % 10 == 7:
            doc = orjson.loads(v)
            valid.append((t, k, orjson.dumps({**doc, "event_id": "{" + doc["event_id"] + "}"}), []))
        else:
            valid.append((t, k, v, []))
    hostile: list[Edge] = []
    for kind, raw in _generate(4_000):
        hostile.append((topic[kind], f"bad-{len(hostile)}".encode(), raw, []))
    for kind, key, raw in _edge_hostile(rng, 5_492):
        headers = [("h", rng.randbytes(8))] if len(hostile) % 7 == 0 else []
        hostile.append((topic[kind], key, raw, headers))
    for i in range(8):  # near the broker's request limit: 0.9 MB, 55x the payload limit
        big = orjson.dumps({**_CLICK, "event_id": f"big-{i}", "pad": "p" * 900_000})
        hostile.append((topic["clicks"], f"big-{i}".encode(), big, []))
    stream = list(valid)
    for rec in hostile:
        stream.insert(rng.randrange(len(stream) + 1), rec)
    # events that reuse a customer's event id with other content, each after the event it
    # contradicts (same key, so same partition, so read after it)
    at = {id(r): i for i, r in enumerate(stream)}
    originals = rng.sample([r for r in valid if r[1] is not None], 500)
    conflicts: list[Edge] = []
    for i in sorted((at[id(r)] for r in originals), reverse=True):
        t, k, v, _ = stream[i]
        doc = orjson.loads(v)
        if "action" in doc:
            other = {**doc, "category": doc["category"] + "-other"}
        elif "items" in doc:
            other = {**doc, "currency": "USD" if doc["currency"] != "USD" else "EUR"}
        else:
            other = {**doc, "channel": "social" if doc["channel"] != "social" else "survey"}
        rec: Edge = (t, k, orjson.dumps(other), [])
        conflicts.append(rec)
        stream.insert(rng.randrange(i + 1, len(stream) + 1), rec)
    hostile += conflicts
    assert len(hostile) == 10_000

    base_rss, peak_rss, elapsed, drain_s = _send_and_drain(w, stream, timeout=300)
    starts = w.log_path.read_text(errors="replace").count("pipeline started")
    stats = w.stats() or {}
    out = read_outputs(env, quiet_s=2.0, timeout=120.0)
    sent = Counter(hashlib.sha256(v or b"").hexdigest() for _, _, v, _ in hostile)
    got_dead = Counter(d["payload_sha256"] for d in out.dead)
    got = asyncio.run(read_features(env, sorted(truth.features)))
    cmp = compare_features(truth, got)
    numbers: dict[str, Any] = {
        "records_sent": len(stream),
        "hostile_sent": len(hostile),
        "valid_sent": len(valid),
        "conflicts_sent": len(conflicts),
        "dead_letters": len(out.dead),
        "hostile_dead_lettered": sum((sent & got_dead).values()),
        "dead_letters_of_valid": sum((got_dead - sent).values()),
        "dead_letters_without_reason": sum(not d["reason"] for d in out.dead),
        "valid_scored": stats.get("valid"),
        "conflicts_counted": stats.get("conflicts"),
        "lost": cmp.lost,
        "double_counted": cmp.doubled,
        "worker_starts": starts,
        "rss_mb_base": round(base_rss / 2**20),
        "rss_mb_peak": round(peak_rss / 2**20),
        "seconds": round(elapsed, 1),
        "drain_wait_s": round(drain_s, 1),
    }
    record(tmp_path, "hostile_edge", numbers)
    assert got_dead == sent, f"dead letters != hostile records: {numbers}"
    assert numbers["dead_letters_without_reason"] == 0, numbers
    conflict_reasons = [d for d in out.dead if d["reason"].startswith("duplicate event_id")]
    assert len(conflict_reasons) == len(conflicts) == stats.get("conflicts"), numbers
    assert stats.get("valid") == len(valid), f"valid not all scored: {numbers}"
    assert cmp.lost == cmp.doubled == cmp.customers_wrong == 0, (
        f"{cmp.summary()}; {cmp.example}; {numbers}"
    )
    assert starts == 1, f"the worker restarted: {numbers}"
    assert peak_rss < base_rss + 256 * 2**20, f"worker memory grew without bound: {numbers}"
