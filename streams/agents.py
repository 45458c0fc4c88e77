"""Where an event becomes features, scores, offers and alerts.

One agent reads the three input topics in batches (``stream.take_events``). For each batch,
``Pipeline.handle`` does, with plain calls, each step handed what the steps before returned
(``docs/architecture.md`` follows one click through them):

1. validate every record (``features.events.parse_event``); bad ones become dead letters;
2. three overlapped Redis round trips: apply the valid events to the feature store (the
   features), read the clickers' contact states (``OfferLoop.prepare``) and their recent
   items (``Recommendations.prepare``);
3. step the session-intent LSTM for the new clicks (``models.intent``);
4. per event, score with the online models (propensity, segment), raise alerts, and let the
   arbiter choose an offer under the customer's contact state (``OfferLoop.choose``);
5. two overlapped round trips: claim the per-customer contact slot of each offer in Redis
   (the frequency cap), and learn co-occurrence and recommend items on the offers;
6. open the published offers' outcome windows with the arbiter's choices and the items
   (``OfferLoop.finish``; a replayed offer gets back what was published the first time);
7. publish offers, alerts, outcomes and dead letters.

A batch's input offsets are released for commit only once the broker has acknowledged all of
its outputs (``settle``; the next batch is handled meanwhile, up to ``unacked_batches``):
at-least-once delivery plus idempotent features give effectively-once features.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import hashlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NamedTuple, TypeVar

import orjson
from faust.types import TP, EventT, StreamT

from features.cooccurrence import CustomerItems
from features.events import Click, Event, Feedback, InvalidEvent, Limits, Purchase, parse_event
from features.store import FeatureResult, FeatureStore, FeatureStoreError
from models.alerts.carts import CartStep, CartStore, DueCarts, FiredCart
from models.alerts.churn import churn_alert
from models.alerts.churn_store import ChurnStep, DueSilences, RaisedChurn
from models.alerts.rules import AlertRules
from models.bundle import ModelBundle, SharedModels
from models.checkpoint import CheckpointError
from models.decisioning.arbiter import Choice
from models.decisioning.catalog import load_catalog
from models.decisioning.outcomes import ContactState, DueWindows
from models.decisioning.policy import ClickContext, OfferPolicy
from models.ids import alert_id, offer_event_id
from models.intent.service import IntentService
from models.intent.sessions import SessionEnds
from models.online.labels import DueLabels, LabelStore, PendingClick
from models.sync import ModelSync
from streams.alerting import Alerting
from streams.app import StreamscoreApp
from streams.clock import EventTime
from streams.logs import event_fields
from streams.metrics import Metrics, Stopwatch
from streams.offer_loop import OfferLoop, parse_suppression
from streams.recommendations import Recommendations
from streams.records import (
    Alert,
    DeadLetter,
    Offer,
    OfferOutcome,
    PropensityLabel,
    SessionIntent,
)
from streams.settings import Settings

__all__ = ["BatchOutputs", "BatchProgress", "DueWork", "Pipeline", "register"]

logger = logging.getLogger(__name__)

_KINDS = ("clicks", "purchases", "feedback")
_T = TypeVar("_T")


@dataclass(slots=True)
class BatchOutputs:
    offers: list[Offer] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    intents: list[SessionIntent] = field(default_factory=list)
    outcomes: list[OfferOutcome] = field(default_factory=list)
    labels: list[PropensityLabel] = field(default_factory=list)
    n_valid: int = 0
    n_duplicates: int = 0
    n_clamped: int = 0  # valid events whose ts was clamped to their record's time bound
    # for metrics: the valid events, the replays among them, seconds per stage
    events: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Decided:
    """A batch once learned and decided: what its remaining steps (claims, windows) need."""

    out: BatchOutputs
    valid: list[Event] = field(default_factory=list)
    results: list[FeatureResult] = field(default_factory=list)
    recent: dict[str, CustomerItems] = field(default_factory=dict)
    candidates: list[tuple[Offer, FeatureResult]] = field(default_factory=list)
    choices: dict[str, Choice] = field(default_factory=dict)  # by offer_event_id
    partitions: dict[str, int] = field(default_factory=dict)  # customer id -> input partition
    # the clicks waiting for their propensity label and the purchases that decide them, each
    # with its input partition (``LabelStore.add``)
    pending: list[tuple[int, PendingClick]] = field(default_factory=list)
    buys: list[tuple[int, str, float]] = field(default_factory=list)
    carts: list[CartStep] = field(default_factory=list)  # the batch's events, for CartStore
    alerts: list[Alert] = field(default_factory=list)  # raised, before their cool-downs
    churn: list[ChurnStep] = field(default_factory=list)  # the batch's clicks and purchases
    # each session the batch touched: ("step", ts) if it is still open, ("end", ts) if a
    # purchase closed it last (SessionEnds), by (partition, customer, session)
    sessions: dict[tuple[int, str, str], tuple[str, float]] = field(default_factory=dict)
    times: dict[int, float] = field(default_factory=dict)  # partition times after validate


class Validated(NamedTuple):
    """``Pipeline.validate``'s answer for a batch of records."""

    events: list[Event]
    dead_letters: list[DeadLetter]
    clamped: int  # events whose ts was clamped to their record's time bound
    partitions: dict[str, int]  # customer id -> the input partition its events came from
    sources: list[int]  # each valid event's index in the batch's records


@dataclass(slots=True)
class BatchProgress:
    """What one batch has done so far, kept across its retries (``_until_applied``).

    A retry is not a replay: it continues the batch. ``token`` lets the feature store tell
    this batch's own earlier writes (a reply lost after the script ran) from a replay; the
    rest records the steps already done, so none is done twice.
    """

    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    decided: _Decided | None = None
    offers: list[Offer] | None = None  # claimed
    recommended: bool = False
    labeled: bool = False  # clicks and purchases queued for the propensity labels
    early_carts: list[Alert] | None = None  # cart events applied; the carts fired early
    alerts: list[Alert] | None = None  # the batch's alerts past their cool-down
    churn_alerts: list[Alert] | None = None  # churn observed; its alerts past their cool-down
    sessions: bool = False  # session ends noted, purchased sessions handed to the fine-tuner
    outcomes: list[OfferOutcome] | None = None  # windows opened, purchases attributed


@dataclass(slots=True)
class DueWork:
    """What the timer found due (``Pipeline.due``): the outputs to publish, then the taken
    windows, labels, carts and silences to ``Pipeline.retire``."""

    outputs: BatchOutputs
    windows: list[DueWindows]
    labels: list[DueLabels]
    carts: list[DueCarts]
    churn: list[DueSilences]


class Pipeline:
    """The per-worker scoring pipeline: feature store, models and decision rules."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = FeatureStore(settings.redis, settings.features)
        self.limits = Limits(max_payload_bytes=settings.worker.max_payload_bytes)
        self.policy = OfferPolicy(load_catalog(settings.decision.catalog_path), settings.decision)
        self.offer_loop = OfferLoop(settings, self.policy)
        self.alert_rules = AlertRules(settings.decision)
        decision = settings.decision
        self.carts = CartStore(
            settings.redis.key_prefix,
            decision.cart_abandonment_minutes * 60.0,
            decision.early_abandon_prob,
            decision.cart_watch_max_entries,
        )
        self.alerting = Alerting(settings)
        self.recommendations = Recommendations(settings)
        self.session_ends = SessionEnds(
            settings.redis.key_prefix, settings.intent.session_idle_minutes * 60.0
        )
        self.labels = LabelStore(
            settings.redis.key_prefix,
            settings.models.propensity_horizon_minutes * 60.0,
            settings.models.max_pending_labels,
        )
        w = settings.worker
        self.clock = EventTime(max_ahead_s=w.max_ts_ahead_s, idle_after_s=w.idle_partition_s)
        self.models: ModelBundle | None = None
        self.intent: IntentService | None = None
        # One model per deployment (models/sync.py); None when MODELS__SYNC_EVERY_S is 0.
        self.sync: ModelSync | None = None
        self.shared: SharedModels | None = None
        self._last_sync = 0.0
        self._syncing = False
        self._kind_by_topic = dict(zip(settings.topics.inputs, _KINDS, strict=True))
        self.metrics = Metrics(self._kind_by_topic)
        # Each partition's event time as of the last batch whose Redis writes are all done,
        # and whether a batch is being handled now: expiries between batches must not run
        # ahead of purchases that were read but are not written yet (``settled_times``).
        self._settled: dict[int, float] = {}
        self._busy = False
        self._started = False
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Future[None] | None = None  # the one being written
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "records",
                "valid",
                "duplicates",
                "clamped",
                "offers",
                "alerts",
                "dead_letters",
                "poison",
                "conflicts",
            ),
            0,
        )

    async def start(self) -> None:
        if self._started:
            return
        await self.store.start()
        await self.offer_loop.start(self.store.client, self.store.with_retry)
        await self.labels.start(self.store.client, self.store.with_retry)
        await self.carts.start(self.store.client, self.store.with_retry)
        await self.alerting.cooldown.start(self.store.client, self.store.with_retry)
        await self.alerting.churn.start(self.store.client, self.store.with_retry)
        self.models = ModelBundle.load_or_new(None, self.settings.models)
        if self.models.bandit is None:  # the arbiter's fresh bandit is checkpointed from now
            self.models.bandit = self.offer_loop.arbiter.bandit
        else:
            self.offer_loop.arbiter.bandit = self.models.bandit
        self.alerting.start(self.models)
        self.recommendations.start(self.store.client, self.store.with_retry)
        if self.settings.intent.enabled:
            self.intent = IntentService.create(
                self.settings.intent,
                self.store.client,
                key_prefix=self.settings.redis.key_prefix,
                key=self.settings.models.checkpoint_key.get_secret_value().encode(),
                checkpoint_dir=self.settings.models.checkpoint_dir / "intent",
                retry=self.store.with_retry,
            )
            await self.session_ends.start(self.store.client, self.store.with_retry)
        if self.settings.models.sync_every_s > 0:
            # Adopt the deployment's models before the first event: no cold start.
            self.shared = SharedModels(self.models, self.intent)
            self.sync = ModelSync(
                self.settings.redis.key_prefix,
                self.settings.models.checkpoint_key.get_secret_value().encode(),
            )
            await self.sync.start(self.store.client, self.store.with_retry)
            done = await self.sync.sync(self.shared)
            self._last_sync = time.monotonic()
            logger.info("models %s generation %d of the deployment", done, self.sync.generation)
        self._started = True
        logger.info("pipeline started, models %s", self.models.version)

    async def share_models(self, *, now: bool = False) -> None:
        """Merge the models with the deployment's when ``MODELS__SYNC_EVERY_S`` has passed
        (or ``now``); a failed merge is logged and retried at the next tick."""
        if self.sync is None or self.shared is None or self._syncing:
            return  # one merge round at a time (the timer's, or the last one on close)
        if not now and time.monotonic() - self._last_sync < self.settings.models.sync_every_s:
            return
        self._syncing = True
        try:
            await self.sync.sync(self.shared)
        except (FeatureStoreError, CheckpointError, RuntimeError, ValueError) as exc:
            # ValueError: a snapshot of other model shapes (TEXT__VOCABULARY_BUCKETS differs)
            logger.warning("models not merged with the deployment's: %s", exc)
        finally:
            self._last_sync = time.monotonic()
            self._syncing = False

    async def close(self) -> None:
        if not self._started:
            return
        try:  # hand what this worker learned to the deployment before it goes
            await asyncio.wait_for(self.share_models(now=True), timeout=5.0)
        except TimeoutError:
            logger.warning("models not merged on shutdown: Redis did not answer in 5 s")
        finally:  # also when the stop cancels the merge: the file keeps what was learned
            await self._checkpoint_on_close()
        await self.store.close()
        self._started = False

    def count(self, n_records: int, out: BatchOutputs) -> None:
        c = self.counters
        c["records"] += n_records
        c["valid"] += out.n_valid
        c["duplicates"] += out.n_duplicates
        c["clamped"] += out.n_clamped
        c["offers"] += len(out.offers)
        c["alerts"] += len(out.alerts)
        c["dead_letters"] += len(out.dead_letters)

    def stats(self) -> dict[str, Any]:
        """Counters and model metrics, for the ``/stats`` page and the demo."""
        doc: dict[str, Any] = {"ready": self._started, **self.counters}
        if self.models is not None:
            doc["model_version"] = self.models.version
            # None until a label predicted by a model that had learned resolves ("learning")
            scored = self.models.propensity.n_scored > 0
            doc["propensity_auc"] = self.models.propensity.auc if scored else None
            doc["propensity_log_loss"] = self.models.propensity.log_loss if scored else None
            doc["labels_scored"] = self.models.propensity.n_scored
            doc["labels_learned"] = self.models.propensity.n_learned
            doc["feedback_learned"] = self.models.text.sentiment.n_learned
        if self.sync is not None:
            doc.update(self.sync.stats())
        doc["labels_queued"] = self.labels.queued
        doc["labels_dropped"] = self.labels.dropped
        doc["carts_evicted"] = self.carts.evicted
        if self.intent is not None:
            doc["intent_sessions_learned"] = self.intent.completed
        doc.update(self.offer_loop.stats())
        doc.update(self.alerting.stats())
        return doc

    def models_doc(self) -> dict[str, Any]:
        """The served models (the ``/models`` page)."""
        doc: dict[str, Any] = {"model_version": self.model_version}
        if self.models is None:
            return doc
        m = self.models
        doc["learned"] = {
            "propensity": m.propensity.n_learned,
            "segments": m.segments.n_learned,
            "text": m.text.n_learned,
            "anomaly": m.anomaly.n_learned,
            "bandit": m.bandit.n_learned if m.bandit is not None else 0,
        }
        if self.intent is not None:
            doc["learned"]["intent_finetunes"] = self.intent.trainer.accepted
            doc["intent_version"] = self.intent.version
            doc["intent_digest"] = self.intent.weights_digest()
        doc["shared"] = self.sync is not None
        if self.sync is not None:
            doc.update(self.sync.stats())
        return doc

    def predict(self, features: Sequence[Mapping[str, float]]) -> dict[str, Any]:
        """Segment and purchase propensity of each feature row, learning nothing."""
        if self.models is None:
            return {"model_version": self.model_version, "segments": [], "propensity": []}
        m = self.models
        return {
            "model_version": self.model_version,
            "segments": [m.segments.predict_one(x) for x in features],
            "propensity": [p for p, _ in m.propensity.predict_clicks(features)],
        }

    def checkpoint(self) -> None:
        """Start a checkpoint unless one is being written: the models are pickled in the loop
        (a consistent copy), then signed and written in a thread (``ModelBundle.save_async``),
        so the loop stalls only for the pickling. A failed write is logged; the timer retries."""
        if self.models is None or (
            self._checkpointing is not None and not self._checkpointing.done()
        ):
            return
        self._last_checkpoint = time.monotonic()
        self._checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        if self.models is None:
            return
        try:  # with shared models the generation is the deployment's: the file keeps it
            await self.models.save_async(
                self.settings.models.checkpoint_dir, next_generation=self.sync is None
            )
        except OSError as exc:
            logger.error("models not checkpointed (the timer retries): %s", exc)

    async def _checkpoint_on_close(self) -> None:
        """The last checkpoint: after the one being written, if any. If the stop cancels
        this, the models are written in the loop, as the worker is going anyway."""
        if self.models is None:
            return
        try:
            if self._checkpointing is not None:
                await asyncio.wait([self._checkpointing])
            await self._checkpoint()
        except asyncio.CancelledError:
            self.models.save(self.settings.models.checkpoint_dir, next_generation=self.sync is None)
            raise

    # -- the batch ------------------------------------------------------------------------

    def validate(
        self, records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]]
    ) -> Validated:
        """The valid events, the dead letters, how many events had their ts clamped, and
        each customer's input partition.

        Records are (topic, partition, offset, key, value, kafka timestamp in seconds). Each
        valid event's ts is bounded by its record's timestamp (``EventTime.bound``) and then
        advances its partition's watermark; its customer's partition is noted for ``retain``.
        """
        now = time.time()
        valid: list[Event] = []
        dead: list[DeadLetter] = []
        clamped = 0
        partitions: dict[str, int] = {}
        sources: list[int] = []
        clamp = self.settings.worker.future_ts == "clamp"
        for n, (topic, partition, offset, key, value, kafka_ts) in enumerate(records):
            try:
                kind = self._kind_by_topic.get(topic, topic)
                event = parse_event(kind, value, now=now, kafka_ts=kafka_ts, limits=self.limits)
                bound = self.clock.bound(kafka_ts, now)
                if event.ts > bound:
                    if not clamp:
                        raise InvalidEvent(
                            f"ts {event.ts:.0f} is {event.ts - bound + self.clock.max_ahead_s:.0f}"
                            f"s ahead of its record's timestamp (allowed "
                            f"{self.clock.max_ahead_s:.0f}s)"
                        )
                    event = dataclasses.replace(event, ts=bound)
                    clamped += 1
            except InvalidEvent as exc:
                dead.append(_dead_letter(topic, partition, offset, key, value, exc.reason, now))
                fields = event_fields(topic, partition, offset, value)
                logger.warning(
                    "dead letter %s[%s]@%s event_id=%s: %s",
                    *(topic, partition, offset, fields["event_id"], exc.reason),
                    extra=fields,
                )
                continue
            self.clock.observe((topic, partition), event.ts)
            partitions[event.customer_id] = partition
            valid.append(event)
            sources.append(n)
        return Validated(valid, dead, clamped, partitions, sources)

    async def handle(
        self,
        records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]],
        progress: BatchProgress | None = None,
    ) -> BatchOutputs:
        """Handle one batch. Pass the same ``progress`` to each retry of the batch: the retry
        continues where the failed attempt stopped, so nothing is learned twice and nothing
        it applied in Redis comes back as a replay."""
        progress = BatchProgress() if progress is None else progress
        watch = Stopwatch()
        self._busy = True  # until this batch's writes are all done; a failed attempt stays busy
        if progress.decided is None:
            progress.decided = await self._decide(records, progress.token, watch)
        d = progress.decided
        out = d.out
        out.stages = watch.laps
        if not d.valid:
            self._settle(d)
            return out

        # independent round trips, overlapped, each done once per batch: the contact claims,
        # and co-occurrence learning with the recommended items of the decided offers
        async def claim() -> None:
            if progress.offers is None:
                progress.offers = await self._claim(d.candidates, out.duplicates)

        async def recommend() -> None:
            if not progress.recommended:
                decided = [offer for offer, _ in d.candidates]
                await self.recommendations.finish(d.valid, d.results, decided, d.recent)
                progress.recommended = True

        async def label() -> None:
            if not progress.labeled:
                await self.labels.add(d.pending, d.buys)
                progress.labeled = True

        async def cart() -> None:
            if progress.early_carts is None:
                fired = await self.carts.apply(d.carts)
                progress.early_carts = await self.alerting.admit(self._cart_alerts(fired))

        async def admit() -> None:  # the cool-downs of the batch's own alerts
            if progress.alerts is None:
                progress.alerts = await self.alerting.admit(d.alerts)

        async def churn() -> None:
            if progress.churn_alerts is None:
                raised = await self.alerting.churn.observe(d.churn)
                progress.churn_alerts = await self.alerting.admit(self._churn_alerts(raised))

        async def sessions() -> None:
            if not progress.sessions and self.intent is not None and d.sessions:
                await self.session_ends.note(
                    [
                        (n, c, s, ts)
                        for (n, c, s), (kind, ts) in d.sessions.items()
                        if kind == "step"
                    ],
                    [(n, c, s) for (n, c, s), (kind, _) in d.sessions.items() if kind == "end"],
                )
                ended = [
                    ((c, s), True) for (_, c, s), (kind, _) in d.sessions.items() if kind == "end"
                ]
                await self.intent.learn(ended)
            progress.sessions = True

        await _together(claim(), recommend(), label(), cart(), admit(), churn(), sessions())
        out.alerts = [
            *(progress.alerts or []),
            *(progress.early_carts or []),
            *(progress.churn_alerts or []),
        ]
        out.offers = progress.offers or []
        # A claim that comes back as stored (a replay, or our own retry after a lost reply)
        # is a new object without this run's items; its window, if the offer was published
        # before, gives back the first ones (OfferLoop.finish), else this run's are the first.
        by_id = {offer.offer_event_id: offer for offer, _ in d.candidates}
        for offer in out.offers:
            twin = by_id.get(offer.offer_event_id)
            if twin is not None and twin is not offer and offer.recommended_items is None:
                offer.recommended_items = twin.recommended_items
        watch.lap("redis")
        # the published offers' outcome windows; their records keep the recommended items, so
        # a replayed offer is published again exactly as the first time
        if progress.outcomes is None:
            progress.outcomes = await self.offer_loop.finish(
                out.offers, d.choices, out.alerts, d.valid, d.partitions
            )
        out.outcomes = progress.outcomes
        watch.lap("learn")
        self._settle(d)
        return out

    def _conflicts(
        self,
        records: Sequence[Record],
        sources: list[int],
        valid: list[Event],
        results: list[FeatureResult],
        sentiments: list[float | None],
        out: BatchOutputs,
    ) -> tuple[list[Event], list[FeatureResult], list[float | None]]:
        """Dead-letter the events that reuse an ``event_id`` of their customer's with other
        content (Redis did not apply them), and return the batch without them."""
        now = time.time()
        kept: tuple[list[Event], list[FeatureResult], list[float | None]] = ([], [], [])
        for n, event, result, sentiment in zip(sources, valid, results, sentiments, strict=True):
            if not result.conflict:
                kept[0].append(event)
                kept[1].append(result)
                kept[2].append(sentiment)
                continue
            topic, partition, offset, key, value, _ = records[n]
            reason = (
                f"duplicate event_id with different content: {event.event_id!r} of customer "
                f"{event.customer_id!r} was first applied with other fields"
            )
            out.dead_letters.append(_dead_letter(topic, partition, offset, key, value, reason, now))
            self.counters["conflicts"] += 1
            logger.warning(
                "dead letter %s[%s]@%s event_id=%s: %s",
                *(topic, partition, offset, event.event_id, reason),
                extra=event_fields(topic, partition, offset, value),
            )
        out.n_valid = len(kept[0])
        out.events = kept[0]
        return kept

    def _settle(self, d: _Decided) -> None:
        """A batch's writes are done: expiries may run up to its partitions' times."""
        self._settled.update(d.times)
        self._busy = False

    def settled_times(self) -> dict[int, float]:
        """Each owned partition's event time, held back while a batch is being handled to
        where the previous batch left it: the partition's watermark already counts the
        current batch's purchases, which are not in Redis until the batch is done."""
        live = self.clock.partition_times()
        if not self._busy:
            return live
        return {n: min(t, self._settled.get(n, 0.0)) for n, t in live.items()}

    async def _decide(
        self,
        records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]],
        token: str,
        watch: Stopwatch,
    ) -> _Decided:
        """Validate, apply to Redis, score, learn and decide: everything up to the claims.

        The in-memory learning happens here, after the last round trip that can fail, so a
        failed attempt has learned nothing and its retry (same ``token``) learns once.
        """
        valid, dead, clamped, partitions, sources = self.validate(records)
        times = self.clock.partition_times()
        watch.lap("validate")
        out = BatchOutputs(dead_letters=dead, n_valid=len(valid), n_clamped=clamped, events=valid)
        if not valid:
            return _Decided(out, times=times)
        models = self.models
        if models is None:
            raise RuntimeError("Pipeline.handle called before start()")
        sentiments = [
            models.text.score(e.text, e.rating) if isinstance(e, Feedback) else None for e in valid
        ]
        watch.lap("models")
        # three independent reads/writes, overlapped: features, contact states, recent items
        results, contacts, recent = await _together(
            self.store.apply(valid, sentiments, batch=token),
            self.offer_loop.prepare(valid),
            self.recommendations.prepare(valid),
        )
        watch.lap("redis")
        if any(r.conflict for r in results):
            valid, results, sentiments = self._conflicts(
                records, sources, valid, results, sentiments, out
            )
        # every click is scored in one matrix product and queued for its label (a replayed
        # click too: the label store keeps the first copy, so a click whose queueing was cut
        # short by a crash is queued by its replay)
        clicked = [(e, r) for e, r in zip(valid, results, strict=True) if isinstance(e, Click)]
        scored = models.propensity.predict_clicks([r.features for _, r in clicked])
        propensities = {e.event_id: p for (e, _), (p, _) in zip(clicked, scored, strict=True)}
        # a prediction made before any learning (0.5 for all) is kept out of the AUC: NaN
        trained = models.propensity.trained
        pending = [
            (
                partitions[e.customer_id],
                PendingClick(e.event_id, e.customer_id, e.ts, p if trained else math.nan, x),
            )
            for (e, _), (p, x) in zip(clicked, scored, strict=True)
        ]
        buys = [
            (partitions[e.customer_id], e.customer_id, e.ts)
            for e in valid
            if isinstance(e, Purchase)
        ]
        watch.lap("models")
        intents = await self._intents(valid, results)
        watch.lap("intent")
        if intents and self.settings.worker.publish_intents:
            out.intents = self._intent_records(valid, intents)
        candidates: list[tuple[Offer, FeatureResult]] = []
        choices: dict[str, Choice] = {}  # offer_event_id -> the arbiter's choice
        carts: list[CartStep] = []
        churn: list[ChurnStep] = []
        sessions: dict[tuple[int, str, str], tuple[str, float]] = {}
        now_wall = time.time()
        version = self.model_version
        for event, result, sentiment in zip(valid, results, sentiments, strict=True):
            if result.duplicate:
                out.n_duplicates += 1
                out.duplicates.append(event)
            intent = intents.get(event.event_id)
            try:
                contact = contacts.get(event.customer_id)
                choice, offer, alerts = self._score(
                    event,
                    result,
                    sentiment,
                    intent,
                    propensities.get(event.event_id, 0.0),
                    contact,
                    version,
                    now_wall,
                    watch,
                )
                self.alerting.annotate(models, event, alerts)
                for a in self.alerting.on_event(models, event, result):
                    alerts.append(_alert(a, version, now_wall, a.ts))
            except Exception:
                fields = {"event_id": event.event_id, "customer_id": event.customer_id}
                logger.exception("scoring event %s failed", event.event_id, extra=fields)
                raise
            out.alerts.extend(alerts)
            self.offer_loop.note_alerts(alerts, contacts)
            if self.intent is not None and not result.duplicate:
                self._note_session(event, partitions, intents, sessions)
            if not isinstance(event, Feedback):
                partition = partitions[event.customer_id]
                abandon = intent["abandon"] if intent is not None else None
                x = result.features
                carts.append(CartStep(partition, event, x.get("cart_value", 0.0), abandon))
                churn.append(
                    ChurnStep(
                        partition,
                        event.customer_id,
                        event.event_id,
                        event.ts,
                        x.get("clicks_24h", 0.0),
                        x.get("clicks_30d", 0.0),
                        x.get("spend_30d", 0.0),
                    )
                )
            if choice is not None and offer is not None:
                choices[offer.offer_event_id] = choice
                candidates.append((offer, result))
        self._expire()
        raised, out.alerts = out.alerts, []  # until their cool-downs are checked (``handle``)
        watch.lap("models")
        return _Decided(
            out,
            valid,
            results,
            recent,
            candidates,
            choices,
            partitions,
            pending=pending,
            buys=buys,
            carts=carts,
            alerts=raised,
            churn=churn,
            sessions=sessions,
            times=times,
        )

    async def _claim(
        self, candidates: Sequence[tuple[Offer, FeatureResult]], duplicates: Sequence[Event]
    ) -> list[Offer]:
        """The offers to publish: those whose contact claim (the frequency cap) succeeds.

        A replayed trigger gets back exactly the offer published for it the first time, even
        when the models would now decide otherwise or not offer at all, so an offer that was
        claimed before a crash is never lost and its id and content never change.
        """
        offers: list[Offer] = []
        if candidates:
            cap_s = self.settings.decision.frequency_cap_minutes * 60.0
            claims = await self.store.claim_contacts(
                [(o.customer_id, o.trigger_event_id, o.event_ts) for o, _ in candidates],
                cap_s,
                [o.dumps() for o, _ in candidates],
            )
            for (offer, _), got in zip(candidates, claims, strict=True):
                if isinstance(got, bytes):
                    offers.append(Offer.from_data(orjson.loads(got)))
                elif got:
                    offers.append(offer)
        decided = {o.trigger_event_id for o, _ in candidates}
        replayed = [e for e in duplicates if isinstance(e, Click) and e.event_id not in decided]
        if replayed:
            sent = await self.store.recall_offers([(e.customer_id, e.event_id) for e in replayed])
            offers.extend(Offer.from_data(orjson.loads(p)) for p in sent if p)
        return offers

    @property
    def model_version(self) -> str:
        """The River bundle's version, and the intent model's when it is on."""
        if self.models is None:
            return "none"
        if self.intent is None:
            return self.models.version
        return f"{self.models.version}/intent-{self.intent.version}"

    async def _intents(
        self, events: Sequence[Event], results: Sequence[FeatureResult]
    ) -> dict[str, dict[str, float]]:
        """Session intent for each new click of the batch, stepped as one micro-batch."""
        if self.intent is None:
            return {}
        pairs = [
            (e, r.features)
            for e, r in zip(events, results, strict=True)
            if isinstance(e, Click) and not r.duplicate
        ]
        if not pairs:
            return {}
        clicks = [c for c, _ in pairs]
        scores = await self.intent.score(clicks, [f for _, f in pairs])
        return {c.event_id: s for c, s in zip(clicks, scores, strict=True)}

    def _intent_records(
        self, events: Sequence[Event], intents: dict[str, dict[str, float]]
    ) -> list[SessionIntent]:
        version = self.intent.version if self.intent is not None else "none"
        return [
            SessionIntent(
                customer_id=e.customer_id,
                session_id=e.session_id,
                trigger_event_id=e.event_id,
                purchase=p["purchase"],
                abandon=p["abandon"],
                browse=p["browse"],
                model_version=version,
                event_ts=e.ts,
            )
            for e in events
            if isinstance(e, Click) and (p := intents.get(e.event_id)) is not None
        ]

    def _score(
        self,
        event: Event,
        result: FeatureResult,
        sentiment: float | None,
        intent: dict[str, float] | None,
        propensity: float,
        contact: ContactState | None,
        version: str,
        now_wall: float,
        watch: Stopwatch,
    ) -> tuple[Choice | None, Offer | None, list[Alert]]:
        """One event's alerts, and for a click (scored ``propensity``) the arbiter's choice
        and its offer, if any."""
        models = self.models
        if models is None:  # pragma: no cover - guarded by handle()
            raise RuntimeError("models not loaded")
        x = result.features
        alerts: list[Alert] = []
        if isinstance(event, Click):
            segment = models.segments.assign(x)
            for a in self.alert_rules.on_click(event, x, propensity, intent):
                alerts.append(_alert(a, version, now_wall, event.ts))
            watch.lap("models")
            ctx = ClickContext(
                event, x, result.top_categories, propensity, segment, intent, version
            )
            # contact policy, control group, bandit; explanations only for a chosen offer
            choice = self.offer_loop.choose(
                ctx, contact, partial(models.propensity.contributions, x)
            )
            watch.lap("decide")
            if choice is None:
                return None, None, alerts
            decision = choice.decision
            offer = Offer(
                offer_event_id=offer_event_id(event.customer_id, event.event_id),
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
                policy_propensity=round(choice.propensity, 6),
                eligible=list(choice.eligible),
                contexts=choice.logged_contexts(),
            )
            return choice, offer, alerts
        if isinstance(event, Purchase):
            return None, None, alerts
        for a in self.alert_rules.on_feedback(event, x, sentiment):
            alerts.append(_alert(a, version, now_wall, event.ts))
        return None, None, alerts

    def _expire(self) -> None:
        """Intent sessions idle past their timeout, on the worker's event time."""
        now = self.clock.now()
        if self.intent is not None and now > 0.0:
            self.intent.expire(now)

    async def _take_all(
        self,
        times: Mapping[int, float],
        take: Callable[[int, float], Awaitable[_T]],
        what: str,
    ) -> list[_T]:
        """``take`` on each owned partition at its settled time (``times``); a partition
        without a time yet (just assigned, not read from) is left alone, and one whose take
        fails is taken again by the next tick (the others' are kept)."""
        out: list[_T] = []
        for partition, t in sorted(times.items()):
            if t <= 0.0:
                continue
            try:
                out.append(await take(partition, t))
            except FeatureStoreError as exc:
                logger.warning("%s of partition %d not resolved yet: %s", what, partition, exc)
        return out

    async def due(self) -> DueWork:
        """The timer's work between batches: checkpoints and idle sessions (``tick``), then
        each owned partition's due offer windows, labels, carts, churn silences and session
        ends, decided on that partition's settled time. Publish ``outputs``, then ``retire``.
        """
        self.tick()
        times = self.settled_times()
        outcomes, windows = await self.offer_loop.expire(times, self.clock.now())
        labels, label_sets = await self.resolve_labels(times)
        carts, cart_sets = await self.resolve_carts(times)
        churn, churn_sets = await self.resolve_churn(times)
        await self.resolve_sessions(times)
        outputs = BatchOutputs(alerts=[*carts, *churn], outcomes=outcomes, labels=labels)
        return DueWork(outputs, windows, label_sets, cart_sets, churn_sets)

    async def retire(self, due: DueWork) -> None:
        """``due``'s outputs are published: take its windows, labels, carts and silences off
        their due sets. What fails stays due: the next tick re-emits it, same ids."""
        await self.offer_loop.forget(due.windows)
        stores: list[tuple[str, Any, Sequence[Any]]] = [
            ("propensity labels", self.labels, due.labels),
            ("cart alerts", self.carts, due.carts),
            ("churn alerts", self.alerting.churn, due.churn),
        ]
        for what, store, sets in stores:
            try:
                for taken in sets:
                    await store.forget(taken)
            except FeatureStoreError as exc:
                logger.warning("published %s not yet forgotten: %s", what, exc)

    async def resolve_labels(
        self, times: Mapping[int, float]
    ) -> tuple[list[PropensityLabel], list[DueLabels]]:
        """Learn the propensity labels whose horizon closed on each owned partition's event
        time; the label records to publish (when ``publish_labels``) and what to ``retire``
        once they are published.

        A partition just assigned waits until its topics have been read from (its time is
        held: ``EventTime.partition_times``). A label resolved before but not forgotten
        (its resolver died) comes back ``again``: published again, not learned again.
        """
        if self.models is None or not self.labels.started:
            return [], []
        publish = self.settings.worker.publish_labels
        records: list[PropensityLabel] = []
        taken = await self._take_all(times, self.labels.take, "propensity labels")
        dues = [d for d in taken if d.labels]
        for due in dues:
            for label in due.labels:
                click = label.click
                if not label.again:
                    self.models.propensity.learn_label(click.x, click.proba, label.positive)
                if publish:
                    records.append(
                        PropensityLabel(
                            click_event_id=click.event_id,
                            customer_id=click.customer_id,
                            purchased=label.positive,
                            propensity=round(click.proba, 6),
                            click_ts=click.ts,
                            ts=click.ts + self.labels.horizon_s,
                        )
                    )
        return records, dues

    def _cart_alerts(self, fired: Sequence[FiredCart]) -> list[Alert]:
        version = self.model_version
        now_wall = time.time()
        return [
            _alert(
                self.alert_rules.cart_abandonment(f.cart, abandon_prob=f.abandon),
                version,
                now_wall,
                f.cart.ts,
            )
            for f in fired
        ]

    async def resolve_carts(self, times: Mapping[int, float]) -> tuple[list[Alert], list[DueCarts]]:
        """The carts abandoned by each owned partition's event time (those the session model
        did not fire early) as alerts past their cool-down, and what to ``retire`` once they
        are published. As ``resolve_labels``."""
        if not self.carts.started:
            return [], []
        taken = await self._take_all(times, self.carts.take, "abandoned carts")
        dues = [d for d in taken if d.taken]
        alerts = [a for d in dues for a in self._cart_alerts(d.fired)]
        try:
            return await self.alerting.admit(alerts), dues
        except FeatureStoreError as exc:  # not forgotten: the next tick takes them again
            logger.warning("abandoned carts not admitted yet: %s", exc)
            return [], []

    def _note_session(
        self,
        event: Event,
        partitions: dict[str, int],
        intents: dict[str, dict[str, float]],
        sessions: dict[tuple[int, str, str], tuple[str, float]],
    ) -> None:
        """Track the batch's sessions in event order: a stepped click keeps its session open,
        a purchase closes it (and frees its state on the device)."""
        intent = self.intent
        if intent is None:
            return
        partition = partitions[event.customer_id]
        if isinstance(event, Click) and event.event_id in intents:
            sessions[(partition, event.customer_id, event.session_id)] = ("step", event.ts)
        elif isinstance(event, Purchase):
            key = intent.on_purchase(event)
            if key is not None:
                sessions[(partition, *key)] = ("end", event.ts)

    async def resolve_sessions(self, times: Mapping[int, float]) -> int:
        """Hand the sessions idle by each owned partition's event time to the fine-tuner
        (their steps from the session log, whoever stepped them); how many."""
        if self.intent is None or not self.session_ends.started:
            return 0
        n = 0
        for keys in await self._take_all(times, self.session_ends.take, "ended sessions"):
            try:
                n += await self.intent.learn([(k, False) for k in keys])
            except FeatureStoreError as exc:  # popped sessions are not learned: best effort
                logger.warning("ended sessions not learned: %s", exc)
        return n

    def _churn_alerts(self, raised: Sequence[RaisedChurn]) -> list[Alert]:
        version = self.model_version
        now_wall = time.time()
        return [_alert(churn_alert(r.signal), version, now_wall, r.signal.ts) for r in raised]

    async def resolve_churn(
        self, times: Mapping[int, float]
    ) -> tuple[list[Alert], list[DueSilences]]:
        """The customers gone silent by each owned partition's event time, as churn alerts
        past their cool-down, and what to ``retire`` once they are published."""
        if not self.alerting.churn.started or not self.settings.alerting.churn_enabled:
            return [], []
        taken = await self._take_all(times, self.alerting.churn.take, "churn silences")
        dues = [d for d in taken if d.raised]
        alerts = [a for d in dues for a in self._churn_alerts(d.raised)]
        try:
            return await self.alerting.admit(alerts), dues
        except FeatureStoreError as exc:  # not forgotten: the next tick takes them again
            logger.warning("churn silences not admitted yet: %s", exc)
            return [], []

    def tick(self) -> None:
        """Periodic work between batches: idle sessions and checkpoints. (Labels, carts,
        churn and offer windows are decided per partition: ``resolve_*``.)"""
        if not self._started or self.models is None:
            return
        if time.monotonic() - self._last_checkpoint >= self.settings.models.checkpoint_every_s:
            self.checkpoint()
        self._expire()


def _alert(a: Any, version: str, now_wall: float, event_ts: float) -> Alert:
    return Alert(
        alert_id=alert_id(a.customer_id, a.trigger_event_id, a.type),
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


# Original bytes a dead letter keeps: base64 makes them 4/3 larger, and a dead letter must fit
# in a produce request (1 MiB by default) whatever the broker let in.
DEAD_LETTER_MAX_PAYLOAD: Final = 65_536


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
    kept = raw[:DEAD_LETTER_MAX_PAYLOAD]
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        payload_b64=base64.b64encode(kept).decode("ascii"),
        payload_preview=raw[:200].decode("utf-8", errors="replace"),
        key=key.decode("utf-8", errors="replace")[:200] if key is not None else None,
        ts=now,
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        payload_truncated=len(kept) < len(raw),
    )


def freeze_heap() -> None:
    """Keep every object alive now (libraries, torch, the loaded models: ~300k) out of the
    cyclic collector's full passes, which otherwise walked them all every few thousand events
    (~0.1 s each: 26 us per event at batch 500, and a latency spike). Once per process, after
    ``Pipeline.start``; frozen objects are still freed when their last reference goes."""
    gc.freeze()


def register(app: StreamscoreApp, pipeline: Pipeline) -> None:
    """Declare the topics and the scoring agent on ``app``."""
    settings = app.settings
    topics = settings.topics
    inputs = app.input_topics()
    suppressions = app.topic(
        topics.suppressions,
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
    )
    batch_max = settings.worker.batch_max
    within = settings.worker.batch_wait_ms / 1000.0

    # Outputs go to the producer as bytes, keyed by customer id: the JSON their Faust Record
    # serialises to (``dumps``: the bytes ``topic.send`` wrote), without ``topic.send``'s
    # per-message machinery, which cost ~100 us of the loop per output where the producer
    # takes ~8 (benchmarks/README.md, the Record and bytes reference agents). The worker
    # creates the topics at start (``TopicSettings.all``); ``streams/records.py`` is the
    # contract of their values.
    producer = app.producer
    routes: tuple[tuple[str, str], ...] = (
        ("offers", topics.offers),
        ("alerts", topics.alerts),
        ("dead_letters", topics.dead_letters),
        ("intents", topics.intents),
        ("outcomes", topics.offer_outcomes),
        ("labels", topics.labels),
    )

    async def send(out: BatchOutputs) -> list[Any]:
        """Hand every output to the producer; the futures of the broker's acknowledgements."""
        futures = []
        for name, topic in routes:
            for record in getattr(out, name):
                key = (record.key or "") if name == "dead_letters" else record.customer_id
                futures.append(
                    await producer.send(topic, key.encode(), record.dumps(), None, None, None)
                )
        return futures

    async def acked(out: BatchOutputs, futures: list[Any]) -> None:
        start = time.perf_counter()
        if futures:
            await asyncio.gather(*futures)
        out.stages["produce"] = time.perf_counter() - start
        pipeline.metrics.observe_outputs(out)

    async def publish(out: BatchOutputs) -> None:
        await acked(out, await send(out))

    async def settle(
        batch: Sequence[EventT], records: list[Any], out: BatchOutputs, futures: list[Any]
    ) -> None:
        """Once the broker has the batch's outputs, release its input offsets for commit."""
        await acked(out, futures)
        for event in batch:
            if event.ack():  # the last reference: the consumer may commit this offset now
                m = event.message
                app.sensors.on_message_out(m.tp, m.offset, m)
        pipeline.count(len(batch), out)
        pipeline.metrics.observe_batch(records, out)

    @app.agent(inputs, name="score")
    async def score(stream: StreamT[bytes]) -> None:
        # Handling batch n+1 overlaps the broker's acknowledgement of batch n's outputs (up to
        # ``unacked_batches``): each input message holds one extra reference until ``settle``,
        # so Faust's own ack after each batch does not let the consumer commit it early.
        unsettled: deque[asyncio.Future[None]] = deque()
        limit = settings.worker.unacked_batches
        try:
            await pipeline.start()
            freeze_heap()
            async for batch in stream.take_events(batch_max, within=within):
                for event in batch:
                    event.message.incref()
                records = [_record(e) for e in batch]
                out = await _narrowed(pipeline, records)
                futures = await send(out)
                unsettled.append(asyncio.ensure_future(settle(batch, records, out, futures)))
                while unsettled and (len(unsettled) > limit or unsettled[0].done()):
                    await unsettled.popleft()  # re-raises a failed publish
            while unsettled:
                await unsettled.popleft()
        except Exception as exc:
            # A bug or an unrecoverable dependency: stop the worker (its offsets stay where
            # they are) rather than idle with a dead agent; the supervisor restarts it.
            logger.critical("scoring agent failed, stopping the worker: %r", exc, exc_info=True)
            await app.crash(exc)
            raise
        finally:
            for task in unsettled:
                task.cancel()
            await pipeline.close()

    @app.agent(suppressions, name="suppress")
    async def suppress(stream: StreamT[bytes]) -> None:
        # Not latency-critical, and a take() wakes every ``within`` even on an empty topic:
        # a quarter second, not the scoring agent's few milliseconds.
        async for batch in stream.take(batch_max, within=max(within, 0.25)):
            changes = [c for c in map(parse_suppression, batch) if c is not None]
            while True:  # wait for the scoring agent's connection; wait out Redis outages
                try:
                    await pipeline.offer_loop.suppress(changes)
                    break
                except FeatureStoreError as exc:
                    logger.warning("suppressions not stored yet, retrying: %s", exc)
                    await asyncio.sleep(0.5)

    input_topics = set(topics.inputs)

    def input_partitions(tps: set[TP]) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in tps if tp.topic in input_topics]

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        # This worker now decides these partitions' labels, carts, churn and offer windows,
        # on each partition's event time (their state is in Redis).
        pipeline.clock.assign(input_partitions(assigned))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # A partition that moved away no longer holds this worker's event time back, and its
        # windows are the new owner's to expire. Session-intent states are dropped: a session
        # whose partition comes back after another worker stepped it must be rebuilt from the
        # session log, not resumed from this worker's stale state (the sessions this worker
        # keeps are rebuilt the same way, on their next click).
        pipeline.clock.revoke(input_partitions(revoked))
        if pipeline.intent is not None and revoked:
            dropped = pipeline.intent.reset()
            logger.info("partitions revoked: %d session-intent states dropped", dropped)

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        doc = pipeline.stats()
        assignment = app.consumer.assignment()
        doc["assigned_partitions"] = len(assignment)
        doc["assignment"] = sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment)
        return web.json(doc)

    @app.timer(1.0)
    async def tick() -> None:
        due = await pipeline.due()
        out = due.outputs
        if out.alerts or out.outcomes or out.labels:
            await publish(out)
        await pipeline.retire(due)

    if pipeline.settings.models.sync_every_s > 0:

        @app.timer(pipeline.settings.models.sync_every_s)
        async def share() -> None:  # one model per deployment (models/sync.py)
            await pipeline.share_models()


async def _together(*steps: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather`` that cancels the other steps when one fails, so a retried batch
    never races a leftover step of its failed attempt."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _until_applied(
    pipeline: Pipeline,
    records: Sequence[tuple[str, int, int, bytes | None, bytes | None, float | None]],
) -> BatchOutputs:
    """Handle a batch, waiting out Redis outages instead of dropping or skipping the batch.

    While Redis is down the batch is not acked, so no offset moves past it; Faust's stream
    buffer fills and the consumer stops fetching (backpressure). Every retry continues the
    same ``BatchProgress``: idempotent updates make the retry of a half-applied batch safe,
    and the batch's own earlier writes are not mistaken for a replay.
    """
    progress = BatchProgress()
    delay = 0.1
    while True:
        try:
            return await pipeline.handle(records, progress)
        except FeatureStoreError as exc:
            if not exc.transient:  # a rejected command or a script error: waiting won't help
                raise
            logger.warning(
                "Redis unavailable, holding the batch and retrying in %.1fs: %s", delay, exc
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


Record = tuple[str, int, int, bytes | None, bytes | None, float | None]


async def _narrowed(
    pipeline: Pipeline, records: Sequence[Record], *, top: bool = True
) -> BatchOutputs:
    """``_until_applied``; a failure that is not a Redis outage (a bug some record triggers, a
    script error on its data) is narrowed by halving the batch to the record(s) that cause it:
    they go to the dead-letter topic with the error as the reason, the rest is processed
    (idempotent writes make the re-handled records safe).

    When every record of a batch of ``_SYSTEMIC`` or more fails on its own, it is not the
    records' doing (a bug on every input): that is raised and stops the worker, as before.
    """
    try:
        return await _until_applied(pipeline, records)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, FeatureStoreError) and "rejected" in str(exc):
            raise  # credentials or a command Redis refuses: every record would fail
        if len(records) == 1:
            topic, partition, offset, key, value, _ = records[0]
            reason = f"could not be processed: {type(exc).__name__}: {str(exc)[:300]}"
            logger.error("record %s[%d]@%d dead-lettered: %s", topic, partition, offset, reason)
            pipeline.counters["poison"] += 1
            letter = _dead_letter(topic, partition, offset, key, value, reason, time.time())
            return BatchOutputs(dead_letters=[letter])
        logger.warning("a batch of %d failed (%r): narrowing it down", len(records), exc)
        mid = len(records) // 2
        out = _merged(
            [await _narrowed(pipeline, part, top=False) for part in (records[:mid], records[mid:])]
        )
        failed = sum(d.reason.startswith("could not be processed") for d in out.dead_letters)
        if top and len(records) >= _SYSTEMIC and failed == len(records):
            raise
        return out


# A batch at least this long whose every record fails alone is a bug on every input, not poison.
_SYSTEMIC: Final = 8


def _merged(parts: Sequence[BatchOutputs]) -> BatchOutputs:
    out = BatchOutputs()
    for p in parts:
        for name in ("offers", "alerts", "dead_letters", "intents", "outcomes", "labels"):
            getattr(out, name).extend(getattr(p, name))
        out.n_valid += p.n_valid
        out.n_duplicates += p.n_duplicates
        out.n_clamped += p.n_clamped
        out.events.extend(p.events)
        out.duplicates.extend(p.duplicates)
        for stage, seconds in p.stages.items():
            out.stages[stage] = out.stages.get(stage, 0.0) + seconds
    return out


def _record(event: EventT) -> Record:
    m = event.message
    ts = m.timestamp if m.timestamp and m.timestamp > 0 else None
    return (m.topic, m.partition, m.offset, m.key, m.value, ts)
