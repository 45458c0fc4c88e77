"""Alerts beyond the per-event rules, and the cool-down every alert passes.

Per batch, ``Pipeline.handle`` calls, for each event, ``annotate`` (topic, language and reply
template on a ``negative_feedback`` alert) and ``on_event`` (learn the feedback text model;
the purchase-anomaly alert the event raises); then ``admit`` on all of the batch's alerts (the
per customer and type cool-down, in Redis). Churn (``ChurnStore``) and carts are decided in
Redis, by input partition.
The per-event rules are ``models.alerts.rules``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from features.events import Event, Feedback, Purchase
from features.store import FeatureResult
from models.alerts import rules
from models.alerts.churn_store import ChurnStore
from models.alerts.cooldown import CooldownStore, dedup_key
from models.bundle import ModelBundle, new_anomaly
from models.online.text import FeedbackText
from streams.records import Alert
from streams.settings import Settings

__all__ = ["Alerting"]

logger = logging.getLogger(__name__)


class Alerting:
    """Feedback text, churn, anomaly alerts and the cool-down of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        a = settings.alerting
        # both in Redis: they follow the customer's partition (churn per input partition,
        # cool-downs under each customer's hash tag)
        self.churn = ChurnStore(settings.redis.key_prefix, a)
        self.cooldown = CooldownStore.from_minutes(
            settings.redis.key_prefix, a.cooldown_minutes, a.cooldown_default_minutes
        )

    def start(self, models: ModelBundle) -> None:
        # Fresh models take the configured hyperparameters; checkpointed ones keep theirs.
        if models.text.n_learned == 0:
            models.text = FeedbackText(self.settings.text, lexicon=models.sentiment)
        if models.anomaly.n_learned == 0:
            models.anomaly = new_anomaly(self.settings.alerting)

    def stats(self) -> dict[str, Any]:
        return {
            "alerts_suppressed": self.cooldown.suppressed,
            "churn_evicted": self.churn.evicted,
        }

    def annotate(self, models: ModelBundle, event: Event, alerts: Sequence[Alert]) -> None:
        """Topic, language and reply template on this feedback's ``negative_feedback`` alert."""
        if not isinstance(event, Feedback):
            return
        for alert in alerts:
            if alert.type == "negative_feedback":
                details = alert.details if alert.details is not None else {}
                details.update(models.text.analyze(event.text).details())
                alert.details = details

    def on_event(
        self, models: ModelBundle, event: Event, result: FeatureResult
    ) -> list[rules.Alert]:
        """Learn from a new event; the purchase-anomaly alert it raises (churn is decided in
        Redis, ``ChurnStore``, from the batch's events)."""
        out: list[rules.Alert] = []
        if result.duplicate:
            return out
        if isinstance(event, Feedback):
            models.text.learn(event.text, event.rating)
            return out
        if isinstance(event, Purchase) and self.settings.alerting.anomaly_enabled:
            alert = models.anomaly.check(event)
            if alert is not None:
                out.append(alert)
        return out

    async def admit(self, alerts: list[Alert]) -> list[Alert]:
        """The alerts past their cool-down, each with its ``dedup_key`` in ``details`` (one
        round trip; the same alert again, a retry or a replay, is let through again)."""
        verdicts = await self.cooldown.allow(
            [(a.customer_id, a.type, a.event_ts, a.alert_id) for a in alerts]
        )
        kept = []
        for alert, ok in zip(alerts, verdicts, strict=True):
            if ok:
                details = alert.details if alert.details is not None else {}
                details["dedup_key"] = dedup_key(alert.customer_id, alert.type)
                alert.details = details
                kept.append(alert)
        return kept
