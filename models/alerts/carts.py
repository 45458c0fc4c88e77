"""Watched carts in Redis, owned by the input partition of their customer.

A filled cart counts as abandoned when neither a checkout nor a purchase nor emptying the cart
follows an ``add_to_cart`` within ``cart_abandonment_minutes`` of event time, and no later
``add_to_cart`` re-armed it within that window (the cart then waits on the later one). The rule
is decided by event time alone, when the partition's watermark passes the deadline (every
event up to it has been read, on every input topic), so neither the order in which the clicks
and purchases topics are read, nor how often the timer runs, nor which worker owns the
partition changes which carts fire. The session model's "abandon" probability can fire a cart
early, once per ``add_to_cart`` (that one is decided in read order: it is a prediction).

Kept in Redis, per input partition, the carts survive a crash and follow their partition to
its next owner. Keys, under the hash tag ``{cart-<n>}`` of input partition ``n``:

* ``{p}:{cart-n}:carts``: hash, customer id -> the customer's recent cart events as JSON:
  ``a`` the ``add_to_cart`` clicks not yet forgotten (``t`` event time, ``i`` event id, ``v``
  cart value; ``f``/``fv``/``ft``/``fa`` the click that fired it early, its value, time and
  probability; ``k`` 1 once decided, ``r`` 1 if it was abandoned), ``e`` the times of the
  events that end a cart, ``d`` the ids of forgotten adds (a replay does not arm them again).
* ``{p}:{cart-n}:due``: zset, customer id -> the earliest deadline of an add not forgotten.

``apply`` adds a batch's events (one script call per partition, idempotent by event id) and
returns the carts fired early (a replay of the firing click gets the same alert back,
``again``). ``take`` decides the adds whose deadline the partition's time passed; the caller
publishes the alerts and then ``forget``s them, so a worker that dies in between leaves them
to the next ``take`` (``again``: published again, same alert id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from features.commands import pipeline
from features.events import Click, Event, Purchase
from features.scripts import ScriptStore
from models.alerts.rules import DueCart

__all__ = ["CartStep", "CartStore", "DueCarts", "FiredCart"]

logger = logging.getLogger(__name__)

# cjson writes numbers with 14 digits: event times and values travel as exact strings.
_CODEC: Final = r"""
local ANUM = {'t', 'v', 'fv', 'ft', 'fa'}
local function enc(h)
  local c = {a = {}, e = {}, d = h.d, p = {}}
  for j, x in ipairs(h.p) do
    c.p[j] = {t = string.format('%.17g', x.t), i = x.i, P = x.P, R = x.R,
              d = x.d and string.format('%.17g', x.d) or nil}
  end
  if #c.p == 0 then c.p = nil end
  if h.b and h.b ~= 0 then c.b = string.format('%.17g', h.b) end
  for j, a in ipairs(h.a) do
    local x = {}
    for k, v in pairs(a) do x[k] = v end
    for _, k in ipairs(ANUM) do
      if x[k] ~= nil then x[k] = string.format('%.17g', x[k]) end
    end
    c.a[j] = x
  end
  for j, t in ipairs(h.e) do c.e[j] = string.format('%.17g', t) end
  if next(c.d) == nil then c.d = nil end
  if #c.e == 0 then c.e = nil end
  if #c.a == 0 then c.a = nil end
  return cjson.encode(c)
end
local function dec(raw)
  local h = raw and cjson.decode(raw) or {}
  h.a, h.e, h.d, h.p = h.a or {}, h.e or {}, h.d or {}, h.p or {}
  h.b = tonumber(h.b or 0)
  for _, x in ipairs(h.p) do
    x.t = tonumber(x.t)
    if x.d then x.d = tonumber(x.d) end
  end
  for _, a in ipairs(h.a) do
    for _, k in ipairs(ANUM) do
      if a[k] ~= nil then a[k] = tonumber(a[k]) end
    end
  end
  for j, t in ipairs(h.e) do h.e[j] = tonumber(t) end
  return h
end
-- when the customer is next due: the earliest deadline of an add not forgotten (one decided
-- but not forgotten, its alert perhaps never published, stays due until it is), or nil
local function next_deadline(h, window)
  local d = nil
  for _, a in ipairs(h.a) do
    if d == nil or a.t + window < d then d = a.t + window end
  end
  return d
end
local function save(carts, due, cid, h, window)
  if #h.a == 0 and #h.e == 0 and #h.p == 0 and next(h.d) == nil then
    redis.call('HDEL', carts, cid)
  else
    redis.call('HSET', carts, cid, enc(h))
  end
  local d = next_deadline(h, window)
  if d then
    redis.call('ZADD', due, string.format('%.17g', d), cid)
  else
    redis.call('ZREM', due, cid)
  end
end
"""

_APPLY: Final = r"""
-- KEYS: carts, due
-- ARGV: window_s, max_carts, early_prob, then per event 8 values:
--       customer id, kind ('c' click / 'p' purchase), action, ts, event id, cart value,
--       abandon probability ('' when the intent model gave none), the click's price
-- Returns {customer id, trigger, value, ts, abandon, again} per cart fired early, then the
-- number of customers evicted (beyond max_carts)
__CODEC__
local carts, due = KEYS[1], KEYS[2]
local window, cap, early = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cache, order, dirty = {}, {}, {}
local function load(cid)
  if cache[cid] == nil then
    cache[cid] = dec(redis.call('HGET', carts, cid))
    order[#order + 1] = cid
  end
  return cache[cid]
end
local function touch(cid) dirty[cid] = true end
local fired = {}
for i = 4, #ARGV, 8 do
  local cid, kind, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ts, eid, value = tonumber(ARGV[i + 3]), ARGV[i + 4], tonumber(ARGV[i + 5])
  local abandon, price = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]) or 0
  local h = load(cid)
  if kind == 'p' or action == 'checkout_start' then
    local seen = false
    for _, t in ipairs(h.e) do if t == ts then seen = true end end
    if not seen then h.e[#h.e + 1] = ts; touch(cid) end
  end
  if kind == 'p' or action == 'add_to_cart' or action == 'remove_from_cart' then
    -- the price log: the cart's value by event time, whatever order the topics are read in
    local seen = false
    for _, x in ipairs(h.p) do if x.i == eid then seen = true end end
    if not seen then
      local d = nil
      if action == 'add_to_cart' then d = price elseif kind == 'c' then d = -price end
      h.p[#h.p + 1] = {t = ts, i = eid, d = d, P = kind == 'p' and 1 or nil,
                       R = action == 'remove_from_cart' and 1 or nil}
      touch(cid)
    end
  end
  if action == 'add_to_cart' and not h.d[eid] then
    local seen = false
    for _, a in ipairs(h.a) do if a.i == eid then seen = true end end
    if not seen then h.a[#h.a + 1] = {t = ts, i = eid, v = value}; touch(cid) end
  end
  if kind == 'c' and abandon then
    -- the cart this click sees: the latest add at or before it, not ended since
    local cur = nil
    for _, a in ipairs(h.a) do
      if a.t <= ts and (cur == nil or a.t > cur.t) then cur = a end
    end
    if cur then
      for _, t in ipairs(h.e) do
        if t >= cur.t and t <= ts then cur = nil; break end
      end
    end
    if cur and cur.k == nil then
      if cur.f == eid then  -- a replay of the click that fired it
        fired[#fired + 1] = {cid, cur.i, cur.fv, cur.ft, cur.fa, '1'}
      elseif cur.f == nil and value > 0 and abandon >= early then
        cur.f, cur.fv, cur.ft, cur.fa = eid, value, ts, abandon
        touch(cid)
        fired[#fired + 1] = {cid, cur.i, value, ts, abandon, '0'}
      end
    end
  end
end
for _, cid in ipairs(order) do
  if dirty[cid] then save(carts, due, cid, cache[cid], window) end
end
local over = redis.call('ZCARD', due) - cap
local evicted = 0
if over > 0 then  -- the customers closest to a deadline go unwatched
  local old = redis.call('ZPOPMIN', due, over)
  for j = 1, #old, 2 do redis.call('HDEL', carts, old[j]) end
  evicted = over
end
local out = {}
for _, f in ipairs(fired) do
  for _, v in ipairs(f) do
    out[#out + 1] = type(v) == 'number' and string.format('%.17g', v) or v
  end
end
out[#out + 1] = tostring(evicted)
return out
""".replace("__CODEC__", _CODEC)

_TAKE: Final = r"""
-- KEYS: carts, due; ARGV: now, limit, window_s
-- Decides every add whose deadline is at or before now. Returns {customer id, trigger, value,
-- deadline, abandoned '0'/'1', again '0'/'1'} per decided add (one decided before but not
-- forgotten comes back with again = 1)
__CODEC__
local carts, due = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
-- the price log in event-time order: the cart's value after each entry (purchases empty it)
local function replay(h, upto)
  local xs = {}
  for j, x in ipairs(h.p) do
    if upto == nil or x.t < upto then xs[#xs + 1] = {x.t, j, x} end
  end
  table.sort(xs, function(l, r)
    if l[1] ~= r[1] then return l[1] < r[1] end
    return l[2] < r[2]
  end)
  local v, emptied, after = h.b, {}, {}
  for _, y in ipairs(xs) do
    local x = y[3]
    if x.P then
      v = 0
    else
      v = v + (x.d or 0)
      if v < 0 then v = 0 end
      if x.R and v <= 0 then emptied[#emptied + 1] = x.t end
    end
    after[x.i] = v
  end
  return v, emptied, after
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, cid in ipairs(ids) do
  local h = dec(redis.call('HGET', carts, cid))
  local _, emptied, after = replay(h, nil)
  for _, a in ipairs(h.a) do
    local deadline = a.t + window
    if deadline <= now then
      local again = '1'
      if a.k == nil then
        again = '0'
        local abandoned = a.f == nil
        for _, b in ipairs(h.a) do
          if b.t > a.t and b.t <= deadline then abandoned = false end
        end
        for _, t in ipairs(h.e) do
          if t >= a.t and t <= deadline then abandoned = false end
        end
        for _, t in ipairs(emptied) do
          if t >= a.t and t <= deadline then abandoned = false end
        end
        if (after[a.i] or 0) > 0 then a.v = after[a.i] end
        a.k, a.r = 1, abandoned and 1 or 0
      end
      for _, v in ipairs({cid, a.i, string.format('%.17g', a.v),
                          string.format('%.17g', deadline), tostring(a.r), again}) do
        out[#out + 1] = v
      end
    end
  end
  -- what lies before every add still kept and two windows back can no longer matter: ends
  -- go, the price log is folded into the cart's value at that point
  local oldest = now - 2 * window
  for _, a in ipairs(h.a) do if a.t < oldest then oldest = a.t end end
  local e = {}
  for _, t in ipairs(h.e) do if t >= oldest then e[#e + 1] = t end end
  h.e = e
  h.b = replay(h, oldest)
  local p = {}
  for _, x in ipairs(h.p) do if x.t >= oldest then p[#p + 1] = x end end
  h.p = p
  for id, t in pairs(h.d) do
    if tonumber(t) < now - 2 * window then h.d[id] = nil end
  end
  save(carts, due, cid, h, window)
end
return out
""".replace("__CODEC__", _CODEC)

_FORGET: Final = r"""
-- KEYS: carts, due; ARGV: window_s, then {customer id, trigger} pairs: the decided adds go
-- (their ids are remembered, so a replay does not arm them again)
__CODEC__
local carts, due = KEYS[1], KEYS[2]
local window = tonumber(ARGV[1])
local touched, order = {}, {}
for j = 2, #ARGV, 2 do
  local cid, trigger = ARGV[j], ARGV[j + 1]
  local h = touched[cid]
  if h == nil then
    h = dec(redis.call('HGET', carts, cid))
    touched[cid] = h
    order[#order + 1] = cid
  end
  local kept = {}
  for _, a in ipairs(h.a) do
    if a.k == 1 and a.i == trigger then
      h.d[a.i] = string.format('%.17g', a.t)
    else
      kept[#kept + 1] = a
    end
  end
  h.a = kept
end
for _, cid in ipairs(order) do save(carts, due, cid, touched[cid], window) end
return 1
""".replace("__CODEC__", _CODEC)

_CART_ACTIONS: Final = frozenset({"add_to_cart", "remove_from_cart", "checkout_start"})


@dataclass(frozen=True, slots=True)
class CartStep:
    """One event as the cart rules see it, with its input partition."""

    partition: int
    event: Event
    cart_value: float  # the customer's cart value after the event (its features)
    abandon: float | None = None  # the session model's "abandon" probability for a click


@dataclass(frozen=True, slots=True)
class FiredCart:
    """A cart that fired: early (``abandon`` set) from ``apply``, or due from ``take``."""

    cart: DueCart
    abandon: float | None
    again: bool  # fired before (a replay, or a take never forgotten): publish again


@dataclass(slots=True)
class DueCarts:
    """What one ``take`` marked for a partition, to ``forget`` once published."""

    partition: int
    fired: list[FiredCart]  # abandoned (and not fired early): these raise the alert
    taken: list[tuple[str, str]]  # (customer id, trigger) of every add decided


class CartStore(ScriptStore):
    """Watched carts per input partition in Redis (see the module docstring)."""

    what = "watched carts"
    scripts = {"apply": _APPLY, "take": _TAKE, "forget": _FORGET}

    def __init__(
        self, key_prefix: str, window_s: float, early_prob: float, max_carts: int = 200_000
    ) -> None:
        super().__init__()
        self.key_prefix = key_prefix
        self.window_s = window_s
        self.early_prob = early_prob
        self.max_carts = max_carts
        self.evicted = 0

    def keys(self, partition: int) -> tuple[str, str]:
        base = f"{self.key_prefix}:{{cart-{partition}}}"
        return f"{base}:carts", f"{base}:due"

    async def apply(self, steps: Sequence[CartStep]) -> list[FiredCart]:
        """Run a batch's events through the cart rules, in order; the carts fired early."""
        per: dict[int, list[Any]] = {}
        for s in steps:
            e = s.event
            if isinstance(e, Click):
                kind, action = "c", e.action
                if action not in _CART_ACTIONS and (
                    s.abandon is None or s.abandon < self.early_prob
                ):
                    continue  # changes no cart and cannot fire one early
            elif isinstance(e, Purchase):
                kind, action = "p", ""
            else:
                continue
            abandon = "" if s.abandon is None else repr(float(s.abandon))
            price = repr(float(e.price)) if isinstance(e, Click) and e.price is not None else ""
            per.setdefault(s.partition, []).extend(
                (
                    e.customer_id,
                    *(kind, action, repr(e.ts), e.event_id, repr(s.cart_value), abandon, price),
                )
            )
        if not per:
            return []
        order = sorted(per)

        async def op() -> list[Any]:
            pipe = pipeline(self._require())
            for n in order:
                argv = [self.window_s, self.max_carts, self.early_prob, *per[n]]
                pipe.evalsha(self.shas["apply"], 2, *self.keys(n), *argv)
            return await pipe.execute()

        fired: list[FiredCart] = []
        for reply in await self._call(op):
            self.evicted += int(reply[-1])
            for j in range(0, len(reply) - 1, 6):
                cid, trigger, value, ts, abandon, again = (x.decode() for x in reply[j : j + 6])
                fired.append(
                    FiredCart(
                        DueCart(cid, trigger, float(value), float(ts)),
                        float(abandon),
                        again == "1",
                    )
                )
        return fired

    async def take(self, partition: int, now: float, limit: int = 5_000) -> DueCarts:
        """Decide the carts of ``partition`` whose deadline ``now`` (its event time) passed."""

        async def op() -> list[bytes]:
            return await self._require().evalsha(
                self.shas["take"], 2, *self.keys(partition), now, limit, self.window_s
            )

        reply = await self._call(op)
        due = DueCarts(partition, [], [])
        for j in range(0, len(reply), 6):
            cid, trigger, value, deadline, abandoned, again = (x.decode() for x in reply[j : j + 6])
            due.taken.append((cid, trigger))
            if abandoned == "1":
                cart = DueCart(cid, trigger, float(value), float(deadline))
                due.fired.append(FiredCart(cart, None, again == "1"))
        return due

    async def forget(self, due: DueCarts) -> None:
        """The alerts of ``due`` are published: drop its decided adds."""
        if not due.taken:
            return
        args = [x for pair in due.taken for x in pair]

        async def op() -> int:
            return await self._require().evalsha(
                self.shas["forget"], 2, *self.keys(due.partition), self.window_s, *args
            )

        await self._call(op)

    async def watched(self, partition: int) -> int:
        async def op() -> int:
            return await self._require().zcard(self.keys(partition)[1])

        return int(await self._call(op))
