"""No record stops the worker: records the broker takes but the contract refuses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import pytest

from streams.agents import DEAD_LETTER_MAX_PAYLOAD
from tests.streams.conftest import produce
from tests.streams.test_offer_outcomes_e2e import _read
from tests.streams.test_pipeline_e2e import T0, _routed, click


@pytest.mark.timeout(120)
def test_a_record_near_the_brokers_limit_is_dead_lettered_capped_and_the_worker_goes_on(
    worker_factory: Any,
) -> None:
    w = worker_factory()
    w.wait_ready()
    env = w.env
    # legal on Kafka (under the 1 MiB request), 55x the payload limit; its dead letter in
    # base64 used to exceed the producer's request size: the send failed and the worker exited
    huge = b'{"event_id": "h1", "customer_id": "c8", "pad": "' + b"x" * 900_000 + b'"}'
    records = [
        click("v1", "c8", T0, "view", "toys", 10.0),
        ("clicks", b"c8", huge),
        click("v2", "c8", T0 + 5, "add_to_cart", "toys", 10.0),
    ]
    asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))
    stats = w.wait_processed(len(records))
    assert stats["dead_letters"] == 1 and stats["valid"] == 2, stats
    (dead,) = _read(env, "STREAMSCORE_TOPICS__DEAD_LETTERS", lambda v: len(v) >= 1)
    assert "exceeds" in dead["reason"], dead["reason"]
    assert dead["payload_truncated"] is True
    assert dead["payload_bytes"] == len(huge)
    assert dead["payload_sha256"] == hashlib.sha256(huge).hexdigest()
    kept = base64.b64decode(dead["payload_b64"])
    assert len(kept) == DEAD_LETTER_MAX_PAYLOAD and huge.startswith(kept)
    assert w.proc is not None and w.proc.poll() is None, "the worker must keep running"
