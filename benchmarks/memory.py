"""Scale and memory: worker RSS over many events, Redis bytes per customer, vs. customers.

For each ``--customers`` value, one streamscore worker on fresh topics and Redis prefix:

1. latency at ``--rate`` for ``--latency-events`` events (p50/p99), then
2. ``--events`` more events drained in ``--chunks`` chunks; after each chunk the worker's RSS
   is sampled; the slope (MB per 100k events) over the second half says whether it grows;
3. Redis: ``INFO memory`` used_memory delta over the run / distinct customers seen, and
   ``MEMORY USAGE`` of a sample of one customer's keys.

    streamscore bench memory                                   # 10k customers, 200k events
    streamscore bench memory --events 1000000 --customers 10000,100000,1000000
    streamscore bench memory --quick
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import redis

from benchmarks import _report
from benchmarks._harness import (
    Names,
    add_stack_arguments,
    embedded_stack,
    make_events,
    measure_drain,
    measure_latency,
    start_system,
)

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench memory", description=__doc__)
    p.add_argument("--customers", default="10000", help="comma-separated, e.g. 10000,100000")
    p.add_argument("--events", type=int, default=200_000, help="drained events per size")
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--latency-events", type=int, default=5_000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker")
    add_stack_arguments(p)
    return p


def _redis_bytes(url: str, prefix: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        used = int(client.info("memory")["used_memory"])
        it = client.scan_iter(f"{prefix}*", count=1000)
        keys = [k for _, k in zip(range(200), it, strict=False)]
        sample = [int(client.memory_usage(k) or 0) for k in keys]
        n_keys = sum(1 for _ in client.scan_iter(f"{prefix}*", count=10_000))
        return {
            "used_memory": used,
            "keys": n_keys,
            "mean_key_bytes": round(float(np.mean(sample)), 1) if sample else None,
        }
    finally:
        client.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(c) for c in args.customers.split(",")]
    rows: list[dict[str, Any]] = []
    series: dict[str, tuple[list[float], list[float]]] = {}
    drain_series: dict[str, list[float | None]] = {}
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        for customers in sizes:
            names = Names.fresh(f"mem{customers}")
            prefix = f"b-{names.tag}"
            before = _redis_bytes(stack.redis_url, prefix)
            env = dict(kv.split("=", 1) for kv in args.env)
            procs = await start_system("streamscore", stack, names, Path(tmp), env=env)
            try:
                warm = max(100, args.latency_events // 10)
                events = make_events(
                    warm + args.latency_events + 200 + args.events, customers, seed=customers
                )
                lat = await measure_latency(
                    procs,
                    names,
                    events[: warm + args.latency_events + 200],
                    args.rate,
                    warmup=warm,
                )
                rest = events[warm + args.latency_events + 200 :]
                step = max(1, len(rest) // args.chunks)
                xs, ys = [0.0], [procs[0].rss_bytes() / 2**20]
                rates: list[float | None] = []
                done = 0
                for i in range(0, len(rest), step):
                    chunk = rest[i : i + step]
                    # A fresh probe each chunk is cheap; measure_drain needs outputs to time.
                    d = await measure_drain(procs, names, chunk, idle_s=1.5)
                    rates.append(d["events_per_s"])
                    done += len(chunk)
                    xs.append(float(done))
                    ys.append(procs[0].rss_bytes() / 2**20)
                    logger.info(
                        "%s customers: %s events, RSS %.1f MB, %s ev/s",
                        *(customers, done, ys[-1], d["events_per_s"]),
                    )
            finally:
                for p in procs:
                    p.stop()
            after = _redis_bytes(stack.redis_url, prefix)
            seen = len({e[1] for e in events})
            half = len(xs) // 2
            slope = (
                float(np.polyfit(xs[half:], ys[half:], 1)[0]) * 100_000
                if len(xs) - half >= 2
                else None
            )
            row = {
                "customers": customers,
                "customers_seen": seen,
                "events": done,
                **{k: v for k, v in lat.summary().items() if k in ("p50_ms", "p99_ms")},
                "drain_events_per_s_first_chunk": rates[0] if rates else None,
                "drain_events_per_s_last_chunk": rates[-1] if rates else None,
                "rss_mb_start": round(ys[0], 1),
                "rss_mb_end": round(ys[-1], 1),
                "rss_slope_mb_per_100k_events": round(slope, 2) if slope is not None else None,
                "redis_keys": after["keys"],
                "redis_bytes_per_customer": round(
                    (after["used_memory"] - before["used_memory"]) / max(1, seen), 1
                ),
                "redis_mean_key_bytes": after["mean_key_bytes"],
            }
            rows.append(row)
            series[f"{customers} customers"] = (xs, ys)
            drain_series[f"{customers} customers"] = rates
    doc = {
        "benchmark": "memory",
        "environment": _report.environment(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows,
        "rss_series": {k: {"events": x, "rss_mb": y} for k, (x, y) in series.items()},
        "drain_series": drain_series,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=label)
    ax.set_xlabel("events processed")
    ax.set_ylabel("worker RSS (MB)")
    ax.set_title("Worker RSS over events")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "memory_rss.png", dpi=110)
    plt.close(fig)
    md = "## Scale and memory\n\n" + _report.markdown_table(
        rows,
        [
            "customers",
            "customers_seen",
            "events",
            "p50_ms",
            "p99_ms",
            "drain_events_per_s_first_chunk",
            "drain_events_per_s_last_chunk",
            "rss_mb_start",
            "rss_mb_end",
            "rss_slope_mb_per_100k_events",
            "redis_bytes_per_customer",
            "redis_mean_key_bytes",
        ],
    )
    _report.write(args.out, "memory", doc, md)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.customers, args.events, args.chunks, args.latency_events = "300", 1_000, 2, 300
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
