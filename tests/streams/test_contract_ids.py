"""The contract kept to the letter through a real worker: event ids are unique per customer.

Two customers whose apps reuse one ``event_id`` get two offers and two alerts with two ids
(derived from customer and event), and one customer who reuses an ``event_id`` for another
event gets a dead letter that says so, counted, while an exact resend is a plain replay.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.streams.conftest import produce
from tests.streams.test_offer_outcomes_e2e import _read
from tests.streams.test_pipeline_e2e import T0, _features, _routed, click, feedback


@pytest.mark.timeout(120)
def test_two_customers_reusing_an_event_id_get_two_offers_and_two_alerts(
    worker_factory: Any,
) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    records = [
        click("e1", "c1", T0, "view", "sports", 120.0),
        click("e1", "c2", T0, "view", "sports", 120.0),
        feedback("f1", "c1", T0 + 5, 1, "Terrible, the box was damaged"),
        feedback("f1", "c2", T0 + 5, 1, "Terrible, the box was damaged"),
    ]
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))
    stats = w.wait_processed(len(records))
    assert (stats["valid"], stats["duplicates"], stats["dead_letters"]) == (4, 0, 0), stats
    offers = _read(env, "STREAMSCORE_TOPICS__OFFERS", lambda v: len(v) >= 2)
    assert sorted(o["customer_id"] for o in offers) == ["c1", "c2"]
    assert len({o["offer_event_id"] for o in offers}) == 2, "one id for two offers"
    alerts = _read(
        env,
        "STREAMSCORE_TOPICS__ALERTS",
        lambda v: sum(a["type"] == "negative_feedback" for a in v) >= 2,
    )
    negative = [a for a in alerts if a["type"] == "negative_feedback"]
    assert sorted(a["customer_id"] for a in negative) == ["c1", "c2"]
    assert len({a["alert_id"] for a in negative}) == 2, "one id for two alerts"


@pytest.mark.timeout(120)
def test_an_event_id_reused_with_other_content_is_dead_lettered_and_counted(
    worker_factory: Any,
) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    first = [click("e1", "c1", T0, "add_to_cart", "toys", 40.0)]
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, first)))
    w.wait_processed(1)
    again = [
        click("e1", "c1", T0, "add_to_cart", "toys", 40.0),  # an exact resend: a replay
        click("e1", "c1", T0 + 9, "add_to_cart", "toys", 400.0),  # another event under e1
        click("e2", "c1", T0 + 10, "add_to_cart", "toys", 5.0),
    ]
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, again)))
    stats = w.wait_processed(4)
    assert (stats["valid"], stats["duplicates"], stats["conflicts"]) == (3, 1, 1), stats
    (dead,) = _read(env, "STREAMSCORE_TOPICS__DEAD_LETTERS", lambda v: len(v) >= 1)
    assert dead["reason"].startswith("duplicate event_id with different content"), dead
    assert b"400" in base64.b64decode(dead["payload_b64"]), "the second e1 is the one kept aside"
    f = asyncio.run(_features(env, "c1"))
    assert (f["cart_value"], f["carts_30d"]) == (45.0, 2.0), "only e1's first content counts"
