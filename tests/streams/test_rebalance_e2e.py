"""State that follows its partition, through two real workers: after a rebalance, the worker
that gave a partition away no longer acts on that partition's customers.

Customer ids are chosen by the producer's partitioner (murmur2, two partitions): ``buyer-b``
and ``left-a`` land on partition 0, ``buyer-a`` and ``left-b`` on partition 1.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.streams.conftest import produce
from tests.streams.faultkit import wait_until
from tests.streams.test_offer_outcomes_e2e import _read
from tests.streams.test_pipeline_e2e import _routed, click, purchase

T0 = float(int(time.time()) - 7200)
BUYERS = ("buyer-b", "buyer-a")  # partitions 0, 1
LEFT = ("left-a", "left-b")  # partitions 0, 1: carts nobody checks out


@pytest.mark.timeout(180)
def test_the_old_owner_raises_no_cart_alert_for_a_customer_whose_partition_moved(
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
    # the left cart on A's own partition is due on A: wait for it, then for anything else
    first = carts(_read(env, key, lambda v: any(c in LEFT for c in carts(v)), timeout=40.0))
    assert any(c in LEFT for c in first), first
    time.sleep(4.0)
    alerts = carts(_read(env, key, lambda v: False, timeout=3.0))
    assert not set(alerts) & set(BUYERS), f"a cart alert for a customer who bought: {alerts}"
    assert len(alerts) == 1, f"only A's own left cart is due on A: {alerts}"
