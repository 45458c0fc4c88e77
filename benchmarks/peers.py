"""Peers on the identical job: same events, same broker, same Redis, same run.

Systems: ``passthrough`` (the floor), ``streamscore``, ``faust_naive`` (a per-event Faust agent
written the obvious way: ``benchmarks/peers_faust_naive.py``) and ``quix`` (the same in Quix
Streams: ``benchmarks/peers_quix.py``). Both peers run streamscore's own ``Pipeline`` with the
same settings (same features, models, decisions, outcomes), one event at a time, so the
comparison isolates the framework and the batching. For each system: latency at ``--rate`` and
a drain of ``--drain-events`` (events/s and events per CPU-second). A system that cannot run
is recorded with the reason (its log's last lines) instead of figures.

    streamscore bench peers                     # 1,000 ev/s x 20,000 events + 30,000-event drain
    streamscore bench peers --quick
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
    p = argparse.ArgumentParser(prog="streamscore bench peers", description=__doc__)
    p.add_argument("--systems", default="passthrough,streamscore,faust_naive,quix")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--drain-events", type=int, default=30_000)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--quick", action="store_true")
    add_stack_arguments(p)
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    cdfs = {}
    warmup = max(100, args.events // 10)
    events = make_events(warmup + args.events + 200, args.customers, seed=7)
    drain_events = make_events(args.drain_events + 200, args.customers, seed=8)
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        for system in args.systems.split(","):
            row: dict[str, Any] = {"system": system}
            procs = []
            try:
                names = Names.fresh(system)
                procs = await start_system(system, stack, names, Path(tmp))
                lat = await measure_latency(procs, names, events, args.rate, warmup=warmup)
                row.update(lat.summary())
                cdfs[system] = lat.latencies_ms
                names = Names.fresh(system + "-d")
                for p in procs:
                    p.stop()
                procs = await start_system(system, stack, names, Path(tmp))
                d = await measure_drain(procs, names, drain_events)
                row.update({f"drain_{k}": v for k, v in d.items() if k not in ("system",)})
            except (RuntimeError, TimeoutError) as exc:
                row["error"] = str(exc)[-1500:]
                logger.warning("%s could not run: %s", system, row["error"])
            finally:
                for p in procs:
                    p.stop()
            rows.append(row)
            logger.info("%s: %s", system, row)
    ref = next((r for r in rows if r["system"] == "streamscore" and "error" not in r), None)
    for r in rows:
        if ref is None or "error" in r:
            continue
        if r.get("p99_ms") and ref.get("p99_ms"):
            r["p99_vs_streamscore"] = round(r["p99_ms"] / ref["p99_ms"], 2)
        if r.get("drain_events_per_s") and ref.get("drain_events_per_s"):
            r["throughput_vs_streamscore"] = round(
                r["drain_events_per_s"] / ref["drain_events_per_s"], 2
            )
    doc = {
        "benchmark": "peers",
        "environment": _report.environment(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _report.plot_cdfs(args.out / "peers_cdf.png", cdfs, f"Peers: latency CDF at {args.rate:g} ev/s")
    md = f"## Peers (same events, broker and Redis; {args.rate:g} ev/s)\n\n"
    md += _report.markdown_table(
        rows,
        [
            "system",
            "achieved_rate",
            "matched",
            "p50_ms",
            "p99_ms",
            "p99.9_ms",
            "p99_vs_streamscore",
            "drain_events_per_s",
            "drain_events_per_cpu_s",
            "throughput_vs_streamscore",
        ],
    )
    failed = [r for r in rows if "error" in r]
    for r in failed:
        md += f"\n\n**{r['system']} did not run**:\n\n```\n{r['error'][-800:]}\n```"
    _report.write(args.out, "peers", doc, md)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.events, args.drain_events, args.customers = 500, 800, 500
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
