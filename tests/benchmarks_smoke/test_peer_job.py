"""The peers' shared helpers: outputs go where, and keyed how, streamscore publishes them."""

from __future__ import annotations

from benchmarks._peer_job import outputs, record
from streams.agents import BatchOutputs
from streams.records import DeadLetter, Offer
from streams.settings import TopicSettings


def test_outputs_are_keyed_and_ordered_as_streamscore_publishes() -> None:
    offer = Offer(
        offer_event_id="o-e1",
        customer_id="c1",
        offer_id="free-shipping",
        score=0.9,
        propensity=0.4,
        segment=2,
        reasons=[],
        trigger_event_id="e1",
        model_version="v",
        ts=1.0,
        event_ts=1.0,
    )
    dead = DeadLetter(
        source_topic="clicks",
        partition=0,
        offset=3,
        reason="not valid JSON",
        payload_b64="",
        payload_preview="",
        key=None,
        ts=1.0,
    )
    topics = TopicSettings(offers="o-t", dead_letters="dl-t")
    got = outputs(topics, BatchOutputs(offers=[offer], dead_letters=[dead]))
    assert [(o.topic, o.key) for o in got] == [("o-t", b"c1"), ("dl-t", b"")]
    assert got[0].record.dumps() == offer.dumps()


def test_record_drops_a_missing_broker_timestamp() -> None:
    assert record("clicks", 1, 2, b"k", b"{}", 0.0)[-1] is None
    assert record("clicks", 1, 2, None, b"{}", 12.5) == ("clicks", 1, 2, None, b"{}", 12.5)
