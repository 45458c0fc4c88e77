"""No record stops the worker: records the broker takes but the contract refuses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from features.settings import RedisSettings
from features.store import FeatureStoreError
from models.settings import IntentSettings, ModelSettings
from streams.agents import DEAD_LETTER_MAX_PAYLOAD, Pipeline, Record, _narrowed, _until_applied
from streams.settings import Settings
from tests.streams.conftest import produce, started_pipeline
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


def _records(customers: list[str]) -> list[Record]:
    docs = [click(f"e-{i}-{c}", c, T0 + i, "view", "toys", 10.0) for i, c in enumerate(customers)]
    return [("clicks", 0, i, key, value, None) for i, (_, key, value) in enumerate(docs)]


@pytest.fixture
async def pipeline(redis_url: str, unique: Any) -> AsyncIterator[Pipeline]:
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=unique("poison")),
        intent=IntentSettings(enabled=False),
        models=ModelSettings(sync_every_s=0),
    )
    async with started_pipeline(settings) as p:
        yield p


async def test_a_record_that_breaks_processing_is_narrowed_down_and_dead_lettered(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline.alert_rules.on_click

    def on_click(event: Any, *args: Any) -> Any:
        if event.customer_id == "poison":  # a bug only this customer's data triggers
            raise RuntimeError("boom on poison")
        return real(event, *args)

    monkeypatch.setattr(pipeline.alert_rules, "on_click", on_click)
    customers = [f"c{i}" for i in range(13)]
    customers[9] = "poison"
    out = await _narrowed(pipeline, _records(customers))
    (dead,) = out.dead_letters
    assert dead.offset == 9 and dead.reason.startswith("could not be processed: RuntimeError")
    assert "boom on poison" in dead.reason
    assert out.n_valid == 12, "every other record of the batch is processed"
    assert pipeline.counters["poison"] == 1


async def test_a_failure_of_every_record_still_stops_the_worker(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug on every input")

    monkeypatch.setattr(pipeline.alert_rules, "on_click", broken)
    with pytest.raises(RuntimeError, match="every input"):
        await _narrowed(pipeline, _records([f"c{i}" for i in range(10)]))


async def test_redis_away_holds_the_batch_whatever_the_error_says(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether to hold a batch follows the error's kind, not its text: a cluster error's text
    carries the command (EVALSHA of a script, the customers' keys)."""
    real, calls = pipeline.handle, []

    async def away_once(records: Any, progress: Any = None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise FeatureStoreError(
                "Redis apply failed after 6 attempts: TTL exhausted running EVALSHA of the "
                "apply script on ss:{c1}:state",
                transient=True,
            )
        return await real(records, progress)

    monkeypatch.setattr(pipeline, "handle", away_once)
    out = await _until_applied(pipeline, _records(["c1", "c2"]))
    assert out.n_valid == 2 and len(calls) == 2


async def test_a_rejected_command_still_stops_the_worker(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rejected(records: Any, progress: Any = None) -> Any:
        raise FeatureStoreError("Redis rejected apply: ERR wrong number of arguments")

    monkeypatch.setattr(pipeline, "handle", rejected)
    with pytest.raises(FeatureStoreError, match="rejected"):
        await _until_applied(pipeline, _records(["c1"]))
