"""Shared tools of the fault tests: simulated input, ground truth, and exact checks.

The ground truth is computed from the generated documents alone (no streamscore code): per
customer, the clicks, add-to-carts, purchases, spend and feedback in the 24 h and 30 d windows,
all of which are order-independent, so they must match Redis exactly whatever order, replay
or crash the worker went through. Events are generated two hours in the past so every event
lies inside both windows when read back with ``FeatureStore.get(cid, now)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from features.settings import RedisSettings
from features.store import FeatureStore
from models.ids import alert_id, offer_event_id
from streams.simulator import Simulator
from tests.streams.conftest import consume

__all__ = [
    "COMPARED",
    "Comparison",
    "Outputs",
    "Truth",
    "applied_ids",
    "cart_alert_ids",
    "committed_and_end",
    "compare_features",
    "compare_labels",
    "fresh_env",
    "input_index",
    "inputs_of",
    "produce_all",
    "read_features",
    "read_labels",
    "read_offer_claims",
    "read_outputs",
    "record",
    "reference_run",
    "simulate",
    "time_past",
    "true_labels",
    "wait_drained",
    "wait_until",
]

logger = logging.getLogger(__name__)

# Order-independent features that the ground truth predicts exactly.
COMPARED = (
    "clicks_24h",
    "clicks_30d",
    "carts_24h",
    "carts_30d",
    "purchases_24h",
    "purchases_30d",
    "spend_24h",
    "spend_30d",
    "feedback_count",
)


@dataclass
class Truth:
    """What the input says each customer's features must be."""

    features: dict[str, dict[str, float]] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    n_events: int = 0


def simulate(
    env: dict[str, str], n: int, *, seed: int, customers: int = 500, rate: float = 200.0
) -> tuple[list[tuple[str, bytes, bytes]], Truth]:
    """``n`` simulated events routed to the test's topics (``rate`` events per second of event
    time, starting two hours ago), and their ground truth."""
    topic = {
        "clicks": env["STREAMSCORE_TOPICS__CLICKS"],
        "purchases": env["STREAMSCORE_TOPICS__PURCHASES"],
        "feedback": env["STREAMSCORE_TOPICS__FEEDBACK"],
    }
    sim = Simulator(customers, seed=seed, start_ts=float(int(time.time()) - 7200))
    records: list[tuple[str, bytes, bytes]] = []
    truth = Truth()
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for e in sim.events(n, rate=rate):
        records.append((topic[e.topic], e.key, e.value))
        doc = e.doc
        if doc is None:
            continue
        truth.n_events += 1
        truth.event_ids.add(doc["event_id"])
        row = rows[doc["customer_id"]]
        if e.topic == "clicks":
            row["clicks"] += 1
            row["carts"] += doc["action"] == "add_to_cart"
        elif e.topic == "purchases":
            row["purchases"] += 1
            row["spend"] += doc["total"]
        else:
            row["feedback_count"] += 1
    for cid, row in rows.items():
        f = {"feedback_count": float(row["feedback_count"])}
        for metric in ("clicks", "carts", "purchases", "spend"):
            f[f"{metric}_24h"] = f[f"{metric}_30d"] = float(row[metric])
        truth.features[cid] = f
    return records, truth


def true_labels(
    env: dict[str, str], records: list[tuple[str, bytes, bytes]], horizon_s: float
) -> dict[str, bool]:
    """Click event id -> its propensity label, from the input alone: did the same customer
    buy within ``[ts, ts + horizon_s]``? (What one worker that never stops learns.)"""
    clicks_topic, purchases_topic = (
        env["STREAMSCORE_TOPICS__CLICKS"],
        env["STREAMSCORE_TOPICS__PURCHASES"],
    )
    clicks: dict[str, tuple[str, float]] = {}
    buys: dict[str, list[float]] = defaultdict(list)
    for topic, _, value in records:
        if topic not in (clicks_topic, purchases_topic):
            continue
        try:
            doc = orjson.loads(value)
            cid, ts = doc["customer_id"], float(doc["ts"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # the simulator's malformed records
        if topic == clicks_topic:
            clicks.setdefault(doc["event_id"], (cid, ts))
        else:
            buys[cid].append(ts)
    return {
        eid: any(ts <= b <= ts + horizon_s for b in buys.get(cid, ()))
        for eid, (cid, ts) in clicks.items()
    }


def read_labels(env: dict[str, str], n: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """The labels topic from the start, until it holds ``n`` distinct clicks and then nothing
    new for 3 s; fails when they do not all arrive within ``timeout``."""
    topic = env["STREAMSCORE_TOPICS__LABELS"]
    last = [-1, time.monotonic()]

    def enough(got: dict[str, list[dict[str, Any]]]) -> bool:
        rows = got.get(topic, [])
        now = time.monotonic()
        if len(rows) != last[0]:
            last[0], last[1] = len(rows), now
        return len({r["click_event_id"] for r in rows}) >= n and now - last[1] >= 3.0

    got = asyncio.run(
        consume(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], [topic], until=enough, timeout=timeout)
    )
    rows = got.get(topic, [])
    distinct = len({r["click_event_id"] for r in rows})
    if distinct < n:
        raise TimeoutError(f"{distinct} of {n} labels within {timeout}s")
    return rows


def compare_labels(rows: list[dict[str, Any]], truth: dict[str, bool]) -> dict[str, Any]:
    """How the published labels differ from the true ones: clicks never labeled, labeled
    wrong, labeled that are no input click, and published twice with different content."""
    first: dict[str, dict[str, Any]] = {}
    differing = 0
    for r in rows:
        seen = first.setdefault(r["click_event_id"], r)
        differing += seen != r
    got = {eid: r["purchased"] for eid, r in first.items()}
    return {
        "labels_expected": len(truth),
        "labels_published": len(rows),
        "missing": sorted(set(truth) - set(got))[:5],
        "n_missing": len(set(truth) - set(got)),
        "wrong": sorted(f"{e}={got[e]}" for e in got.keys() & truth.keys() if got[e] != truth[e])[
            :5
        ],
        "n_wrong": sum(got[e] != truth[e] for e in got.keys() & truth.keys()),
        "unknown": sorted(set(got) - set(truth))[:5],
        "repeats_differing": differing,
        "positives": sum(truth.values()),
    }


def fresh_env(env: dict[str, str], unique: Callable[[str], str], where: Path) -> dict[str, str]:
    """Overrides that give a worker its own topics, group, Redis prefix and directories."""
    out = {
        k: unique(k.rsplit("__", 1)[1].lower())
        for k in env
        if k.startswith("STREAMSCORE_TOPICS__")
        and not k.endswith(("PARTITIONS", "REPLICATION_FACTOR"))
    }
    out["STREAMSCORE_REDIS__KEY_PREFIX"] = unique("ss")
    out["STREAMSCORE_WORKER__APP_ID"] = unique("app")
    out["STREAMSCORE_MODELS__CHECKPOINT_DIR"] = str(where / "checkpoints")
    out["STREAMSCORE_WORKER__DATA_DIR"] = str(where / "faust")
    where.mkdir(parents=True, exist_ok=True)
    return out


def reference_run(
    worker_factory: Callable[..., Any],
    unique: Callable[[str], str],
    where: Path,
    env: dict[str, str],
    extra: dict[str, str],
    records: list[tuple[str, bytes, bytes]],
    then: list[tuple[str, bytes, bytes]],
) -> Any:
    """One worker that never stops, on its own topics: ``records`` (routed to ``env``'s
    topics) and then ``then`` (unrouted test records) are sent to it; returns the worker."""
    ref = worker_factory(**extra, **fresh_env(env, unique, where))
    ref.wait_ready()
    topic = {env[k]: ref.env[k] for k in env if k.startswith("STREAMSCORE_TOPICS__")}
    kinds = {
        k: ref.env[f"STREAMSCORE_TOPICS__{k.upper()}"] for k in ("clicks", "purchases", "feedback")
    }
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    asyncio.run(produce_all(bootstrap, [(topic[t], k, v) for t, k, v in records]))
    asyncio.run(produce_all(bootstrap, [(kinds[t], k, v) for t, k, v in then]))
    return ref


def time_past(
    records: list[tuple[str, bytes, bytes]], after_s: float, partitions: int = 2
) -> list[tuple[str, bytes, bytes]]:
    """One click, purchase and feedback per partition (of ``partitions``; with two,
    ``later-b`` and ``later-a`` route to partitions 0 and 1), ``after_s`` after the latest
    event of ``records``: every topic of every partition reaches that time, so every earlier
    deadline passes."""
    from aiokafka.partitioner import murmur2

    from tests.streams.test_pipeline_e2e import click, feedback, purchase

    def partition(key: str) -> int:  # the producer's default partitioner
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    ids: dict[int, str] = {}
    for cid in ("later-b", "later-a", *(f"later-{n}" for n in range(64 * partitions))):
        ids.setdefault(partition(cid), cid)
    end = max(orjson.loads(v)["ts"] for _, _, v in records) + after_s
    out: list[tuple[str, bytes, bytes]] = []
    for _, cid in sorted(ids.items()):
        out += [
            click(f"{cid}-c", cid, end, "view", "books", 5.0, session=cid),
            purchase(f"{cid}-p", cid, end, 5.0, "books"),
            feedback(f"{cid}-f", cid, end, 5, None),
        ]
    return out


def cart_alert_ids(env: dict[str, str]) -> set[str]:
    """The ids of the cart-abandonment alerts published (read until quiet)."""
    return {a["alert_id"] for a in read_outputs(env).alerts if a["type"] == "cart_abandonment"}


def inputs_of(env: dict[str, str]) -> list[str]:
    return [env[f"STREAMSCORE_TOPICS__{k}"] for k in ("CLICKS", "PURCHASES", "FEEDBACK")]


def _store(env: dict[str, str]) -> FeatureStore:
    return FeatureStore(
        RedisSettings(
            url=env["STREAMSCORE_REDIS__URL"],
            key_prefix=env["STREAMSCORE_REDIS__KEY_PREFIX"],
            password=env.get("STREAMSCORE_REDIS__PASSWORD"),
            cluster=env.get("STREAMSCORE_REDIS__CLUSTER") == "true",
        )
    )


async def read_features(env: dict[str, str], customers: list[str]) -> dict[str, dict[str, float]]:
    """Each customer's compared features as Redis holds them now (missing ones left out)."""
    store = _store(env)
    await store.start()
    now = time.time()
    out: dict[str, dict[str, float]] = {}
    try:
        for cid in customers:
            r = await store.get(cid, now)
            if r is not None:
                out[cid] = {k: r.features[k] for k in COMPARED}
    finally:
        await store.close()
    return out


async def read_offer_claims(env: dict[str, str], customers: list[str]) -> set[str]:
    """Trigger event ids of the offers the worker claimed in Redis (the frequency-cap sets)."""
    from features.keys import CustomerKeys

    store = _store(env)
    await store.start()
    try:
        client = store._client
        if client is None:  # pragma: no cover - start() sets it
            raise RuntimeError("store not started")
        pipe = client.pipeline(transaction=False)
        prefix = env["STREAMSCORE_REDIS__KEY_PREFIX"]
        for cid in customers:
            pipe.zrange(CustomerKeys.of(prefix, cid).offers, 0, -1)
        replies = await pipe.execute()
    finally:
        await store.close()
    return {t.decode() for r in replies for t in r}


@dataclass(frozen=True)
class Comparison:
    """Redis against the ground truth, in events (clicks + purchases + feedback)."""

    lost: int  # events the truth has and Redis does not
    doubled: int  # events Redis counted more often than the truth has them
    customers_wrong: int
    example: str

    def summary(self) -> str:
        return (
            f"lost={self.lost} double-counted={self.doubled} customers_wrong={self.customers_wrong}"
        )


def compare_features(truth: Truth, got: dict[str, dict[str, float]]) -> Comparison:
    lost = doubled = wrong = 0
    example = ""
    for cid, want in truth.features.items():
        have = got.get(cid, dict.fromkeys(COMPARED, 0.0))
        bad = {
            k: (want[k], have[k]) for k in COMPARED if abs(want[k] - have[k]) > 1e-6 * (1 + want[k])
        }
        if not bad:
            continue
        wrong += 1
        example = example or f"{cid}: (want, have) {bad}"
        for k in ("clicks_30d", "purchases_30d", "feedback_count"):
            d = have[k] - want[k]
            lost += max(0, int(-d))
            doubled += max(0, int(d))
    return Comparison(lost, doubled, wrong, example)


@dataclass
class Outputs:
    offers: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    dead: list[dict[str, Any]]

    def duplicates(self) -> tuple[int, int]:
        """(duplicate offers, duplicate alerts): extra copies of the same id."""
        o = Counter(x["offer_event_id"] for x in self.offers)
        a = Counter(x["alert_id"] for x in self.alerts)
        return sum(n - 1 for n in o.values()), sum(n - 1 for n in a.values())

    def differing_copies(self) -> list[str]:
        """Offer ids published more than once with different content (recommended items
        included): a replay must publish exactly what was published the first time."""
        first: dict[str, dict[str, Any]] = {}
        differ = []
        for x in self.offers:
            seen = first.setdefault(x["offer_event_id"], x)
            if seen != x:
                differ.append(x["offer_event_id"])
        return differ

    def id_errors(self, truth: Truth) -> list[str]:
        """Outputs whose id is not the one derived from their trigger, or whose trigger is
        not an input event (alerts raised by the timer for cart abandonment included)."""
        errors = []
        for x in self.offers:
            if x["offer_event_id"] != offer_event_id(x["customer_id"], x["trigger_event_id"]):
                errors.append(f"offer id {x['offer_event_id']} not derived from its trigger")
            if x["trigger_event_id"] not in truth.event_ids:
                errors.append(f"offer trigger {x['trigger_event_id']} is no input event")
        for x in self.alerts:
            if x["alert_id"] != alert_id(x["customer_id"], x["trigger_event_id"], x["type"]):
                errors.append(f"alert id {x['alert_id']} not derived from its trigger")
            if x["trigger_event_id"] not in truth.event_ids:
                errors.append(f"alert trigger {x['trigger_event_id']} is no input event")
        return errors


async def _read_all(
    bootstrap: str, topics: list[str], quiet_s: float, timeout: float
) -> dict[str, list[dict[str, Any]]]:
    """Read ``topics`` from the beginning until nothing new arrived for ``quiet_s``."""
    last = [-1, time.monotonic()]  # records seen, when that count last changed

    def quiet(got: dict[str, list[dict[str, Any]]]) -> bool:
        n, now = sum(map(len, got.values())), time.monotonic()
        if n != last[0]:
            last[0], last[1] = n, now
        return now - last[1] >= quiet_s

    return await consume(bootstrap, topics, until=quiet, timeout=timeout)


def read_outputs(env: dict[str, str], quiet_s: float = 3.0, timeout: float = 60.0) -> Outputs:
    """Everything in the offers, alerts and dead-letters topics (until quiet for quiet_s)."""
    t = [env[f"STREAMSCORE_TOPICS__{k}"] for k in ("OFFERS", "ALERTS", "DEAD_LETTERS")]
    got = asyncio.run(_read_all(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], t, quiet_s, timeout))
    return Outputs(got[t[0]], got[t[1]], got[t[2]])


async def committed_and_end(
    bootstrap: str, group: str, topics: list[str]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The group's committed offsets (-1 when none) and the log-end offsets of ``topics``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        end = await consumer.end_offsets(tps)
        committed = {tp: (await consumer.committed(tp)) for tp in tps}
    finally:
        await consumer.stop()
    return {tp: (-1 if c is None else c) for tp, c in committed.items()}, end


async def produce_all(
    bootstrap: str, records: Sequence[tuple[Any, ...]]
) -> dict[TopicPartition, int]:
    """Send ``(topic, key, value)`` or ``(topic, key, value, headers)`` records in order, wait
    for the acks; the next offset of every partition written.

    The tests take log ends from the produce acks: Tansu's ListOffsets(latest) answers an
    offset below the real end (the base offset of a recent batch, it seems), so
    ``end_offsets`` cannot tell whether a group has drained a partition.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        futures = [
            await producer.send(t, v, key=k, headers=(h[0] or None) if h else None)
            for t, k, v, *h in records
        ]
        for md in await asyncio.gather(*futures):
            tp = TopicPartition(md.topic, md.partition)
            ends[tp] = max(ends.get(tp, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


def wait_drained(
    env: dict[str, str], ends: dict[TopicPartition, int], timeout: float, poll: float = 0.5
) -> float:
    """Until the group committed every record up to ``ends``; returns the seconds it took."""
    start = time.monotonic()
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    group = env["STREAMSCORE_WORKER__APP_ID"]
    last: Any = None
    while time.monotonic() - start < timeout:
        committed, _ = asyncio.run(committed_and_end(bootstrap, group, inputs_of(env)))
        last = (committed, ends)
        if all(committed.get(tp, -1) >= end for tp, end in ends.items()):
            return time.monotonic() - start
        time.sleep(poll)
    raise TimeoutError(f"group did not commit all input within {timeout}s: {last}")


def record(tmp_path: Path, name: str, numbers: dict[str, Any]) -> None:
    """Write the test's numbers to ``tmp_path/<name>.json`` and log/print one line."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(numbers, indent=2, default=str))
    line = f"[fault] {name}: " + " ".join(f"{k}={v}" for k, v in numbers.items())
    logger.warning("%s", line)
    print(line)


def wait_until(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(poll)
    raise TimeoutError(f"{what} not within {timeout}s")


async def input_index(env: dict[str, str]) -> dict[tuple[str, int, int], str | None]:
    """(topic, partition, offset) -> event_id of every input record (None when malformed)."""
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    out: dict[tuple[str, int, int], str | None] = {}
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(t, p)
            for t in inputs_of(env)
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                for r in recs:
                    try:
                        eid = orjson.loads(r.value).get("event_id")
                    except (orjson.JSONDecodeError, AttributeError):
                        eid = None
                    out[(tp.topic, tp.partition, r.offset)] = eid
    finally:
        await consumer.stop()
    return out


def applied_ids(redis_url: str, prefix: str, customers: list[str]) -> set[str]:
    """Event ids the feature store recorded as applied (the customers' ``seen`` sets)."""
    import redis

    from features.keys import CustomerKeys

    with redis.Redis.from_url(redis_url) as client:
        pipe = client.pipeline(transaction=False)
        for cid in customers:
            pipe.zrange(CustomerKeys.of(prefix, cid).seen, 0, -1)
        return {i.decode() for r in pipe.execute() for i in r}
