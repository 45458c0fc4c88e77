"""Peer 2: streamscore's job in Quix Streams, one message at a time.

Run as a subprocess by the harness (``python -m benchmarks.peers_quix``), with the same
``STREAMSCORE_*`` environment as the streamscore worker. Quix callbacks are synchronous, so
the process makes one asyncio loop at startup, starts streamscore's own ``Pipeline`` on it
and runs ``pipeline.handle([record])`` on it for each message inside a stateless
``sdf.apply(..., expand=True)``. Every output (offers, alerts, dead letters, intents,
outcomes) goes out through Quix's ``to_topic`` with the topic picked per record. The work
of streamscore's 1 s tick timer runs inside ``apply`` once a second of wall time has passed
(so only while messages arrive).

Quix's own state (RocksDB) is not used: the features live in the same Redis as streamscore's.
On Tansu, Quix runs with ``use_changelog_topics=False`` and ``auto_create_topics=False``
(the harness creates the topics); if it cannot start, it logs why and exits 3.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models import SerializationContext, Serializer

from benchmarks._peer_job import Output, outputs, prepare_process, record, tick
from streams.agents import Pipeline, freeze_heap
from streams.settings import Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)

_TICK_S = 1.0


class _RecordSerializer(Serializer):
    """An ``Output``'s record, serialized as streamscore's worker writes it."""

    def __call__(self, value: Output, ctx: SerializationContext) -> bytes:
        return value.record.dumps()


def _application(settings: Settings) -> Application:
    kafka = settings.kafka
    return Application(
        broker_address=kafka.bootstrap_servers,
        consumer_group=settings.worker.app_id,
        auto_offset_reset=kafka.auto_offset_reset,
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=Path(settings.worker.data_dir) / "quix-state",
        commit_interval=1.0,
        loglevel=None,
        producer_extra_config={
            "linger.ms": kafka.producer_linger_ms,
            "acks": "all" if kafka.producer_acks == -1 else str(kafka.producer_acks),
        },
        # the worker's group timings too: librdkafka's 45 s session timeout makes Tansu hold
        # the group join for ~23 s (startup only; not part of the measured figures)
        consumer_extra_config={
            "fetch.wait.max.ms": kafka.fetch_max_wait_ms,
            "session.timeout.ms": round(kafka.session_timeout_s * 1000),
            "heartbeat.interval.ms": round(kafka.heartbeat_interval_s * 1000),
        },
    )


def main() -> int:
    settings = Settings()
    prepare_process(settings)
    topics = settings.topics
    loop = asyncio.new_event_loop()
    pipeline = Pipeline(settings)
    loop.run_until_complete(pipeline.start())
    freeze_heap()
    app = _application(settings)
    inputs = [
        app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        for name in topics.inputs
    ]
    sinks = {
        name: app.topic(name, key_serializer="bytes", value_serializer=_RecordSerializer())
        for name in topics.outputs
    }
    last_tick = time.monotonic()

    def score(value: bytes, key: bytes | None, timestamp: int, headers: Any) -> list[Output]:
        nonlocal last_tick
        ctx = message_context()
        rec = record(ctx.topic, ctx.partition, ctx.offset, key, value, timestamp / 1000.0)
        out = outputs(topics, loop.run_until_complete(pipeline.handle([rec])))
        if time.monotonic() - last_tick >= _TICK_S:
            last_tick = time.monotonic()
            out += outputs(topics, loop.run_until_complete(tick(pipeline)))
        return out

    for topic in inputs:
        sdf = app.dataframe(topic).apply(score, metadata=True, expand=True)
        sdf.to_topic(lambda v, k, ts, h: sinks[v.topic], key=lambda v: v.key)
    try:
        app.run()
    finally:
        loop.run_until_complete(pipeline.close())
        loop.close()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except Exception:
        logger.exception("the Quix peer failed")
        raise SystemExit(3) from None
