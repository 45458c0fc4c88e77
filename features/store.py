"""The Redis feature store: rolling per-customer features, one round trip per batch.

``FeatureStore.apply`` groups a batch of events by customer and sends ``EVALSHA`` calls of
``apply_events.lua`` (up to 64 customers per call on a standalone server, one hash slot per
call on a cluster), all in one pipeline; each call dedups its events by ``event_id``, updates
the customers' state and returns the feature row after every event.
``claim_contacts`` is the frequency cap, grouped the same way (``claim_contact.lua`` decides
many claims per call). Key layout, window edges and the
dedup horizon are documented in ``docs/feature-store.md``.

Windows are bucketed by event time (UTC-aligned buckets) and summed relative to a reference
time: the customer's latest event time (``apply``) or ``max(now, latest)`` (``get``):

>>> w = WINDOWS[0]
>>> w.name, w.bucket_s, w.buckets
('5m', 60, 5)
>>> w.start(1_700_000_130.0), w.end(1_700_000_130.0)
(1699999860, 1700000160)
>>> ref = 1_700_000_130.0
>>> w.contains(1_699_999_860.0, ref), w.contains(1_699_999_859.9, ref)
(True, False)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from features.batch import CommandBatch, packed
from features.commands import coalesce, hiredis_packing, pipeline
from features.events import Click, Event, Purchase, content_digest
from features.keys import CustomerKeys, customer_key
from features.settings import FeatureSettings, RedisSettings

__all__ = [
    "AFFINITY_WEIGHTS",
    "FEATURE_NAMES",
    "NEVER_SECONDS",
    "PURCHASE_LINE_WEIGHT",
    "WINDOWS",
    "FeatureResult",
    "FeatureStore",
    "FeatureStoreError",
    "Window",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Window:
    """A rolling window of ``buckets`` event-time buckets of ``bucket_s`` seconds each.

    Bucket ``b`` holds events with ``floor(ts / bucket_s) == b``; the window at reference
    time ``ref`` is the bucket of ``ref`` and the ``buckets - 1`` before it, so it reaches
    back between ``(buckets - 1) * bucket_s`` and ``buckets * bucket_s`` seconds.
    """

    name: str
    bucket_s: int
    buckets: int

    def bucket(self, ts: float) -> int:
        return math.floor(ts / self.bucket_s)

    def start(self, ref: float) -> int:
        """The earliest event time counted at ``ref`` (inclusive)."""
        return (self.bucket(ref) - self.buckets + 1) * self.bucket_s

    def end(self, ref: float) -> int:
        """The end of ``ref``'s bucket (exclusive)."""
        return (self.bucket(ref) + 1) * self.bucket_s

    def contains(self, ts: float, ref: float) -> bool:
        hi = self.bucket(ref)
        return hi - self.buckets < self.bucket(ts) <= hi


WINDOWS: Final = (
    Window("5m", 60, 5),
    Window("1h", 300, 12),
    Window("24h", 3600, 24),
    Window("30d", 86_400, 30),
)

# Seconds-since-last features when there never was such an event.
NEVER_SECONDS: Final = 1e7

# Category-affinity weight of one click by action, and of one purchase line.
AFFINITY_WEIGHTS: Final = {
    "view": 1.0,
    "search": 1.0,
    "add_to_cart": 3.0,
    "checkout_start": 3.0,
    "remove_from_cart": 0.0,
}
PURCHASE_LINE_WEIGHT: Final = 5.0

FEATURE_NAMES: Final = (
    *(f"clicks_{w.name}" for w in WINDOWS),
    *(f"carts_{w.name}" for w in WINDOWS),
    *(f"purchases_{w.name}" for w in WINDOWS),
    *(f"spend_{w.name}" for w in WINDOWS),
    "secs_since_last_click",
    "secs_since_last_purchase",
    "avg_order_value",
    "cart_value",
    "cart_items",
    "session_clicks",
    "session_carts",
    "session_checkouts",
    "feedback_count",
    "rating_avg",
    "sentiment_avg",
    "category_affinity",
    "n_categories",
)
_N: Final = len(FEATURE_NAMES)
# Customers per script call on a standalone server (a cluster groups them by slot instead):
# big enough to amortise the per-call cost, small enough not to block Redis for long.
_CUSTOMERS_PER_CALL: Final = 64

# Errors worth waiting out: the server is down, loading, failing over, busy or full; or a
# cluster slot is being moved (redis-py's ClusterError "TTL exhausted" once its own ASK,
# TRYAGAIN and MOVED handling gave up on a half-moved slot).
_TRANSIENT: Final = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.BusyLoadingError,
    rex.TryAgainError,
    rex.ClusterError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    OSError,
)
_AUTH: Final = (
    rex.AuthenticationError,
    rex.AuthorizationError,
    rex.AuthenticationWrongNumberOfArgsError,
    rex.NoPermissionError,
)
_BACKOFF_BASE_S: Final = 0.05


class FeatureStoreError(RuntimeError):
    """Redis is unreachable after all retries, rejected our credentials, or a script failed.

    ``transient`` is True when Redis was away (down, failing over, a slot moving) and the same
    call may work later: the worker holds its batch and retries; otherwise it is an error that
    waiting does not fix (a rejected command or credentials, a script error on some data).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """The features of one customer right after one event (or at ``get``'s ``now``).

    ``duplicate`` is True when the event was not applied: its ``event_id`` was seen before,
    or it is older than the dedup horizon (then it could not be told apart from a replay).
    ``conflict`` is True for a duplicate whose content (every field but ``ts``) differs from
    the event first applied under its id: not a replay but another event reusing the id.
    """

    event_id: str
    customer_id: str
    duplicate: bool
    features: dict[str, float]
    top_categories: tuple[tuple[str, float], ...]
    last_offer_ts: float | None
    conflict: bool = False


_Call = tuple[str, tuple[str, ...], tuple[Any, ...]]


class FeatureStore:
    """Per-customer rolling features in Redis, behind ``apply``/``get``/``claim_contacts``.

    ``redis`` says where Redis is, ``settings`` how features behave; ``start()`` connects.
    """

    def __init__(self, redis: RedisSettings, settings: FeatureSettings | None = None) -> None:
        self.redis = redis
        self.settings = settings if settings is not None else FeatureSettings()
        self._client: Redis | RedisCluster | None = None
        self._scripts = _render_scripts(self.settings)
        self._shas = {
            name: hashlib.sha1(src.encode()).hexdigest() for name, src in self._scripts.items()
        }
        # Transient errors retried, and operations that failed after all retries (metrics).
        self.n_retries = 0
        self.n_failures = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the credentials with PING and load the scripts."""
        if self._client is not None:
            return
        client = self._build_client()
        try:
            await self.with_retry("connect", lambda: self._ping_and_load(client))
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        logger.info("feature store connected to %s", _redact(self.redis.url))

    async def ping(self, timeout: float = 0.5) -> bool:
        """True when Redis answers a PING within ``timeout`` seconds (readiness checks)."""
        client = self._client
        if client is None:
            return False
        try:
            return bool(await asyncio.wait_for(client.ping(), timeout))
        except (TimeoutError, rex.RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- the interface ------------------------------------------------------------------

    async def apply(
        self,
        events: Sequence[Event],
        sentiments: Sequence[float | None] | None = None,
        *,
        batch: str = "",
    ) -> list[FeatureResult]:
        """Apply a batch of events (any customers) and return their features, in input order.

        ``sentiments[i]`` is the sentiment score of ``events[i]`` when it is feedback
        (ignored otherwise). Replays (same ``event_id``) change nothing and come back with
        ``duplicate=True``. One pipeline, one round trip.

        ``batch`` is a token the caller keeps while it retries one batch: events that an
        earlier attempt with the same token applied (its reply was lost) come back as new,
        not as duplicates, and are not applied again. A retry is not a replay.
        """
        if sentiments is not None and len(sentiments) != len(events):
            raise ValueError(f"{len(sentiments)} sentiments for {len(events)} events")
        if not events:
            return []
        groups: dict[str, tuple[list[int], list[Any]]] = {}
        for i, event in enumerate(events):
            group = groups.get(event.customer_id)
            if group is None:
                group = groups[event.customer_id] = ([], [0])
            group[0].append(i)
            group[1][0] += 1
            _encode(event, None if sentiments is None else sentiments[i], group[1])
        prefix = self.redis.key_prefix
        calls: list[_Call] = []
        order: list[int] = []  # event indices in the order the rows come back
        for chunk in self._chunks(list(groups)):
            keys: list[str] = []
            args: list[Any] = ["a", batch]
            for cid in chunk:
                indices, group_args = groups[cid]
                keys += CustomerKeys.of(prefix, cid).all
                args += group_args
                order += indices
            calls.append(("apply", tuple(keys), tuple(args)))
        replies = await self.with_retry("apply", lambda: self._pipeline(calls))
        results: list[FeatureResult | None] = [None] * len(events)
        at = 0
        for reply in replies:
            for row, top in self._decode(reply):
                i = order[at]
                at += 1
                event = events[i]
                results[i] = _result(event.event_id, event.customer_id, row, top)
        return results  # type: ignore[return-value]

    async def get(self, customer_id: str, now: float) -> FeatureResult | None:
        """The customer's features at ``now`` (None when unknown or expired); read-only.

        Windows end at ``max(now, latest event time)``, recencies are relative to ``now``,
        ``category_affinity`` is 0 and ``event_id`` is empty.
        """
        keys = CustomerKeys.of(self.redis.key_prefix, customer_id).all
        calls: list[_Call] = [("apply", keys, ("g", now))]
        (reply,) = await self.with_retry("get", lambda: self._pipeline(calls))
        if reply is None:
            return None
        ((row, top),) = self._decode(reply)
        return _result("", customer_id, row, top)

    async def claim_contacts(
        self,
        claims: Sequence[tuple[str, str, float]],
        cap_seconds: float,
        payloads: Sequence[bytes] | None = None,
    ) -> list[bool | bytes]:
        """Claim offers, each ``(customer_id, trigger_event_id, ts)``, atomically per claim.

        True when allowed and recorded (with its ``payloads`` entry, the offer as it will be
        published); False when another claim lies less than ``cap_seconds`` from ``ts``; and
        for a trigger claimed before (a replay) the payload stored then, so the caller re-emits
        exactly that offer even if the models would now decide otherwise (True when none was
        stored). Claims are decided in input order, in one round trip.
        """
        if not claims:
            return []
        prefix = self.redis.key_prefix
        bodies = payloads if payloads is not None else [b""] * len(claims)
        chunk_of = {
            cid: n
            for n, chunk in enumerate(self._chunks(list(dict.fromkeys(c[0] for c in claims))))
            for cid in chunk
        }
        # per script call: the claims' indices, keys and arguments, claims in input order
        groups: list[tuple[list[int], list[str], list[Any]]] = [
            ([], [], [cap_seconds]) for _ in range(max(chunk_of.values()) + 1)
        ]
        for i, ((cid, trigger, ts), body) in enumerate(zip(claims, bodies, strict=True)):
            indices, keys, args = groups[chunk_of[cid]]
            indices.append(i)
            keys += (CustomerKeys.of(prefix, cid).offers, customer_key(prefix, cid, "sent"))
            args += (trigger, ts, body)
        calls: list[_Call] = [("claim", tuple(k), tuple(a)) for _, k, a in groups]
        replies = await self.with_retry("claim_contacts", lambda: self._pipeline(calls))
        out: list[bool | bytes] = [False] * len(claims)
        for (indices, _, _), reply in zip(groups, replies, strict=True):
            for i, r in zip(indices, reply, strict=True):
                out[i] = (r or True) if isinstance(r, bytes) else bool(r)
        return out

    async def recall_offers(self, claims: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The offers published for ``(customer_id, trigger_event_id)`` pairs, if any."""
        if not claims:
            return []
        client = self.client
        prefix = self.redis.key_prefix

        async def run() -> list[Any]:
            pipe = CommandBatch(client)
            for cid, trigger in claims:
                pipe.hget(customer_key(prefix, cid, "sent"), trigger)
            return await pipe.execute()

        return list(await self.with_retry("recall_offers", run))

    # -- plumbing -----------------------------------------------------------------------

    @property
    def client(self) -> Redis | RedisCluster:
        """The connected client (for other per-customer stores sharing the connection)."""
        if self._client is None:
            raise FeatureStoreError("FeatureStore.start() has not been called")
        return self._client

    def _chunks(self, customer_ids: list[str]) -> list[list[str]]:
        """Customers that may share one script call: same slot in a cluster, else any."""
        if self.redis.cluster:
            prefix = self.redis.key_prefix
            by_slot: dict[int, list[str]] = {}
            for cid in customer_ids:
                slot = key_slot(CustomerKeys.of(prefix, cid).state.encode())
                by_slot.setdefault(slot, []).append(cid)
            return list(by_slot.values())
        step = _CUSTOMERS_PER_CALL
        return [customer_ids[i : i + step] for i in range(0, len(customer_ids), step)]

    def _decode(self, reply: list[bytes]) -> list[tuple[list[float], list[tuple[str, float]]]]:
        """Split a script reply into (row, top categories) per event."""
        width = 32 + self.settings.top_categories
        rows = np.frombuffer(reply[0], dtype="<f8").reshape(-1, width).tolist()
        names = orjson.loads(reply[1]) or ()
        out = []
        at = 0
        for row in rows:
            n = int(row[31])
            out.append((row, list(zip(names[at : at + n], row[32 : 32 + n], strict=True))))
            at += n
        return out

    def _build_client(self) -> Redis | RedisCluster:
        r = self.redis
        kwargs: dict[str, Any] = {
            "socket_timeout": r.socket_timeout_s,
            "socket_connect_timeout": r.socket_timeout_s,
        }
        if r.username is not None:
            kwargs["username"] = r.username
        if r.password is not None:
            kwargs["password"] = r.password.get_secret_value()
        if r.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = r.tls_ca_file
        url = r.url
        if r.tls and url.startswith("redis://"):
            url = "rediss://" + url.removeprefix("redis://")
        # Our own backoff loop is the one retry policy (RedisSettings.retry_attempts), so every
        # retry shows in the metrics; redis-py still follows MOVED/ASK/TRYAGAIN on a cluster.
        client: Redis | RedisCluster
        if r.cluster:
            client = RedisCluster.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)
        else:
            client = Redis.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)
            if r.coalesce:
                coalesce(client)
        hiredis_packing(client)
        return client

    async def _ping_and_load(self, client: Redis | RedisCluster) -> None:
        try:
            await client.ping()
        except _AUTH as exc:
            raise self._auth_error(exc) from exc
        except rex.ResponseError as exc:
            if str(exc).startswith(("NOAUTH", "WRONGPASS")):
                raise self._auth_error(exc) from exc
            raise
        await self._load_scripts(client)

    def _auth_error(self, exc: Exception) -> FeatureStoreError:
        user = self.redis.username or "default"
        return FeatureStoreError(
            f"Redis at {_redact(self.redis.url)} rejected user {user!r}: {exc} "
            "(check STREAMSCORE_REDIS__USERNAME / STREAMSCORE_REDIS__PASSWORD)"
        )

    async def _load_scripts(self, client: Redis | RedisCluster) -> None:
        for name, src in self._scripts.items():
            sha = await client.script_load(src)
            if isinstance(sha, bytes):
                sha = sha.decode()
            if sha != self._shas[name]:
                raise FeatureStoreError(
                    f"script {name} loaded as {sha}, expected {self._shas[name]}"
                )

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        client = self._client
        if client is None:
            raise FeatureStoreError("FeatureStore is not started: await store.start() first")
        pipe = pipeline(client)
        for name, keys, args in calls:
            pipe.evalsha(self._shas[name], len(keys), *keys, packed(args))
        try:
            return await pipe.execute()
        except rex.NoScriptError:
            # The server lost its script cache (restart, failover, SCRIPT FLUSH). Reload and
            # run the whole pipeline again: the scripts are idempotent per event/claim.
            logger.warning("Redis lost the feature scripts; reloading them")
            await self._load_scripts(client)
            pipe = pipeline(client)
            for name, keys, args in calls:
                pipe.evalsha(self._shas[name], len(keys), *keys, packed(args))
            return await pipe.execute()

    async def with_retry(self, what: str, op: Callable[[], Any]) -> Any:
        """Await ``op()``, retrying transient Redis errors with exponential backoff.

        Up to ``RedisSettings.retry_attempts`` retries; then, and for rejected credentials or
        commands, a ``FeatureStoreError``. Other per-customer stores sharing this connection
        (the session log) run their round trips through it too.
        """
        attempts = self.redis.retry_attempts
        attempt = 0
        while True:
            try:
                return await op()
            except FeatureStoreError:
                raise
            except _AUTH as exc:
                raise self._auth_error(exc) from exc
            except _TRANSIENT as exc:
                error: Exception = exc
            except rex.ResponseError as exc:
                if not str(exc).startswith(("BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN")):
                    raise FeatureStoreError(f"Redis rejected {what}: {exc}") from exc
                error = exc
            if attempt >= attempts:
                self.n_failures += 1
                raise FeatureStoreError(
                    f"Redis {what} failed after {attempt + 1} attempts: {error}", transient=True
                ) from error
            delay = min(self.redis.retry_backoff_max_s, _BACKOFF_BASE_S * 2**attempt)
            logger.warning(
                "Redis %s failed (%s); retry %s/%s in %.2fs",
                what,
                error,
                attempt + 1,
                attempts,
                delay,
            )
            self.n_retries += 1
            await asyncio.sleep(delay)
            attempt += 1


def _encode(event: Event, sentiment: float | None, out: list[Any]) -> None:
    """Append one event's record (see apply_events.lua's header) to a script's ARGV."""
    if isinstance(event, Click):
        price = "" if event.price is None else event.price
        out += (
            event.event_id,
            "c",
            event.ts,
            event.session_id,
            event.action,
            price,
            "",
            content_digest(event),
            1,
            event.category,
            AFFINITY_WEIGHTS.get(event.action, 0.0),
        )
    elif isinstance(event, Purchase):
        weights: dict[str, float] = {}
        main, main_value = "", -1.0
        for item in event.items:
            weights[item.category] = weights.get(item.category, 0.0) + PURCHASE_LINE_WEIGHT
            value = item.price * item.quantity
            if value > main_value:
                main, main_value = item.category, value
        out += (
            event.event_id,
            "p",
            event.ts,
            "",
            "",
            event.total,
            "",
            content_digest(event),
            len(weights),
            main,
            weights.pop(main),
        )
        for category, weight in weights.items():
            out += (category, weight)
    else:
        rating = "" if event.rating is None else event.rating
        out += (
            event.event_id,
            "f",
            event.ts,
            "",
            "",
            rating,
            "" if sentiment is None else sentiment,
            content_digest(event),
            0,
        )


def _result(
    event_id: str, customer_id: str, row: list[float], top: list[tuple[str, float]]
) -> FeatureResult:
    offer = row[1]
    return FeatureResult(
        event_id=event_id,
        customer_id=customer_id,
        duplicate=row[0] >= 1.0,
        features=dict(zip(FEATURE_NAMES, row[2 : 2 + _N], strict=True)),
        top_categories=tuple(top),
        last_offer_ts=None if offer < 0 else offer,
        conflict=row[0] == 2.0,
    )


def _render_scripts(settings: FeatureSettings) -> dict[str, str]:
    """The Lua sources with the settings baked in as constants (so the SHA follows them)."""
    ttl_ms = max(1, round(settings.customer_ttl_days * 86_400_000))
    constants = {
        "TTL_MS": ttl_ms,
        "HORIZON_S": settings.dedup_ttl_hours * 3600.0,
        "DEDUP_MAX": settings.dedup_max_ids,
        "GAP_S": settings.session_gap_minutes * 60.0,
        "HALF_LIFE_S": settings.affinity_half_life_days * 86_400.0,
        "MAX_CATS": settings.max_categories,
        "TOP_K": settings.top_categories,
        "NEVER": NEVER_SECONDS,
        "OFFERS_KEPT": settings.offers_kept,
    }
    header = "".join(f"local {k} = {v!r}\n" for k, v in constants.items())
    widths = ", ".join(str(w.bucket_s) for w in WINDOWS)
    counts = ", ".join(str(w.buckets) for w in WINDOWS)
    header += f"local WIN_W = {{{widths}}}\nlocal WIN_N = {{{counts}}}\n"
    # The arguments arrive as one JSON array of strings (``packed``), not hundreds of separate
    # arguments: redis-py spends microseconds of Python on each one it encodes.
    header += "local ARGV = cjson.decode(ARGV[1])\n"
    package = resources.files("features")
    return {
        "apply": header + package.joinpath("apply_events.lua").read_text(encoding="utf-8"),
        "claim": header + package.joinpath("claim_contact.lua").read_text(encoding="utf-8"),
    }


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
