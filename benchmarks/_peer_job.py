"""What the two peers share around streamscore's own ``Pipeline``.

Both peers run ``streams.agents.Pipeline`` (same settings from ``STREAMSCORE_*``, same
features, models, decisions, outcomes) on one event at a time; only the framework around it
(consume, send, commit) and the batch size differ from the streamscore worker. This module
holds the bits that make the job identical: process setup as ``streams.worker.run_worker``
does it, the input record tuple, the tick work, and the outputs as ``(topic, key, record)``
in the order (and with the keys) streamscore's ``publish`` sends them.
"""

from __future__ import annotations

import sys
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
    """The work of streamscore's timers (``Pipeline.due``: due alerts, outcomes, labels; and
    the model merge, ``Pipeline.share_models``).

    streamscore retires what it took once the records are acknowledged; the peers publish
    after this returns and do not report acks back, so they retire at once (the same Redis
    work per tick, at-most-once for a crash in between).
    """
    due = await pipeline.due()
    await pipeline.retire(due)
    await pipeline.share_models()
    return due.outputs


def outputs(topics: TopicSettings, out: BatchOutputs) -> list[Output]:
    """Every output of ``out``, keyed and ordered as streamscore publishes them."""
    return [
        *[Output(topics.offers, o.customer_id.encode(), o) for o in out.offers],
        *[Output(topics.alerts, a.customer_id.encode(), a) for a in out.alerts],
        *[Output(topics.dead_letters, (d.key or "").encode(), d) for d in out.dead_letters],
        *[Output(topics.intents, i.customer_id.encode(), i) for i in out.intents],
        *[Output(topics.offer_outcomes, o.customer_id.encode(), o) for o in out.outcomes],
    ]


def run_faust_worker(app: faust.App, loglevel: str) -> None:
    """Run ``app`` as a Faust worker in this process until it is stopped, with the options
    streamscore's own worker uses (``streams.worker.run_worker``)."""
    sys.argv = [*sys.argv[:1], "worker"]
    faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    ).execute_from_commandline()
