"""The worker hands its outputs to the producer as bytes (``streams.agents.register``): they
must be exactly the bytes Faust's ``topic.send`` wrote for the same record on a topic typed
with it, so consumers see no change."""

from __future__ import annotations

import faust
import orjson
import pytest
from faust.serializers.registry import Registry

from streams.records import Alert, DeadLetter, Offer, OfferOutcome, PropensityLabel, SessionIntent

RECORDS: list[faust.Record] = [
    Offer(
        offer_event_id="o:1",
        customer_id="c-é",
        offer_id="free_shipping",
        score=0.125,
        propensity=1e-7,
        segment=3,
        reasons=["cat_match:toys", "segment:3"],
        trigger_event_id="e1",
        model_version="v1/intent-2",
        ts=1.7e9 + 0.123456,
        event_ts=1.7e9,
        intent={"purchase": 0.1, "abandon": 0.2, "browse": 0.7},
        recommended_items=["i1", "i2"],
        policy_propensity=0.9,
        eligible=["free_shipping", "ten_off"],
        contexts=[[0.1, 1e300], [0.0, -2.5]],
    ),
    Offer(
        offer_event_id="o:2",
        customer_id="c2",
        offer_id="x",
        score=1.0,
        propensity=0.5,
        segment=0,
        reasons=[],
        trigger_event_id="e2",
        model_version="v",
        ts=1.0,
        event_ts=1.0,
    ),
    Alert(
        alert_id="a1",
        customer_id="c1",
        type="negative_feedback",
        severity="high",
        score=0.9,
        trigger_event_id="f1",
        ts=2.0,
        event_ts=1.5,
        model_version="v",
        details={"reply_template": "退款", "rating": None, "nested": {"k": [1, 2.5]}},
    ),
    OfferOutcome(
        offer_event_id="o:1",
        customer_id="c1",
        offer_id="free_shipping",
        converted=True,
        order_id=None,
        revenue=12.5,
        arm="bandit",
        offer_ts=1.0,
        ts=2.0,
    ),
    DeadLetter(
        source_topic="clicks",
        partition=2,
        offset=99,
        reason="not JSON",
        payload_b64="AAE=",
        payload_preview="\\x00\\x01",
        key=None,
        ts=3.0,
        payload_bytes=2,
        payload_sha256="ab" * 32,
    ),
    SessionIntent(
        customer_id="c1",
        session_id="s1",
        trigger_event_id="e1",
        purchase=0.2,
        abandon=0.3,
        browse=0.5,
        model_version="intent-1",
        event_ts=1.0,
    ),
    PropensityLabel(
        click_event_id="e1",
        customer_id="c1",
        purchased=False,
        propensity=float("nan"),
        click_ts=1.0,
        ts=2.0,
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_the_bytes_sent_are_the_bytes_topic_send_wrote(record: faust.Record) -> None:
    faust_bytes = Registry().dumps_value(type(record), record, serializer=None)
    assert record.dumps() == faust_bytes
    doc = orjson.loads(faust_bytes)
    assert "__faust" not in doc and doc["schema_version"] == 1
