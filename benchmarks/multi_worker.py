"""One model per deployment, measured: the same events through 1, 2 and 4 worker processes.

Each deployment (fresh topics, group and Redis prefix; same broker and Valkey) gets the same
simulated stream, paced at ``--rate`` events/s of wall time and ``--event-rate`` events/s of
event time, then one event per partition past every label horizon and offer window. Workers
merge their models every ``--sync-s`` seconds (``models/sync.py``). Figures per deployment:

- **progressive propensity AUC**: every click's label (``propensity-labels``: the probability
  the serving model gave at click time, and whether the customer bought within the horizon),
  AUC over all labels, over the second half (after warm-up: what the deployment reaches) and
  per tenth of the stream; the aim is 2 and 4 workers within 0.01 of one worker;
- **bandit conversion**: converted share of the offers the bandit chose (``offer-outcomes``);
- **segment agreement**: every worker answers ``POST /models/predict`` for the same probe
  customers; the share of probes on which all workers of the deployment agree (the same id:
  what "one segment meaning" requires), and against the one-worker deployment the Rand index
  (the share of probe pairs grouped alike: ids are k-means labels, so two deployments that
  learned in another order may group alike under other ids);
- **lineage**: each worker's final ``model_version`` (one generation for all) and how many
  generations the deployment published.

The AUC gap of more workers grows with how stale each worker's view of the others' learning
is, against how late labels come anyway: the events between two merges per events in one
label horizon (``staleness_per_horizon``; live traffic merging every 5 s with a 30-minute
horizon is at 0.3%, this benchmark compresses event time).

    streamscore bench learning                    # 1, 2, 4 workers x 24,000 events
    streamscore bench learning --workers 1,2 --events 6000
    streamscore bench learning --quick            # 1 and 2 workers x 3,000 events
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from benchmarks import _report
from benchmarks._harness import (
    Names,
    Stack,
    SystemProcess,
    _producer,
    add_stack_arguments,
    embedded_stack,
    start_system,
)
from models.intent.train import roc_auc
from streams.simulator import Simulator

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)

HORIZON_S = 300.0
PARTITIONS = 4
# customers from new to loyal: nothing spent to thousands, recent buyers to long-lapsed ones
PROBES = [
    {
        "spend_30d": float(10 ** (i % 4) * (1 + i % 3)) if i % 4 else 0.0,
        "purchases_30d": float(i % 4 * (1 + i % 3)),
        "clicks_30d": float(3 ** (i % 6)),
        "avg_order_value": float(20 + 30 * (i % 5)),
        "secs_since_last_purchase": float(60 * 10 ** (i % 6)),
        "cart_value": float(i % 7) * 20.0,
    }
    for i in range(120)
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench learning", description=__doc__)
    p.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    p.add_argument("--events", type=int, default=24_000)
    p.add_argument("--customers", type=int, default=400)
    p.add_argument("--rate", type=float, default=400.0, help="events/s of wall time")
    p.add_argument("--event-rate", type=float, default=2.0, help="events/s of event time")
    p.add_argument("--sync-s", type=float, default=0.25, help="MODELS__SYNC_EVERY_S")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--quick", action="store_true", help="1 and 2 workers, 3,000 events")
    add_stack_arguments(p)
    return p


def _events(args: argparse.Namespace) -> list[tuple[str, bytes, bytes]]:
    """The stream, ending an hour ago, and then one event per partition past every deadline."""
    span = args.events / args.event_rate
    start = time.time() - span - 2 * HORIZON_S - 3600
    sim = Simulator(args.customers, seed=args.seed, start_ts=start)
    out = [(e.topic, e.key, e.value) for e in sim.events(args.events, rate=args.event_rate)]
    end = start + span + HORIZON_S + 120
    ids: dict[int, str] = {}
    for n in range(64 * PARTITIONS):
        cid = f"later-{n}"
        ids.setdefault((murmur2(cid.encode()) & 0x7FFFFFFF) % PARTITIONS, cid)
    for cid in ids.values():
        base = {"customer_id": cid, "session_id": cid, "ts": end}
        click = {**base, "event_id": f"{cid}-c", "action": "view", "item_id": "i1"}
        click["category"] = "books"
        buy = {**base, "event_id": f"{cid}-p", "order_id": f"{cid}-o", "total": 5.0}
        buy["items"] = [{"item_id": "i1", "category": "books", "price": 5.0, "quantity": 1}]
        buy["currency"] = "EUR"
        note = {"event_id": f"{cid}-f", "customer_id": cid, "ts": end, "rating": 5}
        note["channel"] = "review"
        for topic, doc in (("clicks", click), ("purchases", buy), ("feedback", note)):
            out.append((topic, cid.encode(), orjson.dumps(doc)))
    return out


async def _send(
    stack: Stack, names: Names, events: Sequence[tuple[str, bytes, bytes]], rate: float
) -> None:
    producer = await _producer(stack.bootstrap)
    topics = names.inputs
    try:
        start = time.monotonic()
        i = 0
        while i < len(events):
            due = min(len(events), int((time.monotonic() - start) * rate) + 1)
            for topic, key, value in events[i:due]:
                await producer.send(topics[topic], value, key=key)
            i = due
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, until: Any, timeout: float) -> list[dict[str, Any]]:
    """Records of ``topic`` from the start until ``until(rows)`` holds (or ``timeout``)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(rows):
            got = await consumer.getmany(timeout_ms=500)
            for batch in got.values():
                rows.extend(orjson.loads(r.value) for r in batch if r.value)
    finally:
        await consumer.stop()
    return rows


def _get(w: SystemProcess, path: str, body: Any = None) -> Any:
    port = w.env["STREAMSCORE_WORKER__WEB_PORT"]
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(req, timeout=5.0) as r:
        return orjson.loads(r.read())


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


def _settled(workers: Sequence[SystemProcess], sync_s: float) -> list[dict[str, Any]]:
    """The workers' ``/models`` once they serve one generation and learn nothing more."""
    docs: list[dict[str, Any]] = []

    def same() -> bool:
        nonlocal docs
        before = [_get(w, "/models") for w in workers]
        time.sleep(2 * sync_s + 0.5)
        docs = [_get(w, "/models") for w in workers]
        return before == docs and len({d["model_version"] for d in docs}) == 1

    _wait(same, 120.0, "one generation on every worker")
    return docs


def _rand_index(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of pairs that both labelings put together, or both apart."""
    x, y = np.asarray(a), np.asarray(b)
    same_a = x[:, None] == x[None, :]
    same_b = y[:, None] == y[None, :]
    upper = np.triu(np.ones_like(same_a, dtype=bool), k=1)
    return float((same_a == same_b)[upper].mean())


def _auc_curve(labels: list[dict[str, Any]], parts: int = 10) -> list[float]:
    rows = sorted(labels, key=lambda r: r["click_ts"])
    out = []
    for chunk in np.array_split(np.arange(len(rows)), parts):
        y = [int(rows[i]["purchased"]) for i in chunk]
        p = [rows[i]["propensity"] for i in chunk]
        out.append(round(float(roc_auc(y, p)), 4))
    return out


async def _deployment(
    stack: Stack,
    n: int,
    events: list[tuple[str, bytes, bytes]],
    n_clicks: int,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    names = Names.fresh(f"learn{n}")
    env = {
        "STREAMSCORE_MODELS__SYNC_EVERY_S": str(args.sync_s),
        "STREAMSCORE_MODELS__PROPENSITY_HORIZON_MINUTES": str(HORIZON_S / 60),
        "STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES": str(HORIZON_S / 60),
        "STREAMSCORE_WORKER__PUBLISH_LABELS": "true",
        "STREAMSCORE_WORKER__IDLE_PARTITION_S": "600",
        "STREAMSCORE_INTENT__ENABLED": "false",
    }
    procs = await start_system(
        "streamscore", stack, names, workdir, partitions=PARTITIONS, env=env, instances=n
    )
    try:

        def ready() -> bool:
            stats = [p.stats() or {} for p in procs]
            return all(s.get("ready") and s.get("assigned_partitions", 0) > 0 for s in stats)

        _wait(ready, 120.0, f"{n} workers ready")
        t0 = time.monotonic()
        await _send(stack, names, events, args.rate)
        labels_topic = names.topic_names["labels"]
        labels = await _read(
            stack.bootstrap,
            labels_topic,
            lambda rows: len({r["click_event_id"] for r in rows}) >= n_clicks,
            timeout=300.0,
        )
        seconds = time.monotonic() - t0
        first = {}
        for r in labels:
            first.setdefault(r["click_event_id"], r)
        labels = list(first.values())
        docs = _settled(procs, args.sync_s)
        predictions = [_get(p, "/models/predict", {"features": PROBES}) for p in procs]
        outcomes = await _read(
            stack.bootstrap, names.topic_names["offer_outcomes"], lambda rows: False, timeout=3.0
        )
    finally:
        for p in procs:
            p.stop()
    bandit = [o for o in outcomes if o["arm"] == "bandit"]
    segments = [p["segments"] for p in predictions]
    agree = float(np.mean([len({s[i] for s in segments}) == 1 for i in range(len(PROBES))]))
    y = [int(r["purchased"]) for r in labels]
    p = [r["propensity"] for r in labels]
    half = sorted(labels, key=lambda r: r["click_ts"])[len(labels) // 2 :]
    return {
        "workers": n,
        "labels": len(labels),
        "auc": round(float(roc_auc(y, p)), 4),
        "auc_second_half": round(
            float(roc_auc([int(r["purchased"]) for r in half], [r["propensity"] for r in half])),
            4,
        ),
        "auc_by_tenth": _auc_curve(labels),
        "bandit_offers": len(bandit),
        "bandit_conversion": round(float(np.mean([o["converted"] for o in bandit])), 4)
        if bandit
        else None,
        "segment_agreement_within": round(agree, 4),
        "segments": segments[0],
        "model_versions": sorted({d["model_version"] for d in docs}),
        "generations": docs[0].get("model_generation"),
        "learned": docs[0].get("learned"),
        "seconds": round(seconds, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(x) for x in args.workers.split(",")]
    events = _events(args)
    clicks = {
        orjson.loads(v)["event_id"] for t, _, v in events if t == "clicks" and v.startswith(b"{")
    }
    n_clicks = len(clicks) - PARTITIONS  # the last clicks' horizons never close
    rows = []
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="learning-") as tmp,
    ):
        for n in counts:
            logger.info("deployment of %d worker(s)", n)
            rows.append(await _deployment(stack, n, events, n_clicks, args, Path(tmp)))
    one = next((r for r in rows if r["workers"] == 1), rows[0])
    for r in rows:
        r["auc_vs_one_worker"] = round(r["auc"] - one["auc"], 4)
        r["auc_second_half_vs_one_worker"] = round(r["auc_second_half"] - one["auc_second_half"], 4)
        r["segment_rand_index_vs_one_worker"] = round(
            _rand_index(r["segments"], one["segments"]), 4
        )
    # How stale a worker's view of the others' learning is, against how late labels come
    # anyway: events between two merges per events in one label horizon. Live traffic at 5 s
    # merges and a 30 min horizon is at 0.3%; this benchmark compresses event time.
    staleness = args.rate * args.sync_s / (args.event_rate * HORIZON_S)
    return {
        "benchmark": "learning",
        "staleness_per_horizon": round(staleness, 4),
        "environment": _report.environment(),
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.workers, args.events = "1,2", 3_000
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    doc = asyncio.run(run(args))
    rows = doc["rows"]
    columns = [
        "workers",
        "labels",
        "auc",
        "auc_vs_one_worker",
        "auc_second_half",
        "auc_second_half_vs_one_worker",
        "bandit_offers",
        "bandit_conversion",
        "segment_agreement_within",
        "segment_rand_index_vs_one_worker",
        "generations",
        "seconds",
    ]
    summary = "\n".join(
        [
            "## One model per deployment: 1, 2 and 4 workers on the same events",
            "",
            _report.markdown_table(rows, columns),
            "",
            f"Events between two merges per events in a label horizon: "
            f"{doc['staleness_per_horizon']:.0%} ({args.rate:g} ev/s, merges every "
            f"{args.sync_s:g} s, {args.event_rate:g} events per second of event time, "
            f"{HORIZON_S:g} s horizon).",
            "",
            "Final model_version per deployment: "
            + "; ".join(f"{r['workers']}: {', '.join(r['model_versions'])}" for r in rows),
        ]
    )
    _report.write(args.out, "learning", doc, summary)
    tenths = list(range(1, 11))
    _report.plot_lines(
        args.out / "learning.png",
        tenths,
        {f"{r['workers']} worker(s)": r["auc_by_tenth"] for r in rows},
        "Progressive propensity AUC, same events",
        "tenth of the stream",
        "AUC of the labels in that tenth",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
