"""OfferLoop one step at a time against a real Valkey: each step gets what the last returned."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from features.events import Click, Purchase, PurchaseItem
from features.settings import RedisSettings
from models.decisioning.catalog import Catalog
from models.decisioning.policy import ClickContext, OfferPolicy
from models.settings import DecisionSettings
from streams.offer_loop import OfferLoop
from streams.records import Alert, Offer
from streams.settings import Settings

T0 = 1_700_000_000.0
CATALOG = Catalog.from_dict(
    {"offers": [{"offer_id": "shoe-deal", "name": "Shoes", "kind": "discount", "value": 20,
                 "target_categories": ["shoes"]}]}
)  # fmt: skip


@pytest.fixture
async def loop(redis_url: str, unique: Callable[[str], str]) -> AsyncIterator[OfferLoop]:
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=unique("ol")),
        decision=DecisionSettings(control_percent=0.0),
    )
    client = Redis.from_url(redis_url)
    offers = OfferLoop(settings, OfferPolicy(CATALOG, settings.decision))
    await offers.start(client)
    yield offers
    await client.aclose()


def click(eid: str, cid: str, ts: float) -> Click:
    return Click(eid, cid, "s-" + cid, ts, "add_to_cart", "i1", "shoes")


def offer_for(c: Click, offer_id: str) -> Offer:
    return Offer(
        offer_event_id="o-" + c.event_id,
        customer_id=c.customer_id,
        offer_id=offer_id,
        score=1.0,
        propensity=0.9,
        segment=0,
        reasons=[],
        trigger_event_id=c.event_id,
        model_version="v",
        ts=c.ts,
        event_ts=c.ts,
    )


def negative_feedback(cid: str, ts: float) -> Alert:
    return Alert(
        alert_id="a-" + cid,
        customer_id=cid,
        type="negative_feedback",
        severity="high",
        score=1.0,
        trigger_event_id="f-" + cid,
        ts=ts,
        event_ts=ts,
        model_version="v",
    )


async def test_prepare_choose_finish_pass_their_values_along(loop: OfferLoop) -> None:
    await loop.suppress([("opted-out", True, "asked")])
    clicks = [click("e1", "buyer", T0), click("e2", "opted-out", T0), click("e3", "angry", T0)]
    states = await loop.prepare(clicks)
    assert states["opted-out"].suppressed and not states["buyer"].suppressed

    def choose(c: Click) -> object:
        ctx = ClickContext(c, {"cart_value": 80.0}, (("shoes", 1.0),), 0.9, 0, None, "v")
        return loop.choose(ctx, states.get(c.customer_id))

    assert choose(clicks[1]) is None, "an opted-out customer gets no offer"
    loop.note_alerts([negative_feedback("angry", T0 - 1)], states)
    assert choose(clicks[2]) is None, "negative feedback earlier in the batch blocks the click"
    chosen = choose(clicks[0])
    assert chosen is not None and chosen.decision.offer_id == "shoe-deal"

    offer = offer_for(clicks[0], chosen.decision.offer_id)
    item = PurchaseItem("i1", "shoes", 50.0, 1)
    bought = Purchase("p1", "buyer", None, T0 + 60, "order-1", (item,), 50.0, "EUR")
    assert await loop.finish([offer], {offer.offer_event_id: chosen}, [], []) == []
    [outcome] = await loop.finish([], {}, [], [bought])
    assert (outcome.offer_event_id, outcome.converted, outcome.order_id) == (
        offer.offer_event_id,
        True,
        "order-1",
    )
    assert outcome.arm == chosen.arm == "bandit", "the window keeps the arm that chose it"
    assert loop.arbiter.bandit.n_learned == 1, "and the bandit learns the conversion"
