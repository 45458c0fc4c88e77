"""Event time through a real worker: one click stamped a day ahead expires nothing early.

The same stream runs with and without that click; what the worker learns and emits must be
the same: only the cart, label and offer window that the stream itself makes due expire.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.streams.conftest import consume, produce
from tests.streams.test_pipeline_e2e import _routed, click

SHOPPERS = 30


def _read(env: dict[str, str], until: Any, timeout: float) -> dict[str, list[dict[str, Any]]]:
    topics = {
        "offers": env["STREAMSCORE_TOPICS__OFFERS"],
        "alerts": env["STREAMSCORE_TOPICS__ALERTS"],
        "outcomes": env["STREAMSCORE_TOPICS__OFFER_OUTCOMES"],
    }
    got = asyncio.run(
        consume(
            env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"],
            list(topics.values()),
            until=lambda g: until({k: g[t] for k, t in topics.items()}),
            timeout=timeout,
        )
    )
    return {k: got[t] for k, t in topics.items()}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("skewed", [False, True], ids=["baseline", "one-click-23h-ahead"])
def test_a_click_stamped_a_day_ahead_expires_nothing_early(
    worker_factory: Any, skewed: bool
) -> None:
    w = worker_factory(
        STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES="60",
        STREAMSCORE_DECISION__CART_ABANDONMENT_MINUTES="30",
        STREAMSCORE_MODELS__PROPENSITY_HORIZON_MINUTES="30",
    )
    w.wait_ready()
    now = float(int(time.time()))
    records = []
    # Due by the stream's own time: one cart filled 40 minutes ago (its label is due too).
    records.append(click("old-1", "old", now - 2400, "add_to_cart", "home", 90.0, session="o"))
    # Open for another 30 to 60 minutes: carts, labels and offer windows of live shoppers.
    for n in range(SHOPPERS):
        cid = f"shopper{n}"
        records += [
            click(f"{cid}-1", cid, now + n * 0.01, "view", "home", 40.0, session=cid),
            click(f"{cid}-2", cid, now + 1 + n * 0.01, "add_to_cart", "home", 90.0, session=cid),
        ]
    if skewed:
        records.append(click("skew-1", "skewer", now + 23 * 3600, "view", "home", 40.0))
    env = w.env
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))
    w.wait_processed(len(records))

    def cart_alerts(out: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [a for a in out["alerts"] if a["type"] == "cart_abandonment"]

    # Wait for what is due (the old cart), then give the 1 s timer and the idle-partition
    # rule time to expire anything else it (wrongly) would.
    out = _read(env, until=lambda o: len(cart_alerts(o)) >= 1, timeout=40.0)
    assert [a["customer_id"] for a in cart_alerts(out)] == ["old"], cart_alerts(out)
    time.sleep(8.0)
    out = _read(env, until=lambda o: False, timeout=3.0)
    stats = w.stats()
    assert stats is not None
    assert len(out["offers"]) >= SHOPPERS // 2, "the shoppers were scored and offered"
    assert [a["customer_id"] for a in cart_alerts(out)] == ["old"], "no live cart expired"
    assert stats["labels_learned"] == 1, "only the 40-minute-old click's label is due"
    assert out["outcomes"] == [], "no offer window closed early"
    assert stats["clamped"] == (1 if skewed else 0)
