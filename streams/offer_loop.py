"""The learning loop around offers: contact state in, arbitration, outcomes out.

``Pipeline.handle`` calls, per batch, handing each step what the one before returned:

1. ``prepare(events)``: one Redis round trip for the contact state of the batch's clickers
   (opt-outs, negative-feedback blocks, per-offer caps), returned per customer;
2. ``choose(ctx, state)`` per click, instead of the fixed policy: contact policy, control
   group, bandit (``models/decisioning/arbiter.py``); the ``Choice`` keeps the arm and
   context that the bandit learns from later; ``note_alerts`` blocks the rest of the batch
   after negative feedback;
3. ``finish(offers, choices, alerts, events)`` after the frequency cap: one round trip that
   opens the published offers' attribution windows, attributes the batch's purchases and
   opens feedback blocks; conversions become ``OfferOutcome`` records and bandit updates
   right away;

and the 1 s timer calls ``expire(now)`` for the windows that ended by event time, publishes
their outcomes, and then ``forget``s them: a crash in between re-emits them (same ids).
Counters per offer and per arm (impressions, conversions, rate) feed ``/stats``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from features.events import Event, Purchase
from features.session_log import Retry
from features.store import FeatureStoreError
from models.decisioning.arbiter import Choice, Explain, OfferArbiter
from models.decisioning.contact import NEGATIVE_FEEDBACK
from models.decisioning.outcomes import (
    ContactState,
    DueWindows,
    OpenOffer,
    OutcomeStore,
    Resolution,
)
from models.decisioning.policy import ClickContext, OfferPolicy
from streams.records import Alert, Offer, OfferOutcome
from streams.settings import Settings

__all__ = ["OfferLoop", "parse_suppression"]

logger = logging.getLogger(__name__)


class OfferLoop:
    """Arbitration, contact policy and outcome tracking for one worker."""

    def __init__(self, settings: Settings, policy: OfferPolicy) -> None:
        d = settings.decision
        self.settings = settings
        self.arbiter = OfferArbiter(policy, d, n_segments=settings.models.n_segments)
        self.store = OutcomeStore(settings.redis.key_prefix, d.attribution_window_minutes * 60.0)
        self._window_s = d.attribution_window_minutes * 60.0
        self._block_s = d.negative_feedback_block_hours * 3600.0
        self.impressions: Counter[str] = Counter()
        self.conversions: Counter[str] = Counter()
        self.resolved: Counter[str] = Counter()
        self.arm_impressions: Counter[str] = Counter()
        self.arm_conversions: Counter[str] = Counter()
        self.arm_resolved: Counter[str] = Counter()
        self.revenue = 0.0

    async def start(self, client: Redis | RedisCluster, retry: Retry | None = None) -> None:
        await self.store.start(client, retry)

    async def prepare(self, events: Sequence[Event]) -> dict[str, ContactState]:
        """The contact state of every customer with a click in ``events``, by customer id."""
        cids = [e.customer_id for e in events if e.kind == "click"]
        return await self.store.contact_states(cids)

    def choose(
        self, ctx: ClickContext, state: ContactState | None, explain: Explain = ()
    ) -> Choice | None:
        """The offer for this click under its customer's contact ``state``, or None."""
        return self.arbiter.choose(ctx, state, explain)

    def note_alerts(
        self, alerts: Sequence[Alert], states: MutableMapping[str, ContactState]
    ) -> None:
        """A negative-feedback alert blocks later clicks of the same batch too."""
        for a in alerts:
            if a.type == NEGATIVE_FEEDBACK:
                state = states.setdefault(a.customer_id, ContactState())
                self.arbiter.contact.note_negative_feedback(a.event_ts, state)

    async def finish(
        self,
        offers: list[Offer],
        choices: Mapping[str, Choice],
        alerts: Sequence[Alert],
        events: Sequence[Event],
        partitions: Mapping[str, int] | None = None,
    ) -> list[OfferOutcome]:
        """Open windows for ``offers`` (a replay keeps its first offer id and recommended
        items), attribute the batch's purchases, block on negative feedback; returns the
        conversions.

        ``choices`` holds this batch's ``choose`` results by ``offer_event_id``. An offer
        recalled for a replayed trigger has none: its window normally exists already, and
        the first record of a window is the one kept. ``partitions`` (customer id -> input
        partition) puts each window in its partition's due set."""
        opened: list[OpenOffer] = []
        for o in offers:
            choice = choices.get(o.offer_event_id)
            opened.append(
                OpenOffer(
                    offer_event_id=o.offer_event_id,
                    customer_id=o.customer_id,
                    offer_id=o.offer_id,
                    target_categories=choice.target_categories if choice else (),
                    arm=choice.arm if choice else "fixed",
                    ts=o.event_ts,
                    deadline=o.event_ts + self._window_s,
                    context=choice.context if choice else (),
                    trigger_event_id=o.trigger_event_id,
                    recommended_items=tuple(o.recommended_items or ()),
                )
            )
        purchases = [e for e in events if isinstance(e, Purchase)]
        negative = [
            (a.customer_id, a.event_ts + self._block_s)
            for a in alerts
            if a.type == NEGATIVE_FEEDBACK and self._block_s > 0
        ]
        if not (opened or purchases or negative):
            return []
        existing, conversions = await self.store.record(opened, purchases, negative, partitions)
        for k, o in enumerate(offers):
            first = existing.get(o.offer_event_id)
            if first is None:
                self.impressions[o.offer_id] += 1
                self.arm_impressions[opened[k].arm] += 1
            else:  # a replay: publish the offer as it was published the first time
                o.offer_id = first.offer_id
                if first.recommended_items is not None:
                    o.recommended_items = list(first.recommended_items) or None
        return self._resolve(conversions)

    async def expire(
        self, times: Mapping[int, float], now: float
    ) -> tuple[list[OfferOutcome], list[DueWindows]]:
        """Non-conversions of the windows that ended: those of each owned input partition by
        its event time (``times``), those opened before windows had a partition by the
        worker's (``now``); and the windows to ``forget`` once those outcomes are published."""
        if not self.store.started:
            return [], []
        due: list[DueWindows] = []
        try:
            for partition, t in sorted(times.items()):
                if t > 0.0:
                    due.append(await self.store.expire(t, partition))
            if now > 0.0:
                due.append(await self.store.expire(now, None))
        except FeatureStoreError as exc:  # the next tick tries again
            logger.warning("offer outcome expiry skipped: %s", exc)
        return self._resolve([r for d in due for r in d.resolutions]), due

    async def forget(self, due: Sequence[DueWindows]) -> None:
        """The outcomes of ``due`` are published: take the windows off their due sets."""
        try:
            for windows in due:
                await self.store.forget(windows)
        except FeatureStoreError as exc:  # still due: the next tick re-emits them, same ids
            logger.warning("published offer outcomes not yet forgotten: %s", exc)

    async def suppress(self, changes: Sequence[tuple[str, bool, str]]) -> None:
        await self.store.set_suppressions(changes)

    def _resolve(self, resolutions: Sequence[Resolution]) -> list[OfferOutcome]:
        out = []
        for r in resolutions:
            o = r.offer
            if not r.again:  # learned and counted once; a repeat is only published again
                self.arbiter.learn(r)
                self.resolved[o.offer_id] += 1
                self.arm_resolved[o.arm] += 1
                if r.converted:
                    self.conversions[o.offer_id] += 1
                    self.arm_conversions[o.arm] += 1
                    self.revenue += r.revenue
            out.append(
                OfferOutcome(
                    offer_event_id=o.offer_event_id,
                    customer_id=o.customer_id,
                    offer_id=o.offer_id,
                    converted=r.converted,
                    order_id=r.order_id,
                    revenue=r.revenue,
                    arm=o.arm,
                    offer_ts=o.ts,
                    ts=r.ts,
                )
            )
        return out

    def stats(self) -> dict[str, Any]:
        """Per offer and per arm: impressions, resolved windows, conversions and rate."""

        def row(imp: int, res: int, conv: int) -> dict[str, Any]:
            return {
                "impressions": imp,
                "resolved": res,
                "conversions": conv,
                "rate": round(conv / res, 4) if res else None,
            }

        offers = sorted(set(self.impressions) | set(self.resolved))
        arms = sorted(set(self.arm_impressions) | set(self.arm_resolved))
        return {
            "offer_outcomes": {
                o: row(self.impressions[o], self.resolved[o], self.conversions[o]) for o in offers
            },
            "arms": {
                a: row(self.arm_impressions[a], self.arm_resolved[a], self.arm_conversions[a])
                for a in arms
            },
            "attributed_revenue": round(self.revenue, 2),
            "contact_policy": dict(self.arbiter.counters),
            "bandit_learned": self.arbiter.bandit.n_learned,
        }


def parse_suppression(value: bytes | None) -> tuple[str, bool, str] | None:
    """``{customer_id, suppressed (default true), reason}`` from the suppressions topic."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    cid, suppressed, reason = doc.get("customer_id"), doc.get("suppressed", True), doc.get("reason")
    if not isinstance(cid, str) or not cid or len(cid) > 128 or not isinstance(suppressed, bool):
        return None
    return cid, suppressed, reason if isinstance(reason, str) else ""
