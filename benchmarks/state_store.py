"""Where partition-owned state lives: Redis (what streamscore does) vs. a Kafka changelog
(what a Faust table does), on the embedded stack, in one run.

The state is one input partition's clicks waiting for their propensity label (~300 bytes
each), written the way the worker writes it (batches of ``--batch``), then handed to a new
owner that must resolve all of it:

- **redis**: ``LabelStore.add`` per batch (one script call per partition per batch). The new
  owner reads nothing up front (recovery: 0); ``take`` resolves the entries from Redis as
  their time comes, timed here for all of them at once (``resolve_us_per_entry``).
- **changelog**: every state change is a record on a compacted changelog topic, keyed by the
  click id, produced with aiokafka (``acks=all``, batched by ``linger_ms``) as Faust's table
  does on ``table[key] = value``; this is the floor under a Faust table, whose own
  ``Record`` send costs ~155 us more per change on this machine. The new owner must read the
  partition's whole changelog before it may process an event (Faust's table recovery,
  ``recovery_s_per_100k``); it then resolves in memory (not timed), and each resolved entry
  is one more changelog record (a tombstone), not counted here.

Reports the write cost per entry, the new owner's recovery before its first event, the
resolution cost, and the ratio.

    streamscore bench state                  # 100,000 entries
    streamscore bench state --entries 20000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from typing import Any

from benchmarks import _report
from benchmarks._harness import add_stack_arguments, embedded_stack

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench state", description=__doc__)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=500, help="entries per write, as a batch")
    p.add_argument("--repeats", type=int, default=3, help="runs of each store; medians")
    p.add_argument("--quick", action="store_true")
    add_stack_arguments(p)
    return p


def _clicks(n: int) -> list[Any]:
    from models.online.labels import PendingClick
    from models.online.transform import FEATURE_NAMES

    x = bytes(8 * len(FEATURE_NAMES))
    t0 = time.time() - 3_600.0
    return [PendingClick(f"e-{i}", f"c-{i % 5_000:05d}", t0 + i * 0.01, 0.1, x) for i in range(n)]


async def _redis(redis_url: str, clicks: list[Any], batch: int) -> dict[str, float]:
    from redis.asyncio import Redis

    from models.online.labels import LabelStore

    client = Redis.from_url(redis_url)
    store = LabelStore(f"bench-{uuid.uuid4().hex[:6]}", horizon_s=1_800.0, max_pending=10**7)
    try:
        await store.start(client)
        start = time.perf_counter()
        for i in range(0, len(clicks), batch):
            await store.add([(0, c) for c in clicks[i : i + batch]], [])
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        resolved = 0
        while True:
            due = await store.take(0, time.time() + 7_200.0)
            if not due.labels:
                break
            resolved += len(due.labels)
            await store.forget(due)
        resolve_s = time.perf_counter() - start
    finally:
        await client.aclose()
    assert resolved == len(clicks), f"redis resolved {resolved} of {len(clicks)}"
    return {"write_s": write_s, "recovery_s": 0.0, "resolve_s": resolve_s}


async def _changelog(bootstrap: str, clicks: list[Any], batch: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streams.embedded import create_topics

    topic = f"labels-changelog-{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        start = time.perf_counter()
        for i in range(0, len(clicks), batch):
            futures = [
                await producer.send(topic, c.pack(), key=c.event_id.encode(), partition=0)
                for c in clicks[i : i + batch]
            ]
            await asyncio.gather(*futures)  # the batch's state is durable before its commit
        write_s = time.perf_counter() - start
    finally:
        await producer.stop()
    # the new owner: read the partition's changelog to its end before doing anything
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        start = time.perf_counter()
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        state: dict[bytes, bytes] = {}
        while len(state) < len(clicks):
            got = await consumer.getmany(tp, timeout_ms=1_000, max_records=10_000)
            for record in got.get(tp, []):
                state[record.key] = record.value
        recovery_s = time.perf_counter() - start
    finally:
        await consumer.stop()
    return {"write_s": write_s, "recovery_s": recovery_s}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.entries
    clicks = _clicks(n)
    runs: dict[str, list[dict[str, float]]] = {"redis": [], "changelog": []}
    with embedded_stack(args.bootstrap, args.redis_url) as stack:
        for _ in range(args.repeats):  # interleaved, so a slow minute hits both
            runs["redis"].append(await _redis(stack.redis_url, clicks, args.batch))
            runs["changelog"].append(await _changelog(stack.bootstrap, clicks, args.batch))
    rows = []
    for store, rs in runs.items():
        write = statistics.median(r["write_s"] for r in rs)
        recovery = statistics.median(r["recovery_s"] for r in rs)
        row: dict[str, Any] = {
            "store": store,
            "entries": n,
            "write_us_per_entry": round(write / n * 1e6, 2),
            "recovery_s_per_100k": round(recovery / n * 1e5, 3),
        }
        if "resolve_s" in rs[0]:
            resolve = statistics.median(r["resolve_s"] for r in rs)
            row["resolve_us_per_entry"] = round(resolve / n * 1e6, 2)
        rows.append(row)
    by = {r["store"]: r for r in rows}
    ratios = {
        "changelog_write_vs_redis": round(
            by["changelog"]["write_us_per_entry"] / by["redis"]["write_us_per_entry"], 2
        ),
    }
    return {
        "environment": _report.environment(),
        "entries": n,
        "batch": args.batch,
        "repeats": args.repeats,
        "results": rows,
        "ratios": ratios,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    args = _parser().parse_args(argv)
    if args.quick:
        args.entries, args.repeats = 2_000, 1
    doc = asyncio.run(run(args))
    cols = ["store", "entries", "write_us_per_entry", "recovery_s_per_100k", "resolve_us_per_entry"]
    changelog = next(r for r in doc["results"] if r["store"] == "changelog")
    md = "\n".join(
        [
            f"# Partition-owned state: Redis vs. a Kafka changelog ({doc['entries']} entries, "
            f"median of {doc['repeats']})",
            "",
            _report.markdown_table(doc["results"], cols),
            "",
            f"changelog / redis write: x{doc['ratios']['changelog_write_vs_redis']} (before "
            "Faust's own ~155 us per table write); the changelog's new owner reads "
            f"{changelog['recovery_s_per_100k']} s per 100k entries before its first event, "
            "Redis's none.",
        ]
    )
    _report.write(args.out, "state_store", doc, md)
    _report.plot_bars(
        args.out / "state_store.png",
        {f"{r['store']} write (us/entry)": r["write_us_per_entry"] for r in doc["results"]}
        | {f"{r['store']} recovery (s/100k)": r["recovery_s_per_100k"] for r in doc["results"]},
        "Partition-owned state: Redis vs. changelog",
        "value",
    )
    return 0
