"""Recommendations, feedback understanding, churn, anomalies and alert cool-downs in a batch.

``Pipeline.handle`` calls, in order:

1. ``prepare(events)`` next to the feature store: the customers' recent and bought items
   (one Redis round trip);
2. per event, ``annotate`` (topic, language and reply template on ``negative_feedback``
   alerts) and ``on_event`` (learn feedback text, churn and anomaly alerts);
3. ``finish(events, results, offers)`` after the contact claims: learn co-occurrence from the
   new clicks and purchases and put ``recommended_items`` on the offers (one round trip);
4. ``admit(alerts)``: the per customer + type cool-down (``expire`` adds churn by silence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from features.cooccurrence import CooccurrenceStore, CustomerItems, RecommendRequest
from features.events import Click, Event, Feedback, Purchase
from features.session_log import Retry
from features.store import FeatureResult
from models import alerts as rules
from models.alerts.churn import ChurnWatch, churn_alert
from models.alerts.cooldown import AlertCooldown, dedup_key
from models.bundle import ModelBundle, new_anomaly
from models.online.text import FeedbackText
from streams.records import Alert, Offer
from streams.settings import Settings

__all__ = ["Insights"]

logger = logging.getLogger(__name__)


class Insights:
    """The issue-5 extras of one worker, driven by ``Pipeline`` with plain calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        a = settings.alerting
        self.churn = ChurnWatch(a)
        self.cooldown = AlertCooldown.from_minutes(
            a.cooldown_minutes, a.cooldown_default_minutes, a.cooldown_max_entries
        )
        self.cooc: CooccurrenceStore | None = None
        self._context: dict[str, CustomerItems] = {}

    def start(
        self, client: Redis | RedisCluster, models: ModelBundle, retry: Retry | None = None
    ) -> None:
        self.cooc = CooccurrenceStore(
            client,
            self.settings.recommend,
            prefix=self.settings.redis.key_prefix,
            customer_ttl_days=self.settings.features.customer_ttl_days,
            retry=retry,
        )
        # Fresh models take the configured hyperparameters; checkpointed ones keep theirs.
        if models.online.text.n_learned == 0:
            models.online.text = FeedbackText(self.settings.text, lexicon=models.online.sentiment)
        if models.alerts.anomaly.n_learned == 0:
            models.alerts.anomaly = new_anomaly(self.settings.alerting)

    def stats(self) -> dict[str, Any]:
        return {
            "alerts_suppressed": self.cooldown.suppressed,
            "churn_customers": len(self.churn),
        }

    async def prepare(self, events: Sequence[Event]) -> None:
        self._context = await self.cooc.context(events) if self.cooc is not None else {}

    def annotate(self, models: ModelBundle, event: Event, alerts: Sequence[Alert]) -> None:
        """Topic, language and reply template on this feedback's ``negative_feedback`` alert."""
        if not isinstance(event, Feedback):
            return
        for alert in alerts:
            if alert.type == "negative_feedback":
                details = alert.details if alert.details is not None else {}
                details.update(models.online.text.analyze(event.text).details())
                alert.details = details

    def on_event(
        self, models: ModelBundle, event: Event, result: FeatureResult
    ) -> list[rules.Alert]:
        """Learn from a new event; the churn and anomaly alerts it raises."""
        out: list[rules.Alert] = []
        if result.duplicate:
            return out
        if isinstance(event, Feedback):
            models.online.text.learn(event.text, event.rating)
            return out
        signal = self.churn.observe(event.customer_id, event.event_id, event.ts, result.features)
        if signal is not None:
            out.append(churn_alert(signal))
        if isinstance(event, Purchase) and self.settings.alerting.anomaly_enabled:
            alert = models.alerts.anomaly.check(event)
            if alert is not None:
                out.append(alert)
        return out

    def expire(self, now: float) -> list[rules.Alert]:
        """Churn by silence up to the event-time watermark ``now``."""
        return [churn_alert(s) for s in self.churn.due(now)]

    async def finish(
        self, events: Sequence[Event], results: Sequence[FeatureResult], offers: Sequence[Offer]
    ) -> None:
        """Learn co-occurrence from the new events; ``recommended_items`` on ``offers``."""
        if self.cooc is None:
            return
        new = [e for e, r in zip(events, results, strict=True) if not r.duplicate]
        clicks = {e.event_id: e for e in events if isinstance(e, Click)}
        tops = {r.event_id: tuple(c for c, _ in r.top_categories) for r in results}
        requests: list[RecommendRequest] = []
        targets: list[Offer] = []
        for offer in offers:
            click = clicks.get(offer.trigger_event_id)
            if click is None:
                continue
            fallback = tops.get(click.event_id, ())
            requests.append(
                RecommendRequest(offer.customer_id, click.item_id, click.category, fallback)
            )
            targets.append(offer)
        recs = await self.cooc.update(new, self._context, requests)
        for offer, items in zip(targets, recs, strict=True):
            offer.recommended_items = items or None
        self._context = {}

    def admit(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts past their cool-down, each with its ``dedup_key`` in ``details``."""
        kept = []
        for alert in alerts:
            if self.cooldown.allow(alert.customer_id, alert.type, alert.event_ts, alert.alert_id):
                details = alert.details if alert.details is not None else {}
                details["dedup_key"] = dedup_key(alert.customer_id, alert.type)
                alert.details = details
                kept.append(alert)
        return kept
