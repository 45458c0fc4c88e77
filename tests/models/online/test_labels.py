"""LabelStore against a real Valkey: labels by event time, replays, hand-over and caps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from models.online.labels import LabelStore, PendingClick

T0 = 1_700_000_000.0
H = 1_800.0


@pytest.fixture
async def labels(any_redis: Redis, unique: Callable[[str], str]) -> LabelStore:
    store = LabelStore(unique("lb"), horizon_s=H, max_pending=1_000)
    await store.start(any_redis)
    return store


def click(eid: str, cid: str, ts: float, proba: float = 0.25) -> PendingClick:
    return PendingClick(eid, cid, ts, proba, bytes(range(16)))


def test_a_click_packs_and_unpacks_whole() -> None:
    c = PendingClick("e1", "kund-ü|x", T0 + 0.125, 0.3, b"\x00\xff" * 8)
    assert PendingClick.unpack("e1", c.pack()) == c


async def test_labels_follow_event_time_not_read_order(labels: LabelStore) -> None:
    # c1 buys 10 minutes after its click, but the purchase is read first (another topic);
    # c2 buys after the horizon; c3 never buys; c4 bought just before its click
    await labels.add([], [(0, "c1", T0 + 600), (0, "c4", T0 - 1)])
    clicks = [(0, click(f"e{i}", f"c{i}", T0)) for i in range(1, 5)]
    queued, _ = await labels.add(clicks, [(0, "c2", T0 + H + 1)])
    assert queued == 4
    assert (await labels.take(0, T0 + H - 1)).labels == [], "no horizon has closed yet"
    due = await labels.take(0, T0 + H)
    got = {r.click.event_id: r.positive for r in due.labels}
    assert got == {"e1": True, "e2": False, "e3": False, "e4": False}
    assert not any(r.again for r in due.labels)
    assert {r.click for r in due.labels} == {click(f"e{i}", f"c{i}", T0) for i in range(1, 5)}


async def test_taken_but_not_forgotten_comes_back_again_with_the_same_label(
    labels: LabelStore,
) -> None:
    await labels.add([(1, click("e1", "c1", T0))], [(1, "c1", T0 + 5)])
    first = await labels.take(1, T0 + H)
    # the worker died before forget: the next owner gets the same label, flagged again
    second = await labels.take(1, T0 + H + 60)
    assert [(r.click.event_id, r.positive, r.again) for r in first.labels] == [("e1", True, False)]
    assert [(r.click.event_id, r.positive, r.again) for r in second.labels] == [("e1", True, True)]
    await labels.forget(second)
    assert (await labels.take(1, T0 + 2 * H)).labels == []
    assert await labels.pending(1) == 0


async def test_a_replayed_click_or_purchase_changes_nothing(labels: LabelStore) -> None:
    await labels.add([(0, click("e1", "c1", T0, proba=0.1))], [])
    queued, _ = await labels.add([(0, click("e1", "c1", T0, proba=0.9))], [])
    assert queued == 0, "a pending click is queued once, with its first probability"
    due = await labels.take(0, T0 + H)
    assert [r.click.proba for r in due.labels] == [0.1]
    await labels.forget(due)
    queued, _ = await labels.add([(0, click("e1", "c1", T0))], [(0, "c1", T0 + 1)])
    assert queued == 0, "a click replayed after its label was learned is not queued again"
    assert (await labels.take(0, T0 + 2 * H)).labels == []


async def test_partitions_keep_their_own_clicks_and_time(labels: LabelStore) -> None:
    await labels.add([(0, click("a", "c1", T0)), (1, click("b", "c2", T0 + 100))], [])
    assert [r.click.event_id for r in (await labels.take(1, T0 + H + 50)).labels] == []
    assert [r.click.event_id for r in (await labels.take(0, T0 + H + 50)).labels] == ["a"]
    assert [r.click.event_id for r in (await labels.take(1, T0 + H + 100)).labels] == ["b"]


async def test_the_oldest_clicks_go_unlabeled_beyond_max_pending(
    any_redis: Redis, unique: Callable[[str], str]
) -> None:
    store = LabelStore(unique("lb"), horizon_s=H, max_pending=3)
    await store.start(any_redis)
    queued, dropped = await store.add([(0, click(f"e{i}", "c", T0 + i)) for i in range(5)], [])
    assert (queued, dropped) == (5, 2)
    due = await store.take(0, T0 + 2 * H)
    assert [r.click.event_id for r in due.labels] == ["e2", "e3", "e4"]


async def test_old_purchases_are_pruned(labels: LabelStore, any_redis: Redis) -> None:
    await labels.add([], [(0, "c1", T0), (0, "c2", T0 + 3 * H)])
    await labels.add([], [(0, "c2", T0 + 6 * H)])  # c2's first purchase is 3 horizons older
    await labels.take(0, T0 + 5 * H)
    buys = labels.keys(0)[2]
    assert await any_redis.hget(buys, "c1") is None, "c1 bought more than two horizons ago"
    assert await any_redis.hget(buys, "c2") == repr(T0 + 6 * H).encode()


async def test_a_backlog_of_due_clicks_keeps_the_purchases_it_needs(labels: LabelStore) -> None:
    # the partition's time is ten horizons on, but the clicks due long ago are taken a few
    # at a time: their purchases must still be there when their turn comes
    clicks = [(0, click(f"e{i}", f"c{i}", T0 + i)) for i in range(6)]
    await labels.add(clicks, [(0, f"c{i}", T0 + i + 60) for i in range(6)])
    await labels.add([], [(0, f"c{i}", T0 + 10 * H) for i in range(6)])  # later purchases
    got = []
    for _ in range(3):
        due = await labels.take(0, T0 + 10 * H, limit=2)
        got += [(r.click.event_id, r.positive) for r in due.labels]
        await labels.forget(due)
    assert got == [(f"e{i}", True) for i in range(6)]
