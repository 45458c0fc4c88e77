"""Realistic, learnable traffic: clicks, purchases and feedback per the event contract.

Pure Python (numpy only to draw the hidden customers), no Kafka. Everything is deterministic
given ``seed`` (and ``start_ts``; ``start_ts=None`` means the wall clock at construction, so
only the timestamps and id prefixes differ between runs).

Hidden structure the models can learn:

* **Customers** have category preferences (Dirichlet over ``CATEGORIES``), a price
  sensitivity (sensitive ones pick cheaper items and abandon expensive carts), a base buying
  propensity (about 20 % loyal buyers, the rest mostly browsers), an activity level, a
  satisfaction (drives feedback ratings) and a language (``en``/``zh``).
* **Sessions** (``concurrent_sessions`` interleaved at a time, 3-40 clicks each) end in
  ``purchase``, ``abandon`` (cart filled, no purchase) or ``browse`` (no cart). The outcome
  depends on the customer, the price of what they look at and the ORDER of actions: buyers
  compare (view the same item again, search then view), add to cart, then ``checkout_start``
  (sometimes removing one of two cart items first); abandoners drift after the cart (views in
  other categories, long gaps) or do ``checkout_start`` then ``remove_from_cart`` then browse
  on. Same action counts, different order, different outcome. Some abandoners stop right at
  checkout, some buyers "buy now" without checkout, so nothing is certain.
* A **purchase** (same ``session_id``, cart items, ``total = sum(price * quantity)``, EUR)
  follows each purchase session a little after its last click.
* **Feedback** (``feedback_rate`` of the events): rating from the hidden satisfaction, en/zh
  short texts on delivery, refund, quality, billing, service, price; sometimes rating without
  text, sometimes text without rating.

>>> sim = Simulator(100, seed=7, start_ts=1_700_000_000.0)
>>> events = list(sim.events(2_000))
>>> sorted({e.topic for e in events})
['clicks', 'feedback', 'purchases']
>>> events[0].topic, events[0].key, events[0].doc["action"], events[0].session_outcome
('clicks', b'c000067', 'search', 'browse')
>>> round(events[1].doc["ts"] - events[0].doc["ts"], 3)
0.01
>>> 0.0 < sim.offer_response("c000001", "o-10", "books", "discount") < 1.0
True
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import time
import zlib
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

__all__ = ["CATEGORIES", "OFFER_KINDS", "OUTCOMES", "SimEvent", "Simulator"]

logger = logging.getLogger(__name__)

CATEGORIES: Final = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
    "grocery",
)
OUTCOMES: Final = ("purchase", "abandon", "browse")
# Offer kinds with a modelled effect; any other kind gets a small fixed per-kind effect.
OFFER_KINDS: Final = (
    "discount",
    "free_shipping",
    "cart_saver",
    "recommendation",
    "bundle",
    "loyalty",
)

_ITEMS_PER_CATEGORY: Final = 300
# Median item price (EUR) and log-normal sigma per category.
_PRICE_MEDIAN: Final = (180.0, 45.0, 60.0, 25.0, 55.0, 14.0, 30.0, 8.0)
_PRICE_SIGMA: Final = (0.9, 0.6, 0.8, 0.5, 0.7, 0.4, 0.6, 0.5)
_CHANNELS: Final = ("survey", "review", "support", "social")
_FAR_FUTURE_TS: Final = 4_102_444_800.0  # 2100-01-01


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One generated record: what goes to Kafka plus the hidden truth for evaluation."""

    topic: str  # "clicks" | "purchases" | "feedback"
    key: bytes  # customer_id, UTF-8
    value: bytes  # JSON per features/events.py
    doc: dict[str, Any] | None  # the same as a dict; None for malformed records
    session_outcome: str | None  # clicks only: how the click's session ends


class _Session:
    __slots__ = ("cart", "cid", "customer", "outcome", "sid", "steps")

    def __init__(
        self,
        sid: str,
        customer: int,
        cid: str,
        outcome: str,
        steps: list[tuple[str, int, int, float]],
        cart: list[tuple[int, int, int]],
    ) -> None:
        self.sid = sid
        self.customer = customer
        self.cid = cid
        self.outcome = outcome
        self.steps = steps  # (action, category, item, gap before the next step), reversed
        self.cart = cart  # (category, item, quantity) bought if the outcome is "purchase"


class Simulator:
    """Generates interleaved sessions of many hidden customers; see the module docstring.

    ``events`` continues where the previous call stopped (ids, time, open sessions), so a
    long stream can be pulled in chunks.
    """

    def __init__(
        self,
        n_customers: int = 1_000,
        *,
        seed: int = 0,
        start_ts: float | None = None,
        malformed_rate: float = 0.0,
        feedback_rate: float = 0.05,
        zh_text_rate: float = 0.2,
        concurrent_sessions: int = 50,
    ) -> None:
        if n_customers < 1:
            raise ValueError(f"n_customers must be >= 1, got {n_customers}")
        if concurrent_sessions < 1:
            raise ValueError(f"concurrent_sessions must be >= 1, got {concurrent_sessions}")
        for name, value in (
            ("malformed_rate", malformed_rate),
            ("feedback_rate", feedback_rate),
            ("zh_text_rate", zh_text_rate),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if malformed_rate + feedback_rate > 1.0:
            raise ValueError("malformed_rate + feedback_rate must not exceed 1")
        self.n_customers = n_customers
        self.seed = seed
        self.start_ts = float(time.time() if start_ts is None else start_ts)
        self.malformed_rate = malformed_rate
        self.feedback_rate = feedback_rate
        self.zh_text_rate = zh_text_rate
        self.concurrent_sessions = concurrent_sessions

        self._rng = random.Random(seed)
        self._build_world(np.random.default_rng(seed))
        self._prefix = f"{seed:x}-{int(self.start_ts):x}"
        self._n_emitted = 0
        self._n_ids = 0
        self._ts = self.start_ts
        self._vtime = 0.0  # virtual time that orders the interleaved sessions
        self._heap: list[tuple[float, int, str, Any]] = []
        self._n_open = 0
        self._seq = itertools.count()  # heap tie-breaker
        self._recent_buyers: deque[int] = deque(maxlen=200)

    # -- the hidden world ------------------------------------------------------------------

    def _build_world(self, gen: np.random.Generator) -> None:
        n, k = self.n_customers, len(CATEGORIES)
        self._customer_ids = [f"c{i:06d}" for i in range(n)]
        self._index = {cid: i for i, cid in enumerate(self._customer_ids)}
        self._pref = gen.dirichlet(np.full(k, 0.4), size=n)
        self._pref_cum = [list(map(float, np.cumsum(p))) for p in self._pref]
        price_sens = gen.beta(2.0, 2.0, size=n)
        self._price_sens = [float(x) for x in price_sens]
        loyal = gen.random(n) < 0.2
        self._loyal = [bool(x) for x in loyal]
        propensity = np.where(loyal, gen.beta(6.0, 3.0, size=n), gen.beta(1.5, 6.0, size=n))
        self._propensity = [float(x) for x in propensity]
        activity = gen.lognormal(0.0, 0.8, size=n) * np.where(loyal, 1.5, 1.0)
        self._activity_cum = list(map(float, np.cumsum(activity)))
        self._satisfaction = [float(x) for x in gen.beta(4.0, 1.6, size=n)]
        self._zh = [bool(x) for x in gen.random(n) < self.zh_text_rate]
        # Catalogue: log-normal prices, Zipf-like popularity (item 0 most popular).
        self._prices = [
            [
                round(float(p), 2)
                for p in np.maximum(
                    0.5,
                    gen.lognormal(math.log(_PRICE_MEDIAN[c]), _PRICE_SIGMA[c], _ITEMS_PER_CATEGORY),
                )
            ]
            for c in range(k)
        ]
        self._item_ids = [[f"i{c}-{j}" for j in range(_ITEMS_PER_CATEGORY)] for c in range(k)]
        popularity = 1.0 / np.arange(1, _ITEMS_PER_CATEGORY + 1) ** 1.1
        self._pop_cum = list(map(float, np.cumsum(popularity)))
        # Per customer: the log price level they aim for (sensitive customers aim lower).
        self._price_aim = [float(a) for a in 0.9 * (0.5 - price_sens)]
        self._pop_total = self._pop_cum[-1]
        self._log_rel_price = [
            [math.log(p / _PRICE_MEDIAN[c]) for p in self._prices[c]] for c in range(k)
        ]
        self._n_categories = k

    def _pick_category(self, customer: int) -> int:
        cum = self._pref_cum[customer]
        return min(bisect_right(cum, self._rng.random() * cum[-1]), self._n_categories - 1)

    def _pick_item(self, customer: int, cat: int) -> int:
        """Three popularity-weighted candidates; keep the one nearest the customer's price aim."""
        rnd = self._rng.random
        cum, total = self._pop_cum, self._pop_total
        rel = self._log_rel_price[cat]
        aim = self._price_aim[customer]
        best = bisect_right(cum, rnd() * total)
        best_d = abs(rel[best] - aim)
        for _ in range(2):
            j = bisect_right(cum, rnd() * total)
            d = abs(rel[j] - aim)
            if d < best_d:
                best, best_d = j, d
        return best

    # -- sessions --------------------------------------------------------------------------

    def _new_session(self) -> _Session:
        rng = self._rng
        act = self._activity_cum
        customer = min(bisect_right(act, rng.random() * act[-1]), self.n_customers - 1)
        u = float(self._propensity[customer])
        sens = float(self._price_sens[customer])
        cat = self._pick_category(customer)
        main = self._pick_item(customer, cat)
        rel_price = self._log_rel_price[cat][main]
        p_cart = 0.2 + 0.55 * u
        if rng.random() < p_cart:
            logit = 3.0 * (u - 0.35) - 1.8 * sens * rel_price + rng.gauss(0.0, 0.6)
            outcome = "purchase" if rng.random() < 1.0 / (1.0 + math.exp(-logit)) else "abandon"
        else:
            outcome = "browse"
        steps, cart = self._script(customer, outcome, cat, main)
        self._n_ids += 1
        sid = f"s{self._prefix}-{self._n_ids}"
        steps.reverse()
        return _Session(sid, customer, self._customer_ids[customer], outcome, steps, cart)

    def _script(
        self, customer: int, outcome: str, cat: int, main: int
    ) -> tuple[list[tuple[str, int, int, float]], list[tuple[int, int, int]]]:
        """The clicks of one session as (action, category, item, gap) in order."""
        rng = self._rng
        expo = rng.expovariate
        steps: list[tuple[str, int, int, float]] = []
        add = steps.append
        buyer = outcome == "purchase"
        if outcome == "browse":
            n_explore = min(40, 3 + int(expo(1 / 7.0)))
            switch, revisit = 0.45, 0.06
        else:
            n_explore = min(24, 1 + int(expo(1 / (5.0 if buyer else 4.0))))
            switch, revisit = (0.08, 0.35) if buyer else (0.2, 0.12)
        seen: list[tuple[int, int]] = [(cat, main)]
        cur_cat, item = cat, main
        # Explore: searches and views; buyers stay in the category and compare.
        first = "search" if rng.random() < 0.5 else "view"
        add((first, cat, main, expo(1.0)))
        if first == "search" and n_explore > 1:
            add(("view", cat, main, expo(1.0)))
        while len(steps) < n_explore:
            r = rng.random()
            if r < revisit and len(seen) > 1:
                cur_cat, item = seen[rng.randrange(len(seen))]
                add(("view", cur_cat, item, expo(1.5 if buyer else 1.0)))
                continue
            if rng.random() < switch:
                cur_cat = self._pick_category(customer)
                if outcome == "browse" and rng.random() < 0.3:
                    cur_cat = rng.randrange(self._n_categories)
            item = self._pick_item(customer, cur_cat)
            if rng.random() < 0.3:
                add(("search", cur_cat, item, expo(1.0)))
                if len(steps) >= n_explore:
                    break
            add(("view", cur_cat, item, expo(1.0)))
            seen.append((cur_cat, item))
        if outcome == "browse":
            while len(steps) < 3:
                steps.append(("view", cat, main, expo(1.0)))
            return steps, []

        # Cart: the main item (bought more often after a comparison), sometimes one more.
        cart: list[tuple[int, int, int]] = []
        if buyer and rng.random() < 0.6 and steps[-1][2] != main:
            add(("view", cat, main, expo(0.7)))  # one last look before committing
        add(("add_to_cart", cat, main, expo(1.0)))
        cart.append((cat, main, 1 if rng.random() < 0.85 else 2))
        if rng.random() < 0.5:
            extra = self._pick_item(customer, cat)
            add(("view", cat, extra, expo(1.0)))
            add(("add_to_cart", cat, extra, expo(1.0)))
            cart.append((cat, extra, 1))
        if buyer:
            r = rng.random()
            if r < 0.35 and len(cart) > 1:
                # Trim the cart, then check out: remove BEFORE checkout_start.
                c, i, _ = cart.pop()
                add(("remove_from_cart", c, i, expo(0.8)))
                add(("checkout_start", cat, main, expo(0.5)))
            elif r < 0.06 or 0.35 <= r < 0.4:
                pass  # buy now: straight from the cart
            else:
                add(("checkout_start", cat, main, expo(0.5)))
                if rng.random() < 0.15:
                    add(("view", cat, main, expo(0.5)))  # checks the details once more
        else:
            r = rng.random()
            if r < 0.3:
                # Drift: views elsewhere after the cart, with long gaps.
                for _ in range(1 + int(expo(1 / 3.0))):
                    c = rng.randrange(self._n_categories)
                    add(("view", c, self._pick_item(customer, c), expo(1 / 3.0)))
            elif r < 0.75:
                # checkout_start, then remove_from_cart AFTER it, then browse on.
                add(("checkout_start", cat, main, expo(1.0)))
                c, i, _ = cart[-1]
                add(("remove_from_cart", c, i, expo(2.0)))
                for _ in range(int(expo(1 / 2.0))):
                    c = rng.randrange(self._n_categories)
                    add(("view", c, self._pick_item(customer, c), expo(1 / 2.5)))
            elif r < 0.87:
                add(("checkout_start", cat, main, expo(1.0)))  # gave up at payment
            # else: left right after adding to the cart
        if len(steps) > 40:
            steps = steps[-40:]
        while len(steps) < 3:
            steps.insert(0, ("search", cat, main, expo(1.0)))
        return steps, cart

    # -- records ---------------------------------------------------------------------------

    def _click(self, s: _Session, action: str, cat: int, item: int, ts: float) -> SimEvent:
        self._n_ids += 1
        doc: dict[str, Any] = {
            "event_id": f"e{self._prefix}-{self._n_ids}",
            "customer_id": s.cid,
            "session_id": s.sid,
            "ts": ts,
            "action": action,
            "item_id": self._item_ids[cat][item],
            "category": CATEGORIES[cat],
        }
        if action != "search" and action != "checkout_start":
            doc["price"] = self._prices[cat][item]
        return SimEvent("clicks", s.cid.encode(), orjson.dumps(doc), doc, s.outcome)

    def _purchase(self, s: _Session, ts: float) -> SimEvent:
        self._n_ids += 1
        items = [
            {
                "item_id": self._item_ids[c][i],
                "category": CATEGORIES[c],
                "price": self._prices[c][i],
                "quantity": q,
            }
            for c, i, q in s.cart
        ]
        doc: dict[str, Any] = {
            "event_id": f"e{self._prefix}-{self._n_ids}",
            "customer_id": s.cid,
            "session_id": s.sid,
            "ts": ts,
            "order_id": f"o{self._prefix}-{self._n_ids}",
            "items": items,
            "total": round(sum(it["price"] * it["quantity"] for it in items), 2),
            "currency": "EUR",
        }
        self._recent_buyers.append(s.customer)
        return SimEvent("purchases", s.cid.encode(), orjson.dumps(doc), doc, None)

    def _feedback(self, ts: float) -> SimEvent:
        rng = self._rng
        if self._recent_buyers and rng.random() < 0.6:
            customer = self._recent_buyers[rng.randrange(len(self._recent_buyers))]
        else:
            customer = rng.randrange(self.n_customers)
        cid = self._customer_ids[customer]
        sat = float(self._satisfaction[customer])
        rating = min(5, max(1, round(1.0 + 4.0 * sat + rng.gauss(0.0, 0.8))))
        r = rng.random()
        has_rating, has_text = (True, False) if r < 0.3 else (r >= 0.85, True)
        if rating >= 4:
            positive = True
        elif rating <= 2:
            positive = False
        else:
            positive = rng.random() < sat
        self._n_ids += 1
        doc: dict[str, Any] = {
            "event_id": f"e{self._prefix}-{self._n_ids}",
            "customer_id": cid,
            "ts": ts,
            "channel": rng.choice(_CHANNELS[:2] if positive else _CHANNELS[1:]),
        }
        if has_rating:
            doc["rating"] = rating
        if has_text:
            lang = "zh" if self._zh[customer] else "en"
            doc["text"] = rng.choice(_TEXTS[lang][positive][rng.randrange(len(_TOPICS))])
        return SimEvent("feedback", cid.encode(), orjson.dumps(doc), doc, None)

    # -- public API ------------------------------------------------------------------------

    def events(
        self, n: int, *, rate: float | None = None, clock: Callable[[], float] | None = None
    ) -> Iterator[SimEvent]:
        """Yield the next ``n`` events.

        Simulated time: ``ts`` advances by ``1/rate`` per event (``rate`` events/s, default
        100) from ``start_ts``; with ``clock``, ``ts = clock()`` (real time for a live demo).
        """
        rate = 100.0 if rate is None else float(rate)
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        step = 1.0 / rate
        rng = self._rng
        heap = self._heap
        push, pop = heapq.heappush, heapq.heappop
        seq = self._seq
        p_bad = self.malformed_rate
        p_side = p_bad + self.feedback_rate
        mean_gap = 1.0 / self.concurrent_sessions
        for _ in range(n):
            if clock is None:
                ts = round(self.start_ts + self._n_emitted * step, 3)
            else:
                ts = float(clock())
            self._n_emitted += 1
            r = rng.random()
            if r < p_side:
                if r < p_bad:
                    topic, raw = self.malformed()
                    yield SimEvent(topic, b"", raw, None, None)
                else:
                    yield self._feedback(ts)
                continue
            while self._n_open < self.concurrent_sessions:
                s = self._new_session()
                self._n_open += 1
                push(heap, (self._vtime + rng.random() * mean_gap, next(seq), "c", s))
            vtime, _, what, s = pop(heap)
            self._vtime = vtime
            if what == "p":
                yield self._purchase(s, ts)
                continue
            action, cat, item, gap = s.steps.pop()
            if s.steps:
                push(heap, (vtime + gap, next(seq), "c", s))
            else:
                self._n_open -= 1
                if s.outcome == "purchase":
                    push(heap, (vtime + 1.0 + rng.expovariate(0.5), next(seq), "p", s))
            yield self._click(s, action, cat, item, ts)

    def offer_response(
        self, customer_id: str, offer_id: str, category: str | None, kind: str | None
    ) -> float:
        """Hidden probability that ``customer_id`` converts on this offer.

        Grows with the customer's affinity to ``category`` (``None``: a generic offer) and
        propensity; discounts and free shipping work better on price-sensitive customers,
        recommendations on strong affinities, loyalty offers on loyal buyers; each offer id
        has a small fixed quality of its own. Raises ``KeyError`` for an unknown customer.
        """
        i = self._index.get(customer_id)
        if i is None:
            raise KeyError(f"unknown customer {customer_id!r}")
        u = float(self._propensity[i])
        sens = float(self._price_sens[i])
        if category is None:
            aff = 1.0 / self._n_categories
        else:
            try:
                aff = float(self._pref[i][CATEGORIES.index(category)])
            except ValueError:
                aff = 0.0
        logit = -2.6 + 2.0 * u + 3.0 * (aff - 1.0 / self._n_categories)
        if kind == "discount":
            logit += 1.6 * sens - 0.2
        elif kind == "free_shipping":
            logit += 1.0 * sens
        elif kind == "cart_saver":
            logit += 0.5 + 0.8 * sens
        elif kind == "recommendation":
            logit += 2.0 * aff - 0.2
        elif kind == "bundle":
            logit += 0.8 * u - 0.3
        elif kind == "loyalty":
            logit += 1.0 if self._loyal[i] else -0.5
        elif kind is not None:
            logit += (zlib.crc32(kind.encode()) % 1000) / 1000.0 - 0.5
        logit += ((zlib.crc32(offer_id.encode()) % 1000) / 1000.0 - 0.5) * 0.8
        return 1.0 / (1.0 + math.exp(-logit))

    def malformed(self) -> tuple[str, bytes]:
        """One random record that breaks the contract, as (topic, raw bytes)."""
        rng = self._rng
        self._n_ids += 1
        cid = self._customer_ids[rng.randrange(self.n_customers)]
        ts = round(self.start_ts + self._n_emitted / 100.0, 3)
        good: dict[str, Any] = {
            "event_id": f"e{self._prefix}-{self._n_ids}",
            "customer_id": cid,
            "session_id": f"s{self._prefix}-bad",
            "ts": ts,
            "action": "view",
            "item_id": "i0-1",
            "category": "electronics",
            "price": 19.99,
        }
        kind = rng.randrange(12)
        if kind == 0:  # truncated JSON
            raw = orjson.dumps(good)
            return "clicks", raw[: rng.randrange(1, len(raw) - 1)]
        if kind == 1:  # missing field
            del good[rng.choice(("event_id", "customer_id", "session_id", "action", "item_id"))]
        elif kind == 2:  # wrong type
            field, value = rng.choice((("price", "19.99"), ("ts", True), ("action", 3)))
            good[field] = value
        elif kind == 3:  # negative price
            good["price"] = -round(rng.uniform(0.01, 500.0), 2)
        elif kind == 4:  # unknown action
            good["action"] = rng.choice(("click", "purchase", "wishlist", "VIEW", ""))
        elif kind == 5:  # far-future ts
            good["ts"] = _FAR_FUTURE_TS + rng.randrange(10**6)
        elif kind == 6:  # oversized payload
            doc = {"event_id": good["event_id"], "customer_id": cid, "ts": ts}
            doc |= {"channel": "review", "rating": 3, "text": "x" * (17_000 + rng.randrange(999))}
            return "feedback", orjson.dumps(doc)
        elif kind == 7:  # bad UTF-8 inside a string
            raw = orjson.dumps(good).replace(b'"view"', b'"vi\xff\xfeew"')
            return "clicks", raw
        elif kind == 8:  # a JSON value that is not an object
            return "clicks", rng.choice((b"[1, 2, 3]", b'"click"', b"null", b"42"))
        elif kind == 9:  # purchase with a negative total
            doc = {
                "event_id": good["event_id"],
                "customer_id": cid,
                "ts": ts,
                "order_id": f"o{self._prefix}-bad",
                "items": [{"item_id": "i0-1", "category": "electronics", "price": 5.0}],
                "total": -5.0,
                "currency": "EUR",
            }
            return "purchases", orjson.dumps(doc)
        elif kind == 10:  # feedback with an out-of-range rating / unknown channel
            doc = {"event_id": good["event_id"], "customer_id": cid, "ts": ts}
            if rng.random() < 0.5:
                doc |= {"channel": "survey", "rating": rng.choice((0, 6, 10, -1))}
            else:
                doc |= {"channel": "email", "rating": 4}
            return "feedback", orjson.dumps(doc)
        else:  # ts before 2000 or empty id
            if rng.random() < 0.5:
                good["ts"] = 86_400.0
            else:
                good["customer_id"] = ""
        return "clicks", orjson.dumps(good)


_TOPICS: Final = ("delivery", "refund", "quality", "billing", "service", "price")
# _TEXTS[lang][positive][topic index] -> sentences
_TEXTS: Final[dict[str, dict[bool, list[tuple[str, ...]]]]] = {
    "en": {
        True: [
            ("Delivery was fast, arrived a day early", "Quick shipping and well packed"),
            ("The refund came through within two days", "Easy return, got my money back fast"),
            ("Great quality, exactly as described", "Really well made, I love it"),
            ("Billing was clear and correct", "Payment went through without any problem"),
            ("Support was friendly and solved my issue", "Very helpful customer service"),
            ("Good value for the price", "Great deal, cheaper than elsewhere"),
        ],
        False: [
            ("The delivery was late and the box was damaged", "Package never arrived"),
            ("Still waiting for my refund after three weeks", "Refund request was ignored"),
            ("Poor quality, it broke after one day", "Not as described, cheap material"),
            ("I was charged twice for one order", "Wrong amount on my invoice"),
            ("Nobody answered my support ticket", "Rude and unhelpful customer service"),
            ("Way too expensive for what you get", "The price went up right after I bought"),
        ],
    },
    "zh": {
        True: [
            ("快递很快\uff0c提前一天到了", "物流很快\uff0c包装很好"),
            ("退款两天就到账了", "退货很方便\uff0c钱很快退回来了"),
            ("质量很好\uff0c和描述的一样", "做工很好\uff0c非常喜欢"),
            ("账单清楚\uff0c没有问题", "付款很顺利"),
            ("客服态度很好\uff0c问题解决了", "客服非常耐心"),
            ("性价比很高", "价格很划算"),
        ],
        False: [
            ("快递太慢了\uff0c包装也坏了", "包裹一直没收到"),
            ("三个星期了还没退款", "退款申请没人处理"),
            ("质量太差了\uff0c用了一天就坏了", "和描述不符\uff0c材料很差"),
            ("一个订单扣了我两次钱", "发票金额不对"),
            ("客服一直不回复", "客服态度很差"),
            ("太贵了\uff0c不值这个价", "刚买就降价了"),
        ],
    },
}
