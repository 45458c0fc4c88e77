"""The Faust application, built from the one ``Settings`` object.

Two fixes for Kafka-compatible brokers that hold requests (Tansu does), both settings:

- Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``; a broker that holds an empty
  fetch that long adds ~1.4 s to every event. ``KafkaSettings.fetch_max_wait_ms`` (10 ms by
  default) replaces it, through a small transport subclass.
- Faust's default session timeout is 60 s and Tansu holds a group join for about half the
  session timeout, so a worker waited ~30 s to be Ready. ``KafkaSettings.session_timeout_s``
  (6 s by default, Apache Kafka's minimum) makes it ~4 s.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from streams.settings import KafkaSettings, Settings

__all__ = ["StreamscoreApp", "create_app", "faust_credentials"]


class _TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        if isinstance(app, StreamscoreApp):
            # aiokafka reads this attribute when it builds its fetcher in start().
            consumer._fetch_max_wait_ms = app.settings.kafka.fetch_max_wait_ms
        return consumer


class _TunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _TunedTransport(faust_aiokafka.Transport):
    Consumer = _TunedConsumer


class StreamscoreApp(faust.App):
    """A ``faust.App`` that carries the settings and uses the tuned Kafka transport."""

    settings: Settings

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(settings.worker.app_id, **kwargs)

    def _new_transport(self) -> TransportT:
        return _TunedTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return _TunedTransport(self.conf.broker_producer, self)


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
        **faust_credentials(kafka),
    )
