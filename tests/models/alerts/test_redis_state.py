"""CartStore and CooldownStore against a real Valkey: carts decided by event time, and the
in-memory AlertCooldown's decisions kept in Redis."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from features.events import Click, Event, Purchase, PurchaseItem
from models.alerts.carts import CartStep, CartStore
from models.alerts.churn import ChurnSignal, ChurnWatch
from models.alerts.churn_store import ChurnStep, ChurnStore
from models.alerts.cooldown import AlertCooldown, CooldownStore
from models.alerts.rules import DueCart
from models.settings import AlertSettings

T0 = 1_700_000_000.0


@pytest.fixture
async def carts(any_redis: Redis, unique: Callable[[str], str]) -> CartStore:
    store = CartStore(unique("ct"), window_s=1_800.0, early_prob=0.8, max_carts=1_000)
    await store.start(any_redis)
    return store


def click(eid: str, cid: str, ts: float, action: str, price: float | None = None) -> Click:
    return Click(eid, cid, "s1", ts, action, "i1", "home", price)


def buy(eid: str, cid: str, ts: float) -> Purchase:
    return Purchase(
        eid, cid, None, ts, "o" + eid, (PurchaseItem("i1", "home", 5.0, 1),), 5.0, "EUR"
    )


async def test_a_cart_is_due_after_the_window_and_a_checkout_cancels_it(carts: CartStore) -> None:
    await carts.apply(
        [
            CartStep(0, click("a1", "c1", T0, "add_to_cart"), 80.0),
            CartStep(0, click("b1", "c2", T0, "add_to_cart"), 20.0),
            CartStep(0, click("b2", "c2", T0 + 60, "checkout_start"), 20.0),
        ]
    )
    assert (await carts.take(0, T0 + 1_799)).taken == []
    due = await carts.take(0, T0 + 1_800)
    assert [f.cart for f in due.fired] == [DueCart("c1", "a1", 80.0, T0 + 1_800)]
    # not forgotten (the worker died before publishing): the next take gives it again
    again = await carts.take(0, T0 + 1_900)
    assert [(f.cart, f.again) for f in again.fired] == [
        (DueCart("c1", "a1", 80.0, T0 + 1_800), True)
    ]
    await carts.forget(again)
    assert (await carts.take(0, T0 + 9_000)).taken == []


async def test_an_early_fire_comes_back_on_replay_and_silences_the_timeout(
    carts: CartStore,
) -> None:
    steps = [
        CartStep(1, click("a1", "c1", T0, "add_to_cart"), 80.0, abandon=0.1),
        CartStep(1, click("a2", "c1", T0 + 10, "view"), 80.0, abandon=0.9),
    ]
    [fired] = await carts.apply(steps)
    assert (fired.cart, fired.abandon, fired.again) == (
        DueCart("c1", "a1", 80.0, T0 + 10),
        0.9,
        False,
    )
    [replayed] = await carts.apply(steps)  # the batch again, after a crash
    assert (replayed.cart, replayed.again) == (fired.cart, True)
    due = await carts.take(1, T0 + 1_800)
    assert due.fired == [] and due.taken == [("c1", "a1")], "fired early: no second alert"


async def test_a_cart_armed_again_after_it_was_taken_is_a_new_cart(carts: CartStore) -> None:
    await carts.apply([CartStep(0, click("a1", "c1", T0, "add_to_cart"), 80.0)])
    taken = await carts.take(0, T0 + 1_800)
    await carts.apply([CartStep(0, click("a2", "c1", T0 + 1_850, "add_to_cart"), 90.0)])
    await carts.forget(taken)  # must not drop the new cart
    due = await carts.take(0, T0 + 1_850 + 1_800)
    assert [f.cart for f in due.fired] == [DueCart("c1", "a2", 90.0, T0 + 3_650)]


async def test_a_cart_re_armed_after_its_deadline_still_fires(carts: CartStore) -> None:
    # the timer had not run between the deadline and the next add_to_cart (expiries are
    # periodic, a backlog is read faster than they run): the first cart was abandoned all the
    # same, and the second one is a cart of its own
    await carts.apply(
        [
            CartStep(0, click("a1", "c1", T0, "add_to_cart"), 80.0),
            CartStep(0, click("a2", "c1", T0 + 1_900, "add_to_cart"), 95.0),
        ]
    )
    due = await carts.take(0, T0 + 2_000)
    assert [f.cart for f in due.fired] == [DueCart("c1", "a1", 80.0, T0 + 1_800)]
    await carts.forget(due)
    later = await carts.take(0, T0 + 1_900 + 1_800)
    assert [f.cart for f in later.fired] == [DueCart("c1", "a2", 95.0, T0 + 3_700)]


async def test_a_purchase_read_late_still_cancels_the_cart(carts: CartStore) -> None:
    # the purchase (another topic) is read after later clicks: by event time it ended the cart
    await carts.apply(
        [
            CartStep(0, click("a1", "c1", T0, "add_to_cart"), 80.0),
            CartStep(0, click("a2", "c1", T0 + 100, "view"), 80.0),
            CartStep(0, buy("p1", "c1", T0 + 50), 0.0),
        ]
    )
    due = await carts.take(0, T0 + 1_800)
    assert (due.fired, due.taken) == ([], [("c1", "a1")])


def abandoned(events: list[Event], window: float, now: float) -> set[DueCart]:
    """The rule, from the whole input at once, in event-time order: an add_to_cart is
    abandoned when no other add, no checkout, no purchase and no removal that empties the
    cart (its value by event time: adds plus, removals minus, a purchase empties it) follows
    it within ``window``. The value reported is the cart's just after the add."""
    order = sorted(enumerate(events), key=lambda ie: (ie[1].ts, ie[0]))
    adds: dict[str, tuple[str, float, float]] = {}
    add_ts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    value: dict[str, float] = {}
    for _, e in order:
        cid = e.customer_id
        if isinstance(e, Purchase):
            value[cid] = 0.0
            ends.setdefault(cid, []).append(e.ts)
            continue
        assert isinstance(e, Click)
        price = e.price or 0.0
        if e.action == "checkout_start":
            ends.setdefault(cid, []).append(e.ts)
        elif e.action == "add_to_cart":
            value[cid] = value.get(cid, 0.0) + price
            if e.event_id not in adds:
                adds[e.event_id] = (cid, e.ts, value[cid])
                add_ts.setdefault(cid, []).append(e.ts)
        elif e.action == "remove_from_cart":
            value[cid] = max(0.0, value.get(cid, 0.0) - price)
            if value[cid] <= 0.0:
                ends.setdefault(cid, []).append(e.ts)
    out = set()
    for eid, (cid, ts, v) in adds.items():
        deadline = ts + window
        if deadline > now:
            continue
        if any(ts < b <= deadline for b in add_ts[cid]):
            continue
        if any(ts <= t <= deadline for t in ends.get(cid, ())):
            continue
        out.add(DueCart(cid, eid, v, deadline))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_streams_abandon_the_carts_the_rule_says(carts: CartStore, seed: int) -> None:
    """Out-of-order input (up to ``late`` s), replays, batches and takes at the watermark: the
    carts fired are those the rule computes from the whole input."""
    rng = random.Random(seed)
    actions = ["view", "add_to_cart", "add_to_cart", "remove_from_cart", "checkout_start"]
    late = 300.0
    newest = T0
    seen: dict[str, Event] = {}
    got: list[DueCart] = []
    for step in range(60):
        batch: list[CartStep] = []
        for k in range(rng.randint(1, 15)):
            cid = f"c{rng.randint(0, 19)}"
            newest += rng.uniform(0, 120)
            ts = newest - (rng.uniform(0, late) if rng.random() < 0.2 else 0.0)
            eid = f"e{step}-{k}"
            event: Event
            if rng.random() < 0.1:
                event = buy(eid, cid, ts)
            else:
                action = rng.choice(actions)
                event = click(eid, cid, ts, action, rng.choice([5.0, 10.0, 20.0]))
            seen[eid] = event
            # the feature's cart value (read order) only matters for early fires, off here
            batch.append(CartStep(0, event, 1.0))
        if rng.random() < 0.2:
            batch += batch[: rng.randint(1, len(batch))]  # a replay
        await carts.apply(batch)
        if step % 5 == 4:  # the watermark: no event older than this is still to come
            due = await carts.take(0, newest - late - 1)
            got += [f.cart for f in due.fired if not f.again]
            if rng.random() < 0.7:  # else the worker "died" before forgetting
                await carts.forget(due)
    final = newest + 10_000
    due = await carts.take(0, final)
    got += [f.cart for f in due.fired if not f.again]
    assert sorted(got) == sorted(abandoned(list(seen.values()), 1_800.0, final))
    assert len(got) > 5, "the stream should abandon some carts"


@pytest.mark.parametrize("seed", [4, 5])
async def test_redis_cool_downs_decide_as_the_in_memory_ones(
    any_redis: Redis, unique: Callable[[str], str], seed: int
) -> None:
    rng = random.Random(seed)
    windows = {"churn_risk": 3_600.0, "anomaly": 600.0}
    memory = AlertCooldown(windows, default_s=60.0)
    store = CooldownStore(unique("cd"), windows, default_s=60.0)
    await store.start(any_redis)
    alerts = []
    for k in range(300):
        cid, kind = f"c{rng.randint(0, 4)}", rng.choice([*windows, "negative_feedback"])
        ts = T0 + rng.uniform(0, 7_200)
        alert_id = f"a{k}" if rng.random() < 0.8 else f"a{max(0, k - 1)}"  # some repeats
        alerts.append((cid, kind, ts, alert_id))
    want = [memory.allow(*a) for a in alerts]
    got: list[bool] = []
    for i in range(0, len(alerts), 37):  # in batches, as the worker admits them
        got += await store.allow(alerts[i : i + 37])
    assert got == want
    assert 0 < want.count(False) < len(want)


@pytest.mark.parametrize("seed", [6, 7])
async def test_redis_churn_raises_what_the_in_memory_churn_watch_raises(
    any_redis: Redis, unique: Callable[[str], str], seed: int
) -> None:
    """Activity drops and silences, hysteresis, out-of-order events: ChurnStore's alerts
    are ChurnWatch's, taken at the same watermarks."""
    rng = random.Random(seed)
    settings = AlertSettings(churn_grace_hours=2.0)
    memory = ChurnWatch(settings)
    store = ChurnStore(unique("ch"), settings)
    await store.start(any_redis)
    day = 86_400.0
    clicks = {f"c{i}": [] for i in range(8)}  # each customer's click times
    ts = T0
    want: list[tuple[str, str, str, float]] = []
    got: list[tuple[str, str, str, float]] = []

    def key(s: ChurnSignal) -> tuple[str, str, str, float]:
        return (s.customer_id, s.trigger_event_id, s.reason, round(s.score, 9))

    for step in range(60):
        batch = []
        for k in range(rng.randint(1, 10)):
            cid = f"c{rng.randint(0, 7)}"
            ts += rng.uniform(0, 4 * 3600) if rng.random() < 0.8 else 0.0
            t = ts - (rng.uniform(0, 1800) if rng.random() < 0.1 else 0.0)  # a late one
            history = clicks[cid]
            history.append(t)
            c24 = float(sum(1 for x in history if t - day < x <= t))
            base = 300.0 if cid < "c4" else 60.0  # busy customers drop, quiet ones go silent
            c30 = float(sum(1 for x in history if t - 30 * day < x <= t)) + base
            features = {"clicks_24h": c24, "clicks_30d": c30, "spend_30d": 10.0 * c24}
            eid = f"e{step}-{k}"
            signal = memory.observe(cid, eid, t, features)
            if signal is not None:
                want.append(key(signal))
            batch.append(ChurnStep(0, cid, eid, t, c24, c30, features["spend_30d"]))
        got += [key(r.signal) for r in await store.observe(batch) if not r.again]
        if step % 3 == 2:
            now = ts + rng.uniform(0, day)
            want += [key(s) for s in memory.due(now)]
            due = await store.take(0, now)
            got += [key(r.signal) for r in due.raised if not r.again]
            await store.forget(due)
            ts = now
    assert got == want
    assert {r for _, _, r, _ in want} == {"activity_drop", "silence"}, want
