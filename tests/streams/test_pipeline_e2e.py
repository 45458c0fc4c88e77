"""End to end through a real worker process, the embedded broker and Valkey.

A scripted sequence of events gives exactly the expected Redis features, offers and alerts;
a replay changes nothing; malformed records land in the dead-letter topic with reasons while
the valid ones around them are scored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from features.settings import RedisSettings
from features.store import FeatureStore
from tests.streams.conftest import consume, produce

T0 = float(int(time.time()) - 7200)  # two hours ago, on a whole second


def click(
    eid: str,
    cid: str,
    ts: float,
    action: str,
    category: str,
    price: float | None = None,
    session: str = "s1",
    item: str = "i1",
) -> tuple[str, bytes, bytes]:
    doc: dict[str, Any] = {
        "event_id": eid,
        "customer_id": cid,
        "session_id": session,
        "ts": ts,
        "action": action,
        "item_id": item,
        "category": category,
    }
    if price is not None:
        doc["price"] = price
    return ("clicks", cid.encode(), orjson.dumps(doc))


def purchase(
    eid: str, cid: str, ts: float, price: float, category: str
) -> tuple[str, bytes, bytes]:
    doc = {
        "event_id": eid,
        "customer_id": cid,
        "session_id": "s1",
        "ts": ts,
        "order_id": "o-" + eid,
        "items": [{"item_id": "i1", "category": category, "price": price, "quantity": 1}],
        "total": price,
        "currency": "EUR",
    }
    return ("purchases", cid.encode(), orjson.dumps(doc))


def feedback(
    eid: str, cid: str, ts: float, rating: int | None, text: str | None
) -> tuple[str, bytes, bytes]:
    doc: dict[str, Any] = {"event_id": eid, "customer_id": cid, "ts": ts, "channel": "review"}
    if rating is not None:
        doc["rating"] = rating
    if text is not None:
        doc["text"] = text
    return ("feedback", cid.encode(), orjson.dumps(doc))


def _routed(
    env: dict[str, str], records: list[tuple[str, bytes, bytes]]
) -> list[tuple[str, bytes, bytes]]:
    topic = {
        "clicks": env["STREAMSCORE_TOPICS__CLICKS"],
        "purchases": env["STREAMSCORE_TOPICS__PURCHASES"],
        "feedback": env["STREAMSCORE_TOPICS__FEEDBACK"],
    }
    return [(topic[t], k, v) for t, k, v in records]


async def _features(env: dict[str, str], cid: str) -> dict[str, float]:
    store = FeatureStore(
        RedisSettings(
            url=env["STREAMSCORE_REDIS__URL"],
            key_prefix=env["STREAMSCORE_REDIS__KEY_PREFIX"],
            cluster=env.get("STREAMSCORE_REDIS__CLUSTER") == "true",
        )
    )
    await store.start()
    try:
        result = await store.get(cid, T0 + 3600)
    finally:
        await store.close()
    assert result is not None, f"no features in Redis for {cid}"
    return result.features


def _outputs(env: dict[str, str], until: Any, timeout: float = 30.0) -> dict[str, list[dict]]:
    topics = [
        env["STREAMSCORE_TOPICS__OFFERS"],
        env["STREAMSCORE_TOPICS__ALERTS"],
        env["STREAMSCORE_TOPICS__DEAD_LETTERS"],
    ]
    got = asyncio.run(
        consume(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], topics, until=until, timeout=timeout)
    )
    return {"offers": got[topics[0]], "alerts": got[topics[1]], "dead": got[topics[2]]}


SCRIPT = [
    click("e1", "c1", T0, "view", "sports", 120.0),
    click("e2", "c1", T0 + 30, "add_to_cart", "sports", 120.0),
    click("e3", "c1", T0 + 60, "view", "books", 15.0, item="i2"),
    # checks out within the (shortened, 3 s) cart timeout of the add: no cart alert for c1
    click("e4", "c1", T0 + 32, "checkout_start", "sports"),
    purchase("e5", "c1", T0 + 120, 120.0, "sports"),
    feedback("e6", "c1", T0 + 400, 1, "Terrible: the delivery was late and the box was damaged"),
    # c2 fills a cart and leaves: a cart_abandonment alert after the (shortened) timeout.
    click("e7", "c2", T0 + 10, "add_to_cart", "toys", 40.0, session="s2", item="i7"),
]


@pytest.fixture(params=["server", "cluster"])
def stack_env(request: pytest.FixtureRequest, stack_env: dict[str, str]) -> dict[str, str]:
    """Every test here runs on one Valkey server, then on a real 3-master Redis Cluster."""
    if request.param == "server":
        return stack_env
    return {
        **stack_env,
        "STREAMSCORE_REDIS__URL": request.getfixturevalue("redis_cluster_url"),
        "STREAMSCORE_REDIS__CLUSTER": "true",
    }


@pytest.mark.timeout(120)
def test_scripted_sequence_gives_exact_features_offers_and_alerts(worker_factory: Any) -> None:
    w = worker_factory(STREAMSCORE_DECISION__CART_ABANDONMENT_MINUTES="0.05")
    w.wait_ready()
    env = w.env
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, SCRIPT)))
    w.wait_processed(len(SCRIPT))

    f = asyncio.run(_features(env, "c1"))
    expected = {
        "clicks_24h": 4.0,
        "clicks_30d": 4.0,
        "carts_30d": 1.0,
        "purchases_30d": 1.0,
        "spend_30d": 120.0,
        "avg_order_value": 120.0,
        "cart_value": 0.0,
        "cart_items": 0.0,
        "feedback_count": 1.0,
        "rating_avg": 1.0,
    }
    assert {k: f[k] for k in expected} == expected
    assert f["sentiment_avg"] < 0, "negative text and rating 1 give a negative sentiment"
    f2 = asyncio.run(_features(env, "c2"))
    assert (f2["cart_value"], f2["carts_30d"]) == (40.0, 1.0)

    def done(got: dict[str, list[dict]]) -> bool:
        alerts = [a for t, v in got.items() if "alerts" in t for a in v]
        return {"negative_feedback", "cart_abandonment"} <= {a["type"] for a in alerts}

    out = _outputs(env, done)
    offers_c1 = [o for o in out["offers"] if o["customer_id"] == "c1"]
    # the frequency cap (60 min) allows one offer in this 7-minute session: the first click's
    assert [o["trigger_event_id"] for o in offers_c1] == ["e1"], offers_c1
    offer = offers_c1[0]
    assert offer["segment"] >= 0 and offer["model_version"] and offer["reasons"]
    assert 0.0 <= offer["propensity"] <= 1.0 and offer["score"] > 0
    by_type = {a["type"]: a for a in out["alerts"]}
    neg = by_type["negative_feedback"]
    assert (neg["customer_id"], neg["trigger_event_id"], neg["severity"]) == ("c1", "e6", "high")
    cart = by_type["cart_abandonment"]
    assert (cart["customer_id"], cart["trigger_event_id"]) == ("c2", "e7")
    assert out["dead"] == []


@pytest.mark.timeout(120)
def test_replayed_events_change_nothing(worker_factory: Any) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    first = SCRIPT[:5]
    asyncio.run(produce(bootstrap, _routed(env, first)))
    w.wait_processed(len(first))
    before = asyncio.run(_features(env, "c1"))
    asyncio.run(produce(bootstrap, _routed(env, first)))  # at-least-once: the same events again
    stats = w.wait_processed(2 * len(first))
    after = asyncio.run(_features(env, "c1"))
    assert after == before
    assert stats["duplicates"] == len(first)
    out = _outputs(env, lambda got: sum(len(v) for v in got.values()) >= 2, timeout=10)
    ids = [o["offer_event_id"] for o in out["offers"]]
    assert len(set(ids)) == 1, f"a replay re-emits the same offer id, got {ids}"


@pytest.mark.timeout(120)
def test_malformed_records_go_to_dead_letters_and_valid_ones_are_scored(
    worker_factory: Any,
) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    far_future = time.time() + 30 * 86400
    bad: list[tuple[str, bytes, bytes]] = [
        ("clicks", b"c9", b"{not json"),
        ("clicks", b"c9", orjson.dumps({"event_id": "b2", "customer_id": "c9"})),
        ("clicks", b"c9", click("b3", "c9", T0, "view", "toys", -5.0)[2]),
        ("clicks", b"c9", click("b4", "c9", T0, "teleport", "toys")[2]),
        ("clicks", b"c9", click("b5", "c9", far_future, "view", "toys")[2]),
        (
            "feedback",
            b"c9",
            orjson.dumps(
                {
                    "event_id": "b6",
                    "customer_id": "c9",
                    "ts": T0,
                    "channel": "review",
                    "text": "x" * 20_000,
                }
            ),
        ),
        ("purchases", b"c9", b"\xff\xfe not utf-8"),
        ("clicks", b"c9", orjson.dumps([1, 2, 3])),
    ]
    records = [
        click("v1", "c9", T0, "view", "toys", 10.0),
        *bad,
        click("v2", "c9", T0 + 5, "add_to_cart", "toys", 10.0),
    ]
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))
    stats = w.wait_processed(len(records))
    assert stats["dead_letters"] == len(bad) and stats["valid"] == 2, stats
    out = _outputs(env, lambda got: len(got[env["STREAMSCORE_TOPICS__DEAD_LETTERS"]]) >= len(bad))
    reasons = [d["reason"] for d in out["dead"]]
    assert len(reasons) == len(bad), reasons
    for needle in (
        "not valid JSON",
        "missing required field",
        "must not be negative",
        "unknown action",
        "future",
        "exceeds",
        "expected a JSON object",
    ):
        assert any(needle in r for r in reasons), f"no dead letter mentions {needle!r}: {reasons}"
    dl = out["dead"][0]
    assert {"source_topic", "partition", "offset", "payload_b64", "reason"} <= dl.keys()
    f = asyncio.run(_features(env, "c9"))
    assert (f["clicks_30d"], f["carts_30d"]) == (2.0, 1.0), "valid events around bad ones scored"
