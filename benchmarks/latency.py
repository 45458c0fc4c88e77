"""End-to-end latency at fixed rates: streamscore vs. a pass-through baseline, same run.

For each rate, the same simulated events go through (a) a bare aiokafka consume -> produce
process and (b) a ``streamscore worker`` with the full pipeline (validation, Redis features,
propensity, segments, decision, frequency-cap claim, publish). An external producer stamps
each event's produce time, an external consumer (another process) stamps each offer's arrival;
latency = arrival - produce, per event, warm-up excluded. Each (system, rate) gets a freshly
started process on fresh topics (the embedded broker slows down as a partition's in-memory log
grows), and the two systems alternate at every rate, so a noisy machine hits both alike.

    streamscore bench latency                       # 500, 1000, 2000, 5000 ev/s, 20,000 each
    streamscore bench latency --rates 1000 --events 50000
    streamscore bench latency --quick               # seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks._harness import (
    LatencyRun,
    Names,
    add_stack_arguments,
    embedded_stack,
    make_events,
    measure_latency,
    start_system,
)

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench latency", description=__doc__)
    p.add_argument("--rates", default="500,1000,2000,5000", help="events/s, comma-separated")
    p.add_argument("--events", type=int, default=20_000, help="measured events per rate")
    p.add_argument("--warmup", type=int, default=None, help="events excluded (default 10%%)")
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--systems", default="passthrough,streamscore")
    p.add_argument("--quick", action="store_true", help="tiny: 2 rates, 600 events")
    add_stack_arguments(p)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for streamscore")
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    systems = args.systems.split(",")
    extra = dict(kv.split("=", 1) for kv in args.env)
    warmup = args.warmup if args.warmup is not None else max(100, args.events // 10)
    events = make_events((warmup + args.events + 200) * len(rates), args.customers, seed=1)
    per_rate = warmup + args.events + 200
    runs: list[LatencyRun] = []
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        workdir = Path(tmp)
        for k, rate in enumerate(rates):
            chunk = events[k * per_rate : (k + 1) * per_rate]
            for system in systems:
                # Fresh topics, group and Redis prefix per system and rate: the embedded
                # broker's in-memory log slows fetches as a partition grows (a pass-through
                # measured 17 -> 60 -> 109 ms p50 on three runs into the same topics).
                names = Names.fresh(system)
                procs = await start_system(system, stack, names, workdir, env=extra)
                try:
                    r = await measure_latency(procs, names, chunk, rate, warmup=warmup)
                finally:
                    for p in procs:
                        p.stop()
                logger.info("%s @ %s ev/s: %s", system, rate, r.summary())
                runs.append(r)
    return _result(args, runs, rates, systems, warmup)


def _result(
    args: argparse.Namespace,
    runs: list[LatencyRun],
    rates: list[float],
    systems: list[str],
    warmup: int,
) -> dict[str, Any]:
    rows = [r.summary() for r in runs]
    by = {(r.system, r.rate): r for r in runs}
    compare = []
    base = "passthrough"
    for rate in rates:
        b = by.get((base, rate))
        for s in systems:
            if s == base or b is None or (s, rate) not in by:
                continue
            r = by[(s, rate)].summary()
            bs = b.summary()
            row: dict[str, Any] = {"system": s, "rate": rate}
            for q in ("p50_ms", "p99_ms", "p99.9_ms"):
                if r[q] is not None and bs[q] is not None:
                    row[f"added_{q}"] = round(r[q] - bs[q], 2)
                    row[f"ratio_{q}"] = round(r[q] / bs[q], 2) if bs[q] else None
            compare.append(row)
    doc = {
        "benchmark": "latency",
        "environment": _report.environment(),
        "config": {
            "rates": rates,
            "events_per_rate": args.events,
            "warmup_per_rate": warmup,
            "customers": args.customers,
            "env": args.env,
            "note": "latency = offer consumed - event produced, per event; frequency cap 0",
        },
        "runs": rows,
        "added_over_baseline": compare,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _report.plot_cdfs(
        args.out / "latency_cdf.png",
        {f"{r.system} @ {r.rate:g}/s": r.latencies_ms for r in runs},
        "End-to-end latency CDF per rate (produce -> offer consumed)",
    )
    cols = [
        "system",
        "rate",
        "achieved_rate",
        "matched",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "p99.9_ms",
        "max_ms",
        "cpu_util",
    ]
    md = "## Latency\n\n" + _report.markdown_table(rows, cols)
    if compare:
        md += "\n\nAdded over the pass-through baseline (same run):\n\n" + (
            _report.markdown_table(
                compare,
                [
                    "system",
                    "rate",
                    "added_p50_ms",
                    "added_p99_ms",
                    "added_p99.9_ms",
                    "ratio_p50_ms",
                    "ratio_p99_ms",
                ],
            )
        )
    _report.write(args.out, "latency", doc, md)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        if args.rates == _parser().get_default("rates"):
            args.rates = "500,2000"
        args.events, args.customers = 600, 500
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
