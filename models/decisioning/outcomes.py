"""Offer outcomes and contact state in Redis: open attribution windows, conversions, opt-outs.

Keys (all built by ``features.keys.customer_key``, so one customer's keys share a hash tag):

* ``{p}:{cid}:outcomes``: hash, ``offer_event_id`` -> the open offer as JSON (offer id,
  target categories, arm, event time, deadline, bandit context); ``s:<offer_event_id>`` -> 1
  (converted) or 2 (expired) once resolved; ``p:<order_id>`` -> the order's event time,
  amounts per category and whether it was attributed (replays change nothing). TTL: two
  windows plus ``keep_s`` (3 days), refreshed on write.
* ``{p}:{cid}:contact``: hash, ``o:<offer_id>`` -> ``ts|trigger_event_id`` of the latest send
  of that offer (the per-offer cap) and ``neg`` -> event time until which a negative-feedback
  alert blocks offers. Same TTL rule.
* ``{p}:{cid}:optout``: string, the opt-out reason; no TTL (an opt-out never lapses).
* ``{p}:{due-<n>}:outcomes``: zset of ``[customer_id, offer_event_id]`` by deadline, one per
  input partition ``n`` (the customer's), so the windows of a partition are expired by the
  worker that owns it, on that partition's event time, and no one key is hot for the whole
  deployment. ``{p}:outcomes:due`` is the single set of earlier versions: still drained.

``record`` is one pipeline per batch (one script call per customer plus the deadline
ZADDs): it opens the batch's offers, attributes the batch's purchases to the latest open
offer whose window holds the purchase and whose targets meet a purchased category (last
touch; offers without targets match any purchase), and opens negative-feedback blocks.
Purchases are kept (``p:<order_id>``) for a while, so a purchase read before the click that
triggered the offer (clicks and purchases are different topics, so their order across them
is not guaranteed) converts the offer when it opens, by event time.
``expire`` closes the windows that ended by the caller's event time. Resolution is atomic
per customer, so a conversion racing an expiry (or two workers) yields one outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from features.batch import CommandBatch, packed
from features.commands import pipeline
from features.events import Purchase
from features.keys import customer_key
from features.scripts import ScriptStore

__all__ = ["ContactState", "DueWindows", "OpenOffer", "OutcomeStore", "Resolution"]

logger = logging.getLogger(__name__)

_RECORD: Final = r"""
local ARGV = cjson.decode(ARGV[1])  -- one JSON array of strings (features.batch.packed)
-- KEYS: outcomes hash, contact hash.
-- ARGV: ttl_ms, keep_s, n_open, {oid, record, offer_id, ts, trigger} x n_open,
--       n_purchases, {order_id, ts, n_lines, {category, amount} x n_lines} x n_purchases,
--       n_negative, {until} x n_negative
-- Returns {existing: {oid, stored record}...,
--          conversions: {oid, record, order, revenue, ts, again}...}
-- Purchases are kept as p:<order> = {t, a = {category: amount}, x = attributed 0/1, o = the
-- offer it converted}, so a purchase that arrives before its offer (another topic) still
-- converts it when it opens. A replayed offer or purchase whose conversion was recorded before
-- gets that conversion back with again = 1 (re-emitted, same content; not learned again).
local out, con = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local i = 3
local existing, conversions = {}, {}
local latest = 0
local offers, orders = nil, nil
local function load()
  if offers ~= nil then return end
  offers, orders = {}, {}
  local all = redis.call('HGETALL', out)
  for j = 1, #all, 2 do
    local k = all[j]
    local c = string.sub(k, 1, 2)
    if c == 'p:' then orders[string.sub(k, 3)] = cjson.decode(all[j+1])
    elseif c ~= 's:' then offers[k] = cjson.decode(all[j+1]) end
  end
end
local function revenue(r, p)
  local rev, hit = 0, false
  if type(r.c) ~= 'table' or next(r.c) == nil then
    for _, v in pairs(p.a) do rev = rev + v end
    return true, rev
  end
  for _, cat in ipairs(r.c) do
    if p.a[cat] then hit = true; rev = rev + p.a[cat] end
  end
  return hit, rev
end
local reported = {}
local function report(oid, order, p, rev, again)
  if reported[oid] then return end
  reported[oid] = true
  conversions[#conversions+1] = oid
  conversions[#conversions+1] = redis.call('HGET', out, oid)
  conversions[#conversions+1] = order
  conversions[#conversions+1] = string.format('%.17g', rev)
  conversions[#conversions+1] = string.format('%.17g', p.t)
  conversions[#conversions+1] = again
end
local function convert(oid, order, p, rev)
  redis.call('HSET', out, 's:' .. oid, 1)
  p.x = 1
  p.o = oid
  redis.call('HSET', out, 'p:' .. order, cjson.encode(p))
  report(oid, order, p, rev, '0')
end
-- the conversion recorded before for this replayed offer or order, re-emitted as it was
local function again(oid, order, p)
  local raw = redis.call('HGET', out, oid)
  if raw then
    local _, rev = revenue(cjson.decode(raw), p)
    report(oid, order, p, rev, '1')
  end
end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local oid, rec, offer, ts, trig = ARGV[i], ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+3]), ARGV[i+4]
  i = i + 5
  if ts > latest then latest = ts end
  if redis.call('HSETNX', out, oid, rec) == 0 then
    existing[#existing+1] = oid
    existing[#existing+1] = redis.call('HGET', out, oid)
    if redis.call('HGET', out, 's:' .. oid) == '1' then
      load()
      for order, p in pairs(orders) do
        if p.o == oid then again(oid, order, p) end
      end
    end
  else
    local last = redis.call('HGET', con, 'o:' .. offer)
    if (not last) or tonumber(string.match(last, '^[^|]+')) <= ts then
      redis.call('HSET', con, 'o:' .. offer, string.format('%.17g', ts) .. '|' .. trig)
    end
    load()
    local r = cjson.decode(rec)
    offers[oid] = r
    -- an earlier-processed purchase inside this window (the earliest one) converts it now
    local best, best_t, best_rev = nil, math.huge, 0
    for order, p in pairs(orders) do
      if p.x == 0 and r.t <= p.t and p.t <= r.d and p.t < best_t then
        local hit, rev = revenue(r, p)
        if hit then best, best_t, best_rev = order, p.t, rev end
      end
    end
    if best then convert(oid, best, orders[best], best_rev) end
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local order, pts, lines = ARGV[i], tonumber(ARGV[i+1]), tonumber(ARGV[i+2])
  i = i + 3
  local amount = {}
  for _ = 1, lines do
    amount[ARGV[i]] = (amount[ARGV[i]] or 0) + tonumber(ARGV[i+1])
    i = i + 2
  end
  if pts > latest then latest = pts end
  load()
  if orders[order] == nil then
    local p = {t = pts, a = amount, x = 0}
    orders[order] = p
    redis.call('HSET', out, 'p:' .. order, cjson.encode(p))
    -- last touch: the latest open offer whose window holds the purchase
    local best, best_t, best_rev = nil, -1, 0
    for oid, r in pairs(offers) do
      if r.t <= pts and pts <= r.d and r.t > best_t
          and redis.call('HEXISTS', out, 's:' .. oid) == 0 then
        local hit, rev = revenue(r, p)
        if hit then best, best_t, best_rev = oid, r.t, rev end
      end
    end
    if best then convert(best, order, p, best_rev) end
  elseif orders[order].x == 1 and orders[order].o then
    again(orders[order].o, order, orders[order])
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local u = tonumber(ARGV[i]); i = i + 1
  local cur = tonumber(redis.call('HGET', con, 'neg') or '0')
  if u > cur then redis.call('HSET', con, 'neg', string.format('%.17g', u)) end
end
-- forget resolved windows and old orders a while after they closed
if offers ~= nil then
  for oid, r in pairs(offers) do
    if r.d < latest - keep and redis.call('HEXISTS', out, 's:' .. oid) == 1 then
      redis.call('HDEL', out, oid, 's:' .. oid)
    end
  end
  for order, p in pairs(orders) do
    if p.t < latest - keep then redis.call('HDEL', out, 'p:' .. order) end
  end
end
if redis.call('EXISTS', out) == 1 then redis.call('PEXPIRE', out, ttl) end
if redis.call('EXISTS', con) == 1 then redis.call('PEXPIRE', con, ttl) end
return {existing, conversions}
"""

_EXPIRE: Final = r"""
-- KEYS: outcomes hash. ARGV: now, oid... Returns {oid, record, again}... of the windows closed
-- as not converted: now (again = 0), or before but not yet forgotten from the due set because
-- their publication was not confirmed (again = 1: re-emitted, not learned again).
local now = tonumber(ARGV[1])
local closed = {}
for j = 2, #ARGV do
  local oid = ARGV[j]
  local rec = redis.call('HGET', KEYS[1], oid)
  if rec then
    local s = redis.call('HGET', KEYS[1], 's:' .. oid)
    local again = nil
    if not s and cjson.decode(rec).d <= now then
      redis.call('HSET', KEYS[1], 's:' .. oid, 2)
      again = '0'
    elseif s == '2' then
      again = '1'
    end
    if again then
      closed[#closed+1] = oid
      closed[#closed+1] = rec
      closed[#closed+1] = again
    end
  end
end
return closed
"""


@dataclass(slots=True)
class ContactState:
    """What the contact policy needs to know about one customer (see models/decisioning/contact.py).

    ``last_offer`` maps offer id to (event time, trigger event id) of its latest send;
    ``negative_until`` is the event time until which a negative-feedback alert blocks offers.
    """

    suppressed: bool = False
    negative_until: float = 0.0
    last_offer: dict[str, tuple[float, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OpenOffer:
    """A published offer whose attribution window is open until ``deadline`` (event time)."""

    offer_event_id: str
    customer_id: str
    offer_id: str
    target_categories: tuple[str, ...]
    arm: str
    ts: float
    deadline: float
    context: tuple[float, ...] = ()
    trigger_event_id: str = ""
    # the offer's recommended items as published; None in records written before they were kept
    recommended_items: tuple[str, ...] | None = None

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "o": self.offer_id,
            "c": list(self.target_categories),
            "a": self.arm,
            "t": self.ts,
            "d": self.deadline,
            "x": list(self.context),
            "g": self.trigger_event_id,
        }
        if self.recommended_items is not None:
            doc["r"] = list(self.recommended_items)
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, offer_event_id: str, customer_id: str, raw: bytes | str) -> OpenOffer:
        doc = orjson.loads(raw)
        targets = doc.get("c")
        items = doc.get("r")
        return cls(
            offer_event_id=offer_event_id,
            customer_id=customer_id,
            offer_id=doc["o"],
            target_categories=tuple(targets) if isinstance(targets, list) else (),
            arm=doc.get("a", ""),
            ts=float(doc["t"]),
            deadline=float(doc["d"]),
            context=tuple(doc.get("x") or ()),
            trigger_event_id=doc.get("g", ""),
            recommended_items=tuple(items) if isinstance(items, list) else None,
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    """An attribution window that ended: converted by ``order_id`` at ``ts``, or expired."""

    offer: OpenOffer
    converted: bool
    ts: float
    order_id: str | None = None
    revenue: float = 0.0
    # Recorded before and reported again (a replay, or a publication not confirmed): publish
    # it again, same content, but learn and count it once only.
    again: bool = False


@dataclass(frozen=True, slots=True)
class DueWindows:
    """What ``OutcomeStore.expire`` closed, and the due-set members to ``forget`` once the
    resolutions are published (until then a crash leaves them due, and they come again)."""

    resolutions: list[Resolution]
    members: list[bytes]
    key: str = ""  # the due set they are in


class OutcomeStore(ScriptStore):
    """Open offers, conversions, expiries, contact state and opt-outs in Redis.

    ``key_prefix`` is the feature store's; ``keep_s`` is how long a resolved window is
    remembered (replays of its offer or order change nothing meanwhile).
    """

    what = "offer outcomes"
    scripts = {"record": _RECORD, "expire": _EXPIRE}

    def __init__(self, key_prefix: str, window_s: float, keep_s: float = 3 * 86_400.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        super().__init__()
        self.key_prefix = key_prefix
        self.window_s = window_s
        self.keep_s = keep_s
        self._ttl_ms = int((2 * window_s + keep_s) * 1000)
        self._legacy_due_key = f"{key_prefix}:outcomes:due"

    def due_key(self, partition: int | None) -> str:
        """The due set of one input partition's windows; ``None``: the single set of earlier
        versions (windows opened before the upgrade, or without a known partition)."""
        if partition is None:
            return self._legacy_due_key
        return f"{self.key_prefix}:{{due-{partition}}}:outcomes"

    def _keys(self, customer_id: str) -> tuple[str, str]:
        p = self.key_prefix
        return customer_key(p, customer_id, "outcomes"), customer_key(p, customer_id, "contact")

    # -- reads -----------------------------------------------------------------------------

    async def contact_states(self, customer_ids: Sequence[str]) -> dict[str, ContactState]:
        """The contact state of each customer, one round trip."""
        cids = list(dict.fromkeys(customer_ids))
        if not cids:
            return {}

        async def op() -> list[Any]:
            pipe = CommandBatch(self._require())
            for cid in cids:
                pipe.hgetall(self._keys(cid)[1])
                pipe.exists(customer_key(self.key_prefix, cid, "optout"))
            return await pipe.execute()

        replies = await self._call(op)
        states: dict[str, ContactState] = {}
        for k, cid in enumerate(cids):
            raw: dict[bytes, bytes] = replies[2 * k]
            state = ContactState(suppressed=bool(replies[2 * k + 1]))
            for name, value in raw.items():
                if name == b"neg":
                    state.negative_until = float(value)
                elif name.startswith(b"o:"):
                    ts, _, trigger = value.decode().partition("|")
                    state.last_offer[name[2:].decode()] = (float(ts), trigger)
            states[cid] = state
        return states

    # -- writes ----------------------------------------------------------------------------

    async def record(
        self,
        offers: Sequence[OpenOffer],
        purchases: Sequence[Purchase],
        negative: Sequence[tuple[str, float]] = (),
        partitions: Mapping[str, int] | None = None,
    ) -> tuple[dict[str, OpenOffer], list[Resolution]]:
        """Open ``offers``, attribute ``purchases``, block on ``negative`` (cid, until).

        ``partitions`` maps a customer id to its input partition: the offer's window goes
        into that partition's due set. Returns the offers that were already open (a replay:
        the stored record wins, so the replayed offer keeps its first offer id) and the
        conversions. One round trip.
        """
        per: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
        for o in offers:
            args = per.setdefault(o.customer_id, ([], [], []))[0]
            args += (o.offer_event_id, o.to_json(), o.offer_id, o.ts, o.trigger_event_id)
        for p in purchases:
            args = per.setdefault(p.customer_id, ([], [], []))[1]
            lines: dict[str, float] = {}
            for it in p.items:
                lines[it.category] = lines.get(it.category, 0.0) + it.price * it.quantity
            args += (p.order_id, p.ts, len(lines))
            for cat, amount in lines.items():
                args += (cat, amount)
        for cid, until in negative:
            per.setdefault(cid, ([], [], []))[2].append(until)
        if not per:
            return {}, []
        cids = list(per)

        async def op() -> list[Any]:
            pipe = self._pipe()
            for cid in cids:
                o_args, p_args, n_args = per[cid]
                argv = [self._ttl_ms, self.keep_s, len(o_args) // 5, *o_args]
                argv += [_count_purchases(p_args), *p_args, len(n_args), *n_args]
                pipe.evalsha(self.shas["record"], 2, *self._keys(cid), packed(argv))
            due: dict[str, dict[bytes, float]] = {}
            for o in offers:
                key = self.due_key((partitions or {}).get(o.customer_id))
                due.setdefault(key, {})[orjson.dumps([o.customer_id, o.offer_event_id])] = (
                    o.deadline
                )
            for key, members in due.items():
                pipe.zadd(key, members)
            return await pipe.execute()

        replies = await self._call(op)
        existing: dict[str, OpenOffer] = {}
        conversions: list[Resolution] = []
        for cid, (ex, conv) in zip(cids, replies[: len(cids)], strict=True):
            for j in range(0, len(ex), 2):
                oid = ex[j].decode()
                existing[oid] = OpenOffer.from_json(oid, cid, ex[j + 1])
            for j in range(0, len(conv), 6):
                oid = conv[j].decode()
                conversions.append(
                    Resolution(
                        offer=OpenOffer.from_json(oid, cid, conv[j + 1]),
                        converted=True,
                        ts=float(conv[j + 4]),
                        order_id=conv[j + 2].decode(),
                        revenue=round(float(conv[j + 3]), 2),
                        again=conv[j + 5] == b"1",
                    )
                )
        return existing, conversions

    async def expire(
        self, now: float, partition: int | None = None, limit: int = 1_000
    ) -> DueWindows:
        """Close the windows of ``partition`` (``None``: the set of earlier versions) whose
        deadline is at or before ``now``, that partition's event time.

        Closing marks the window in its customer's hash; the member stays in the due set
        until ``forget``, which the caller runs once the resolutions are published. Windows
        closed before but never forgotten come back with ``again=True``; windows that
        converted meanwhile are just forgotten.
        """
        client = self._require()
        key = self.due_key(partition)

        async def due() -> list[bytes]:
            return await client.zrangebyscore(key, "-inf", now, start=0, num=limit)

        members = await self._call(due)
        if not members:
            return DueWindows([], [], key)
        by_cid: dict[str, list[str]] = {}
        for m in members:
            cid, oid = orjson.loads(m)
            by_cid.setdefault(cid, []).append(oid)
        cids = list(by_cid)

        async def op() -> list[Any]:
            pipe = self._pipe()
            for cid in cids:
                pipe.evalsha(self.shas["expire"], 1, self._keys(cid)[0], now, *by_cid[cid])
            return await pipe.execute()

        replies = await self._call(op)
        out: list[Resolution] = []
        for cid, closed in zip(cids, replies, strict=True):
            for j in range(0, len(closed), 3):
                offer = OpenOffer.from_json(closed[j].decode(), cid, closed[j + 1])
                again = closed[j + 2] == b"1"
                out.append(Resolution(offer=offer, converted=False, ts=offer.deadline, again=again))
        return DueWindows(out, list(members), key)

    async def forget(self, due: DueWindows) -> None:
        """Take published windows off the due set (one round trip)."""
        if not due.members:
            return
        client = self._require()

        async def op() -> int:
            return await client.zrem(due.key, *due.members)

        await self._call(op)

    async def set_suppressions(self, changes: Sequence[tuple[str, bool, str]]) -> None:
        """Apply opt-outs ``(customer_id, suppressed, reason)`` in order, one round trip."""
        if not changes:
            return

        async def op() -> list[Any]:
            pipe = self._pipe()
            for cid, suppressed, reason in changes:
                key = customer_key(self.key_prefix, cid, "optout")
                if suppressed:
                    pipe.set(key, reason or "opt-out")
                else:
                    pipe.delete(key)
            return await pipe.execute()

        await self._call(op)

    # -- plumbing --------------------------------------------------------------------------

    def _pipe(self) -> Any:
        return pipeline(self._require())


def _count_purchases(args: list[Any]) -> int:
    """Purchases encoded in ``args`` (order, ts, n_lines, then 2 values per line)."""
    n = i = 0
    while i < len(args):
        i += 3 + 2 * int(args[i + 2])
        n += 1
    return n
