"""After a rebalance a worker keeps in memory only the state of its own partitions' customers
(the churn watch; labels and carts live in Redis by partition)."""

from __future__ import annotations

import time

import orjson

from features.events import Click
from models.bundle import ModelBundle
from streams.agents import Pipeline
from streams.settings import Settings

T = float(int(time.time()) - 600)


def _record(cid: str, partition: int) -> tuple[str, int, int, bytes, bytes, float]:
    doc = {"event_id": f"e-{cid}", "customer_id": cid, "session_id": "s", "ts": T,
           "action": "add_to_cart", "item_id": "i1", "category": "home", "price": 50.0}  # fmt: skip
    return ("clicks", partition, 0, cid.encode(), orjson.dumps(doc), T)


def test_retain_drops_the_churn_state_of_customers_on_other_partitions() -> None:
    pipeline = Pipeline(Settings())
    pipeline.models = ModelBundle(Settings().models)
    valid, _, _, partitions = pipeline.validate([_record("stays", 0), _record("moves", 1)])
    assert partitions == {"stays": 0, "moves": 1}
    features = {"cart_value": 50.0, "clicks_24h": 40.0, "clicks_30d": 300.0}
    for event in valid:
        assert isinstance(event, Click)
        pipeline.alerting.churn.observe(event.customer_id, event.event_id, T, features)
    assert len(pipeline.alerting.churn) == 2

    dropped = pipeline.retain({0})

    assert dropped == {"churn": 1}
    assert len(pipeline.alerting.churn) == 1
    assert pipeline.retain({0}) == {"churn": 0}
