"""Item-to-item co-occurrence learned online from sessions and purchases, kept in Redis.

Two items co-occur when one customer touches both within ``pair_window_minutes`` (clicks of one
session, a click and a purchase, the lines of one basket). Each co-occurrence adds a weight to
both items' sorted sets of co-items; a per-category popularity sorted set counts every touch, for
items nobody has paired yet (cold items). ``recommend`` ranks the co-items of the customer's most
recent items, drops what the customer already bought, and fills up from category popularity.

Decay without rewriting scores: an increment at event time ``ts`` is multiplied by
``2 ** ((ts - EPOCH) / half_life)``, so within one sorted set an older increment weighs half as
much per half-life, exactly as if every score decayed continuously (scores only compare within
and across sets, never as absolute counts). Doubles hold this for ~1000 half-lives (about 19
years at the default 7 days) after ``EPOCH``.

Keys (hash-tagged by item, category or customer, so each command touches one cluster slot):

======================  ===========  ===================================================
``ss:{i:<item>}:co``    sorted set   co-item -> decayed weight; ``max_co_items``, item TTL
``ss:{c:<cat>}:pop``    sorted set   item -> decayed touches; ``max_popular``, item TTL
``ss:{<cust>}:recent``  sorted set   item -> last touch ts; ``recent_items``, customer TTL
``ss:{<cust>}:bought``  sorted set   item -> last purchase ts; ``bought_items``, customer TTL
======================  ===========  ===================================================

Per batch: ``context`` reads the customers' recent and bought items (one round trip, which the
caller may overlap with the feature store's), then ``update`` sends every write and the reads
for the requested recommendations in one ``CommandBatch`` (one round trip, and on a standalone
server one script call, not one command per key and member). Learning is not idempotent
(``ZINCRBY``): the caller passes only events the feature store applied (not duplicates), so a
replay adds nothing; a batch that fails between the two stores loses its co-occurrences, which
only nudges approximate counts.

>>> item_key("ss", "i9"), category_key("ss", "toys")
('ss:{i:i9}:co', 'ss:{c:toys}:pop')
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from features.batch import CommandBatch
from features.events import Click, Event, Purchase
from features.keys import customer_key
from features.session_log import Retry
from features.settings import RecommendSettings
from features.store import FeatureStoreError

__all__ = [
    "EPOCH",
    "CooccurrenceStore",
    "CustomerItems",
    "RecommendRequest",
    "category_key",
    "item_key",
]

logger = logging.getLogger(__name__)

EPOCH: Final = 1_700_000_000.0
# Pair weights: a plain click, a cart or checkout click, a purchase with a recent click, and
# two lines of one basket.
_CLICK_W: Final = 1.0
_CART_W: Final = 2.0
_BUY_CLICK_W: Final = 2.0
_BASKET_W: Final = 3.0
_ACTION_W: Final = {
    "view": _CLICK_W,
    "search": _CLICK_W,
    "add_to_cart": _CART_W,
    "checkout_start": _CART_W,
    "remove_from_cart": 0.0,
}
# Partners of one touch: at most this many of the customer's most recent items.
_MAX_PARTNERS: Final = 4
# Candidates read per seed item and per category, as a multiple of the items wanted.
_OVERFETCH: Final = 3
_FALLBACK_CATEGORIES: Final = 3


def item_key(prefix: str, item_id: str) -> str:
    """The co-item sorted set of ``item_id``."""
    return f"{prefix}:{{i:{item_id}}}:co"


def category_key(prefix: str, category: str) -> str:
    """The popularity sorted set of ``category``."""
    return f"{prefix}:{{c:{category}}}:pop"


@dataclass(slots=True)
class CustomerItems:
    """A customer's recent items (item -> last touch ts) and bought items."""

    recent: dict[str, float] = field(default_factory=dict)
    bought: set[str] = field(default_factory=set)

    def newest(self, n: int) -> list[str]:
        return [i for i, _ in sorted(self.recent.items(), key=lambda kv: -kv[1])[:n]]


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    """Recommend for ``customer_id`` who is looking at ``item_id`` of ``category``.

    ``fallback_categories`` (the customer's top categories, best first) are used after
    ``category`` when co-occurrence gives too few items.
    """

    customer_id: str
    item_id: str
    category: str
    fallback_categories: tuple[str, ...] = ()


class CooccurrenceStore:
    """Co-occurrence and popularity in Redis, two round trips per batch.

    Parameters
    ----------
    client
        A started ``redis.asyncio`` client (or cluster client); not closed here.
    settings
        Bounds, decay and window.
    prefix
        The key prefix shared with the feature store.
    customer_ttl_days
        TTL of the per-customer keys (the feature store's ``customer_ttl_days``).
    retry
        How a round trip rides out Redis outages (``FeatureStore.with_retry`` in the worker):
        retried here, a batch's learning is not skipped as its replay would be (a replayed
        batch's events are duplicates). Without it, errors raise at once.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        settings: RecommendSettings | None = None,
        *,
        prefix: str = "ss",
        customer_ttl_days: float = 35.0,
        retry: Retry | None = None,
    ) -> None:
        self.client = client
        self.retry = retry
        self.settings = RecommendSettings() if settings is None else settings
        self.prefix = prefix
        self.customer_ttl_days = customer_ttl_days
        s = self.settings
        self._half_life_s = s.half_life_days * 86_400.0
        self._window_s = s.pair_window_minutes * 60.0
        self._item_ttl_ms = max(1, round(s.item_ttl_days * 86_400_000))
        self._customer_ttl_ms = max(1, round(customer_ttl_days * 86_400_000))

    def growth(self, ts: float) -> float:
        """The multiplier of an increment at event time ``ts`` (see the module docstring)."""
        return 2.0 ** ((ts - EPOCH) / self._half_life_s)

    # -- round trip 1 ---------------------------------------------------------------------

    async def context(self, events: Iterable[Event]) -> dict[str, CustomerItems]:
        """Recent and bought items of the customers with clicks or purchases in ``events``."""
        if not self.settings.enabled:
            return {}
        customers = list(
            dict.fromkeys(e.customer_id for e in events if isinstance(e, Click | Purchase))
        )
        if not customers:
            return {}
        pipe = CommandBatch(self.client)
        for cid in customers:
            pipe.zrange(customer_key(self.prefix, cid, "recent"), 0, -1, withscores=True)
            pipe.zrange(customer_key(self.prefix, cid, "bought"), 0, -1)
        replies = await self._execute("context", pipe)
        out: dict[str, CustomerItems] = {}
        for n, cid in enumerate(customers):
            recent, bought = replies[2 * n], replies[2 * n + 1]
            out[cid] = CustomerItems(
                recent={_s(i): float(t) for i, t in recent}, bought={_s(i) for i in bought}
            )
        return out

    # -- round trip 2 ---------------------------------------------------------------------

    async def update(
        self,
        events: Sequence[Event],
        context: dict[str, CustomerItems],
        requests: Sequence[RecommendRequest] = (),
    ) -> list[list[str]]:
        """Learn from ``events`` and answer ``requests``, in one pipeline.

        ``events`` must be new (not replays); ``context`` comes from ``context()`` and is
        updated in place with the batch's touches. The recommendations see this batch's
        updates and come back in request order (empty lists when disabled).
        """
        if not self.settings.enabled:
            return [[] for _ in requests]
        incr: dict[str, dict[str, float]] = {}
        recent_add: dict[str, dict[str, float]] = {}
        bought_add: dict[str, dict[str, float]] = {}
        for event in events:
            if isinstance(event, Click):
                self._learn_click(event, context, incr, recent_add)
            elif isinstance(event, Purchase):
                self._learn_purchase(event, context, incr, recent_add, bought_add)
        if not incr and not recent_add and not requests:
            return []
        pipe = CommandBatch(self.client)
        self._queue_writes(pipe, incr, recent_add, bought_add)
        n_writes = len(pipe)
        plans = [self._plan(r, context.get(r.customer_id)) for r in requests]
        # Requests of one batch share most of their keys (popular items and categories: ~3
        # requests per key at 500 events): each key is read once, as deep as its deepest
        # request needs, and parsed once; every request then sees exactly what its own read
        # would have returned (a prefix of the same sorted set, read after the same writes).
        depths: dict[str, int] = {}
        for seeds, categories, _, depth in plans:
            for key in (*seeds, *categories):
                depths[key] = max(depth, depths.get(key, 0))
        for key, depth in depths.items():
            if key.endswith(":co"):
                pipe.zrevrange(key, 0, depth - 1, withscores=True)
            else:
                pipe.zrevrange(key, 0, depth - 1)
        replies = await self._execute("update", pipe)
        read = {
            key: _normalised(reply) if key.endswith(":co") else [_s(m) for m in reply]
            for key, reply in zip(depths, replies[n_writes:], strict=True)
        }
        return [
            _rank(
                [read[k][:depth] for k in seeds],
                [read[k][:depth] for k in categories],
                exclude,
                self.settings.n_items,
            )
            for seeds, categories, exclude, depth in plans
        ]

    async def recommend(
        self, requests: Sequence[RecommendRequest], context: dict[str, CustomerItems]
    ) -> list[list[str]]:
        """Recommendations without learning (read-only)."""
        return await self.update((), context, requests)

    # -- internals ------------------------------------------------------------------------

    def _partners(self, items: CustomerItems, item: str, ts: float) -> list[str]:
        window = self._window_s
        near = [(t, j) for j, t in items.recent.items() if j != item and abs(ts - t) <= window]
        near.sort(reverse=True)
        return [j for _, j in near[:_MAX_PARTNERS]]

    def _learn_click(
        self,
        event: Click,
        context: dict[str, CustomerItems],
        incr: dict[str, dict[str, float]],
        recent_add: dict[str, dict[str, float]],
    ) -> None:
        weight = _ACTION_W.get(event.action, _CLICK_W)
        if weight <= 0.0:
            return
        items = context.setdefault(event.customer_id, CustomerItems())
        g = self.growth(event.ts) * weight
        item = event.item_id
        for other in self._partners(items, item, event.ts):
            _add(incr, item_key(self.prefix, item), other, g)
            _add(incr, item_key(self.prefix, other), item, g)
        _add(incr, category_key(self.prefix, event.category), item, g)
        _touch(items, recent_add, event.customer_id, item, event.ts)

    def _learn_purchase(
        self,
        event: Purchase,
        context: dict[str, CustomerItems],
        incr: dict[str, dict[str, float]],
        recent_add: dict[str, dict[str, float]],
        bought_add: dict[str, dict[str, float]],
    ) -> None:
        items = context.setdefault(event.customer_id, CustomerItems())
        growth = self.growth(event.ts)
        lines = list(dict.fromkeys((line.item_id, line.category) for line in event.items))
        basket = {i for i, _ in lines}
        for n, (item, category) in enumerate(lines):
            for other, _ in lines[n + 1 :]:
                _add(incr, item_key(self.prefix, item), other, _BASKET_W * growth)
                _add(incr, item_key(self.prefix, other), item, _BASKET_W * growth)
            for other in self._partners(items, item, event.ts):
                if other not in basket:
                    _add(incr, item_key(self.prefix, item), other, _BUY_CLICK_W * growth)
                    _add(incr, item_key(self.prefix, other), item, _BUY_CLICK_W * growth)
            _add(incr, category_key(self.prefix, category), item, _BASKET_W * growth)
        for item, _ in lines:
            _touch(items, recent_add, event.customer_id, item, event.ts)
            items.bought.add(item)
            bought_add.setdefault(event.customer_id, {})[item] = event.ts

    def _queue_writes(
        self,
        pipe: CommandBatch,
        incr: dict[str, dict[str, float]],
        recent_add: dict[str, dict[str, float]],
        bought_add: dict[str, dict[str, float]],
    ) -> None:
        s = self.settings
        for key, members in incr.items():
            bound = s.max_popular if key.endswith(":pop") else s.max_co_items
            pipe.zmerge(key, members, incr=True, keep=bound, ttl_ms=self._item_ttl_ms)
        for parts, bound in ((recent_add, s.recent_items), (bought_add, s.bought_items)):
            name = "recent" if parts is recent_add else "bought"
            for cid, members in parts.items():
                key = customer_key(self.prefix, cid, name)
                pipe.zmerge(key, members, incr=False, keep=bound, ttl_ms=self._customer_ttl_ms)

    def _plan(
        self, request: RecommendRequest, items: CustomerItems | None
    ) -> tuple[list[str], list[str], set[str], int]:
        """The co-item keys of the request's seeds, the popularity keys of its categories, the
        items it must not recommend, and how deep to read each key."""
        s = self.settings
        recent = items.newest(s.seed_items) if items is not None else []
        seeds = list(dict.fromkeys([request.item_id, *recent]))[: s.seed_items]
        exclude = set(seeds) | (items.bought if items is not None else set())
        categories = list(dict.fromkeys([request.category, *request.fallback_categories]))
        categories = categories[:_FALLBACK_CATEGORIES]
        depth = s.n_items * _OVERFETCH + len(exclude)
        return (
            [item_key(self.prefix, seed) for seed in seeds],
            [category_key(self.prefix, category) for category in categories],
            exclude,
            depth,
        )

    async def _execute(self, what: str, pipe: CommandBatch) -> list[Any]:
        if self.retry is not None:
            return list(await self.retry(f"co-occurrence {what}", pipe.execute))
        try:
            return await pipe.execute()
        except rex.ResponseError as exc:
            raise FeatureStoreError(f"Redis rejected co-occurrence {what}: {exc}") from exc
        except (rex.RedisError, OSError) as exc:
            raise FeatureStoreError(
                f"Redis co-occurrence {what} failed: {exc}", transient=True
            ) from exc


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _add(incr: dict[str, dict[str, float]], key: str, member: str, amount: float) -> None:
    members = incr.setdefault(key, {})
    members[member] = members.get(member, 0.0) + amount


def _touch(
    items: CustomerItems,
    recent_add: dict[str, dict[str, float]],
    customer_id: str,
    item: str,
    ts: float,
) -> None:
    if ts > items.recent.get(item, -math.inf):
        items.recent[item] = ts
        recent_add.setdefault(customer_id, {})[item] = ts


def _normalised(pairs: Sequence[tuple[Any, float]]) -> list[tuple[str, float]]:
    """A co-item list (best first) with each weight divided by the best one."""
    if not pairs:
        return []
    top = float(pairs[0][1]) or 1.0
    return [(_s(member), float(score) / top) for member, score in pairs]


def _rank(
    seeds: Sequence[Sequence[tuple[str, float]]],
    categories: Sequence[Sequence[str]],
    exclude: set[str],
    n: int,
) -> list[str]:
    """Co-items scored by their normalised weight (``_normalised``), seeds weighted 1, 1/2,
    1/3...; then popular items of the categories."""
    scores: dict[str, float] = {}
    for rank, pairs in enumerate(seeds):
        weight = rank + 1
        for item, share in pairs:
            if item not in exclude:
                scores[item] = scores.get(item, 0.0) + share / weight
    chosen = [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
    taken = set(chosen) | exclude
    for members in categories:
        for item in members:
            if len(chosen) >= n:
                return chosen
            if item not in taken:
                chosen.append(item)
                taken.add(item)
    return chosen
