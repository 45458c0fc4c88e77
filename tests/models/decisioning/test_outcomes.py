"""OutcomeStore against a real Valkey: conversions, expiries, replays, contact state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from features.events import Purchase, PurchaseItem
from models.decisioning.outcomes import OpenOffer, OutcomeStore

T0 = 1_700_000_000.0


@pytest.fixture
async def outcomes(any_redis: Redis, unique: Callable[[str], str]) -> AsyncIterator[OutcomeStore]:
    store = OutcomeStore(unique("oc"), window_s=120.0)
    await store.start(any_redis)
    yield store


def offer(oid: str, cid: str, ts: float, targets: tuple[str, ...] = ("sports",)) -> OpenOffer:
    return OpenOffer(oid, cid, "o-" + oid, targets, "bandit", ts, ts + 120.0, (1.0, 0.5), "t" + oid)


def buy(order: str, cid: str, ts: float, category: str, price: float) -> Purchase:
    item = PurchaseItem("i1", category, price, 2)
    return Purchase("e" + order, cid, None, ts, order, (item,), 2 * price, "EUR")


async def test_conversion_last_touch_and_expiry(outcomes: OutcomeStore) -> None:
    existing, conv = await outcomes.record(
        [offer("a", "c1", T0), offer("b", "c1", T0 + 10), offer("c", "c2", T0)], []
    )
    assert (existing, conv) == ({}, [])
    _, conv = await outcomes.record([], [buy("o1", "c1", T0 + 30, "sports", 5.0)])
    assert [(r.offer.offer_event_id, r.order_id, r.revenue, r.ts) for r in conv] == [
        ("b", "o1", 10.0, T0 + 30)
    ], "the latest open offer gets the conversion"
    _, conv = await outcomes.record([], [buy("o2", "c2", T0 + 30, "books", 5.0)])
    assert conv == [], "a purchase outside the targets does not convert"
    _, again = await outcomes.record([], [buy("o1", "c1", T0 + 30, "sports", 5.0)])
    assert [(r.offer.offer_event_id, r.order_id, r.revenue, r.ts, r.again) for r in again] == [
        ("b", "o1", 10.0, T0 + 30, True)
    ], "a replayed order gets its conversion back, marked as a repeat"
    assert (await outcomes.expire(T0 + 119)).resolutions == []
    due = await outcomes.expire(T0 + 500)
    closed = due.resolutions
    assert sorted((r.offer.offer_event_id, r.converted, r.ts, r.again) for r in closed) == [
        ("a", False, T0 + 120, False),
        ("c", False, T0 + 120, False),
    ]
    # not forgotten (the outcomes were never published): they come again, as repeats
    again_due = await outcomes.expire(T0 + 600)
    assert sorted((r.offer.offer_event_id, r.again) for r in again_due.resolutions) == [
        ("a", True),
        ("c", True),
    ]
    await outcomes.forget(again_due)
    assert (await outcomes.expire(T0 + 900)).resolutions == []


async def test_windows_are_due_per_input_partition(outcomes: OutcomeStore) -> None:
    await outcomes.record([offer("a", "c1", T0)], [], partitions={"c1": 0})
    await outcomes.record([offer("b", "c2", T0)], [], partitions={"c2": 3})
    await outcomes.record([offer("c", "c3", T0)], [])  # as written before partitions
    assert outcomes.due_key(0) != outcomes.due_key(3) != outcomes.due_key(None)
    p3 = await outcomes.expire(T0 + 500, 3)
    assert [r.offer.offer_event_id for r in p3.resolutions] == ["b"], "only partition 3's"
    assert (await outcomes.expire(T0 + 100, 0)).resolutions == [], "partition 0 is behind"
    legacy = await outcomes.expire(T0 + 500, None)
    assert [r.offer.offer_event_id for r in legacy.resolutions] == ["c"], "still drained"
    await outcomes.forget(p3)
    assert (await outcomes.expire(T0 + 600, 3)).resolutions == []


async def test_purchase_read_before_its_offer_still_converts(outcomes: OutcomeStore) -> None:
    _, conv = await outcomes.record([], [buy("o1", "c1", T0 + 30, "sports", 5.0)])
    assert conv == []
    _, conv = await outcomes.record([offer("a", "c1", T0)], [])
    assert [(r.offer.offer_event_id, r.converted, r.order_id) for r in conv] == [("a", True, "o1")]
    replay = offer("a", "c1", T0)
    existing, conv = await outcomes.record([replay], [])
    assert list(existing) == ["a"]
    assert [(r.offer.offer_event_id, r.order_id, r.again) for r in conv] == [("a", "o1", True)]
    _, both = await outcomes.record([replay], [buy("o1", "c1", T0 + 30, "sports", 5.0)])
    assert [(r.offer.offer_event_id, r.again) for r in both] == [("a", True)], "reported once"


async def test_contact_state_and_suppressions(outcomes: OutcomeStore) -> None:
    await outcomes.record([offer("a", "c1", T0)], [], [("c1", T0 + 3600)])
    await outcomes.set_suppressions([("c2", True, "gdpr"), ("c3", True, ""), ("c3", False, "")])
    states = await outcomes.contact_states(["c1", "c2", "c3"])
    assert states["c1"].negative_until == T0 + 3600
    assert states["c1"].last_offer == {"o-a": (T0, "ta")}
    assert (states["c2"].suppressed, states["c3"].suppressed) == (True, False)
