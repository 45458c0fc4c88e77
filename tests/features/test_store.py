"""FeatureStore against the real embedded Valkey: exact values, replays, windows, TTLs, caps."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from features.events import Click, Event, Feedback, Purchase, PurchaseItem
from features.keys import CustomerKeys, customer_key
from features.settings import FeatureSettings, RedisSettings
from features.store import (
    FEATURE_NAMES,
    NEVER_SECONDS,
    WINDOWS,
    FeatureResult,
    FeatureStore,
    FeatureStoreError,
)
from streams.embedded import EmbeddedValkey, free_port

# 2023-11-15T00:00:00Z: aligned to every bucket width, so window edges are easy to read.
T0 = 1_700_006_400.0
HALF_LIFE_S = 7 * 86_400.0


@pytest.fixture(params=["server", "cluster"])
async def store(
    request: pytest.FixtureRequest, redis_url: str, unique: Callable[[str], str]
) -> AsyncIterator[FeatureStore]:
    """The feature store on one Valkey server, then on a real 3-master Redis Cluster."""
    if request.param == "server":
        settings = RedisSettings(url=redis_url, key_prefix=unique("ss"))
    else:
        url = request.getfixturevalue("redis_cluster_url")
        settings = RedisSettings(url=url, key_prefix=unique("ss"), cluster=True)
    s = FeatureStore(settings)
    await s.start()
    yield s
    await s.close()


def click(
    eid: str,
    cust: str,
    ts: float,
    action: str = "view",
    category: str = "shoes",
    price: float | None = None,
    session: str = "s1",
) -> Click:
    return Click(eid, cust, session, ts, action, "item", category, price=price)


def purchase(eid: str, cust: str, ts: float, *lines: tuple[str, float, int]) -> Purchase:
    items = tuple(PurchaseItem(f"i{n}", cat, price, q) for n, (cat, price, q) in enumerate(lines))
    total = sum(price * q for _, price, q in lines)
    return Purchase(eid, cust, "s1", ts, f"o-{eid}", items, total, "EUR")


def expected(**values: float) -> dict[str, float]:
    base = dict.fromkeys(FEATURE_NAMES, 0.0)
    base["secs_since_last_click"] = NEVER_SECONDS
    base["secs_since_last_purchase"] = NEVER_SECONDS
    for name, value in values.items():
        if name not in base:
            raise KeyError(name)
        base[name] = value
    return base


def windows(metric: str, *per_window: float) -> dict[str, float]:
    return {f"{metric}_{w.name}": v for w, v in zip(WINDOWS, per_window, strict=True)}


def decayed(weight: float, ts: float, ref: float) -> float:
    return weight * 2 ** (-(ref - ts) / HALF_LIFE_S)


def check(result: FeatureResult, want: dict[str, float]) -> None:
    got = result.features
    assert list(got) == list(FEATURE_NAMES)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


async def test_scripted_sequence_gives_exact_features(store: FeatureStore) -> None:
    c = "cust-a"
    events: list[Event] = [
        click("e1", c, T0 + 0),
        click("e2", c, T0 + 30, "add_to_cart", price=20.5),
        click("e3", c, T0 + 40, "add_to_cart", "hats", price=5.0),
        click("e4", c, T0 + 50, "remove_from_cart", "hats", price=5.0),
        click("e5", c, T0 + 100, "checkout_start"),
        purchase("e6", c, T0 + 120, ("shoes", 20.5, 1)),
        Feedback("e7", c, T0 + 400, "survey", rating=4),
        click("e8", c, T0 + 4000, "view", "hats"),  # 65 min idle: a new session
        Feedback("e9", c, T0 + 4010, "review"),
    ]
    sentiments = [None] * 6 + [0.5, None, -0.25]
    r = await store.apply(events, sentiments)
    assert [x.event_id for x in r] == [e.event_id for e in events]
    assert not any(x.duplicate for x in r)
    assert all(x.customer_id == c for x in r)

    hats_e3 = 3.0  # add_to_cart weight (remove_from_cart adds nothing)
    check(r[3], expected(
        **windows("clicks", 4, 4, 4, 4), **windows("carts", 2, 2, 2, 2),
        secs_since_last_click=0, cart_value=20.5, cart_items=1,
        session_clicks=4, session_carts=2,
        category_affinity=decayed(hats_e3, T0 + 40, T0 + 50) / (
            decayed(hats_e3, T0 + 40, T0 + 50) + decayed(1, T0, T0 + 50)
            + decayed(3, T0 + 30, T0 + 50)),
        n_categories=2,
    ))  # fmt: skip

    ref = T0 + 120
    shoes = decayed(1, T0, ref) + decayed(3, T0 + 30, ref) + decayed(3, T0 + 100, ref) + 5
    hats = decayed(3, T0 + 40, ref)
    check(r[5], expected(
        **windows("clicks", 5, 5, 5, 5), **windows("carts", 2, 2, 2, 2),
        **windows("purchases", 1, 1, 1, 1), **windows("spend", 20.5, 20.5, 20.5, 20.5),
        secs_since_last_click=20, secs_since_last_purchase=0, avg_order_value=20.5,
        cart_value=0, cart_items=0,  # the purchase empties the cart
        session_clicks=5, session_carts=2, session_checkouts=1,
        category_affinity=shoes / (shoes + hats), n_categories=2,
    ))  # fmt: skip
    assert [name for name, _ in r[5].top_categories] == ["shoes", "hats"]
    assert [share for _, share in r[5].top_categories] == pytest.approx(
        [shoes / (shoes + hats), hats / (shoes + hats)], rel=1e-12
    )

    # 400 s: the 5m window (minute buckets 2..6) no longer holds the clicks of minutes 0-1.
    check(r[6], expected(
        **windows("clicks", 0, 5, 5, 5), **windows("carts", 0, 2, 2, 2),
        **windows("purchases", 1, 1, 1, 1), **windows("spend", 20.5, 20.5, 20.5, 20.5),
        secs_since_last_click=300, secs_since_last_purchase=280, avg_order_value=20.5,
        session_clicks=5, session_carts=2, session_checkouts=1,
        feedback_count=1, rating_avg=4, sentiment_avg=0.5, n_categories=2,
    ))  # fmt: skip

    # 4000 s: the 1h window (5-minute buckets 2..13) lost everything before 600 s.
    ref = T0 + 4010
    shoes = (decayed(1, T0, ref) + decayed(3, T0 + 30, ref) + decayed(3, T0 + 100, ref)
             + decayed(5, T0 + 120, ref))  # fmt: skip
    hats = decayed(3, T0 + 40, ref) + decayed(1, T0 + 4000, ref)
    check(r[8], expected(
        **windows("clicks", 1, 1, 6, 6), **windows("carts", 0, 0, 2, 2),
        **windows("purchases", 0, 0, 1, 1), **windows("spend", 0, 0, 20.5, 20.5),
        secs_since_last_click=10, secs_since_last_purchase=3890, avg_order_value=20.5,
        session_clicks=1, feedback_count=2, rating_avg=4, sentiment_avg=0.125,
        n_categories=2,
    ))  # fmt: skip
    assert [name for name, _ in r[8].top_categories] == ["shoes", "hats"]
    assert sum(share for _, share in r[8].top_categories) == pytest.approx(1.0)

    # get() at a later `now`: windows end at now, recencies are relative to now.
    g = await store.get(c, now=T0 + 86_400 + 4000)
    assert g is not None and g.event_id == "" and not g.duplicate
    # The 24h window at now is hour buckets 2..25: the click of hour 1 (T0 + 4000) is out.
    check(g, {**r[8].features, **windows("clicks", 0, 0, 0, 6), **windows("carts", 0, 0, 0, 2),
              **windows("purchases", 0, 0, 0, 1), **windows("spend", 0, 0, 0, 20.5),
              "secs_since_last_click": 86_400, "secs_since_last_purchase": 86_400 + 3880,
              "session_clicks": 0, "category_affinity": 0})  # fmt: skip
    assert await store.get("nobody", now=T0) is None


async def test_replay_changes_nothing(store: FeatureStore, redis_client: redis.Redis) -> None:
    c = "cust-replay"
    events: list[Event] = [
        click("r1", c, T0),
        click("r2", c, T0 + 5, "add_to_cart", price=10.0),
        purchase("r3", c, T0 + 9, ("shoes", 10.0, 1)),
        Feedback("r4", c, T0 + 11, "survey", rating=5),
    ]
    first = await store.apply(events, [None, None, None, 0.75])
    keys = CustomerKeys.of(store.redis.key_prefix, c)
    before = [redis_client.dump(k) for k in (keys.state, keys.seen)]

    again = await store.apply(events, [None, None, None, 0.75])
    assert [x.duplicate for x in again] == [True] * 4
    assert [redis_client.dump(k) for k in (keys.state, keys.seen)] == before
    # A duplicate comes back with the current features (recency relative to its own ts).
    assert again[3].features == first[3].features
    assert again[0].features["clicks_30d"] == 2
    assert again[0].features["purchases_30d"] == 1

    # A replay mixed into a batch with a new event: only the new event counts.
    mixed = await store.apply([events[1], click("r5", c, T0 + 12)])
    assert [x.duplicate for x in mixed] == [True, False]
    assert mixed[1].features["clicks_30d"] == 3
    # The same event twice within one batch counts once.
    twice = await store.apply([click("r6", c, T0 + 13), click("r6", c, T0 + 13)])
    assert [x.duplicate for x in twice] == [False, True]
    assert twice[1].features["clicks_30d"] == 4


async def test_a_retry_of_the_same_batch_is_not_a_replay(
    store: FeatureStore, redis_client: redis.Redis
) -> None:
    # The script ran but its reply was lost: the caller retries the batch with its token.
    c = "cust-retry"
    events: list[Event] = [click("t1", c, T0), click("t1", c, T0), click("t2", c, T0 + 5)]
    first = await store.apply(events, batch="batch-7")
    assert [x.duplicate for x in first] == [False, True, False]
    keys = CustomerKeys.of(store.redis.key_prefix, c)
    before = [redis_client.dump(k) for k in (keys.state, keys.seen)]

    retried = await store.apply(events, batch="batch-7")
    assert [x.duplicate for x in retried] == [False, True, False], "new to the caller, once"
    assert [redis_client.dump(k) for k in (keys.state, keys.seen)] == before, "not re-applied"
    assert retried[2].features["clicks_30d"] == first[2].features["clicks_30d"] == 2

    # Anyone else (a replay after a crash, another batch) sees duplicates.
    assert [x.duplicate for x in await store.apply(events, batch="batch-8")] == [True] * 3
    assert [x.duplicate for x in await store.apply(events)] == [True] * 3
    # and a later batch of this customer takes over the token
    await store.apply([click("t3", c, T0 + 9)], batch="batch-8")
    assert [x.duplicate for x in await store.apply(events, batch="batch-7")] == [True] * 3


async def test_out_of_order_events_land_in_their_own_buckets(store: FeatureStore) -> None:
    c = "cust-late"
    ref = T0 + 600  # minute bucket 10: the 5m window starts at T0 + 360
    (now,) = await store.apply([click("o1", c, ref)])
    assert now.features["clicks_5m"] == 1
    late = await store.apply([
        click("o2", c, T0 + 360),      # exactly the 5m window start: counted
        click("o3", c, T0 + 359.5),    # just before it: 1h/24h/30d only
        click("o4", c, T0 - 3600),     # previous hour: 24h/30d (the 1h window starts at T0 - 2700)
        purchase("o5", c, T0 - 7200, ("hats", 7.25, 2)),
    ])  # fmt: skip
    assert not any(x.duplicate for x in late)
    f = late[-1].features
    assert (f["clicks_5m"], f["clicks_1h"], f["clicks_24h"], f["clicks_30d"]) == (2, 3, 4, 4)
    assert (f["purchases_5m"], f["purchases_1h"], f["purchases_24h"]) == (0, 0, 1)
    assert f["spend_30d"] == 14.5
    # Recency is relative to the (late) event's ts and never negative.
    assert late[0].features["secs_since_last_click"] == 0
    assert f["secs_since_last_purchase"] == 0
    assert f["secs_since_last_click"] == 0
    # The latest event time did not move back: a new event sees the same windows.
    (after,) = await store.apply([click("o6", c, ref + 1)])
    assert after.features["clicks_5m"] == 3
    assert after.features["clicks_1h"] == 4


async def test_events_behind_the_dedup_horizon_are_ignored(store: FeatureStore) -> None:
    c = "cust-old"
    await store.apply([click("h1", c, T0)])
    horizon = store.settings.dedup_ttl_hours * 3600
    res = await store.apply([click("h2", c, T0 - horizon - 1), click("h3", c, T0 - horizon)])
    assert [x.duplicate for x in res] == [True, False]
    assert res[1].features["clicks_30d"] == 2


async def test_an_event_id_reused_with_other_content_is_a_conflict(store: FeatureStore) -> None:
    c = "cust-conflict"
    first = click("k1", c, T0, "add_to_cart", price=10.0)
    (applied,) = await store.apply([first])
    # a resend of the same event, at another ts (a stand-in or clamped ts), is a replay
    same = await store.apply([click("k1", c, T0 + 30, "add_to_cart", price=10.0)])
    # the same id with other content (another price; another customer's id space is apart)
    other = await store.apply(
        [
            click("k1", c, T0, "add_to_cart", price=99.0),
            click("k1", "cust-other", T0, "add_to_cart", price=99.0),
        ]
    )
    assert [(x.duplicate, x.conflict) for x in (applied, *same, *other)] == [
        (False, False),
        (True, False),
        (True, True),
        (False, False),
    ]
    assert other[0].features["cart_value"] == 10.0, "the conflicting event is not applied"


async def test_dedup_horizon_forgets_the_digests(store: FeatureStore) -> None:
    c = "cust-digests"
    horizon = store.settings.dedup_ttl_hours * 3600
    await store.apply([click(f"h{i}", c, T0 + i) for i in range(5)])
    await store.apply([click("late", c, T0 + 2 * horizon)])  # the 5 fall behind the horizon
    client = store._client
    assert client is not None
    assert await client.hkeys(CustomerKeys.of(store.redis.key_prefix, c).sums) == [b"late"]


async def test_dedup_cap_raises_the_floor(
    redis_url: str, unique: Callable[[str], str], redis_client: redis.Redis
) -> None:
    s = FeatureStore(
        RedisSettings(url=redis_url, key_prefix=unique("ss")), FeatureSettings(dedup_max_ids=16)
    )
    await s.start()
    try:
        c = "cust-cap"
        events = [click(f"d{i}", c, T0 + i) for i in range(40)]
        await s.apply(events[:20])
        await s.apply(events[20:])
        keys = CustomerKeys.of(s.redis.key_prefix, c)
        assert redis_client.zcard(keys.seen) == 16
        # the digests of forgotten ids are forgotten with them
        assert redis_client.hlen(keys.sums) == 16
        # Every id, remembered or not, is still recognised as a replay.
        replay = await s.apply(events)
        assert all(x.duplicate for x in replay)
        assert replay[-1].features["clicks_5m"] == 40
    finally:
        await s.close()


async def test_every_key_has_a_ttl_and_one_slot(
    store: FeatureStore, redis_client: redis.Redis, request: pytest.FixtureRequest
) -> None:
    if store.redis.cluster:  # read the keys back from every node
        redis_client = RedisCluster.from_url(request.getfixturevalue("redis_cluster_url"))
    customers = ["c42", "user:7", "a{b", "x}y", "ü-unicode"]
    await store.apply([click(f"t-{c}", c, T0) for c in customers])
    assert await store.claim_contacts([(c, f"t-{c}", T0) for c in customers], 60.0) == [True] * 5
    ttl_ms = store.settings.customer_ttl_days * 86_400_000
    prefix = store.redis.key_prefix
    found = sorted(k.decode() for k in redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    assert len(found) == 5 * len(customers)  # state, seen, offers, sums, the sent-offer log
    for key in found:
        assert 0 < redis_client.pttl(key) <= ttl_ms, key
    for c in customers:
        keys = (*CustomerKeys.of(prefix, c).all, customer_key(prefix, c, "sent"))
        assert set(keys) <= set(found)
        slots = {
            redis_client.cluster_keyslot(k)
            if store.redis.cluster
            else redis_client.execute_command("CLUSTER", "KEYSLOT", k)
            for k in keys
        }
        assert slots == {key_slot(keys[0].encode())}
    # A fresh event refreshes the TTL of all of the customer's keys.
    keys = CustomerKeys.of(prefix, "c42").all
    for k in keys:
        redis_client.pexpire(k, 10_000)
    await store.apply([click("t2", "c42", T0 + 1)])
    assert all(redis_client.pttl(k) > 10_000 for k in keys)


async def test_claim_contacts_cap_and_replay(store: FeatureStore) -> None:
    cap = 3600.0
    got = await store.claim_contacts(
        [
            ("ca", "t1", T0),
            ("ca", "t2", T0 + 10),  # within the cap: refused
            ("cb", "t3", T0 + 10),  # another customer: allowed
            ("ca", "t1", T0),  # replay of the claimed trigger: allowed again
            ("ca", "t4", T0 + cap),  # exactly cap later: allowed
            ("ca", "t5", T0 + cap - 1),  # within cap of both: refused
        ],
        cap,
    )
    assert got == [True, False, True, True, True, False]
    assert await store.claim_contacts([("ca", "t2", T0 + 10)], cap) == [False]
    assert await store.claim_contacts([("ca", "t2", T0 + 10)], 0.0) == [True]
    assert await store.claim_contacts([], cap) == []
    (res,) = await store.apply([click("x1", "ca", T0 + cap + 5)])
    assert res.last_offer_ts == T0 + cap
    (res,) = await store.apply([click("x2", "cc", T0)])
    assert res.last_offer_ts is None


async def test_batch_of_many_customers_keeps_input_order(store: FeatureStore) -> None:
    rnd = random.Random(7)
    customers = [f"m{i}" for i in range(150)]  # more than one script call's worth
    events: list[Event] = []
    for n in range(600):
        c = rnd.choice(customers)
        if n % 10 == 9:
            events.append(purchase(f"b{n}", c, T0 + n, ("hats", 2.5, 1)))
        else:
            events.append(click(f"b{n}", c, T0 + n, rnd.choice(["view", "add_to_cart"])))
    results = await store.apply(events)
    assert [(r.event_id, r.customer_id) for r in results] == [
        (e.event_id, e.customer_id) for e in events
    ]
    clicks: dict[str, int] = {}
    spend: dict[str, float] = {}
    for e, r in zip(events, results, strict=True):
        if isinstance(e, Click):
            clicks[e.customer_id] = clicks.get(e.customer_id, 0) + 1
        else:
            spend[e.customer_id] = spend.get(e.customer_id, 0.0) + e.total
        assert r.features["clicks_24h"] == clicks.get(e.customer_id, 0)
        assert r.features["spend_30d"] == spend.get(e.customer_id, 0.0)
    assert await store.apply([]) == []


async def test_cart_session_and_category_caps(redis_url: str, unique: Callable[[str], str]) -> None:
    s = FeatureStore(
        RedisSettings(url=redis_url, key_prefix=unique("ss")),
        FeatureSettings(max_categories=4, top_categories=2),
    )
    await s.start()
    try:
        c = "cust-cart"
        r = await s.apply([
            click("k1", c, T0, "remove_from_cart", price=3.0),  # floors at 0
            click("k2", c, T0 + 1, "add_to_cart", "a"),  # no price: adds 0
            click("k3", c, T0 + 2, "add_to_cart", "b", price=4.0, session="s2"),
            click("k4", c, T0 + 1.5, "view", "c", session="s1"),  # late, older session: skipped
            *(click(f"k{5 + i}", c, T0 + 4 + i, "view", cat, session="s2")
              for i, cat in enumerate("defgh")),
        ])  # fmt: skip
        f = r[0].features
        assert (f["cart_value"], f["cart_items"]) == (0, 0)
        f = r[2].features
        assert (f["cart_value"], f["cart_items"], f["session_clicks"], f["session_carts"]) == (
            4.0, 2, 1, 1)  # fmt: skip
        assert r[3].features["session_clicks"] == 1
        last = r[-1]
        assert last.features["n_categories"] == 4
        assert last.features["session_clicks"] == 6
        assert len(last.top_categories) == 2
        assert last.top_categories[0][0] == "b"  # add_to_cart weighs 3
    finally:
        await s.close()


@pytest.fixture(scope="module")
def private_valkey() -> Iterator[EmbeddedValkey]:
    """A Valkey of our own, with a password, for tests that flush scripts or fail auth."""
    with EmbeddedValkey(password="s3cret") as v:
        yield v


async def test_auth_failure_is_a_clear_error(private_valkey: EmbeddedValkey) -> None:
    bad = FeatureStore(RedisSettings(url=private_valkey.url, password="wrong", retry_attempts=0))
    with pytest.raises(FeatureStoreError, match="rejected user 'default'"):
        await bad.start()
    none = FeatureStore(RedisSettings(url=private_valkey.url, retry_attempts=0))
    with pytest.raises(FeatureStoreError, match="rejected"):
        await none.start()


async def test_noscript_is_reloaded(private_valkey: EmbeddedValkey) -> None:
    s = FeatureStore(RedisSettings(url=private_valkey.url, password="s3cret", key_prefix="ns"))
    await s.start()
    try:
        (a,) = await s.apply([click("n1", "c", T0)])
        client = redis.Redis.from_url(private_valkey.url, password="s3cret")
        client.script_flush()
        client.close()
        (b,) = await s.apply([click("n2", "c", T0 + 1)])
        assert (a.features["clicks_5m"], b.features["clicks_5m"]) == (1, 2)
        assert await s.claim_contacts([("c", "n2", T0 + 1)], 10.0) == [True]
    finally:
        await s.close()


async def test_unreachable_redis_raises_after_retries() -> None:
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{free_port()}/0",
        password="pw",
        retry_attempts=2,
        retry_backoff_max_s=0.01,
        socket_timeout_s=0.5,
    )
    s = FeatureStore(settings)
    with pytest.raises(FeatureStoreError, match="after 3 attempts") as info:
        await s.start()
    assert "pw" not in str(info.value)
    with pytest.raises(FeatureStoreError, match="not started"):
        await s.apply([click("u1", "c", T0)])
