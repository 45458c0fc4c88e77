"""What the two peers share around streamscore's own ``Pipeline``.

Both peers run ``streams.agents.Pipeline`` (same settings from ``STREAMSCORE_*``, same
features, models, decisions, outcomes) on one event at a time; only the framework around it
(consume, send, commit) and the batch size differ from the streamscore worker. This module
holds the bits that make the job identical: process setup as ``streams.worker.run_worker``
does it, the input record tuple, the tick work, and the outputs as ``(topic, key, record)``
in the order (and with the keys) streamscore's ``publish`` sends them.
"""

from __future__ import annotations

from typing import NamedTuple

import faust
import torch

from streams.agents import BatchOutputs, Pipeline
from streams.logs import setup_logging
from streams.settings import Settings, TopicSettings

__all__ = ["InputRecord", "Output", "outputs", "prepare_process", "record", "tick"]

InputRecord = tuple[str, int, int, bytes | None, bytes | None, float | None]


class Output(NamedTuple):
    """One output record and where it goes."""

    topic: str
    key: bytes
    record: faust.Record


def prepare_process(settings: Settings) -> None:
    """Logging and one torch thread, as the streamscore worker sets them up."""
    setup_logging(settings.worker.log_level, json=settings.worker.log_json)
    torch.set_num_threads(1)


def record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    timestamp_s: float | None,
) -> InputRecord:
    """The tuple ``Pipeline.handle`` takes; a missing or zero broker timestamp is ``None``."""
    ts = timestamp_s if timestamp_s and timestamp_s > 0 else None
    return (topic, partition, offset, key, value, ts)


async def tick(pipeline: Pipeline) -> BatchOutputs:
    """The work of streamscore's 1 s timer: due alerts and expired offer outcomes."""
    pipeline.tick()
    times = pipeline.settled_times()
    outcomes, windows = await pipeline.offer_loop.expire(times, pipeline.clock.now())
    labels, label_sets = await pipeline.resolve_labels()
    carts, cart_sets = await pipeline.resolve_carts()
    churn, churn_sets = await pipeline.resolve_churn()
    await pipeline.resolve_sessions()
    # streamscore forgets windows, labels and carts once their records are acknowledged; the
    # peers publish after this returns and do not report acks back, so they forget at once
    # (the same Redis work per tick, at-most-once for a crash in between).
    await pipeline.offer_loop.forget(windows)
    await pipeline.forget_labels(label_sets)
    await pipeline.forget_carts(cart_sets)
    await pipeline.forget_churn(churn_sets)
    return BatchOutputs(alerts=[*carts, *churn], outcomes=outcomes, labels=labels)


def outputs(topics: TopicSettings, out: BatchOutputs) -> list[Output]:
    """Every output of ``out``, keyed and ordered as streamscore publishes them."""
    return [
        *[Output(topics.offers, o.customer_id.encode(), o) for o in out.offers],
        *[Output(topics.alerts, a.customer_id.encode(), a) for a in out.alerts],
        *[Output(topics.dead_letters, (d.key or "").encode(), d) for d in out.dead_letters],
        *[Output(topics.intents, i.customer_id.encode(), i) for i in out.intents],
        *[Output(topics.offer_outcomes, o.customer_id.encode(), o) for o in out.outcomes],
    ]
