"""Where an event becomes features, scores, offers and alerts.

One agent reads the three input topics in batches (``stream.take_events``). For each batch,
``Pipeline.handle`` does, with plain calls:

1. validate every record (``features.events.parse_event``); bad ones become dead letters;
2. apply the valid events to the Redis feature store in one round trip;
3. score them with the online models (propensity, segment, session intent) and learn;
4. decide offers and alerts, claim the per-customer contact slot in Redis (one round trip);
5. publish offers, alerts and dead letters and wait for the broker's acknowledgements.

Only then does the agent return the batch to Faust, which acks it and commits its offsets:
at-least-once delivery plus idempotent features give effectively-once features.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT, StreamT

from features.events import Click, Event, Feedback, InvalidEvent, Limits, Purchase, parse_event
from features.store import FeatureResult, FeatureStore, FeatureStoreError
from models.alerts import AlertRules, CartWatch
from models.bundle import ModelBundle
from models.catalog import load_catalog
from models.ids import alert_id, offer_event_id
from models.policy import OfferPolicy
from streams.app import StreamscoreApp
from streams.records import Alert, DeadLetter, Offer
from streams.settings import Settings

__all__ = ["BatchOutputs", "Pipeline", "register"]

logger = logging.getLogger(__name__)

_KINDS = ("clicks", "purchases", "feedback")


@dataclass(slots=True)
class BatchOutputs:
    offers: list[Offer] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    n_valid: int = 0
    n_duplicates: int = 0


class _EventClock:
    """Event time that keeps moving with the wall clock between events.

    ``now()`` is the latest event time seen plus the wall time elapsed since it was seen, so
    label horizons and cart timeouts expire on idle streams too, while scripted streams with
    old timestamps are judged by their own time.
    """

    __slots__ = ("_seen_at", "_watermark")

    def __init__(self) -> None:
        self._watermark = 0.0
        self._seen_at = time.monotonic()

    def observe(self, ts: float) -> None:
        if ts > self.now():
            self._watermark = ts
            self._seen_at = time.monotonic()

    def now(self) -> float:
        if self._watermark == 0.0:
            return 0.0
        return self._watermark + (time.monotonic() - self._seen_at)


class Pipeline:
    """The per-worker scoring pipeline: feature store, models and decision rules."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = FeatureStore(settings.redis, settings.features)
        self.limits = Limits(max_payload_bytes=settings.worker.max_payload_bytes)
        self.policy = OfferPolicy(load_catalog(settings.decision.catalog_path), settings.decision)
        self.alert_rules = AlertRules(settings.decision)
        self.cart_watch = CartWatch(settings.decision)
        self.clock = _EventClock()
        self.models: ModelBundle | None = None
        self._kind_by_topic = dict(zip(settings.topics.inputs, _KINDS, strict=True))
        self._started = False
        self._last_checkpoint = time.monotonic()
        self.counters: dict[str, int] = dict.fromkeys(
            ("records", "valid", "duplicates", "offers", "alerts", "dead_letters"), 0
        )

    async def start(self) -> None:
        if self._started:
            return
        await self.store.start()
        self.models = ModelBundle.load_or_new(None, self.settings.models)
        self._started = True
        logger.info("pipeline started, models %s", self.models.version)

    async def close(self) -> None:
        if not self._started:
            return
        self.checkpoint()
        await self.store.close()
        self._started = False

    def count(self, n_records: int, out: BatchOutputs) -> None:
        c = self.counters
        c["records"] += n_records
        c["valid"] += out.n_valid
        c["duplicates"] += out.n_duplicates
        c["offers"] += len(out.offers)
        c["alerts"] += len(out.alerts)
        c["dead_letters"] += len(out.dead_letters)

    def stats(self) -> dict[str, Any]:
        """Counters and model metrics, for the ``/stats`` page and the demo."""
        doc: dict[str, Any] = {"ready": self._started, **self.counters}
        if self.models is not None:
            doc["model_version"] = self.models.version
            doc["propensity_auc"] = self.models.propensity.auc
            doc["propensity_log_loss"] = self.models.propensity.log_loss
            doc["labels_learned"] = self.models.propensity.n_learned
        return doc

    def checkpoint(self) -> None:
        if self.models is not None:
            self.models.save(self.settings.models.checkpoint_dir)
            self._last_checkpoint = time.monotonic()

    # -- the batch ------------------------------------------------------------------------

    def validate(
        self, records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]]
    ) -> tuple[list[Event], list[DeadLetter]]:
        """Records are (topic, partition, offset, key, value, kafka timestamp in seconds)."""
        now = time.time()
        valid: list[Event] = []
        dead: list[DeadLetter] = []
        for topic, partition, offset, key, value, kafka_ts in records:
            try:
                kind = self._kind_by_topic.get(topic, topic)
                event = parse_event(kind, value, now=now, kafka_ts=kafka_ts, limits=self.limits)
            except InvalidEvent as exc:
                dead.append(_dead_letter(topic, partition, offset, key, value, exc.reason, now))
                continue
            valid.append(event)
        return valid, dead

    async def handle(
        self, records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]]
    ) -> BatchOutputs:
        valid, dead = self.validate(records)
        out = BatchOutputs(dead_letters=dead, n_valid=len(valid))
        if not valid:
            return out
        models = self.models
        if models is None:
            raise RuntimeError("Pipeline.handle called before start()")
        sentiments = [
            models.sentiment.score(e.text, e.rating) if isinstance(e, Feedback) else None
            for e in valid
        ]
        results = await self.store.apply(valid, sentiments)
        candidates: list[tuple[Offer, FeatureResult]] = []
        now_wall = time.time()
        version = models.version
        for event, result, sentiment in zip(valid, results, sentiments, strict=True):
            self.clock.observe(event.ts)
            if result.duplicate:
                out.n_duplicates += 1
            offer, alerts = self._score(event, result, sentiment, version, now_wall)
            out.alerts.extend(alerts)
            if offer is not None:
                candidates.append((offer, result))
        out.alerts.extend(self._expire(version, now_wall))
        if candidates:
            cap_s = self.settings.decision.frequency_cap_minutes * 60.0
            allowed = await self.store.claim_contacts(
                [(o.customer_id, o.trigger_event_id, o.event_ts) for o, _ in candidates], cap_s
            )
            out.offers = [o for (o, _), ok in zip(candidates, allowed, strict=True) if ok]
        return out

    def _score(
        self,
        event: Event,
        result: FeatureResult,
        sentiment: float | None,
        version: str,
        now_wall: float,
    ) -> tuple[Offer | None, list[Alert]]:
        models = self.models
        if models is None:  # pragma: no cover - guarded by handle()
            raise RuntimeError("models not loaded")
        x = result.features
        alerts: list[Alert] = []
        if isinstance(event, Click):
            propensity = models.propensity.score_click(
                event.customer_id, event.event_id, event.ts, x
            )
            segment = models.segments.assign(x)
            intent = None
            self.cart_watch.on_event(event, x)
            for a in self.alert_rules.on_click(event, x, propensity, intent):
                alerts.append(_alert(a, version, now_wall, event.ts))
            decision = self.policy.decide(
                event, x, result.top_categories, propensity, segment, intent, version
            )
            if decision is None:
                return None, alerts
            offer = Offer(
                offer_event_id=offer_event_id(event.event_id),
                customer_id=event.customer_id,
                offer_id=decision.offer_id,
                score=round(decision.score, 6),
                propensity=round(propensity, 6),
                segment=segment,
                reasons=list(decision.reasons),
                trigger_event_id=event.event_id,
                model_version=version,
                ts=now_wall,
                event_ts=event.ts,
                intent=intent,
            )
            return offer, alerts
        if isinstance(event, Purchase):
            if not result.duplicate:
                models.propensity.observe_purchase(event.customer_id, event.ts)
            self.cart_watch.on_event(event, x)
            return None, alerts
        for a in self.alert_rules.on_feedback(event, x, sentiment):
            alerts.append(_alert(a, version, now_wall, event.ts))
        return None, alerts

    def _expire(self, version: str, now_wall: float) -> list[Alert]:
        """Resolve late labels and cart timeouts up to the event clock."""
        now = self.clock.now()
        if self.models is None or now == 0.0:
            return []
        self.models.propensity.expire(now)
        return [
            _alert(self.alert_rules.cart_abandonment(due), version, now_wall, due.ts)
            for due in self.cart_watch.due(now)
        ]

    def tick(self) -> list[Alert]:
        """Periodic work between batches: expiries and checkpoints."""
        if not self._started or self.models is None:
            return []
        if time.monotonic() - self._last_checkpoint >= self.settings.models.checkpoint_every_s:
            self.checkpoint()
        return self._expire(self.models.version, time.time())


def _alert(a: Any, version: str, now_wall: float, event_ts: float) -> Alert:
    return Alert(
        alert_id=alert_id(a.trigger_event_id, a.type),
        customer_id=a.customer_id,
        type=a.type,
        severity=a.severity,
        score=round(float(a.score), 6),
        trigger_event_id=a.trigger_event_id,
        ts=now_wall,
        event_ts=event_ts,
        model_version=version,
        details=dict(a.details) if a.details else None,
    )


def _dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    now: float,
) -> DeadLetter:
    raw = value or b""
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        payload_b64=base64.b64encode(raw).decode("ascii"),
        payload_preview=raw[:200].decode("utf-8", errors="replace"),
        key=key.decode("utf-8", errors="replace")[:200] if key is not None else None,
        ts=now,
    )


def register(app: StreamscoreApp, pipeline: Pipeline) -> None:
    """Declare the topics and the scoring agent on ``app``."""
    settings = app.settings
    topics = settings.topics
    inputs = app.topic(
        *topics.inputs,
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
    )
    offers = app.topic(topics.offers, key_type=str, value_type=Offer, key_serializer="raw")
    alerts = app.topic(topics.alerts, key_type=str, value_type=Alert, key_serializer="raw")
    dead_letters = app.topic(
        topics.dead_letters, key_type=str, value_type=DeadLetter, key_serializer="raw"
    )
    batch_max = settings.worker.batch_max
    within = settings.worker.batch_wait_ms / 1000.0

    async def publish(out: BatchOutputs) -> None:
        futures = [
            *[await offers.send(key=o.customer_id.encode(), value=o) for o in out.offers],
            *[await alerts.send(key=a.customer_id.encode(), value=a) for a in out.alerts],
            *[
                await dead_letters.send(key=(d.key or "").encode(), value=d)
                for d in out.dead_letters
            ],
        ]
        if futures:
            await asyncio.gather(*futures)

    @app.agent(inputs, name="score")
    async def score(stream: StreamT[bytes]) -> None:
        try:
            await pipeline.start()
            async for batch in stream.take_events(batch_max, within=within):
                records = [_record(e) for e in batch]
                out = await _until_applied(pipeline, records)
                await publish(out)
                pipeline.count(len(batch), out)
        except Exception as exc:
            # A bug or an unrecoverable dependency: stop the worker (its offsets stay where
            # they are) rather than idle with a dead agent; the supervisor restarts it.
            logger.critical("scoring agent failed, stopping the worker: %r", exc, exc_info=True)
            await app.crash(exc)
            raise
        finally:
            await pipeline.close()

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        doc = pipeline.stats()
        doc["assigned_partitions"] = len(app.consumer.assignment())
        return web.json(doc)

    @app.timer(1.0)
    async def tick() -> None:
        alerts_due = pipeline.tick()
        if alerts_due:
            await publish(BatchOutputs(alerts=alerts_due))


async def _until_applied(
    pipeline: Pipeline,
    records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]],
) -> BatchOutputs:
    """Handle a batch, waiting out Redis outages instead of dropping or skipping the batch.

    While Redis is down the batch is not acked, so no offset moves past it; Faust's stream
    buffer fills and the consumer stops fetching (backpressure). Idempotent updates make
    the retry of a half-applied batch safe.
    """
    delay = 0.1
    while True:
        try:
            return await pipeline.handle(records)
        except FeatureStoreError as exc:
            if "rejected" in str(exc) or "script" in str(exc).lower():
                raise
            logger.warning(
                "Redis unavailable, holding the batch and retrying in %.1fs: %s", delay, exc
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _record(event: EventT) -> tuple[str, int, int, bytes | None, bytes | None, float | None]:
    m = event.message
    ts = m.timestamp if m.timestamp and m.timestamp > 0 else None
    return (m.topic, m.partition, m.offset, m.key, m.value, ts)
