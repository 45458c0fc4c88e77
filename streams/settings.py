"""The one settings object, read from the environment (``STREAMSCORE_...``).

Nested sections use ``__``: ``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS=host:9092``,
``STREAMSCORE_REDIS__URL=redis://host:6379/0``. Tests construct ``Settings`` directly.

>>> s = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9999"))
>>> s.kafka.broker_url
'kafka://127.0.0.1:9999'
>>> s.topics.clicks, s.topics.dead_letters
('clicks', 'dead-letters')
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.settings import FeatureSettings, RecommendSettings, RedisSettings
from models.settings import (
    AlertSettings,
    DecisionSettings,
    IntentSettings,
    ModelSettings,
    TextSettings,
)

__all__ = ["KafkaSettings", "Settings", "TopicSettings", "WorkerSettings", "unknown_variables"]


class KafkaSettings(BaseModel):
    """Broker connection and the consumer/producer knobs that matter for latency."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    # Faust's aiokafka driver hard-codes 1500 ms; a broker that holds an empty fetch that long
    # (Tansu does) turns it into ~1.4 s of latency. We make it a setting, small by default.
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    # Tansu holds a group join for about half the session timeout: 6 s (Apache Kafka's
    # minimum with default broker settings) gives a Ready worker in ~4 s instead of ~30 s.
    session_timeout_s: float = Field(default=6.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.5, gt=0)
    rebalance_timeout_s: float = Field(default=6.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    producer_linger_ms: float = Field(default=1.0, ge=0)
    producer_acks: Literal[-1, 0, 1] = -1
    max_poll_records: int = Field(default=1000, ge=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{h.strip()}" for h in self.bootstrap_servers.split(","))


class TopicSettings(BaseModel):
    """Topic names (each overridable) and how many partitions to create."""

    model_config = ConfigDict(frozen=True)

    clicks: str = "clicks"
    purchases: str = "purchases"
    feedback: str = "feedback"
    offers: str = "offers"
    alerts: str = "alerts"
    dead_letters: str = "dead-letters"
    offer_outcomes: str = "offer-outcomes"
    suppressions: str = "suppressions"  # opt-outs in: {customer_id, suppressed, reason}
    # Per-click session intent, published only when WorkerSettings.publish_intents is on.
    intents: str = "session-intents"
    # Resolved propensity labels, published only when WorkerSettings.publish_labels is on.
    labels: str = "propensity-labels"
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.clicks, self.purchases, self.feedback)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The topics the scoring agent writes."""
        return (
            self.offers,
            self.alerts,
            self.dead_letters,
            self.offer_outcomes,
            self.intents,
            self.labels,
        )

    @property
    def all(self) -> tuple[str, ...]:
        """Every topic the worker reads or writes (created when missing)."""
        return (*self.inputs, self.suppressions, *self.outputs)


class WorkerSettings(BaseModel):
    """The Faust worker process."""

    model_config = ConfigDict(frozen=True)

    app_id: str = "streamscore"
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_enabled: bool = True
    # Events are handled in batches: up to batch_max, or what arrived within batch_wait_ms.
    # Not 0: Faust's take_events reads 0 as "no time limit" and waits for a full batch, so a
    # worker at a low rate would never answer.
    batch_max: int = Field(default=500, ge=1)
    batch_wait_ms: float = Field(default=5.0, gt=0)
    # Batches whose outputs may still await the broker's acknowledgement while the next batch
    # is handled (their input offsets are committed only once acknowledged); 0 = wait each.
    unacked_batches: int = Field(default=2, ge=0)
    # On SIGTERM: how long the worker waits for the events it has started on to be handled
    # and committed before it leaves the consumer group (streams/app.py); what is still in
    # flight then is read again by the partitions' next owner.
    stop_drain_s: float = Field(default=2.0, ge=0)
    max_payload_bytes: int = Field(default=16_384, ge=256)
    # Event time (streams/clock.py). An event's ts may be at most this far ahead of its
    # record's Kafka timestamp (or of the wall clock, whichever is earlier); a later ts is
    # clamped to that bound (the event still counts, at the time its record was written) or,
    # with future_ts=dead_letter, sent to the dead-letter topic with the reason.
    max_ts_ahead_s: float = Field(default=300.0, ge=0)
    future_ts: Literal["clamp", "dead_letter"] = "clamp"
    # An input partition with no event for this long no longer holds the worker's time back.
    idle_partition_s: float = Field(default=5.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    # Publish every click's session intent to TopicSettings.intents (one record per click).
    publish_intents: bool = False
    # Publish every resolved propensity label to TopicSettings.labels (one record per click).
    publish_labels: bool = False
    data_dir: str = "var/faust"


class Settings(BaseSettings):
    """Everything streamscore reads from the environment, in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMSCORE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    redis: RedisSettings = RedisSettings()
    features: FeatureSettings = FeatureSettings()
    models: ModelSettings = ModelSettings()
    intent: IntentSettings = IntentSettings()
    decision: DecisionSettings = DecisionSettings()
    recommend: RecommendSettings = RecommendSettings()
    text: TextSettings = TextSettings()
    alerting: AlertSettings = AlertSettings()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``STREAMSCORE_`` variables that name no setting (a typo is otherwise ignored in silence:
    ``STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS``, one underscore, left the worker on 127.0.0.1:9092),
    each with the closest known name when there is one.

    >>> unknown_variables({"STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS": "b:9092", "HOME": "/root"})
    ['STREAMSCORE_KAFKA_BOOTSTRAP_SERVERS (did you mean STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS?)']
    >>> unknown_variables({"STREAMSCORE_REDIS__URL": "redis://r:6379/0"})
    []
    """
    known = set(_KNOWN) | set(_EXTRA)
    out = []
    for name in sorted(environ):
        if not name.startswith("STREAMSCORE_") or name in known:
            continue
        close = difflib.get_close_matches(name, _KNOWN, n=1, cutoff=0.8)
        out.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return out


def _known_names() -> list[str]:
    names = []
    for group, info in Settings.model_fields.items():
        model = info.annotation
        fields = getattr(model, "model_fields", {})
        names += [f"STREAMSCORE_{group}__{field}".upper() for field in fields]
    return names


_KNOWN: Final = _known_names()
# Read by the tooling around the worker rather than by ``Settings``.
_EXTRA: Final = frozenset({"STREAMSCORE_TEST_DOCKER"})
