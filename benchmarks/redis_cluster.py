"""What a feature-store batch costs on a 3-master Redis Cluster against one server, in one run.

The same batches of events go through ``FeatureStore.apply`` on an embedded Valkey server
(the baseline) and on an embedded 3-master Valkey cluster (``EmbeddedValkeyCluster``),
alternating batch by batch so a slow moment hits both. Each batch holds ``--events`` clicks of
exactly ``c`` distinct customers, for every ``c`` in ``--customers``. Per setup and ``c``:

- **script calls per batch**: ``EVALSHA`` calls the servers ran (``INFO commandstats``, summed
  over the nodes): one per 64 customers on one server, one per hash slot on the cluster;
- **round trips per batch**: requests the client wrote (``send_packed_command`` calls; a
  pipeline is one), and how many of them one after another (one server: 1 pipeline; the
  cluster: the calls go concurrently, one per slot, so 1 deep but that many wide);
- **wall time per batch**: median and p99 over ``--batches`` batches, and events/s at the
  median.

    streamscore bench cluster                            # 200 batches of 500 events
    streamscore bench cluster --customers 1,50,500 --batches 400
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import redis
from redis.asyncio.connection import AbstractConnection
from redis.cluster import RedisCluster

from benchmarks import _report
from benchmarks._harness import add_stack_arguments
from features.events import Click
from features.settings import RedisSettings
from features.store import FeatureStore
from streams.embedded import EmbeddedValkey, EmbeddedValkeyCluster

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)

_POOL = 100_000  # customers the batches draw from
_WARMUP = 5  # batches per setup and size not measured (connections, scripts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench cluster", description=__doc__)
    p.add_argument("--events", type=int, default=500, help="events per batch (the worker's 500)")
    p.add_argument("--customers", default="1,10,100,500", help="distinct customers per batch")
    p.add_argument("--batches", type=int, default=200, help="measured batches per setup and size")
    p.add_argument("--cluster-url", default=None, help="use this cluster instead of Valkey's")
    p.add_argument("--quick", action="store_true")
    add_stack_arguments(p)
    return p


def _batches(n: int, events: int, customers: int, seed: int) -> list[list[Click]]:
    """``n`` batches of ``events`` clicks spread over ``customers`` customers each."""
    rng = random.Random(seed)
    ts = time.time() - 3_600.0
    out = []
    for b in range(n):
        who = rng.sample(range(_POOL), customers)
        batch = []
        for i in range(events):
            ts += 0.001
            cid = f"c{who[i % customers]:06d}"
            batch.append(Click(f"e{seed}-{b}-{i}", cid, f"s-{cid}", ts, "view", "i1", "books"))
        out.append(batch)
    return out


class _Sends:
    """Counts requests written by every redis.asyncio connection (a pipeline is one)."""

    def __init__(self) -> None:
        self.n = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        original = AbstractConnection.send_packed_command
        sends = self

        async def counted(
            conn: AbstractConnection, command: Any, check_health: bool = True
        ) -> None:
            sends.n += 1
            await original(conn, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        try:
            yield
        finally:
            AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def _evalsha_calls(nodes: list[tuple[str, int]]) -> list[int]:
    out = []
    for host, port in nodes:
        with redis.Redis(host=host, port=port) as client:
            stats = client.info("commandstats")
        out.append(int(stats.get("cmdstat_evalsha", {}).get("calls", 0)))
    return out


async def _measure(
    stores: dict[str, FeatureStore],
    nodes: dict[str, list[tuple[str, int]]],
    batches: list[list[Click]],
    sends: _Sends,
) -> dict[str, dict[str, Any]]:
    """Each batch on every setup in turn; per setup: timings, sends, script calls per node."""
    times: dict[str, list[float]] = {k: [] for k in stores}
    sent = dict.fromkeys(stores, 0)
    calls0 = {k: _evalsha_calls(v) for k, v in nodes.items()}
    for i, batch in enumerate(batches):
        for name, store in stores.items():
            before = sends.n
            start = time.perf_counter()
            await store.apply(batch, batch=uuid.uuid4().hex)
            elapsed = time.perf_counter() - start
            if i >= _WARMUP:
                times[name].append(elapsed)
                sent[name] += sends.n - before
    measured = len(batches) - _WARMUP
    out = {}
    for name in stores:
        calls = [b - a for a, b in zip(calls0[name], _evalsha_calls(nodes[name]), strict=True)]
        ms = np.asarray(times[name]) * 1e3
        out[name] = {
            # script calls include the warm-up batches' (commandstats cannot tell them apart)
            "script_calls_per_batch": round(sum(calls) / len(batches), 2),
            "nodes_used": sum(c > 0 for c in calls),
            "round_trips_per_batch": round(sent[name] / measured, 2),
            "ms_per_batch_p50": round(float(np.percentile(ms, 50)), 2),
            "ms_per_batch_p99": round(float(np.percentile(ms, 99)), 2),
            "ms_per_batch_mean": round(float(ms.mean()), 2),
        }
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.customers.split(",")]
    sends = _Sends()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        server_url = args.redis_url or stack.enter_context(EmbeddedValkey()).url
        if args.cluster_url is None:
            cluster = stack.enter_context(EmbeddedValkeyCluster(masters=3))
            cluster_url = cluster.url
            cluster_nodes = [(n.host, n.port) for n in cluster.nodes]
        else:
            cluster_url = args.cluster_url
            with RedisCluster.from_url(cluster_url) as rc:
                cluster_nodes = [(n.host, n.port) for n in rc.get_primaries()]
        server = redis.Redis.from_url(server_url).connection_pool.connection_kwargs
        nodes = {
            "server": [(server["host"], server["port"])],
            "cluster": cluster_nodes,
        }
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        stores = {
            "server": FeatureStore(RedisSettings(url=server_url, key_prefix=prefix)),
            "cluster": FeatureStore(
                RedisSettings(url=cluster_url, key_prefix=prefix, cluster=True)
            ),
        }
        for store in stores.values():
            await store.start()
        try:
            with sends.counting():
                for c in sizes:
                    batches = _batches(args.batches + _WARMUP, args.events, c, seed=c)
                    got = await _measure(stores, nodes, batches, sends)
                    for name, row in got.items():
                        rows.append({"setup": name, "customers_per_batch": c, **row})
                        logger.warning("%s c=%d: %s", name, c, row)
        finally:
            for store in stores.values():
                await store.close()
    for row in rows:
        row["events_per_s"] = round(args.events / row["ms_per_batch_p50"] * 1e3, 0)
    by = {(r["setup"], r["customers_per_batch"]): r for r in rows}
    ratios = [
        {
            "customers_per_batch": c,
            "cluster_vs_server_p50": round(
                by["cluster", c]["ms_per_batch_p50"] / by["server", c]["ms_per_batch_p50"], 2
            ),
            "cluster_vs_server_p99": round(
                by["cluster", c]["ms_per_batch_p99"] / by["server", c]["ms_per_batch_p99"], 2
            ),
        }
        for c in sizes
    ]
    return {
        "environment": _report.environment(),
        "events_per_batch": args.events,
        "batches": args.batches,
        "cluster_masters": len(nodes["cluster"]),
        "results": rows,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(message)s")
    args = _parser().parse_args(argv)
    if args.quick:
        args.batches, args.customers = 20, "1,50"
    doc = asyncio.run(run(args))
    cols = [
        "setup",
        "customers_per_batch",
        "script_calls_per_batch",
        "round_trips_per_batch",
        "nodes_used",
        "ms_per_batch_p50",
        "ms_per_batch_p99",
        "events_per_s",
    ]
    md = "\n".join(
        [
            f"# FeatureStore.apply: one Valkey server vs a {doc['cluster_masters']}-master cluster "
            f"({doc['events_per_batch']} events per batch, {doc['batches']} batches each)",
            "",
            _report.markdown_table(doc["results"], cols),
            "",
            _report.markdown_table(
                doc["ratios"],
                ["customers_per_batch", "cluster_vs_server_p50", "cluster_vs_server_p99"],
            ),
        ]
    )
    _report.write(args.out, "redis_cluster", doc, md)
    sizes = sorted({r["customers_per_batch"] for r in doc["results"]})
    series = {
        f"{setup} {stat}": [
            next(
                r[f"ms_per_batch_{stat}"]
                for r in doc["results"]
                if r["setup"] == setup and r["customers_per_batch"] == c
            )
            for c in sizes
        ]
        for setup in ("server", "cluster")
        for stat in ("p50", "p99")
    }
    _report.plot_lines(
        args.out / "redis_cluster.png",
        sizes,
        series,
        "FeatureStore.apply per batch: one server vs cluster",
        "distinct customers per batch",
        "ms per batch",
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
