"""Throughput: events/s of one and two streamscore workers, per CPU-second, and where it goes.

1. **Drain**: a backlog of simulated events is sent as fast as the producer can while the
   worker(s) consume; events/s = events / (last offer out - first event in); CPU = the worker
   processes' user+system time (psutil). Run for 1 worker, then 2 workers in one group.
2. **Rate ladder** (``--ladder``): paced runs at rising rates; the highest rate whose p99 stays
   under ``--bound-ms`` is "sustained".
3. **Stage breakdown** (in-process): ``Pipeline.handle`` over the same events in batches of
   ``batch_max``, summing the pipeline's own stage laps (``BatchOutputs.stages``: validate,
   models, redis, intent, ...) and timing the publish stage (``Record`` serialisation +
   aiokafka send + acks) apart.

    streamscore bench throughput                      # 50,000 events, 1 and 2 workers
    streamscore bench throughput --ladder 1000,2000,4000,8000 --bound-ms 250
    streamscore bench throughput --quick
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks._harness import (
    Names,
    Stack,
    SystemProcess,
    add_stack_arguments,
    embedded_stack,
    make_events,
    measure_drain,
    measure_latency,
    start_system,
)

__all__ = ["main", "run", "stage_breakdown"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench throughput", description=__doc__)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--ladder", default="", help="paced rates for the p99 bound, e.g. 2000,4000")
    p.add_argument("--ladder-events", type=int, default=10_000)
    p.add_argument("--bound-ms", type=float, default=250.0, help="p99 bound for 'sustained'")
    p.add_argument("--stage-events", type=int, default=20_000)
    p.add_argument("--quick", action="store_true")
    add_stack_arguments(p)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the workers")
    return p


async def stage_breakdown(stack: Stack, n_events: int, customers: int) -> dict[str, Any]:
    """Time each stage of ``Pipeline.handle`` in-process, plus publishing to the broker."""
    from aiokafka import AIOKafkaProducer

    from features.settings import RedisSettings
    from models.settings import DecisionSettings, ModelSettings
    from streams.agents import Pipeline
    from streams.settings import KafkaSettings, Settings

    names = Names.fresh("stages")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=stack.bootstrap),
            redis=RedisSettings(url=stack.redis_url, key_prefix=f"b-{names.tag}"),
            decision=DecisionSettings(frequency_cap_minutes=0),
            models=ModelSettings(checkpoint_dir=Path(tmp)),
        )
        pipeline = Pipeline(settings)
        await pipeline.start()
        timers: dict[str, float] = {}
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=1, acks="all")
        await producer.start()
        topic_of = {
            "clicks": settings.topics.clicks,
            "purchases": settings.topics.purchases,
            "feedback": settings.topics.feedback,
        }
        events = make_events(n_events, customers, seed=3)
        now = time.time()
        records = [(topic_of[k], 0, i, key, v, now) for i, (k, key, v, _) in enumerate(events)]
        bmax = settings.worker.batch_max
        batches = [records[i : i + bmax] for i in range(0, len(records), bmax)]
        warm = max(1, len(batches) // 10)
        publish_s = 0.0
        total_s = 0.0
        n = 0
        try:
            for k, batch in enumerate(batches):
                if k == warm:
                    for name in timers:
                        timers[name] = 0.0
                    publish_s = total_s = 0.0
                    n = 0
                t = time.perf_counter()
                out = await pipeline.handle(batch)
                t1 = time.perf_counter()
                for stage, secs in getattr(out, "stages", {}).items():
                    timers[stage] = timers.get(stage, 0.0) + secs
                futures = [
                    await producer.send(
                        f"offers-{names.tag}", o.dumps(), key=o.customer_id.encode()
                    )
                    for o in out.offers
                ]
                await asyncio.gather(*futures)
                t2 = time.perf_counter()
                total_s += t2 - t
                publish_s += t2 - t1
                n += len(batch)
            resolve = await _resolve_all_labels(pipeline, now)
        finally:
            await producer.stop()
            await pipeline.close()
    # The pipeline's own stage laps (streams.metrics.Stopwatch), then publishing.
    stages = dict(timers)
    stages["publish (serialise+send+ack)"] = publish_s
    stages["other"] = max(0.0, total_s - sum(stages.values()))
    return {
        "events": n,
        "batch_max": bmax,
        "events_per_s_in_process": round(n / total_s, 1),
        "us_per_event": {k: round(v / n * 1e6, 1) for k, v in stages.items()},
        "share": {k: round(v / total_s, 3) for k, v in stages.items()},
        # the timer's side of the labels: every queued click resolved, learned and retired
        "labels_resolved": resolve[0],
        "label_resolve_us_per_label": round(resolve[1] / max(1, resolve[0]) * 1e6, 1),
    }


async def _resolve_all_labels(pipeline: Any, now: float) -> tuple[int, float]:
    """Move the partition's time past every horizon and resolve all pending labels, as the
    worker's timer does (take, learn, forget); (labels resolved, seconds)."""
    later = now + pipeline.labels.horizon_s + 60.0
    for topic in pipeline.settings.topics.inputs:
        pipeline.clock.observe((topic, 0), later)
    n, start = 0, time.perf_counter()
    while True:
        _, dues = await pipeline.resolve_labels(pipeline.settled_times())
        if not dues:
            return n, time.perf_counter() - start
        n += sum(len(d.labels) for d in dues)
        for due in dues:
            await pipeline.labels.forget(due)


def _worker_stages(proc: SystemProcess) -> dict[str, Any]:
    """The worker's own stage timings over the drain, from its Prometheus ``/metrics``."""
    port = proc.env["STREAMSCORE_WORKER__WEB_PORT"]
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError as exc:
        logger.warning("worker metrics unavailable: %s", exc)
        return {}
    sums: dict[str, float] = {}
    batches = events = 0.0
    for line in text.splitlines():
        if line.startswith('streamscore_stage_seconds_sum{stage="'):
            name = line.split('"')[1]
            sums[name] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("streamscore_batch_size_count "):
            batches = float(line.rsplit(" ", 1)[1])
        elif line.startswith("streamscore_batch_size_sum "):
            events = float(line.rsplit(" ", 1)[1])
    if not events or not batches:
        return {}
    return {
        "batches": int(batches),
        "mean_batch": round(events / batches, 1),
        "us_per_event": {k: round(v / events * 1e6, 1) for k, v in sums.items()},
        "ms_per_batch": {k: round(v / batches * 1e3, 2) for k, v in sums.items()},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = dict(kv.split("=", 1) for kv in args.env)
    drains: list[dict[str, Any]] = []
    ladder: list[dict[str, Any]] = []
    worker_stages: dict[str, Any] = {}
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        workdir = Path(tmp)
        stages = await stage_breakdown(stack, args.stage_events, args.customers)
        logger.info("stages: %s", stages)
        for k in (int(w) for w in args.workers.split(",")):
            names = Names.fresh(f"tp{k}")
            procs = await start_system(
                "streamscore",
                stack,
                names,
                workdir,
                partitions=args.partitions,
                env=extra,
                instances=k,
            )
            try:
                events = make_events(args.events + 200, args.customers, seed=10 + k)
                d = await measure_drain(procs, names, events)
                if k == 1:
                    worker_stages = _worker_stages(procs[0])
                logger.info("drain %s worker(s): %s", k, d)
                drains.append(d)
            finally:
                for p in procs:
                    p.stop()
        if args.ladder:
            for i, rate in enumerate(float(r) for r in args.ladder.split(",")):
                # a fresh worker on fresh topics per step (the embedded broker slows down as
                # a partition's in-memory log grows)
                names = Names.fresh(f"ladder{i}")
                procs = await start_system("streamscore", stack, names, workdir, env=extra)
                try:
                    events = make_events(args.ladder_events + 200, args.customers, seed=50 + i)
                    r = await measure_latency(
                        procs, names, events, rate, warmup=args.ladder_events // 10
                    )
                finally:
                    for p in procs:
                        p.stop()
                s = r.summary()
                s["within_bound"] = s["p99_ms"] is not None and s["p99_ms"] <= args.bound_ms
                ladder.append(s)
                logger.info("ladder %s: %s", rate, s)
                if not s["within_bound"]:
                    break
    sustained = max((s["achieved_rate"] for s in ladder if s["within_bound"]), default=None)
    doc = {
        "benchmark": "throughput",
        "environment": _report.environment(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "drain": drains,
        "ladder": ladder,
        "sustained_rate_p99_bound": {"bound_ms": args.bound_ms, "rate": sustained},
        "stages": stages,
        "worker_stages": worker_stages,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if drains:
        _report.plot_lines(
            args.out / "throughput_workers.png",
            [d["workers"] for d in drains],
            {
                "events/s": [d["events_per_s"] or 0 for d in drains],
                "events per CPU-second": [d["events_per_cpu_s"] or 0 for d in drains],
            },
            "Throughput vs workers (drain of a backlog)",
            "workers",
            "events/s",
        )
    _report.plot_bars(
        args.out / "stage_breakdown.png",
        stages["us_per_event"],
        f"Stage breakdown, in-process, batch {stages['batch_max']}",
        "microseconds per event",
    )
    md = "## Throughput\n\n" + _report.markdown_table(
        drains,
        [
            "workers",
            "events",
            "outputs",
            "drain_s",
            "events_per_s",
            "cpu_s",
            "events_per_cpu_s",
            "rss_mb_after",
        ],
    )
    if ladder:
        md += f"\n\nRate ladder (p99 bound {args.bound_ms:g} ms; sustained: {sustained}):\n\n"
        md += _report.markdown_table(
            ladder, ["rate", "achieved_rate", "p50_ms", "p99_ms", "within_bound", "cpu_util"]
        )
    if worker_stages:
        md += (
            f"\n\nStage breakdown inside the 1-worker drain (its /metrics: "
            f"{worker_stages['batches']:,} batches, mean {worker_stages['mean_batch']:g} events; "
            "'produce' overlaps the next batch):\n\n"
        )
        md += _report.markdown_table(
            [
                {"stage": k, "us_per_event": v, "ms_per_batch": worker_stages["ms_per_batch"][k]}
                for k, v in worker_stages["us_per_event"].items()
            ],
            ["stage", "us_per_event", "ms_per_batch"],
        )
    md += (
        f"\n\nStage breakdown (in-process, {stages['events']} events, batch "
        f"{stages['batch_max']}, {stages['events_per_s_in_process']:,.0f} ev/s):\n\n"
    )
    md += _report.markdown_table(
        [
            {"stage": k, "us_per_event": v, "share": stages["share"][k]}
            for k, v in stages["us_per_event"].items()
        ],
        ["stage", "us_per_event", "share"],
    )
    _report.write(args.out, "throughput", doc, md)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.events, args.customers, args.stage_events, args.workers = 1_000, 500, 1_500, "1"
        args.ladder, args.ladder_events = args.ladder or "", 600
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
