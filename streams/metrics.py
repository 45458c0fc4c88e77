"""Prometheus metrics of one worker process, in a registry of its own (served at ``/metrics``).

The pipeline records what happened to each batch in its ``BatchOutputs`` (events, duplicates,
outputs, and the seconds spent in each stage, measured with ``Stopwatch``); the agent hands the
batch to ``Metrics.observe_batch`` once the outputs are acknowledged. Histograms take a whole
batch in one numpy call (``BatchHistogram``), so per-event latency costs ~nothing per event.
Gauges that describe the present (consumer lag, model quality, Redis retries) are refreshed
when ``/metrics`` is scraped.

Everything runs on the worker's event loop (the agent and the web page share it), so there is
no locking.

>>> m = Metrics()
>>> watch = Stopwatch()
>>> watch.lap("validate")
>>> sorted(watch.laps)
['validate']
>>> m.batch_size.observe_many([1, 10, 500])
>>> m.batch_size.snapshot()
(3, 511.0)
>>> dead_letter_category("missing required field 'customer_id'")
'missing_field'
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from features.store import FeatureStore
    from models.bundle import ModelBundle

__all__ = [
    "CONTENT_TYPE_LATEST",
    "BatchHistogram",
    "Metrics",
    "Stopwatch",
    "dead_letter_category",
]

LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
STAGE_BUCKETS: Final = (
    1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# Events whose own timestamp is older than this are replays or backfills, not live traffic:
# they are counted, but kept out of the event-clock latency histogram.
LIVE_WINDOW_S: Final = 300.0
STAGES: Final = ("validate", "models", "redis", "intent", "decide", "learn", "produce")

# Dead-letter reasons are sentences with values in them; the label is a short category.
# Checked in order: the first needle found in the reason names its category.
_REASON_CATEGORIES: Final = (
    ("duplicate event_id with different content", "conflict"),
    ("not valid JSON", "invalid_json"),
    ("empty record", "empty"),
    ("payload of", "too_large"),
    ("expected a JSON object", "not_object"),
    ("schema_version", "schema_version"),
    ("unknown event kind", "unknown_topic"),
    ("unknown action", "unknown_value"),
    ("unknown channel", "unknown_value"),
    ("missing", "missing_field"),
    ("future", "bad_timestamp"),
    ("before 2000", "bad_timestamp"),
    ("RFC 3339", "bad_timestamp"),
    ("timezone", "bad_timestamp"),
    ("must be a", "wrong_type"),
    ("must be an", "wrong_type"),
    ("must be RFC", "wrong_type"),
    ("negative", "out_of_range"),
    ("finite", "out_of_range"),
    ("exceeds", "out_of_range"),
    ("longer than", "out_of_range"),
    ("must not be empty", "out_of_range"),
)


def dead_letter_category(reason: str) -> str:
    """A bounded label for a dead-letter reason (the full text is in the dead letter)."""
    for needle, category in _REASON_CATEGORIES:
        if needle in reason:
            return category
    return "other"


class Stopwatch:
    """Seconds spent per stage of one batch: ``lap(stage)`` adds the time since the last lap.

    Laps with the same name add up, so a stage interleaved with others inside a loop (models
    and decisions, event by event) is still one number per batch.
    """

    __slots__ = ("_last", "laps")

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + (now - self._last)
        self._last = now


class BatchHistogram(Collector):
    """A Prometheus histogram that takes a batch of observations in one numpy call.

    ``observe_many(values, *labels)`` buckets a whole array; ``observe(value, *labels,
    count=n)`` adds one value ``n`` times (a per-event share of a batch). Not thread-safe:
    use it from one event loop.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets = tuple(float(b) for b in buckets)
        self.labelnames = tuple(labelnames)
        self._bounds = np.asarray(self.buckets)
        # per label values: (counts per bucket, the last one for +Inf), [sum]
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        if registry is not None:
            registry.register(self)

    def _get(self, labels: tuple[str, ...]) -> tuple[np.ndarray, list[float]]:
        series = self._series.get(labels)
        if series is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
            series = self._series[labels] = (
                np.zeros(len(self.buckets) + 1, dtype=np.int64),
                [0.0],
            )
        return series

    def observe(self, value: float, *labels: str, count: int = 1) -> None:
        counts, total = self._get(labels)
        counts[bisect.bisect_left(self.buckets, value)] += count
        total[0] += value * count

    def observe_many(self, values: Sequence[float] | np.ndarray, *labels: str) -> None:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        counts, total = self._get(labels)
        # side="left": a value equal to a bound belongs to that bucket (le = "<=")
        index = np.searchsorted(self._bounds, arr, side="left")
        counts += np.bincount(index, minlength=counts.size)
        total[0] += float(arr.sum())

    def snapshot(self, *labels: str) -> tuple[int, float]:
        """(count, sum) of one series, for tests and the demo."""
        series = self._series.get(labels)
        if series is None:
            return 0, 0.0
        return int(series[0].sum()), series[1][0]

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total) in self._series.items():
            cumulative = np.cumsum(counts).tolist()
            buckets = [
                (floatToGoString(b), c) for b, c in zip(self.buckets, cumulative, strict=False)
            ]
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric(list(labels), buckets, sum_value=total[0])
        yield family


class Metrics:
    """The metrics of one worker process.

    ``topics`` maps configured input topic names to the input kinds (``clicks``,
    ``purchases``, ``feedback``) used as the ``topic`` label, so labels stay the same
    whatever the deployment calls its topics.
    """

    def __init__(
        self,
        topics: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._topic_label = dict(topics) if topics is not None else {}
        r = self.registry
        self.events = Counter(
            "streamscore_events",
            "Input records by input topic and outcome: applied, duplicate (a replay, not "
            "applied again) or dead (to the dead-letter topic)",
            ["topic", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamscore_dead_letters",
            "Dead letters by input topic and reason category",
            ["topic", "reason"],
            registry=r,
        )
        self.offers = Counter(
            "streamscore_offers", "Offers published, by offer id", ["offer_id"], registry=r
        )
        self.alerts = Counter(
            "streamscore_alerts",
            "Alerts published, by type and severity",
            ["type", "severity"],
            registry=r,
        )
        self.clamped_events = Counter(
            "streamscore_events_clamped",
            "Valid events whose ts was further ahead of their record's timestamp than "
            "WORKER__MAX_TS_AHEAD_S allows, counted at that bound instead",
            registry=r,
        )
        self.old_events = Counter(
            "streamscore_old_events",
            f"Valid events whose own ts was over {LIVE_WINDOW_S:.0f}s old when their outputs "
            "were acknowledged (replays, backfills); kept out of the event-clock latency",
            registry=r,
        )
        self.latency = BatchHistogram(
            "streamscore_event_latency_seconds",
            "From the record's Kafka timestamp (clock=record, the honest one) or the event's "
            "own ts (clock=event, live events only) to its batch's outputs acknowledged",
            LATENCY_BUCKETS,
            ["clock"],
            registry=r,
        )
        self.stage = BatchHistogram(
            "streamscore_stage_seconds",
            "Seconds per batch spent in each pipeline stage",
            STAGE_BUCKETS,
            ["stage"],
            registry=r,
        )
        self.stage_per_event = BatchHistogram(
            "streamscore_stage_event_seconds",
            "Seconds per event in each stage, amortised over its batch (one count per event)",
            STAGE_BUCKETS,
            ["stage"],
            registry=r,
        )
        self.batch_size = BatchHistogram(
            "streamscore_batch_size", "Records per handled batch", BATCH_BUCKETS, registry=r
        )
        self.consumer_lag = Gauge(
            "streamscore_consumer_lag",
            "Records behind the partition's end: highwater minus committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "streamscore_assigned_partitions",
            "Input partitions assigned to this worker",
            registry=r,
        )
        self.model_auc = Gauge(
            "streamscore_model_auc", "Propensity model AUC on resolved labels", registry=r
        )
        self.model_log_loss = Gauge(
            "streamscore_model_log_loss", "Propensity model log loss on resolved labels", registry=r
        )
        self.model_labels = Gauge(
            "streamscore_model_labels_learned", "Labels the propensity model learned", registry=r
        )
        self.model = Info("streamscore_model", "Version of the models in use", registry=r)
        self.checkpoint_seconds = Gauge(
            "streamscore_checkpoint_seconds",
            "The last model checkpoint: seconds in the event loop (pickling: how long it stalled"
            " the loop), in its writer thread (signing, writing, fsync), and in all",
            ["part"],
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "streamscore_checkpoint_bytes", "Pickled size of the last model checkpoint", registry=r
        )
        self.redis_retries = Counter(
            "streamscore_redis_retries",
            "Redis operations retried after a transient error",
            registry=r,
        )
        self.redis_errors = Counter(
            "streamscore_redis_errors",
            "Redis operations that failed after all retries (the batch is held and retried)",
            registry=r,
        )
        self._store_seen = (0, 0)
        self._lag_series: set[tuple[str, str]] = set()

    # -- per batch ------------------------------------------------------------------------

    def observe_batch(self, records: Sequence[tuple[Any, ...]], out: Any) -> None:
        """Count a handled batch once its outputs are acknowledged.

        ``records`` are the agent's ``(topic, partition, offset, key, value, kafka_ts)``;
        ``out`` is the pipeline's ``BatchOutputs``.
        """
        now = time.time()
        n = len(records)
        if n == 0:
            return
        self.batch_size.observe(n)
        # C-level iteration (map, Counter, fromiter): ~0.1 us per record on this machine
        per_topic = Tally(map(_TOPIC, records))
        kafka_ts = [t for t in map(_KAFKA_TS, records) if t is not None]
        dead = Tally(d.source_topic for d in out.dead_letters)
        duplicates = Tally(e.kind for e in out.duplicates)
        for topic, count in per_topic.items():
            label = self._topic_label.get(topic, "other")
            n_dead = dead.get(topic, 0)
            n_dup = duplicates.get(_KIND_OF.get(label, ""), 0)
            self.events.labels(label, "applied").inc(count - n_dead - n_dup)
            if n_dup:
                self.events.labels(label, "duplicate").inc(n_dup)
            if n_dead:
                self.events.labels(label, "dead").inc(n_dead)
        if out.n_clamped:
            self.clamped_events.inc(out.n_clamped)
        if kafka_ts:
            self.latency.observe_many(now - np.asarray(kafka_ts), "record")
        if out.events:
            ages = now - np.fromiter(map(_TS, out.events), np.float64, len(out.events))
            live = ages[ages <= LIVE_WINDOW_S]
            self.latency.observe_many(np.maximum(live, 0.0), "event")
            if live.size < ages.size:
                self.old_events.inc(ages.size - live.size)
        for stage, seconds in out.stages.items():
            self.stage.observe(seconds, stage)
            self.stage_per_event.observe(seconds / n, stage, count=n)

    def observe_outputs(self, out: Any) -> None:
        """Count published offers, alerts and dead letters (batches and timer alerts)."""
        for o in out.offers:
            self.offers.labels(o.offer_id).inc()
        for a in out.alerts:
            self.alerts.labels(a.type, a.severity).inc()
        for d in out.dead_letters:
            label = self._topic_label.get(d.source_topic, "other")
            self.dead_letters.labels(label, dead_letter_category(d.reason)).inc()

    # -- at scrape time -------------------------------------------------------------------

    def input_partitions(self, consumer: Any) -> set[Any]:
        """The input-topic partitions assigned to this worker (not Faust's own topics)."""
        try:
            assignment = consumer.assignment()
        except Exception:  # the consumer is not started yet
            return set()
        return {tp for tp in assignment if tp.topic in self._topic_label}

    def update_consumer(self, consumer: Any) -> None:
        """Assigned input partitions and lag per partition, from the Faust consumer."""
        assignment = self.input_partitions(consumer)
        self.assigned_partitions.set(len(assignment))
        seen: set[tuple[str, str]] = set()
        for tp, lag in _lags(consumer, assignment):
            labels = (tp.topic, str(tp.partition))
            self.consumer_lag.labels(*labels).set(lag)
            seen.add(labels)
        for labels in self._lag_series - seen:  # partitions revoked since the last scrape
            self.consumer_lag.remove(*labels)
        self._lag_series = seen

    def update_models(self, models: ModelBundle | None, version: str | None = None) -> None:
        if models is None:
            return
        p = models.propensity
        scored = p.n_scored > 0  # NaN until a label of a trained prediction resolves
        self.model_auc.set(p.auc if scored else math.nan)
        self.model_log_loss.set(p.log_loss if scored else math.nan)
        self.model_labels.set(p.n_learned)
        self.model.info({"version": version or models.version})
        last = models.last_save
        if last is not None:
            parts = (("in_loop", last.in_loop_s), ("write", last.write_s), ("total", last.total_s))
            for part, seconds in parts:
                self.checkpoint_seconds.labels(part).set(seconds)
            self.checkpoint_bytes.set(last.bytes)

    def update_store(self, store: FeatureStore) -> None:
        retries, failures = store.n_retries, store.n_failures
        seen_retries, seen_failures = self._store_seen
        self.redis_retries.inc(max(0, retries - seen_retries))
        self.redis_errors.inc(max(0, failures - seen_failures))
        self._store_seen = (retries, failures)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


_KIND_OF: Final = {"clicks": "click", "purchases": "purchase", "feedback": "feedback"}
_TOPIC: Final = itemgetter(0)
_KAFKA_TS: Final = itemgetter(5)
_TS: Final = attrgetter("ts")


def _lags(consumer: Any, assignment: Iterable[Any]) -> Iterator[tuple[Any, int]]:
    """(tp, highwater - committed) for partitions whose both ends are known."""
    committed = getattr(consumer, "_committed_offset", {})
    read = getattr(consumer, "_read_offset", {})
    for tp in assignment:
        try:
            high = consumer.highwater(tp)
        except Exception:  # not fetched yet
            continue
        if high is None:
            continue
        done = committed.get(tp)
        if done is None:
            last_read = read.get(tp)
            done = None if last_read is None else last_read + 1
        if done is None:
            continue
        yield tp, max(0, int(high) - int(done))
