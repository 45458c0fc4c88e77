"""Recommended items on offers, from item co-occurrence learned online in Redis.

Per batch, ``Pipeline.handle`` calls ``prepare(events)`` beside the feature store (the
batch's customers' recent and bought items, one round trip) and hands what it returns to
``finish`` beside the contact claims: learn co-occurrence from the batch's new clicks and
purchases and put ``recommended_items`` on the decided offers (one round trip). The offer
outcome windows keep the items, so a replayed offer is published with the same ones. The
store and its keys are ``features.cooccurrence``.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from features.cooccurrence import CooccurrenceStore, CustomerItems, RecommendRequest
from features.events import Click, Event
from features.session_log import Retry
from features.store import FeatureResult
from streams.records import Offer
from streams.settings import Settings

__all__ = ["Recommendations"]


class Recommendations:
    """Co-occurrence learning and item recommendations of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cooc: CooccurrenceStore | None = None

    def start(self, client: Redis | RedisCluster, retry: Retry | None = None) -> None:
        self.cooc = CooccurrenceStore(
            client,
            self.settings.recommend,
            prefix=self.settings.redis.key_prefix,
            customer_ttl_days=self.settings.features.customer_ttl_days,
            retry=retry,
        )

    async def prepare(self, events: Sequence[Event]) -> dict[str, CustomerItems]:
        """The recent and bought items of the batch's customers, for ``finish``."""
        return await self.cooc.context(events) if self.cooc is not None else {}

    async def finish(
        self,
        events: Sequence[Event],
        results: Sequence[FeatureResult],
        offers: Sequence[Offer],
        recent: dict[str, CustomerItems],
    ) -> None:
        """Learn co-occurrence from the new events; ``recommended_items`` on ``offers``.

        ``recent`` is what ``prepare`` returned for the same events; learning updates it.
        """
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
        recs = await self.cooc.update(new, recent, requests)
        for offer, items in zip(targets, recs, strict=True):
            offer.recommended_items = items or None
