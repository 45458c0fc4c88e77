"""End-to-end latency at fixed rates: streamscore vs. a pass-through baseline, same run.

For each rate, the same simulated events go through (a) a bare aiokafka consume -> produce
process and (b) a ``streamscore worker`` with the full pipeline (validation, Redis features,
propensity, segments, decision, frequency-cap claim, publish). An external producer stamps
each event's produce time, an external consumer (another process) stamps each offer's arrival;
latency = arrival - produce, per event, warm-up excluded. Each (system, rate) gets a freshly
started process on fresh topics (the embedded broker slows down as a partition's in-memory log
grows), and the two systems alternate at every rate, so a noisy machine hits both alike.

The low rates (100 and 250 events/s) make the fixed cost of a batch visible: there a batch
holds one or two events. The headline is the **added p99 over the pass-through at 1,000
events/s**: on a shared machine one pair of runs can be off by hundreds of milliseconds, so
that rate runs ``--headline-repeats`` pairs (pass-through, streamscore, pass-through, ...) and
the headline is the median of the pairs' added p99. Each rate runs for at most
``--max-seconds`` (fewer events at the low rates).

**Idle cost** (first, before the rates): each of ``--idle-systems`` (the pass-through, a no-op
Faust agent on streamscore's app, streamscore) is started, made ready with a few events and
then given nothing for ``--idle-s``: its CPU% (user+system, psutil) and voluntary context
switches per second (its wake-ups). Each rate's run then reports the CPU per event above that
idle CPU: (CPU seconds - idle CPU share x wall time) / events, what one more event costs.

    streamscore bench latency              # 100 ... 5,000 ev/s, 20,000 each (40 s at most)
    streamscore bench latency --rates 1000 --events 50000
    streamscore bench latency --quick      # seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
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
    measure_idle,
    measure_latency,
    start_system,
)

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)

_HEADLINE_RATE = 1000.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench latency", description=__doc__)
    p.add_argument(
        "--rates", default="100,250,500,1000,2000,5000", help="events/s, comma-separated"
    )
    p.add_argument("--events", type=int, default=20_000, help="measured events per rate")
    p.add_argument(
        "--max-seconds", type=float, default=40.0, help="at most rate x this many events"
    )
    p.add_argument("--warmup", type=int, default=None, help="events excluded (default 10%%)")
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument(
        "--systems",
        default="passthrough,streamscore",
        help="comma-separated; streamscore@DIR runs another version's checkout of it",
    )
    p.add_argument("--headline-repeats", type=int, default=3, help="pairs of runs at 1,000 ev/s")
    p.add_argument("--idle-s", type=float, default=20.0, help="idle span per system (0: skip)")
    p.add_argument("--idle-systems", default="passthrough,faust_noop,streamscore")
    p.add_argument("--quick", action="store_true", help="tiny: 2 rates, 600 events")
    add_stack_arguments(p)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for streamscore")
    return p


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = _report.load_avg()
    rates = [float(r) for r in args.rates.split(",")]
    systems = args.systems.split(",")
    extra = dict(kv.split("=", 1) for kv in args.env)
    plan = []  # (rate, measured events, warm-up) per rate
    for rate in rates:
        n = max(100, min(args.events, int(rate * args.max_seconds)))
        plan.append((rate, n, args.warmup if args.warmup is not None else max(100, n // 10)))
    sizes = [w + n + 200 for _, n, w in plan]
    events = make_events(sum(sizes), args.customers, seed=1)
    runs: list[LatencyRun] = []
    idle: list[dict[str, Any]] = []
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        workdir = Path(tmp)
        if args.idle_s > 0:
            for system in args.idle_systems.split(","):
                row = await measure_idle(
                    system,
                    stack,
                    Names.fresh(f"idle-{system.replace('_', '')}"),
                    workdir,
                    events[:5],
                    idle_s=args.idle_s,
                    settle_s=1.0 if args.quick else 3.0,
                    env=extra if system == "streamscore" else None,
                )
                logger.info("idle %s: %s", system, row)
                idle.append(row)
        offset = 0
        for (rate, _, warmup), size in zip(plan, sizes, strict=True):
            chunk = events[offset : offset + size]
            offset += size
            repeats = max(1, args.headline_repeats) if rate == _HEADLINE_RATE else 1
            for repeat, system in itertools.product(range(repeats), systems):
                # Fresh topics, group and Redis prefix per system, rate and repeat: the
                # embedded broker's in-memory log slows fetches as a partition grows (a
                # pass-through measured 17 -> 60 -> 109 ms p50 on three runs into the same
                # topics).
                kind, _, code = system.partition("@")
                names = Names.fresh(kind)
                procs = await start_system(
                    kind,
                    stack,
                    names,
                    workdir,
                    env=extra,
                    code=Path(code) if code else None,
                )
                try:
                    r = await measure_latency(procs, names, chunk, rate, warmup=warmup)
                finally:
                    for p in procs:
                        p.stop()
                r.system = system
                r.extra["repeat"] = repeat
                logger.info("%s @ %s ev/s: %s", system, rate, r.summary())
                runs.append(r)
    return _result(args, runs, rates, systems, plan, idle, load_start)


def _marginal(run: LatencyRun, idle_pct: float | None) -> dict[str, float | None]:
    """CPU per event of a paced run, in all and above the system's idle CPU."""
    if not run.sent:
        return {"cpu_us_per_event": None, "cpu_us_per_event_above_idle": None}
    above = None
    if idle_pct is not None:
        above = round((run.cpu_s - idle_pct / 100.0 * run.wall_s) / run.sent * 1e6, 1)
    return {
        "cpu_us_per_event": round(run.cpu_s / run.sent * 1e6, 1),
        "cpu_us_per_event_above_idle": above,
    }


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 2) if kept else None


def _result(
    args: argparse.Namespace,
    runs: list[LatencyRun],
    rates: list[float],
    systems: list[str],
    plan: list[tuple[float, int, int]],
    idle: list[dict[str, Any]],
    load_start: list[float],
) -> dict[str, Any]:
    idle_pct = {row["system"]: row["cpu_pct"] for row in idle}
    rows = [r.summary() | _marginal(r, idle_pct.get(r.system)) for r in runs]
    by = {(r["system"], r["rate"], r["repeat"]): r for r in rows}
    compare = []
    base = "passthrough"
    for rate, repeat in dict.fromkeys((r["rate"], r["repeat"]) for r in rows):
        bs = by.get((base, rate, repeat))
        for s in systems:
            if s == base or bs is None or (s, rate, repeat) not in by:
                continue
            r = by[(s, rate, repeat)]
            row: dict[str, Any] = {"system": s, "rate": rate, "repeat": repeat}
            for q in ("p50_ms", "p99_ms", "p99.9_ms"):
                if r[q] is not None and bs[q] is not None:
                    row[f"added_{q}"] = round(r[q] - bs[q], 2)
                    row[f"ratio_{q}"] = round(r[q] / bs[q], 2) if bs[q] else None
            compare.append(row)
    pairs = [c for c in compare if c["system"] == "streamscore" and c["rate"] == _HEADLINE_RATE]

    def p99s(system: str) -> float | None:
        return _median(
            [r["p99_ms"] for r in rows if (r["system"], r["rate"]) == (system, _HEADLINE_RATE)]
        )

    others = {
        s: _median(
            [
                c.get("added_p99_ms")
                for c in compare
                if c["system"] == s and c["rate"] == _HEADLINE_RATE
            ]
        )
        for s in systems
        if s.startswith("streamscore@")
    }
    headline = {
        "added_p99_ms_at_1000": _median([c.get("added_p99_ms") for c in pairs]),
        "added_p99_ms_at_1000_pairs": [c.get("added_p99_ms") for c in pairs],
        "compared_added_p99_ms_at_1000": others,
        "streamscore_p99_ms_at_1000": p99s("streamscore"),
        "passthrough_p99_ms_at_1000": p99s(base),
        "idle_cpu_pct": idle_pct,
    }
    doc = {
        "benchmark": "latency",
        "environment": _report.environment(),
        "source": _report.source(),
        "load_avg": {"start": load_start, "end": _report.load_avg()},
        "config": {
            "rates": rates,
            "events_per_rate": {f"{rate:g}": n for rate, n, _ in plan},
            "warmup_per_rate": {f"{rate:g}": w for rate, _, w in plan},
            "max_seconds": args.max_seconds,
            "headline_repeats": args.headline_repeats,
            "customers": args.customers,
            "idle_s": args.idle_s,
            "env": args.env,
            "note": "latency = offer consumed - event produced, per event; frequency cap 0",
        },
        "headline": headline,
        "idle": idle,
        "runs": rows,
        "added_over_baseline": compare,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _report.plot_cdfs(
        args.out / "latency_cdf.png",
        {
            f"{r.system} @ {r.rate:g}/s"
            + (f" #{r.extra['repeat'] + 1}" if r.extra["repeat"] else ""): r.latencies_ms
            for r in runs
        },
        "End-to-end latency CDF per rate (produce -> offer consumed)",
    )
    _report.plot_lines(
        args.out / "latency_p99.png",
        rates,
        {
            s: [by.get((s, rate, 0), {}).get("p99_ms") or float("nan") for rate in rates]
            for s in systems
        },
        "p99 latency per rate (produce -> offer consumed; first run of each)",
        "events/s",
        "p99 (ms)",
    )
    cols = [
        "system",
        "rate",
        "repeat",
        "achieved_rate",
        "matched",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "p99.9_ms",
        "max_ms",
        "cpu_util",
        "cpu_us_per_event_above_idle",
    ]
    md = "## Latency\n\n"
    if headline["added_p99_ms_at_1000"] is not None:
        md += (
            f"**Added p99 over the pass-through at 1,000 events/s: "
            f"{headline['added_p99_ms_at_1000']:+,.1f} ms** (median of {len(pairs)} "
            "pair(s) of runs: "
            + ", ".join(
                f"{v:+,.1f}" for v in headline["added_p99_ms_at_1000_pairs"] if v is not None
            )
            + f" ms; median p99 streamscore {headline['streamscore_p99_ms_at_1000']:,.1f} ms, "
            f"pass-through {headline['passthrough_p99_ms_at_1000']:,.1f} ms).\n\n"
        )
    for system, added in headline["compared_added_p99_ms_at_1000"].items():
        if added is not None:
            md += f"`{system}`, same run: added p99 at 1,000 events/s {added:+,.1f} ms.\n\n"
    load = doc["load_avg"]
    md += (
        "Load average (1/5/15 min) at start "
        + " / ".join(f"{v:.2f}" for v in load["start"])
        + ", at end "
        + " / ".join(f"{v:.2f}" for v in load["end"])
        + ".\n\n"
    )
    if idle:
        md += f"Idle ({args.idle_s:g} s, no input, after a few events):\n\n"
        md += _report.markdown_table(idle, ["system", "cpu_pct", "wakeups_per_s"]) + "\n\n"
    md += _report.markdown_table(rows, cols)
    if compare:
        md += "\n\nAdded over the pass-through baseline (same run):\n\n" + (
            _report.markdown_table(
                compare,
                [
                    "system",
                    "rate",
                    "repeat",
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
            args.rates = "250,1000"
        args.events, args.customers = 600, 500
        args.idle_s = min(args.idle_s, 3.0)
        args.headline_repeats = 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
