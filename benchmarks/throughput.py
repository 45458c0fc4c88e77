"""Throughput: one worker's drain as a fraction of Faust's own ceiling, CPU per event, and
the fixed cost of a batch.

1. **Drain of a backlog**, every system on fresh topics with the same partition count and the
   same events, produced before the system starts: a **no-op Faust agent** (streamscore's app
   class and settings, ``take_events(500, within=10 ms)``, nothing else; run before and after
   the one-worker drain, the reference is their mean), the same agent **sending one
   ``faust.Record`` per event**, then streamscore with 1 and 2 workers in one group. Each
   system's ``/stats`` records counter is sampled every ``--poll-s``; the first ``--warmup``
   events are left out; CPU per event = the worker processes' user+system seconds (psutil)
   over the same samples / events.
2. **ms per batch at batch size 1** (in-process): ``Pipeline.handle`` on one-record batches
   against the embedded broker and Valkey, median and p99, and with the batch's outputs sent
   and acknowledged.
3. **Rate ladder** (``--ladder``): paced runs at rising rates; the highest rate whose p99 stays
   under ``--bound-ms`` is "sustained".
4. **Stage breakdown** (in-process): ``Pipeline.handle`` over the same events in batches of
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
import contextlib
import logging
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _report
from benchmarks._harness import (
    Names,
    Stack,
    SystemProcess,
    add_stack_arguments,
    embedded_stack,
    make_events,
    measure_backlog_drain,
    measure_latency,
    start_system,
)

__all__ = ["batch_one", "main", "run", "stage_breakdown"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench throughput", description=__doc__)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=None, help="drain warm-up (default 10%%)")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument(
        "--no-record-reference",
        dest="record_reference",
        action="store_false",
        help="skip the Faust agents that send one Record, or one output as bytes, per event",
    )
    p.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        help="a checkout of another version (git worktree add DIR REF): its one-worker drain "
        "runs right after this version's, on the same backlog",
    )
    p.add_argument("--poll-s", type=float, default=0.1, help="drain sampling interval")
    p.add_argument("--batch1-events", type=int, default=2_000, help="one-record batches timed")
    p.add_argument("--ladder", default="", help="paced rates for the p99 bound, e.g. 2000,4000")
    p.add_argument("--ladder-events", type=int, default=10_000)
    p.add_argument("--bound-ms", type=float, default=250.0, help="p99 bound for 'sustained'")
    p.add_argument("--stage-events", type=int, default=20_000)
    p.add_argument("--quick", action="store_true")
    add_stack_arguments(p)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the workers")
    return p


@contextlib.asynccontextmanager
async def _in_process(stack: Stack) -> AsyncIterator[tuple[Any, Any, Any, str]]:
    """A started ``Pipeline`` on the embedded stack (fresh key prefix, frequency cap 0), an
    aiokafka producer with the worker's settings, and a fresh offers topic name. Torch runs
    one intra-op thread meanwhile, as in the worker (``streams.worker.run_worker``)."""
    import torch
    from aiokafka import AIOKafkaProducer

    from features.settings import RedisSettings
    from models.settings import DecisionSettings, ModelSettings
    from streams.agents import Pipeline, freeze_heap
    from streams.settings import KafkaSettings, Settings

    names = Names.fresh("stages")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                kafka=KafkaSettings(bootstrap_servers=stack.bootstrap),
                redis=RedisSettings(url=stack.redis_url, key_prefix=f"b-{names.tag}"),
                decision=DecisionSettings(frequency_cap_minutes=0),
                models=ModelSettings(checkpoint_dir=Path(tmp)),
            )
            pipeline = Pipeline(settings)
            await pipeline.start()
            freeze_heap()  # as the worker does
            producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=1, acks="all")
            try:
                await producer.start()
                yield pipeline, settings, producer, names.offers
            finally:
                await producer.stop()
                await pipeline.close()
    finally:
        torch.set_num_threads(threads)


def _input_records(settings: Any, n_events: int, customers: int, seed: int) -> list[Any]:
    """``n_events`` simulated events as ``Pipeline.handle`` records on partition 0."""
    topic_of = {
        "clicks": settings.topics.clicks,
        "purchases": settings.topics.purchases,
        "feedback": settings.topics.feedback,
    }
    now = time.time()
    events = make_events(n_events, customers, seed=seed)
    return [(topic_of[k], 0, i, key, v, now) for i, (k, key, v, _) in enumerate(events)]


async def stage_breakdown(stack: Stack, n_events: int, customers: int) -> dict[str, Any]:
    """Time each stage of ``Pipeline.handle`` in-process, plus publishing to the broker."""
    async with _in_process(stack) as (pipeline, settings, producer, offers_topic):
        timers: dict[str, float] = {}
        records = _input_records(settings, n_events, customers, seed=3)
        now = records[0][5] if records else time.time()
        bmax = settings.worker.batch_max
        batches = [records[i : i + bmax] for i in range(0, len(records), bmax)]
        warm = max(1, len(batches) // 10)
        publish_s = 0.0
        total_s = 0.0
        n = 0
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
                await producer.send(offers_topic, o.dumps(), key=o.customer_id.encode())
                for o in out.offers
            ]
            await asyncio.gather(*futures)
            t2 = time.perf_counter()
            total_s += t2 - t
            publish_s += t2 - t1
            n += len(batch)
        resolve = await _resolve_all_labels(pipeline, now)
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


def _ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median_ms": None, "p99_ms": None, "mean_ms": None}
    a = np.asarray(values) * 1e3
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


async def batch_one(stack: Stack, n_events: int, customers: int) -> dict[str, Any]:
    """The fixed cost of a batch: ``Pipeline.handle`` on one-record batches, in-process.

    ``handle``: the call alone (validation, Redis round trips, models, decision);
    ``with publish``: plus every output of the batch serialised, sent and acknowledged, as
    the worker publishes them. The first 10% of the batches (cold start) are left out.
    """
    async with _in_process(stack) as (pipeline, settings, producer, offers_topic):
        records = _input_records(settings, n_events, customers, seed=4)
        warm = max(1, len(records) // 10)
        handle_s: list[float] = []
        total_s: list[float] = []
        by_kind: dict[str, list[float]] = {}
        for k, rec in enumerate(records):
            t = time.perf_counter()
            out = await pipeline.handle([rec])
            t1 = time.perf_counter()
            outputs = [
                *out.offers,
                *out.alerts,
                *out.dead_letters,
                *out.intents,
                *out.outcomes,
                *out.labels,
            ]
            futures = [await producer.send(offers_topic, o.dumps()) for o in outputs]
            await asyncio.gather(*futures)
            t2 = time.perf_counter()
            if k >= warm:
                handle_s.append(t1 - t)
                total_s.append(t2 - t)
                kind = rec[0].split("-", 1)[0]
                by_kind.setdefault(kind, []).append(t1 - t)
    handle = _ms(handle_s)
    return {
        "batches": len(handle_s),
        "batch_size": 1,
        "handle": handle,
        "with_publish": _ms(total_s),
        "handle_median_ms_by_topic": {k: _ms(v)["median_ms"] for k, v in sorted(by_kind.items())},
        "ms_per_batch_1": handle["median_ms"],
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


_LABELS = {
    "faust_noop": "Faust no-op agent",
    "faust_record": "Faust agent + 1 Record/event",
    "faust_bytes": "Faust agent + 1 output/event as bytes",
    "streamscore": "streamscore",
}


async def _drains(
    args: argparse.Namespace, stack: Stack, workdir: Path, extra: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every system drains the same pre-produced events on fresh topics; the no-op agent runs
    before and after streamscore's one-worker drain so drift in the machine's speed shows."""
    warmup = args.warmup if args.warmup is not None else max(500, args.events // 10)
    events = make_events(warmup + args.events, args.customers, seed=10)
    workers = [int(w) for w in args.workers.split(",")]
    other: Path | None = args.compare_with
    plan: list[tuple[str, int, Path | None]] = [("faust_noop", 1, None)]
    if args.record_reference:
        plan += [("faust_record", 1, None), ("faust_bytes", 1, None)]
    plan.append(("streamscore", workers[0], None))
    if other is not None:
        plan.append(("streamscore", 1, other))
    plan.append(("faust_noop", 1, None))
    plan += [("streamscore", k, None) for k in workers[1:]]
    worker_stages: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for kind, k, code in plan:
        names = Names.fresh(f"tp-{kind.replace('_', '')}{k}")
        d = await measure_backlog_drain(
            kind,
            stack,
            names,
            workdir,
            events,
            warmup=warmup,
            partitions=args.partitions,
            instances=k,
            env=extra if kind == "streamscore" else None,
            poll_s=args.poll_s,
            on_drained=(
                _keep_worker_stages(worker_stages)
                if kind == "streamscore" and code is None
                else None
            ),
            code=code,
        )
        if kind == "faust_noop":
            d["label"] = f"{_LABELS[kind]} ({'after' if rows else 'before'})"
        elif kind == "streamscore" and code is not None:
            d["label"] = f"{_LABELS[kind]} from {code}, 1 worker"
            d["code"] = str(code)
        elif kind == "streamscore":
            d["label"] = f"{_LABELS[kind]}, {k} worker{'s' if k > 1 else ''}"
        else:
            d["label"] = _LABELS[kind]
        logger.info("drain %s: %s", d["label"], d)
        rows.append(d)
    noops = [r["events_per_s"] for r in rows if r["system"] == "faust_noop"]
    reference = sum(noops) / len(noops)
    for r in rows:
        r["fraction_of_noop"] = round(r["events_per_s"] / reference, 3)
    return rows, worker_stages


def _keep_worker_stages(into: dict[str, Any]) -> Any:
    """A callback for the first streamscore drain: its ``/metrics`` stage timings."""

    def keep(procs: Sequence[SystemProcess]) -> None:
        if not into and len(procs) == 1:
            into.update(_worker_stages(procs[0]))

    return keep


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = _report.load_avg()
    extra = dict(kv.split("=", 1) for kv in args.env)
    ladder: list[dict[str, Any]] = []
    with (
        embedded_stack(args.bootstrap, args.redis_url) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        workdir = Path(tmp)
        stages = await stage_breakdown(stack, args.stage_events, args.customers)
        logger.info("stages: %s", stages)
        one = await batch_one(stack, args.batch1_events, args.customers)
        logger.info("batch size 1: %s", one)
        drains, worker_stages = await _drains(args, stack, workdir, extra)
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
    noops = [d for d in drains if d["system"] == "faust_noop"]
    ours = [d for d in drains if d["system"] == "streamscore" and "code" not in d]
    other = next((d for d in drains if "code" in d), None)
    record = next((d for d in drains if d["system"] == "faust_record"), None)
    as_bytes = next((d for d in drains if d["system"] == "faust_bytes"), None)
    headline = {
        "noop_events_per_s": round(sum(d["events_per_s"] for d in noops) / len(noops), 1),
        "noop_events_per_s_runs": [d["events_per_s"] for d in noops],
        "record_events_per_s": record["events_per_s"] if record else None,
        "record_fraction_of_noop": record["fraction_of_noop"] if record else None,
        "bytes_events_per_s": as_bytes["events_per_s"] if as_bytes else None,
        "bytes_fraction_of_noop": as_bytes["fraction_of_noop"] if as_bytes else None,
        "compared_code": other["code"] if other else None,
        "compared_events_per_s": other["events_per_s"] if other else None,
        "compared_fraction_of_noop": other["fraction_of_noop"] if other else None,
        "compared_cpu_us_per_event": other["cpu_us_per_event"] if other else None,
        "streamscore_events_per_s": ours[0]["events_per_s"],
        "fraction_of_noop": ours[0]["fraction_of_noop"],
        "cpu_us_per_event": ours[0]["cpu_us_per_event"],
        "ms_per_batch_1": one["handle"]["median_ms"],
        "p99_ms_per_batch_1": one["handle"]["p99_ms"],
    }
    doc = {
        "benchmark": "throughput",
        "environment": _report.environment(),
        "source": _report.source(),
        "load_avg": {"start": load_start, "end": _report.load_avg()},
        "config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"
        },
        "headline": headline,
        "drain": drains,
        "batch_size_1": one,
        "ladder": ladder,
        "sustained_rate_p99_bound": {"bound_ms": args.bound_ms, "rate": sustained},
        "stages": stages,
        "worker_stages": worker_stages,
    }
    _write(args, doc)
    return doc


def _write(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    drains, one, h = doc["drain"], doc["batch_size_1"], doc["headline"]
    stages, worker_stages, ladder = doc["stages"], doc["worker_stages"], doc["ladder"]
    args.out.mkdir(parents=True, exist_ok=True)
    _report.plot_bars(
        args.out / "throughput_drain.png",
        {d["label"]: d["events_per_s"] for d in drains},
        "Drain of one pre-produced backlog, same run",
        "events/s",
    )
    _report.plot_bars(
        args.out / "stage_breakdown.png",
        stages["us_per_event"],
        f"Stage breakdown, in-process, batch {stages['batch_max']}",
        "microseconds per event",
    )
    load = doc["load_avg"]
    md = (
        "## Throughput\n\n"
        f"**streamscore, one worker: {h['streamscore_events_per_s']:,.0f} events/s = "
        f"{h['fraction_of_noop']:.2f} of a no-op Faust agent** "
        f"({h['noop_events_per_s']:,.0f} events/s, mean of "
        f"{', '.join(f'{x:,.0f}' for x in h['noop_events_per_s_runs'])}) on the same broker; "
        f"**{h['cpu_us_per_event']:,.0f} us of worker CPU per event**; "
        f"**batch size 1: {h['ms_per_batch_1']:.2f} ms per batch median, "
        f"{h['p99_ms_per_batch_1']:.2f} ms p99** (in-process `Pipeline.handle`).\n\n"
        + (
            f"The version in `{h['compared_code']}`, same backlog, same run: "
            f"{h['compared_events_per_s']:,.0f} events/s = "
            f"{h['compared_fraction_of_noop']:.2f} of the no-op agent, "
            f"{h['compared_cpu_us_per_event']:,.0f} us of worker CPU per event.\n\n"
            if h["compared_code"]
            else ""
        )
        + f"Load average (1/5/15 min) at start {_fmt_load(load['start'])}, "
        f"at end {_fmt_load(load['end'])}.\n\n"
    )
    md += _report.markdown_table(
        drains,
        [
            "label",
            "events",
            "drain_s",
            "events_per_s",
            "fraction_of_noop",
            "cpu_us_per_event",
            "cpu_util",
            "rss_mb_after",
        ],
    )
    md += (
        f"\n\nBatch size 1, in-process ({one['batches']:,} one-record batches after a 10% "
        "warm-up; 'with publish' adds sending every output and awaiting the acks):\n\n"
    )
    md += _report.markdown_table(
        [
            {"what": "Pipeline.handle", **one["handle"]},
            {"what": "handle + publish", **one["with_publish"]},
        ],
        ["what", "median_ms", "p99_ms", "mean_ms"],
    )
    if ladder:
        sustained = doc["sustained_rate_p99_bound"]["rate"]
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


def _fmt_load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.events, args.customers, args.stage_events, args.workers = 4_000, 500, 1_500, "1"
        args.ladder, args.ladder_events = args.ladder or "", 600
        args.batch1_events, args.poll_s = 200, 0.02
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
