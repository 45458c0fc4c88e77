"""The feature store on a real Redis Cluster while an operator moves slots and a master dies.

A stream of simulated events for a few busy customers is applied through ``FeatureStore.apply``
(and each click claimed through ``claim_contacts``) the way the worker does it: batch after
batch, each with its own token, a batch held and retried while Redis fails. Meanwhile the
cluster is changed under it, with real Valkey processes:

- the busy customers' slots are migrated to another master (``SETSLOT IMPORTING/MIGRATING``,
  ``MIGRATE`` one key at a time, ``SETSLOT NODE``), so the store meets ``ASK``, ``TRYAGAIN``
  and ``MOVED`` replies;
- on a 6-node cluster (3 masters, 3 replicas) the master serving them is killed with SIGKILL
  and its replica is elected.

Then every customer's features equal the ground truth computed from the events alone
(``tests/streams/faultkit.py``): no event lost, none applied twice, every claimed offer still
recallable; and the retries show in the store's counters (the worker's metrics).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio
from redis import exceptions as rex
from redis.crc import key_slot

from features.events import Click, Event, parse_event
from features.keys import CustomerKeys
from features.settings import FeatureSettings, RedisSettings
from features.store import FeatureStore, FeatureStoreError
from streams.embedded import EmbeddedValkey, EmbeddedValkeyCluster
from tests.streams.faultkit import COMPARED, Truth, compare_features, simulate

pytestmark = pytest.mark.timeout(120)

# simulate() routes records to these topic names; here they only name the event kinds
_KINDS = {f"STREAMSCORE_TOPICS__{k.upper()}": k for k in ("clicks", "purchases", "feedback")}
_BATCH = 25


def _stream(n: int, customers: int, seed: int) -> tuple[list[Event], Truth]:
    """``n`` simulated events of ``customers`` customers, parsed, and their ground truth."""
    records, truth = simulate(_KINDS, n, seed=seed, customers=customers)
    now = time.time()
    return [parse_event(kind, value, now=now) for kind, _, value in records], truth


def _store(url: str, prefix: str) -> FeatureStore:
    # every claim is kept (no trimming), so every claimed offer must stay recallable
    return FeatureStore(
        RedisSettings(url=url, key_prefix=prefix, cluster=True),
        FeatureSettings(offers_kept=100_000),
    )


@dataclass
class Traffic:
    """Applies ``events`` batch after batch as the worker does, and keeps count.

    A batch is applied with one token (its retries inside ``with_retry`` are not replays);
    when the store gives up (``FeatureStoreError``) the batch is held and tried again, as the
    worker holds a batch it could not apply. ``settled`` (optional) runs after each batch;
    when it returns False the batch is not acknowledged yet and is replayed as a consumer
    replays an uncommitted batch (new token): events that come back as new then had been
    acknowledged and lost.
    """

    store: FeatureStore
    events: list[Event]
    settled: Callable[[], Awaitable[bool]] | None = None
    pace_s: float = 0.02
    done: int = 0  # batches acknowledged
    held: int = 0  # times the store gave up and the batch was held
    replayed: int = 0  # batches replayed because they were not settled
    lost_then_replayed: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)  # events a batch's own retries applied again
    claims_refused: list[str] = field(default_factory=list)

    def batches(self) -> Iterator[list[Event]]:
        for i in range(0, len(self.events), _BATCH):
            yield self.events[i : i + _BATCH]

    async def _apply(self, batch: list[Event], token: str) -> list[bool]:
        while True:
            try:
                results = await self.store.apply(batch, batch=token)
                claims = [(e.customer_id, e.event_id, e.ts) for e in batch if isinstance(e, Click)]
                allowed = await self.store.claim_contacts(
                    claims, 0.0, [eid.encode() for _, eid, _ in claims]
                )
            except FeatureStoreError:
                self.held += 1
                await asyncio.sleep(0.2)
                continue
            # True, or (when a retry of this call met a claim an earlier attempt recorded) the
            # offer stored then: this click's own payload
            self.claims_refused += [
                eid
                for (_, eid, _), a in zip(claims, allowed, strict=True)
                if a is not True and a != eid.encode()
            ]
            return [r.duplicate for r in results]

    async def run(self, fast: asyncio.Event) -> None:
        """Until every batch is acknowledged; ``pace_s`` apart until ``fast`` is set."""
        for batch in self.batches():
            duplicate = await self._apply(batch, uuid.uuid4().hex)
            self.twice += [e.event_id for e, d in zip(batch, duplicate, strict=True) if d]
            while self.settled is not None and not await self.settled():
                self.replayed += 1
                again = await self._apply(batch, uuid.uuid4().hex)
                self.lost_then_replayed += [
                    e.event_id for e, d in zip(batch, again, strict=True) if not d
                ]
            self.done += 1
            if not fast.is_set():
                await asyncio.sleep(self.pace_s)


async def _features(store: FeatureStore, truth: Truth) -> dict[str, dict[str, float]]:
    now = time.time()
    out = {}
    for cid in truth.features:
        r = await store.get(cid, now)
        if r is not None:
            out[cid] = {k: r.features[k] for k in COMPARED}
    return out


async def _check(store: FeatureStore, truth: Truth, traffic: Traffic) -> None:
    """Features equal the ground truth; every click's claim is recallable, once."""
    cmp = compare_features(truth, await _features(store, truth))
    assert (cmp.lost, cmp.doubled, cmp.customers_wrong) == (0, 0, 0), cmp.example
    assert traffic.twice == [], f"applied twice by a retry: {traffic.twice[:5]}"
    claims = [(e.customer_id, e.event_id) for e in traffic.events if isinstance(e, Click)]
    recalled = await store.recall_offers(claims)
    missing = [eid for (_, eid), got in zip(claims, recalled, strict=True) if got != eid.encode()]
    assert missing == [], f"{len(missing)} claimed offers lost, e.g. {missing[:5]}"
    assert traffic.claims_refused == [], f"claims refused: {traffic.claims_refused[:5]}"


def _redirections(nodes: list[EmbeddedValkey]) -> Counter[str]:
    """The cluster's error replies so far, by kind (ASK, MOVED, TRYAGAIN, ...), all nodes."""
    total: Counter[str] = Counter()
    for node in nodes:
        if not node.running:
            continue
        with redis.Redis(host=node.host, port=node.port) as client:
            for name, stat in client.info("errorstats").items():
                total[name.removeprefix("errorstat_")] += int(stat["count"])
    return total


def _slots(prefix: str, truth: Truth) -> list[int]:
    return sorted({key_slot(CustomerKeys.of(prefix, cid).state.encode()) for cid in truth.features})


async def test_a_batch_of_500_customers_applies_on_a_cluster(
    redis_cluster_url: str, unique: Callable[[str], str]
) -> None:
    """The worker's batch of 500 events can hold 500 customers: 500 hash slots. Sent one
    command per slot, concurrently, they needed ~170 connections per node and redis-py's
    pool of 100 refused them (``MaxConnectionsError``) on every retry: the batch never
    applied. Sent as one pipeline per node they need one connection each."""
    ts = time.time() - 7_200.0
    events: list[Event] = [
        Click(f"w{i}", f"wide-{i}", "s1", ts + i, "view", "i1", "books") for i in range(500)
    ]
    truth = Truth(event_ids={e.event_id for e in events}, n_events=len(events))
    for e in events:
        row = dict.fromkeys(COMPARED, 0.0)
        row["clicks_24h"] = row["clicks_30d"] = 1.0
        truth.features[e.customer_id] = row
    store = _store(redis_cluster_url, unique("wide"))
    await store.start()
    try:
        slots = _slots(store.redis.key_prefix, truth)
        assert len(slots) > 300, "the batch spans more slots than the pool has connections"
        results = await store.apply(events, batch="b1")
        assert [r.event_id for r in results] == [e.event_id for e in events]
        assert not any(r.duplicate for r in results)
        cmp = compare_features(truth, await _features(store, truth))
        assert (cmp.lost, cmp.doubled, cmp.customers_wrong) == (0, 0, 0), cmp.example
        assert store.n_retries == 0
    finally:
        await store.close()


@pytest.fixture
def cluster() -> Iterator[EmbeddedValkeyCluster]:
    with EmbeddedValkeyCluster(masters=3) as c:
        yield c


async def test_busy_customers_slots_migrate_under_traffic(
    cluster: EmbeddedValkeyCluster, unique: Callable[[str], str]
) -> None:
    events, truth = _stream(6_000, customers=10, seed=17)
    prefix = unique("mig")
    store = _store(cluster.url, prefix)
    await store.start()
    slots = _slots(prefix, truth)
    masters = cluster.nodes
    before = {s: cluster.owner(s) for s in slots}
    errors0 = _redirections(masters)
    fast = asyncio.Event()
    traffic = Traffic(store, events)

    def reshard() -> int:
        # each busy customer's slot to the next master, one key per MIGRATE, 0.15 s apart:
        # the slot stays half moved while the customer's events keep coming
        moved = 0
        for slot in slots:
            target = masters[(masters.index(before[slot]) + 1) % len(masters)]
            moved += cluster.migrate_slot(slot, target, keys_per_step=1, pause_s=0.15)
        return moved

    try:
        running = asyncio.create_task(traffic.run(fast))
        while traffic.done < 5:  # the stream is flowing
            await asyncio.sleep(0.01)
        moved = await asyncio.to_thread(reshard)
        left = len(events) // _BATCH - traffic.done
        fast.set()
        await asyncio.wait_for(running, 60)
        errors = _redirections(masters) - errors0
        del errors["ERR"]  # redis-py's connection setup asks Valkey for what it lacks
        print(
            f"[cluster] migrated {len(slots)} slots ({moved} keys) under traffic; cluster "
            f"replies {dict(errors)}; store retries={store.n_retries} held={traffic.held}"
        )
        assert left > 0, "the traffic ended before the migration did: nothing was tested"
        assert moved >= len(truth.features), "every busy customer's keys moved"
        assert all(cluster.owner(s) is not before[s] for s in slots)
        # the store met every kind of redirection the migration causes, and rode them out
        assert errors["ASK"] > 0 and errors["TRYAGAIN"] > 0 and errors["MOVED"] > 0, errors
        await _check(store, truth, traffic)
        assert store.n_retries > 0, "the half-moved slots cost retries, shown in the metrics"
        assert store.n_failures == 0 and traffic.held == 0
    finally:
        await store.close()


@dataclass
class Replication:
    """What ``WAIT 1`` would say after each batch, without needing the writes' own connection:
    each master's replica has processed every byte of replication stream the master had
    written when asked (its ``slave_repl_offset`` reached the master's ``master_repl_offset``)."""

    pairs: list[tuple[EmbeddedValkey, EmbeddedValkey]]  # (master, its replica)
    gone: set[int] = field(default_factory=set)  # ports of masters failed over for good
    _clients: dict[int, redis.asyncio.Redis] = field(default_factory=dict)

    def _client(self, node: EmbeddedValkey) -> redis.asyncio.Redis:
        return self._clients.setdefault(
            node.port, redis.asyncio.Redis(host=node.host, port=node.port, socket_timeout=1)
        )

    async def settled(self) -> bool:
        for master, replica in self.pairs:
            if master.port in self.gone:
                continue
            deadline = time.monotonic() + 2.0
            try:
                written = (await self._client(master).info("replication"))["master_repl_offset"]
                while (await self._client(replica).info("replication")).get(
                    "slave_repl_offset", -1
                ) < written:
                    if time.monotonic() > deadline:
                        return False
                    await asyncio.sleep(0.001)
            except (rex.ConnectionError, rex.TimeoutError, OSError):
                return False  # the master is gone: what it acknowledged may not have survived
        return True

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


@pytest.mark.timeout(150)
async def test_a_killed_master_fails_over_to_its_replica_under_traffic(
    unique: Callable[[str], str],
) -> None:
    events, truth = _stream(6_000, customers=40, seed=23)
    prefix = unique("fo")
    with EmbeddedValkeyCluster(masters=3, replicas=1, node_timeout_ms=1_000) as cluster:
        store = _store(cluster.url, prefix)
        await store.start()
        masters = cluster.nodes[:3]
        # the master serving most of the busy customers
        owners = Counter(cluster.owner(s).port for s in _slots(prefix, truth))
        victim = next(m for m in masters if m.port == owners.most_common(1)[0][0])
        replication = Replication([(m, cluster.replica_of(m)) for m in masters])
        fast = asyncio.Event()
        traffic = Traffic(store, events, settled=replication.settled)
        try:
            running = asyncio.create_task(traffic.run(fast))
            while traffic.done < 20:
                await asyncio.sleep(0.01)
            at_kill = traffic.done
            t0 = time.monotonic()
            promoted = await asyncio.to_thread(cluster.fail_over, victim)
            failover_s = time.monotonic() - t0
            replication.gone.add(victim.port)
            while traffic.done < at_kill + 20 and not running.done():  # traffic resumed
                await asyncio.sleep(0.01)
            left = len(events) // _BATCH - traffic.done
            fast.set()
            await asyncio.wait_for(running, 60)
            print(
                f"[cluster] killed master :{victim.port} at batch {at_kill}; replica "
                f":{promoted.port} serving after {failover_s:.1f}s; store retries="
                f"{store.n_retries} held={traffic.held} replayed={traffic.replayed}; "
                f"acknowledged then lost (found by the replay): {len(traffic.lost_then_replayed)}"
            )
            assert left > 0, "the traffic ended before the failover did: nothing was tested"
            assert not victim.running
            assert all(cluster.owner(s) is not victim for s in _slots(prefix, truth))
            await _check(store, truth, traffic)
            assert store.n_retries > 0, "the failover cost retries, shown in the metrics"
        finally:
            await replication.aclose()
            await store.close()
