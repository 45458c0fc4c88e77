"""Through a real worker: reply-ready negative feedback alerts, recommended items on offers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.streams.conftest import produce
from tests.streams.test_pipeline_e2e import T0, _outputs, _routed, click, feedback


@pytest.mark.timeout(120)
def test_unrated_negative_feedback_alert_has_topic_and_reply_and_offers_recommend(
    worker_factory: Any,
) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    records = []
    # Six sessions teach i-a -> i-b -> i-c (toys); i-pop is merely popular in toys.
    for n in range(6):
        cid, ts = f"s{n}", T0 + n * 60
        records += [
            click(f"{cid}-1", cid, ts, "view", "toys", 20.0, session=cid, item="i-a"),
            click(f"{cid}-2", cid, ts + 5, "add_to_cart", "toys", 20.0, session=cid, item="i-b"),
            click(f"{cid}-3", cid, ts + 9, "view", "toys", 20.0, session=cid, item="i-c"),
            click(f"{cid}-4", f"x{n}", ts, "view", "toys", 5.0, session=f"x{n}", item="i-pop"),
        ]
    # New shoppers look at i-a later: their offers should recommend i-b and i-c.
    shoppers = [f"new{n}" for n in range(4)]
    records += [
        click(f"{c}-1", c, T0 + 900, "view", "toys", 20.0, session=c, item="i-a") for c in shoppers
    ]
    records += [
        feedback("f1", "angry1", T0 + 1000, None, "The delivery was late and the box was damaged"),
        feedback("f2", "angry2", T0 + 1001, None, "退款申请没人处理, 太差了"),
    ]
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    asyncio.run(produce(bootstrap, _routed(env, records[: 4 * 6])))  # sessions first
    w.wait_processed(4 * 6)
    asyncio.run(produce(bootstrap, _routed(env, records[4 * 6 :])))
    w.wait_processed(len(records))

    def done(got: dict[str, list[dict]]) -> bool:
        alerts = [a for t, v in got.items() if "alerts" in t for a in v]
        offers = [o for t, v in got.items() if "offers" in t for o in v]
        return sum(a["type"] == "negative_feedback" for a in alerts) >= 2 and any(
            o["customer_id"] in shoppers for o in offers
        )

    out = _outputs(env, done)
    neg = {a["customer_id"]: a for a in out["alerts"] if a["type"] == "negative_feedback"}
    en, zh = neg["angry1"]["details"], neg["angry2"]["details"]
    assert en["rating"] is None and en["sentiment"] < 0
    assert (en["topic"], en["language"]) == ("delivery", "en")
    assert "carrier" in en["reply_template"]
    assert (zh["topic"], zh["language"]) == ("refund", "zh") and "退款" in zh["reply_template"]
    assert en["dedup_key"] == "negative_feedback:angry1"
    offers = [o for o in out["offers"] if o["customer_id"] in shoppers]
    assert offers, out["offers"]
    for offer in offers:
        recs = offer["recommended_items"]
        assert recs[:2] == ["i-b", "i-c"] and "i-a" not in recs, offer
        assert "i-pop" in recs, "category popularity fills the list"


@pytest.mark.timeout(120)
def test_a_replayed_offer_keeps_the_items_it_was_published_with(worker_factory: Any) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]

    def session(cid: str, ts: float, items: tuple[str, ...]) -> list[tuple[str, bytes, bytes]]:
        return [
            click(f"{cid}-{k}", cid, ts + k, "view", "toys", 20.0, session=cid, item=item)
            for k, item in enumerate(items)
        ]

    sent = 0

    def send(records: list[tuple[str, bytes, bytes]]) -> None:
        nonlocal sent
        asyncio.run(produce(bootstrap, _routed(env, records)))
        sent += len(records)
        w.wait_processed(sent)

    send([r for n in range(4) for r in session(f"a{n}", T0 + n * 60, ("i-a", "i-b"))])
    shopper = click("shop-1", "shopper", T0 + 900, "add_to_cart", "toys", 20.0, item="i-a")
    send([shopper])
    # co-occurrence moves on: i-a now goes with i-z far more often than with i-b
    send([r for n in range(12) for r in session(f"z{n}", T0 + 1000 + n, ("i-a", "i-z"))])
    send([shopper])  # the same click again: a replay, as after a crash before the commit

    def two_copies(got: dict[str, list[dict]]) -> bool:
        offers = [o for t, v in got.items() if "offers" in t for o in v]
        return sum(o["trigger_event_id"] == "shop-1" for o in offers) >= 2

    out = _outputs(env, two_copies)
    first, again = [o for o in out["offers"] if o["trigger_event_id"] == "shop-1"]
    assert first["recommended_items"][:1] == ["i-b"], first
    assert again == first, "the replay publishes the offer exactly as the first time"
