"""State that follows its partition, through two real workers: after a rebalance, the worker
that gave a partition away no longer acts on that partition's customers, and the new owner
continues their watched carts and pending labels as one worker would.

Customer ids are chosen by the producer's partitioner (murmur2, two partitions): ``buyer-b``
and ``left-a`` land on partition 0, ``buyer-a`` and ``left-b`` on partition 1.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.streams.conftest import produce
from tests.streams.faultkit import (
    cart_alert_ids,
    compare_labels,
    read_labels,
    record,
    reference_run,
    simulate,
    time_past,
    true_labels,
    wait_until,
)
from tests.streams.test_offer_outcomes_e2e import _read
from tests.streams.test_pipeline_e2e import _routed, click, purchase

T0 = float(int(time.time()) - 7200)
BUYERS = ("buyer-b", "buyer-a")  # partitions 0, 1
LEFT = ("left-a", "left-b")  # partitions 0, 1: carts nobody checks out


@pytest.mark.timeout(180)
def test_a_moved_cart_is_continued_by_the_new_owner_and_the_old_one_raises_nothing(
    worker_factory: Any,
) -> None:
    env_extra = {"STREAMSCORE_INTENT__ENABLED": "false"}  # no early, model-driven cart alerts
    a = worker_factory(**env_extra)
    a.wait_ready()
    alone = a.assigned()
    env = a.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]

    def send(records: list[tuple[str, bytes, bytes]]) -> None:
        asyncio.run(produce(bootstrap, _routed(env, records)))

    # A alone: four filled carts, due 30 minutes later in event time
    send(
        [
            click(f"{cid}-cart", cid, T0 + n, "add_to_cart", "home", 50.0, session=cid)
            for n, cid in enumerate(BUYERS + LEFT)
        ]
    )
    a.wait_processed(4)
    b = worker_factory(**env_extra)
    b.wait_ready()
    wait_until(lambda: 0 < a.assigned() < alone, 60.0, "A to give B a partition")

    def handled() -> int:
        return sum(int((w.stats() or {}).get("records", 0)) for w in (a, b))

    # both buyers check out: one on each partition, so one of them now goes to B
    send([purchase(f"{cid}-buy", cid, T0 + 60, 50.0, "home") for cid in BUYERS])
    wait_until(lambda: handled() >= 6, 60.0, "the purchases")
    # time moves on, on both partitions, past every cart's deadline
    later = [("later-b", T0 + 2400), ("later-a", T0 + 2400)]  # partitions 0, 1
    send([click(f"{cid}-1", cid, ts, "view", "books", 5.0, session=cid) for cid, ts in later])
    wait_until(lambda: handled() >= 8, 60.0, "the later clicks")

    def carts(alerts: list[dict[str, Any]]) -> list[str]:
        return [x["customer_id"] for x in alerts if x["type"] == "cart_abandonment"]

    key = "STREAMSCORE_TOPICS__ALERTS"
    # both left carts are due: the one on A's partition on A, the moved one on B, which
    # continues the cart A armed (one worker that never split would raise both)
    got = carts(_read(env, key, lambda v: set(LEFT) <= set(carts(v)), timeout=40.0))
    assert set(LEFT) <= set(got), got
    time.sleep(4.0)
    alerts = carts(_read(env, key, lambda v: False, timeout=3.0))
    assert not set(alerts) & set(BUYERS), f"a cart alert for a customer who bought: {alerts}"
    assert sorted(alerts) == sorted(LEFT), f"one alert per left cart, no more: {alerts}"


@pytest.mark.timeout(300)
def test_labels_and_carts_through_a_move_to_b_and_back_to_a_are_those_of_one_worker(
    worker_factory: Any, unique: Any, tmp_path: Path
) -> None:
    """Partitions go A -> B -> A mid-stream, with clicks waiting for their labels and carts
    for their timeout each time: every click is labeled once, as one worker that never
    stopped labels it (the true label from the input: a purchase by the same customer within
    the horizon), and the cart alerts are those of a single worker that never stopped."""
    horizon_s = 300.0
    env_extra = {
        "STREAMSCORE_WORKER__PUBLISH_LABELS": "true",
        "STREAMSCORE_MODELS__PROPENSITY_HORIZON_MINUTES": str(horizon_s / 60),
        "STREAMSCORE_DECISION__CART_ABANDONMENT_MINUTES": str(horizon_s / 60),
        "STREAMSCORE_INTENT__ENABLED": "false",
        # no partition idles in this test: time moves only with the events (so a pause
        # between two sends cannot move it past purchases that are sent next)
        "STREAMSCORE_WORKER__IDLE_PARTITION_S": "600",
    }
    a = worker_factory(**env_extra)
    env = a.env
    # one event per second of event time, over 100 minutes: 20 horizons
    records, _ = simulate(env, 6_000, seed=31, customers=300, rate=1.0)
    truth = true_labels(env, records, horizon_s)
    thirds = [records[:2_000], records[2_000:4_000], records[4_000:]]
    # the last third, then one click, purchase and feedback per partition a horizon after
    # the last event, so that every earlier click's horizon and cart's timeout pass
    push = time_past(records, horizon_s + 60)
    ref = reference_run(worker_factory, unique, tmp_path / "ref", env, env_extra, records, push)
    read_labels(ref.env, len(truth), timeout=120.0)
    want_carts = cart_alert_ids(ref.env)
    ref.stop()
    a.wait_ready()
    alone = a.assigned()
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]

    def send(batch: list[tuple[str, bytes, bytes]]) -> None:
        asyncio.run(produce(bootstrap, batch))

    send(thirds[0])
    a.wait_processed(2_000, timeout=90)
    b = worker_factory(**env_extra)
    b.wait_ready()
    wait_until(lambda: 0 < a.assigned() < alone, 60.0, "A to give B a partition")
    send(thirds[1])
    wait_until(
        lambda: sum(int((w.stats() or {}).get("records", 0)) for w in (a, b)) >= 4_000,
        90.0,
        "the second third, on A and B",
    )
    b.stop()  # SIGTERM: B's partitions go back to A
    wait_until(lambda: a.assigned() == alone, 60.0, "A to take its partitions back")
    send(thirds[2] + _routed(env, push))
    rows = read_labels(env, len(truth), timeout=120.0)
    cmp = compare_labels(rows, truth)
    got_carts = cart_alert_ids(env)
    cmp.update(
        cart_alerts=len(got_carts),
        cart_alerts_single_worker=len(want_carts),
        cart_alerts_missing=sorted(want_carts - got_carts),
        cart_alerts_extra=sorted(got_carts - want_carts),
    )
    record(tmp_path, "labels_a_b_a", cmp)
    assert cmp["n_missing"] == 0 and cmp["n_wrong"] == 0, cmp
    assert not cmp["unknown"] and cmp["repeats_differing"] == 0, cmp
    assert want_carts, "the stream should abandon some carts"
    assert got_carts == want_carts, cmp


@pytest.mark.timeout(180)
def test_a_restarted_worker_remembers_who_is_at_risk_of_churn(worker_factory: Any) -> None:
    """A regular customer's activity drops: one churn alert. The worker restarts and the
    customer is still quiet: no second alert, because the hysteresis state (and the alert's
    cool-down) outlived the worker."""
    a = worker_factory(STREAMSCORE_INTENT__ENABLED="false")
    a.wait_ready()
    env = a.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    now = float(int(time.time()))
    day = 86_400.0
    # ten clicks a day, evenly, for four weeks up to a day ago; then one click today: a drop
    history = [
        click(f"regular-{d}-{k}", "regular", now - d * day + k * day / 10, "view", "home", 5.0)
        for d in range(29, 1, -1)
        for k in range(10)
    ]
    asyncio.run(produce(bootstrap, _routed(env, history)))
    asyncio.run(
        produce(bootstrap, _routed(env, [click("today-1", "regular", now, "view", "home")]))
    )
    a.wait_processed(len(history) + 1)

    def churn(alerts: list[dict[str, Any]]) -> list[str]:
        return [x["trigger_event_id"] for x in alerts if x["type"] == "churn_risk"]

    key = "STREAMSCORE_TOPICS__ALERTS"
    first = churn(_read(env, key, lambda v: len(churn(v)) >= 1, timeout=40.0))
    assert first == ["today-1"], (first, a.stats())
    a.stop()  # SIGTERM: a clean restart, or a deploy
    b = worker_factory(STREAMSCORE_INTENT__ENABLED="false")
    b.wait_ready()
    later = [click("today-2", "regular", now + 3600, "view", "home")]
    asyncio.run(produce(bootstrap, _routed(env, later)))
    b.wait_processed(1)
    time.sleep(3.0)
    alerts = churn(_read(env, key, lambda v: False, timeout=3.0))
    assert alerts == ["today-1"], f"the restarted worker alerted again: {alerts}"


@pytest.mark.timeout(180)
def test_a_session_open_when_its_worker_stops_is_learned_by_the_next_one(
    worker_factory: Any,
) -> None:
    """The fine-tuner learns a session once it ends: a session stepped by one worker that
    stops, and idle past its timeout on the next one, is learned there (its steps come
    from the Redis session log)."""
    a = worker_factory()
    a.wait_ready()
    env = a.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    steps = [
        click(f"s1-{k}", "buyer-b", T0 + 60 * k, action, "home", 30.0, session="s1")
        for k, action in enumerate(["view", "view", "add_to_cart", "view"])
    ]
    asyncio.run(produce(bootstrap, _routed(env, steps)))
    stats = a.wait_processed(len(steps))
    a.stop()
    assert stats.get("intent_sessions_learned") == 0, stats
    b = worker_factory()
    b.wait_ready()
    # an hour later on both partitions: buyer-b's session (partition 0) has been idle 30 min
    later = [
        click(f"{cid}-1", cid, T0 + 3_600, "view", "books", 5.0, session=cid)
        for cid in ("later-b", "later-a")
    ]
    asyncio.run(produce(bootstrap, _routed(env, later)))
    wait_until(
        lambda: (b.stats() or {}).get("intent_sessions_learned", 0) >= 1,
        30.0,
        "the restarted worker to learn the ended session",
    )
    time.sleep(2.0)
    assert (b.stats() or {}).get("intent_sessions_learned") == 1, b.stats()
