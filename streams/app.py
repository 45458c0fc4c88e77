"""The Faust application, built from the one ``Settings`` object.

Two fixes for Kafka-compatible brokers that hold requests (Tansu does), both settings:

- Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``; a broker that holds an empty
  fetch that long adds ~1.4 s to every event. ``KafkaSettings.fetch_max_wait_ms`` (10 ms by
  default) replaces it, through a small transport subclass.
- Faust's default session timeout is 60 s and Tansu holds a group join for about half the
  session timeout, so a worker waited ~30 s to be Ready. ``KafkaSettings.session_timeout_s``
  (6 s by default, Apache Kafka's minimum) makes it ~4 s.

And two about the consumer group (``docs/scaling.md``, "Partitions and workers"):

- No standby replicas: state lives in Redis, so a standby would warm nothing, and with one
  Faust's assignor caps each worker at ceil(partitions / workers) while keeping everyone's
  partitions, so a third worker on 4 partitions got none. Without standbys faust-streaming
  would hand aiokafka its round-robin assignor, which splits each topic on its own
  (``clicks[1]`` on one worker, ``purchases[1]`` on another); the consumer keeps Faust's
  assignor, which gives a worker the same partition numbers of every input topic.
- A stopping worker leaves the group as soon as its in-flight events are handled and
  committed (``WorkerSettings.stop_drain_s`` at most), before the rest of its shutdown
  (merging and checkpointing models, closing Redis), which used to run first.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TopicT, TransportT

from streams.settings import KafkaSettings, Settings

__all__ = ["StreamscoreApp", "create_app", "faust_credentials"]

logger = logging.getLogger(__name__)


class _TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        if isinstance(app, StreamscoreApp):
            # aiokafka reads this attribute when it builds its fetcher in start().
            consumer._fetch_max_wait_ms = app.settings.kafka.fetch_max_wait_ms
        # Faust's co-partitioning assignor, also without standbys (see the module docstring);
        # aiokafka reads the strategy when it builds its group coordinator in start().
        self._assignor = app.assignor
        consumer._partition_assignment_strategy = (app.assignor,)
        return consumer

    async def leave_group(self) -> None:
        """Send LeaveGroup now (after the rebalance in flight, if any, completes); the
        connection stays open for the rest of the shutdown."""
        await self.call_thread(self._leave_group)

    async def _leave_group(self) -> None:
        consumer = self._consumer
        if consumer is not None and consumer._coordinator is not None:
            await consumer._coordinator.close()


class _TunedConsumer(faust_aiokafka.Consumer):
    _thread: _TunedConsumerThread

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def leave_group(self) -> None:
        await self._thread.leave_group()


class _TunedTransport(faust_aiokafka.Transport):
    Consumer = _TunedConsumer


class StreamscoreApp(faust.App):
    """A ``faust.App`` that carries the settings, uses the tuned Kafka transport and leaves
    the consumer group first when it stops."""

    settings: Settings

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(settings.worker.app_id, **kwargs)

    def input_topics(self) -> TopicT:
        """The click, purchase and feedback topics as one Faust topic of raw keys and values
        (each record is validated by the pipeline, not decoded by Faust)."""
        return self.topic(
            *self.settings.topics.inputs,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    def _new_transport(self) -> TransportT:
        return _TunedTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return _TunedTransport(self.conf.broker_producer, self)

    async def on_stop(self) -> None:
        # Faust stops fetching (partitions paused) and flushes the producer; the agents, the
        # consumer and the rest stop after this returns.
        await super().on_stop()
        await self._leave_group()

    async def _leave_group(self) -> None:
        """Drain, commit and leave the group, so the partitions move at once.

        Without this the worker left last, when aiokafka closed: after the agents' shutdown
        (the model merge alone may take up to 5 s), while its partitions waited unread.
        """
        consumer = self._consumer
        if not isinstance(consumer, _TunedConsumer):
            return
        try:
            assignment = consumer.assignment()
        except ConsumerNotStarted:
            return
        started = time.monotonic()
        drain = self.settings.worker.stop_drain_s
        try:
            await asyncio.wait_for(consumer.wait_empty(), timeout=drain)  # commits at the end
        except TimeoutError:
            logger.warning(
                "events in flight after %.1f s: the partitions' next owner reads them again",
                drain,
            )
            try:
                await asyncio.wait_for(consumer.commit(), timeout=drain)
            except TimeoutError:
                logger.warning("offsets not committed within %.1f s", drain)
        # Bounded: past a session timeout the group has dropped this member anyway.
        bound = max(self.conf.broker_session_timeout, self.conf.broker_rebalance_timeout)
        try:
            await asyncio.wait_for(consumer.leave_group(), timeout=bound)
        except TimeoutError:
            logger.warning("consumer group not left within %.1f s", bound)
            return
        logger.info(
            "left the consumer group %.2f s after the stop began (%d topic partitions released)",
            time.monotonic() - started,
            len(assignment),
        )
        if assignment:
            # This worker acts on these partitions no more (timers included) while it stops.
            await self.on_partitions_revoked.send(assignment)


def faust_credentials(kafka: KafkaSettings) -> dict[str, Any]:
    """Faust keyword arguments for SASL and TLS, from the Kafka settings."""
    protocol = kafka.security_protocol
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    if protocol.startswith("SASL"):
        if not kafka.sasl_username or kafka.sasl_password is None:
            raise ValueError(f"security_protocol {protocol} needs sasl_username and sasl_password")
        return {
            "broker_credentials": faust.SASLCredentials(
                username=kafka.sasl_username,
                password=kafka.sasl_password.get_secret_value(),
                ssl_context=context,
                mechanism=kafka.sasl_mechanism,
            )
        }
    if context is not None:
        return {"broker_credentials": faust.SSLCredentials(context)}
    return {}


def create_app(settings: Settings) -> StreamscoreApp:
    """A configured, agent-less app; ``streams.agents.register`` adds the agents."""
    kafka = settings.kafka
    worker = settings.worker
    return StreamscoreApp(
        settings,
        broker=kafka.broker_url,
        store="memory://",
        datadir=worker.data_dir,
        web_enabled=worker.web_enabled,
        web_host=worker.web_host,
        web_port=worker.web_port,
        web_bind=worker.web_host,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_request_timeout=max(kafka.request_timeout_s, kafka.session_timeout_s),
        broker_max_poll_records=kafka.max_poll_records,
        broker_commit_interval=1.0,
        producer_linger=kafka.producer_linger_ms / 1000.0,
        producer_acks=kafka.producer_acks,
        consumer_auto_offset_reset=kafka.auto_offset_reset,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        topic_allow_declare=True,
        stream_wait_empty=False,
        # state lives in Redis: a standby would warm nothing (see the module docstring)
        table_standby_replicas=0,
        **faust_credentials(kafka),
    )
