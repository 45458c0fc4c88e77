"""Run one streamscore worker process: the Faust app with the scoring agent."""

from __future__ import annotations

import asyncio
import logging
import os

import faust
import torch
from aiokafka.errors import KafkaError

from models.settings import DEV_CHECKPOINT_KEY
from streams.agents import Pipeline, register
from streams.app import StreamscoreApp, create_app
from streams.embedded import create_topics
from streams.logs import setup_logging
from streams.settings import Settings, unknown_variables
from streams.web import register_pages

__all__ = ["build_app", "check_secrets", "run_worker"]

logger = logging.getLogger(__name__)


def build_app(settings: Settings) -> tuple[StreamscoreApp, Pipeline]:
    """The app with its agent, ready for ``faust.Worker`` (tests use this too)."""
    app = create_app(settings)
    pipeline = Pipeline(settings)
    register(app, pipeline)
    register_pages(app, pipeline)
    return app, pipeline


async def _create_topics_when_reachable(settings: Settings) -> None:
    """Create missing topics, waiting for the broker (with backoff) while it is unreachable."""
    t = settings.topics
    delay = 0.5
    while True:
        try:
            await create_topics(
                settings.kafka.bootstrap_servers,
                list(t.all),
                partitions=t.partitions,
                replication_factor=t.replication_factor,
            )
            return
        except (KafkaError, OSError) as exc:
            logger.warning(
                "broker %s not reachable (%r); retrying in %.1fs",
                settings.kafka.bootstrap_servers,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def check_secrets(settings: Settings) -> None:
    """Refuse the built-in checkpoint key: checkpoints and the shared models are pickles signed
    with it, and anyone who can write them and knows the key could make the worker load theirs.
    """
    if settings.models.checkpoint_key.get_secret_value() == DEV_CHECKPOINT_KEY:
        raise SystemExit(
            "refusing to start with the built-in checkpoint key: set "
            "STREAMSCORE_MODELS__CHECKPOINT_KEY to a secret of your own (the same on every "
            "worker of a deployment), e.g. from "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`"
        )


def run_worker(settings: Settings) -> None:
    """Create missing topics, then run the worker until SIGTERM/SIGINT."""
    setup_logging(settings.worker.log_level, json=settings.worker.log_json)
    for name in unknown_variables(os.environ):
        logger.warning("unknown setting %s is ignored", name)
    check_secrets(settings)
    # One intra-op thread: the LSTM's micro-batches are small and a second OpenMP thread
    # spin-waits on the core the event loop needs (benchmarks/README.md: intent stage
    # ~25x cheaper, in-process throughput ~3x on 2 cores).
    torch.set_num_threads(1)
    asyncio.run(_create_topics_when_reachable(settings))
    app, _ = build_app(settings)
    logger.info(
        "starting worker %s on %s (fetch wait %s ms, session timeout %ss)",
        settings.worker.app_id,
        settings.kafka.bootstrap_servers,
        settings.kafka.fetch_max_wait_ms,
        settings.kafka.session_timeout_s,
    )
    worker = faust.Worker(
        app,
        loglevel=settings.worker.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()
