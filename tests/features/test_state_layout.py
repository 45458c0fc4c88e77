"""apply_events.lua against its previous version, kept in data/apply_events_v1.lua.

The current script stores a customer's state as one MessagePack array (layout 2); the previous
one stored a map (layout 1). Both must give the same rows for the same events (window sums and
shares may differ in the last bits: they are summed in another order), and a deployment that
upgrades in place must keep working on the layout-1 blobs already in Redis: the new script
reads them, retries of a batch applied by the old script keep their meaning, and the next
applied event rewrites the blob as layout 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from features.events import ACTIONS, Click, Event, Feedback, Purchase, PurchaseItem
from features.keys import CustomerKeys
from features.settings import FeatureSettings, RedisSettings
from features.store import FeatureResult, FeatureStore

V1 = Path(__file__).parent / "data" / "apply_events_v1.lua"
T0 = 1_700_006_400.0
CUSTOMERS = [f"c{k}" for k in range(10)]
CATEGORIES = [f"cat{k:02d}" for k in range(40)]
# Every path of the script: the default settings, and tight ones where the dedup cap, the
# dedup horizon, the category cap and the session gap are hit often.
SETTINGS = {
    "default": FeatureSettings(),
    "tight": FeatureSettings(
        dedup_max_ids=16,
        dedup_ttl_hours=2.0,
        max_categories=4,
        top_categories=3,
        session_gap_minutes=5.0,
    ),
}

Batch = tuple[list[Event], list[float | None], str]


def _use_v1(store: FeatureStore) -> FeatureStore:
    """Make ``store`` (not started yet) run the previous apply_events.lua."""
    current = (Path(__file__).parents[2] / "features" / "apply_events.lua").read_text("utf-8")
    rendered = store._scripts["apply"]
    assert rendered.endswith(current)
    source = rendered[: len(rendered) - len(current)] + V1.read_text("utf-8")
    store._scripts["apply"] = source
    store._shas["apply"] = hashlib.sha1(source.encode()).hexdigest()
    return store


@pytest.fixture(params=list(SETTINGS))
def settings(request: pytest.FixtureRequest) -> FeatureSettings:
    return SETTINGS[request.param]


@pytest.fixture
async def stores(
    redis_url: str, unique: Callable[[str], str], settings: FeatureSettings
) -> AsyncIterator[Callable[[bool, str | None], FeatureStore]]:
    """Started stores by (old script?, key prefix): fresh prefixes unless one is given."""
    made: list[FeatureStore] = []

    def make(old: bool, prefix: str | None = None) -> FeatureStore:
        key_prefix = prefix if prefix is not None else unique("lay")
        store = FeatureStore(RedisSettings(url=redis_url, key_prefix=key_prefix), settings)
        made.append(_use_v1(store) if old else store)
        return store

    yield make
    for store in made:
        await store.close()


def _stream(seed: int, n_batches: int, size: int) -> list[Batch]:
    """Batches of events of a few customers: in and out of order, late beyond the dedup
    horizon, idle gaps of hours to days, replays, ids reused with other content (also by
    another customer in the same batch), categories beyond the cap; token per batch."""
    rng = random.Random(seed)
    t = T0
    sent: list[Event] = []
    batches: list[Batch] = []
    n = 0
    for b in range(n_batches):
        events: list[Event] = []
        sentiments: list[float | None] = []
        for _ in range(size):
            t += rng.expovariate(1 / 40.0)
            if rng.random() < 0.02:
                t += rng.uniform(600, 3 * 86_400)
            r = rng.random()
            if sent and r < 0.08:
                old = rng.choice(sent)
                if rng.random() < 0.5:  # a replay, maybe with another ts (same digest)
                    event: Event = dataclasses.replace(old, ts=old.ts + rng.choice([0.0, 5.0]))
                else:  # another event under the same id
                    event = _altered(old, rng)
            else:
                n += 1
                ts = t
                if rng.random() < 0.1:
                    ts = t - rng.uniform(0, 7_200)
                elif rng.random() < 0.02:
                    ts = t - rng.uniform(3 * 3_600, 4 * 86_400)
                cust = rng.choice(CUSTOMERS)
                eid = f"e{n}"
                if events and rng.random() < 0.03:  # the id of another customer's event
                    eid = events[-1].event_id
                event = _new_event(rng, eid, cust, round(ts, 3))
                sent.append(event)
            events.append(event)
            sentiment = None
            if isinstance(event, Feedback) and rng.random() < 0.7:
                sentiment = rng.uniform(-1, 1)
            sentiments.append(sentiment)
        batches.append((events, sentiments, "" if b % 7 == 3 else f"batch-{b}"))
    return batches


def _new_event(rng: random.Random, eid: str, cust: str, ts: float) -> Event:
    r = rng.random()
    if r < 0.8:
        price = None if rng.random() < 0.2 else round(rng.uniform(1, 200), 2)
        return Click(
            eid,
            cust,
            f"s{rng.randrange(3)}",
            ts,
            rng.choice(sorted(ACTIONS)),
            f"i{rng.randrange(50)}",
            rng.choice(CATEGORIES[: rng.choice([6, 40])]),
            price=price,
        )
    if r < 0.92:
        items = tuple(
            PurchaseItem(
                f"i{k}", rng.choice(CATEGORIES), round(rng.uniform(1, 90), 2), rng.randint(1, 3)
            )
            for k in range(rng.randint(1, 3))
        )
        total = round(sum(i.price * i.quantity for i in items), 2)
        return Purchase(eid, cust, "s0", ts, f"o{eid}", items, total, "EUR")
    rating = None if rng.random() < 0.3 else rng.randint(1, 5)
    return Feedback(eid, cust, ts, "email", rating=rating, text=rng.choice([None, "ok"]))


def _altered(event: Event, rng: random.Random) -> Event:
    if isinstance(event, Click):
        return dataclasses.replace(event, item_id=f"x{rng.randrange(9)}")
    if isinstance(event, Purchase):
        return dataclasses.replace(event, order_id=f"x{rng.randrange(9)}")
    return dataclasses.replace(event, text=f"x{rng.randrange(9)}")


def _check_same(want: FeatureResult, got: FeatureResult) -> None:
    assert (got.event_id, got.customer_id, got.duplicate, got.conflict, got.last_offer_ts) == (
        want.event_id,
        want.customer_id,
        want.duplicate,
        want.conflict,
        want.last_offer_ts,
    )
    assert [c for c, _ in got.top_categories] == [c for c, _ in want.top_categories]
    assert [s for _, s in got.top_categories] == pytest.approx(
        [s for _, s in want.top_categories], rel=1e-9, abs=1e-9
    )
    assert got.features == pytest.approx(want.features, rel=1e-9, abs=1e-9)


def _check_all(want: list[FeatureResult], got: list[FeatureResult]) -> None:
    assert len(got) == len(want)
    for w, g in zip(want, got, strict=True):
        _check_same(w, g)


async def _run(
    old: FeatureStore, new: FeatureStore, batch: Batch, rng: random.Random
) -> list[FeatureResult]:
    """Apply one batch to both stores (sometimes twice: a retry after a lost reply), claim a
    contact now and then, and compare everything they answer."""
    events, sentiments, token = batch
    attempts = 2 if token and rng.random() < 0.25 else 1
    for _ in range(attempts):
        want = await old.apply(events, sentiments, batch=token)
        got = await new.apply(events, sentiments, batch=token)
        _check_all(want, got)
    if rng.random() < 0.3:
        claim = [(events[0].customer_id, events[0].event_id, events[0].ts)]
        assert await old.claim_contacts(claim, 600.0) == await new.claim_contacts(claim, 600.0)
    return want


async def _check_gets(old: FeatureStore, new: FeatureStore, now: float) -> None:
    for cust in [*CUSTOMERS, "nobody"]:
        want = await old.get(cust, now)
        got = await new.get(cust, now)
        if want is None:
            assert got is None
        else:
            assert got is not None
            _check_same(want, got)


def _layout(client: redis.Redis, prefix: str, cust: str) -> int:
    """1 for a MessagePack map (the old layout), 2 for an array."""
    raw = client.get(CustomerKeys.of(prefix, cust).state)
    assert isinstance(raw, bytes)
    return 1 if raw[0] in (0xDE, 0xDF) or 0x80 <= raw[0] <= 0x8F else 2


async def test_same_rows_as_the_previous_script(
    stores: Callable[..., FeatureStore],
) -> None:
    old, new = stores(True), stores(False)
    await old.start()
    await new.start()
    rng = random.Random(11)
    batches = _stream(seed=5, n_batches=60, size=40)
    for n, batch in enumerate(batches):
        await _run(old, new, batch, rng)
        if n % 15 == 14:
            now = batch[0][-1].ts + rng.choice([0.0, 30.0, 4 * 3_600.0])
            await _check_gets(old, new, now)


async def test_state_written_by_the_previous_script_is_upgraded_in_place(
    stores: Callable[..., FeatureStore],
    redis_client: redis.Redis,
    unique: Callable[[str], str],
) -> None:
    """First half of the stream by the old script on both prefixes; then the reference goes on
    with the old script and the upgraded prefix with the new one, starting with a retry of the
    last old batch (same token): rows, gets and retries must not tell them apart."""
    prefix = unique("upg")
    reference, before, after = stores(True), stores(True, prefix), stores(False, prefix)
    for store in (reference, before, after):
        await store.start()
    rng = random.Random(3)
    batches = _stream(seed=9, n_batches=50, size=40)
    half = 26
    for batch in batches[:half]:
        events, sentiments, token = batch
        want = await reference.apply(events, sentiments, batch=token)
        _check_all(want, await before.apply(events, sentiments, batch=token))
    assert {_layout(redis_client, prefix, c) for c in CUSTOMERS} == {1}
    last = batches[half - 1][0][-1].ts
    await _check_gets(reference, after, last)
    await _check_gets(reference, after, last + 86_400)
    # the last old batch again, under its token: a retry, not a replay
    events, sentiments, token = batches[half - 1]
    assert token
    want = await reference.apply(events, sentiments, batch=token)
    got = await after.apply(events, sentiments, batch=token)
    _check_all(want, got)
    assert any(not r.duplicate for r in got)
    for batch in batches[half:]:
        await _run(reference, after, batch, rng)
    assert {_layout(redis_client, prefix, c) for c in CUSTOMERS} == {2}
    await _check_gets(reference, after, batches[-1][0][-1].ts + 60.0)
