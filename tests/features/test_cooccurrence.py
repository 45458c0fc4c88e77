"""Co-occurrence recommendations on a real Valkey: learning, decay, bounds, fallback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio

from features.cooccurrence import (
    CooccurrenceStore,
    RecommendRequest,
    category_key,
    item_key,
)
from features.events import Click, Purchase, PurchaseItem
from features.settings import RecommendSettings

T0 = 1_700_000_000.0


def view(eid: str, cid: str, ts: float, item: str, cat: str = "toys") -> Click:
    return Click(eid, cid, "s-" + cid, ts, "view", item, cat)


def buy(eid: str, cid: str, ts: float, *items: str, cat: str = "toys") -> Purchase:
    lines = tuple(PurchaseItem(i, cat, 10.0, 1) for i in items)
    return Purchase(eid, cid, None, ts, "o-" + eid, lines, 10.0 * len(items), "EUR")


async def learn(store: CooccurrenceStore, events: list) -> None:
    ctx = await store.context(events)
    await store.update(events, ctx)


async def test_sessions_teach_co_items_and_offers_exclude_bought(
    any_redis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    prefix = unique("ss")
    store = CooccurrenceStore(any_redis, RecommendSettings(n_items=3), prefix=prefix)
    # Ten customers view a then b; five of them also c; three buy a and d together.
    events = []
    for n in range(10):
        cid = f"c{n}"
        events += [view(f"{cid}-1", cid, T0 + n, "a"), view(f"{cid}-2", cid, T0 + n + 5, "b")]
        if n < 5:
            events.append(view(f"{cid}-3", cid, T0 + n + 9, "c"))
        if n < 3:
            events.append(buy(f"{cid}-4", cid, T0 + n + 20, "a", "d"))
    await learn(store, events[:13])  # two batches: context carries across them
    await learn(store, events[13:])
    co_a = await any_redis.zrevrange(item_key(prefix, "a"), 0, -1)
    assert co_a[0] == b"b" and set(co_a) == {b"b", b"c", b"d"}
    # A new customer looking at a, by weight: b (10 views + 3 purchases of a after b, x2),
    # c (5 + 3 x 2), d (3 baskets x 3).
    ctx = await store.context([view("z1", "new", T0 + 100, "a")])
    [recs] = await store.recommend([RecommendRequest("new", "a", "toys")], ctx)
    assert recs == ["b", "c", "d"]
    # c0 viewed a, b, c and bought a and d: those are excluded; popularity fills the rest.
    await learn(store, [view("p1", "pop", T0 + 200, "e"), view("p2", "pop", T0 + 9000, "f")])
    ctx = await store.context([view("z2", "c0", T0 + 100, "a")])
    [recs] = await store.recommend([RecommendRequest("c0", "a", "toys")], ctx)
    assert not {"a", "b", "c", "d"} & set(recs) and set(recs) == {"e", "f"}
    assert await any_redis.pttl(item_key(prefix, "a")) > 0
    assert await any_redis.pttl(f"{prefix}:{{c0}}:bought") > 0


async def test_cold_item_falls_back_to_category_popularity(
    any_redis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    prefix = unique("ss")
    store = CooccurrenceStore(any_redis, RecommendSettings(n_items=2), prefix=prefix)
    await learn(
        store,
        [
            view("1", "x", T0, "hot", "books"),
            view("2", "y", T0 + 1, "hot", "books"),
            view("3", "z", T0 + 2, "warm", "books"),
            view("4", "z", T0 + 3600, "other", "toys"),  # outside the pair window
        ],
    )
    assert await any_redis.exists(item_key(prefix, "other")) == 0, "no pair across sessions"
    ctx = await store.context([view("5", "q", T0 + 4000, "brand-new", "books")])
    out = await store.update(
        [view("5", "q", T0 + 4000, "brand-new", "books")],
        ctx,
        [
            RecommendRequest("q", "brand-new", "books", ("toys",)),
        ],
    )
    assert out == [["hot", "warm"]]


async def test_decay_and_bounds(
    any_redis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    prefix = unique("ss")
    settings = RecommendSettings(max_co_items=3, max_popular=4, recent_items=2, half_life_days=1)
    store = CooccurrenceStore(any_redis, settings, prefix=prefix)
    # Old pair a-old (twice), new pair a-new (once, 2 days later): the new one wins.
    day = 86_400.0
    await learn(store, [view("1", "u", T0, "a"), view("2", "u", T0 + 1, "old")])
    await learn(store, [view("3", "v", T0, "a"), view("4", "v", T0 + 1, "old")])
    await learn(store, [view("5", "w", T0 + 2 * day, "a"), view("6", "w", T0 + 2 * day, "new")])
    co = await any_redis.zrevrange(item_key(prefix, "a"), 0, -1, withscores=True)
    assert [m for m, _ in co] == [b"new", b"old"]
    assert co[0][1] == pytest.approx(2 * co[1][1], rel=1e-4)  # 1 x 2^2 vs 2 x 2^0
    # Bounds: one customer touches 8 items in one session.
    await learn(store, [view(f"b{k}", "busy", T0 + k, f"x{k}") for k in range(8)])
    assert await any_redis.zcard(item_key(prefix, "x7")) <= 3
    assert await any_redis.zcard(category_key(prefix, "toys")) == 4
    assert await any_redis.zcard(f"{prefix}:{{busy}}:recent") == 2


async def test_one_round_trip_each(
    aredis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    """Reads and writes of a whole batch go as one script call each, not one per command,
    each in one round trip (a pipeline of one call, so other stores' calls may join it)."""
    store = CooccurrenceStore(aredis, prefix=unique("ss"))
    await store.context([view("0", "c0", T0, "i0")])  # loads the batch script
    trips: list[int] = []  # commands per round trip
    real_pipeline = aredis.pipeline

    def pipeline(*args: object, **kwargs: object) -> object:
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: object, **k: object) -> object:
            trips.append(len(pipe.command_stack))
            return await execute(*a, **k)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    aredis.pipeline = pipeline  # type: ignore[method-assign]
    events = [view(str(k), f"c{k % 7}", T0 + k, f"i{k % 11}") for k in range(200)]
    ctx = await store.context(events)
    out = await store.update(events, ctx, [RecommendRequest("c1", "i1", "toys")] * 5)
    assert trips == [1, 1] and len(out) == 5 and all(out)


async def test_requests_sharing_keys_get_what_each_would_get_alone(
    any_redis: redis.asyncio.Redis, unique: Callable[[str], str]
) -> None:
    """A batch reads each co-item and popularity list once, as deep as its deepest request
    needs (one that excludes many bought items): every request still gets exactly what it
    gets when asked alone."""
    prefix = unique("ss")
    store = CooccurrenceStore(
        any_redis, RecommendSettings(n_items=3, max_co_items=40), prefix=prefix
    )
    events: list = []
    for n in range(30):  # 30 customers, each views a then one of 12 items, some of them twice
        cid = f"c{n}"
        events += [
            view(f"{cid}-1", cid, T0 + n, "a"),
            view(f"{cid}-2", cid, T0 + n + 1, f"i{n % 12}"),
        ]
        if n % 3 == 0:
            events.append(view(f"{cid}-3", cid, T0 + n + 2, f"i{(n + 5) % 12}", "books"))
    await learn(store, events)
    # "heavy" bought most co-items of a: its read of a's list must go deep
    await learn(store, [buy("h1", "heavy", T0 + 100, *(f"i{k}" for k in range(9)))])
    asks = [
        view("q1", "heavy", T0 + 200, "a"),
        view("q2", "light", T0 + 200, "a"),
        view("q3", "c4", T0 + 200, "i4", "books"),
    ]
    ctx = await store.context(asks)
    requests = [
        RecommendRequest("heavy", "a", "toys", ("books",)),
        RecommendRequest("light", "a", "toys"),
        RecommendRequest("c4", "i4", "books", ("toys",)),
    ]
    together = await store.recommend(requests, ctx)
    alone = [(await store.recommend([r], ctx))[0] for r in requests]
    assert together == alone
    assert together[0] and not set(together[0]) & {f"i{k}" for k in range(9)}
    assert together[1][0].startswith("i") and len(together[1]) == 3
