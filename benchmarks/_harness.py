"""Shared benchmark plumbing: the embedded stack, worker processes, paced load, latencies.

Every benchmark runs its systems as separate processes on one broker and one Valkey:

- ``embedded_stack()`` starts Tansu and Valkey (or reuses ``--bootstrap``/``--redis-url``);
- ``Names`` gives a run fresh topics, a group id and a Redis key prefix;
- ``start_system(kind, ...)`` starts the system under test as a subprocess: ``streamscore``
  (the real worker, ``streamscore worker``), ``passthrough`` (plain aiokafka consume ->
  produce, the baseline), ``faust_noop``, ``faust_record`` and ``faust_bytes`` (Faust's own
  ceiling: a no-op agent, and the same agent sending one ``faust.Record`` per event, or each
  event's own bytes through the producer), ``faust_naive`` or ``quix`` (the peers); any of
  them from another checkout (``code``);
- ``measure_latency(...)`` drives it: a paced producer stamps every event's produce time and a
  consumer in a separate process stamps each output's arrival and matches it to its trigger
  (``trigger_event_id``, or ``event_id`` for the pass-through). Latency = arrival - produce;
- ``measure_backlog_drain(...)`` times a system draining a backlog produced before it starts,
  from the records counter on its ``/stats`` page (every Faust system here has one);
- ``measure_idle(...)`` reads a ready system's CPU and wake-ups while no event arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.embedded import EmbeddedBroker, EmbeddedValkey, create_topics, free_port
from streams.settings import TopicSettings
from streams.simulator import Simulator

__all__ = [
    "KINDS",
    "RESULTS",
    "LatencyRun",
    "Names",
    "Stack",
    "SystemProcess",
    "add_stack_arguments",
    "embedded_stack",
    "latency_summary",
    "make_events",
    "measure_backlog_drain",
    "measure_drain",
    "measure_idle",
    "measure_latency",
    "produce_backlog",
    "start_system",
]

logger = logging.getLogger(__name__)

KINDS = (
    "streamscore",
    "passthrough",
    "faust_noop",
    "faust_record",
    "faust_bytes",
    "faust_naive",
    "quix",
)
# The systems that serve ``/stats`` with a ``records`` counter (events taken off the inputs).
_COUNTED = ("streamscore", "faust_noop", "faust_record", "faust_bytes")
_PCTS = (50.0, 95.0, 99.0, 99.9)


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str


RESULTS = Path(__file__).parent / "results"


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--bootstrap`` and ``--redis-url``, shared by every benchmark."""
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of Tansu")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of Valkey")


@contextlib.contextmanager
def embedded_stack(bootstrap: str | None = None, redis_url: str | None = None) -> Iterator[Stack]:
    """Tansu + Valkey started here, unless both addresses are given."""
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap_servers
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedValkey()).url
        yield Stack(bootstrap, redis_url)


@dataclass(frozen=True)
class Names:
    """Fresh topic names, group id and key prefix for one system in one run."""

    tag: str

    @classmethod
    def fresh(cls, label: str) -> Names:
        return cls(f"{label}-{uuid.uuid4().hex[:6]}")

    @property
    def inputs(self) -> dict[str, str]:
        return {k: f"{k}-{self.tag}" for k in ("clicks", "purchases", "feedback")}

    @property
    def offers(self) -> str:
        return f"offers-{self.tag}"

    @property
    def alerts(self) -> str:
        return f"alerts-{self.tag}"

    @property
    def dead_letters(self) -> str:
        return f"dl-{self.tag}"

    @property
    def topic_names(self) -> dict[str, str]:
        """Every topic field of ``TopicSettings`` (inputs, outputs, any added later)."""
        fields = {k: v for k, v in TopicSettings().model_dump().items() if isinstance(v, str)}
        names = {k: f"{k.replace('_', '-')}-{self.tag}" for k in fields}
        names.update(self.inputs)
        names.update(offers=self.offers, alerts=self.alerts, dead_letters=self.dead_letters)
        return names

    @property
    def all_topics(self) -> list[str]:
        return list(self.topic_names.values())


def make_events(n: int, customers: int, seed: int = 0) -> list[tuple[str, bytes, bytes, str]]:
    """``n`` simulated events as (kind, key, value, event_id); malformed-free.

    Simulated time ends now (1,000 events per second before it): a stream stamped ahead of
    its records would be clamped by the worker (``WORKER__MAX_TS_AHEAD_S``).
    """
    sim = Simulator(customers, seed=seed, start_ts=time.time() - n / 1000.0)
    out = []
    for ev in sim.events(n, rate=1000.0):
        doc = ev.doc or {}
        out.append((ev.topic, ev.key, ev.value, str(doc.get("event_id", ""))))
    return out


def worker_env(
    stack: Stack, names: Names, workdir: Path, partitions: int, extra: dict[str, str] | None
) -> dict[str, str]:
    """Environment of a streamscore (or peer) worker on these names."""
    env = {
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap,
        "STREAMSCORE_KAFKA__SESSION_TIMEOUT_S": "3",
        "STREAMSCORE_KAFKA__HEARTBEAT_INTERVAL_S": "0.5",
        "STREAMSCORE_KAFKA__REBALANCE_TIMEOUT_S": "3",
        "STREAMSCORE_REDIS__URL": stack.redis_url,
        "STREAMSCORE_REDIS__KEY_PREFIX": f"b-{names.tag}",
        **{f"STREAMSCORE_TOPICS__{k.upper()}": v for k, v in names.topic_names.items()},
        "STREAMSCORE_TOPICS__PARTITIONS": str(partitions),
        "STREAMSCORE_WORKER__APP_ID": f"app-{names.tag}",
        "STREAMSCORE_WORKER__WEB_PORT": str(free_port()),
        "STREAMSCORE_WORKER__DATA_DIR": str(workdir / f"faust-{names.tag}"),
        "STREAMSCORE_WORKER__LOG_LEVEL": "WARNING",
        "STREAMSCORE_MODELS__CHECKPOINT_DIR": str(workdir / f"ckpt-{names.tag}"),
        "STREAMSCORE_MODELS__CHECKPOINT_KEY": f"bench-key-{names.tag}",
        "STREAMSCORE_INTENT__DEVICE": "cpu",
        # Every eligible click becomes an offer (no per-customer frequency cap), so nearly every
        # click yields a latency sample; the cap's Redis claim still runs for each offer.
        "STREAMSCORE_DECISION__FREQUENCY_CAP_MINUTES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


_COMMANDS = {
    "streamscore": ["-m", "streams.cli", "worker"],
    "passthrough": ["-m", "benchmarks._harness", "passthrough"],
    "faust_noop": ["-m", "benchmarks._harness", "faust_noop"],
    "faust_record": ["-m", "benchmarks._harness", "faust_record"],
    "faust_bytes": ["-m", "benchmarks._harness", "faust_bytes"],
    "faust_naive": ["-m", "benchmarks.peers_faust_naive"],
    "quix": ["-m", "benchmarks.peers_quix"],
}


@dataclass
class SystemProcess:
    """A system under test running as a subprocess, with its CPU and memory readable."""

    kind: str
    env: dict[str, str]
    log_path: Path
    # run from this checkout of streamscore (another version's code) instead of this one
    code: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _ps: psutil.Process | None = None

    def start(self) -> SystemProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *_COMMANDS[self.kind]],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.code,  # ``python -m`` imports from the working directory first
        )
        log.close()
        self._ps = psutil.Process(self.proc.pid)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (and any children it started)."""
        if self._ps is None or not self.alive:
            return 0.0
        t = self._ps.cpu_times()
        total = t.user + t.system
        for child in self._ps.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total

    def voluntary_switches(self) -> int:
        """Voluntary context switches of all the process's threads so far: its wake-ups.

        psutil's ``num_ctx_switches`` reads the main thread's only on Linux; Faust's consumer
        runs in a thread of its own, so the threads' counts are summed from ``/proc``.
        """
        if self._ps is None or not self.alive:
            return 0
        total = 0
        try:
            for status in Path(f"/proc/{self._ps.pid}/task").glob("*/status"):
                with contextlib.suppress(OSError):
                    for line in status.read_text().splitlines():
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
        except OSError:
            total = 0
        return total or int(self._ps.num_ctx_switches().voluntary)

    def rss_bytes(self) -> int:
        if self._ps is None or not self.alive:
            return 0
        return int(self._ps.memory_info().rss)

    def stats(self) -> dict[str, Any] | None:
        """The worker's ``/stats`` page (streamscore only)."""
        import urllib.request

        port = self.env.get("STREAMSCORE_WORKER__WEB_PORT")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1.0) as r:
                return orjson.loads(r.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive or self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def start_system(
    kind: str,
    stack: Stack,
    names: Names,
    workdir: Path,
    *,
    partitions: int = 4,
    env: dict[str, str] | None = None,
    instances: int = 1,
    code: Path | None = None,
) -> list[SystemProcess]:
    """Create the topics and start ``instances`` processes of ``kind`` in one group (from the
    checkout ``code`` when given: another version of streamscore)."""
    if kind not in KINDS:
        raise ValueError(f"unknown system {kind!r}; one of {KINDS}")
    await create_topics(stack.bootstrap, names.all_topics, partitions=partitions)
    base = worker_env(stack, names, workdir, partitions, env)
    procs = []
    for i in range(instances):
        e = {**base, "STREAMSCORE_WORKER__WEB_PORT": str(free_port())}
        log = workdir / f"{kind}-{names.tag}-{i}.log"
        procs.append(SystemProcess(kind, e, log, code=code).start())
    return procs


# -- load and measurement ---------------------------------------------------------------------


def _consume_outputs(
    bootstrap: str, topic: str, out_path: str, stop: Any, ready: Any
) -> None:  # pragma: no cover - runs in a child process
    """Child process: read ``topic`` and record (trigger id, arrival time) until ``stop``."""

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        await consumer.start()
        # Only outputs from now on: a run into topics used before (the memory benchmark's
        # chunks) must not re-read, and time, the earlier runs' outputs.
        parts = consumer.assignment()
        if parts:
            await consumer.seek_to_end(*parts)
            for tp in parts:
                await consumer.position(tp)
        ready.set()
        ids: list[str] = []
        arrivals: list[float] = []
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
                now = time.time()
                for records in batches.values():
                    for r in records:
                        doc = orjson.loads(r.value) if r.value else {}
                        ids.append(str(doc.get("trigger_event_id") or doc.get("event_id", "")))
                        arrivals.append(now)
        finally:
            await consumer.stop()
        Path(out_path).write_bytes(orjson.dumps({"ids": ids, "t": arrivals}))

    asyncio.run(run())


@dataclass
class LatencyRun:
    """One paced run against one system: per-event latencies (warm-up excluded)."""

    system: str
    rate: float
    sent: int
    achieved_rate: float
    matched: int
    latencies_ms: np.ndarray
    cpu_s: float
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "rate": self.rate,
            "sent": self.sent,
            "achieved_rate": round(self.achieved_rate, 1),
            "matched": self.matched,
            **latency_summary(self.latencies_ms),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_util": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
            **self.extra,
        }


def latency_summary(lat_ms: np.ndarray) -> dict[str, float | None]:
    if lat_ms.size == 0:
        return {f"p{p:g}_ms": None for p in _PCTS} | {"max_ms": None, "mean_ms": None}
    out = {f"p{p:g}_ms": round(float(np.percentile(lat_ms, p)), 2) for p in _PCTS}
    out["max_ms"] = round(float(lat_ms.max()), 2)
    out["mean_ms"] = round(float(lat_ms.mean()), 2)
    return out


async def _producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=1, acks=1, max_batch_size=256 * 1024
    )
    await producer.start()
    return producer


async def _send_paced(
    producer: AIOKafkaProducer,
    topics: dict[str, str],
    events: Sequence[tuple[str, bytes, bytes, str]],
    rate: float,
    stamps: dict[str, float],
) -> float:
    """Send at ``rate`` (catching up in bursts every millisecond); returns the elapsed time."""
    futures = []
    start = time.monotonic()
    n = len(events)
    i = 0
    while i < n:
        due = min(n, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            kind, key, value, eid = events[i]
            stamps[eid] = time.time()
            futures.append(await producer.send(topics[kind], value, key=key))
            i += 1
        if len(futures) > 20_000:
            await asyncio.gather(*futures)
            futures.clear()
        await asyncio.sleep(0.001)
    elapsed = time.monotonic() - start
    await asyncio.gather(*futures)
    return elapsed


async def _wait_first_output(
    producer: AIOKafkaProducer,
    topics: dict[str, str],
    probes: Sequence[tuple[str, bytes, bytes, str]],
    proc: SystemProcess,
    timeout: float,
) -> int:
    """Trickle probe events until the system answers one; returns how many were used."""
    deadline = time.monotonic() + timeout
    consumer = AIOKafkaConsumer(
        bootstrap_servers=proc.env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    consumer.subscribe([proc.env["STREAMSCORE_TOPICS__OFFERS"]])
    used = 0
    try:
        while time.monotonic() < deadline:
            if not proc.alive:
                raise RuntimeError(f"{proc.kind} exited:\n{proc.log_tail()}")
            if used < len(probes):
                kind, key, value, _ = probes[used]
                await (await producer.send(topics[kind], value, key=key))
                used += 1
            got = await consumer.getmany(timeout_ms=200)
            if any(got.values()):
                return used
        raise TimeoutError(f"{proc.kind} gave no output in {timeout}s:\n{proc.log_tail()}")
    finally:
        await consumer.stop()


async def measure_latency(
    procs: Sequence[SystemProcess],
    names: Names,
    events: Sequence[tuple[str, bytes, bytes, str]],
    rate: float,
    *,
    warmup: int,
    drain_s: float = 2.0,
    max_drain_s: float = 300.0,
    ready_timeout: float = 90.0,
) -> LatencyRun:
    """Probe until ready, send ``warmup`` then the rest at ``rate``; match outputs to events."""
    proc = procs[0]
    bootstrap = proc.env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    topics = names.inputs
    producer = await _producer(bootstrap)
    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    out_path = Path(tempfile.mkstemp(suffix=".json")[1])
    child = None
    try:
        used = await _wait_first_output(producer, topics, events[:200], proc, ready_timeout)
        child = ctx.Process(
            target=_consume_outputs,
            args=(bootstrap, names.offers, str(out_path), stop, ready),
            daemon=True,
        )
        child.start()
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30.0)
        await asyncio.sleep(0.5)
        body = events[used:]
        stamps: dict[str, float] = {}
        cpu0 = sum(p.cpu_seconds() for p in procs)
        t0 = time.monotonic()
        elapsed = await _send_paced(producer, topics, body, rate, stamps)
        warm_ids = {e[3] for e in body[:warmup]}
        await _until_idle(procs, drain_s, max_drain_s)
        wall = time.monotonic() - t0
        cpu = sum(p.cpu_seconds() for p in procs) - cpu0
    finally:
        stop.set()
        if child is not None:
            await asyncio.get_running_loop().run_in_executor(None, child.join, 30.0)
        await producer.stop()
    got = orjson.loads(out_path.read_bytes()) if out_path.stat().st_size else {"ids": [], "t": []}
    out_path.unlink(missing_ok=True)
    lat = []
    seen: set[str] = set()
    for eid, t in zip(got["ids"], got["t"], strict=True):
        sent_at = stamps.get(eid)
        if sent_at is None or eid in warm_ids or eid in seen:
            continue
        seen.add(eid)
        lat.append((t - sent_at) * 1000.0)
    if not lat:
        logger.warning("%s: no output matched an event; its log:\n%s", proc.kind, proc.log_tail())
    return LatencyRun(
        system=proc.kind,
        rate=rate,
        sent=len(body),
        achieved_rate=len(body) / elapsed if elapsed else 0.0,
        matched=len(lat),
        latencies_ms=np.asarray(lat, dtype=np.float64),
        cpu_s=cpu,
        wall_s=wall,
    )


async def _until_idle(procs: Sequence[SystemProcess], idle_s: float, max_s: float) -> None:
    """Wait until the systems stop using CPU (their backlog is drained), at most ``max_s``."""
    last_cpu, quiet_since = -1.0, time.monotonic()
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        cpu = sum(p.cpu_seconds() for p in procs)
        if cpu - last_cpu > 0.1 * len(procs):
            quiet_since = time.monotonic()
        last_cpu = cpu
        if time.monotonic() - quiet_since >= idle_s:
            return


async def measure_drain(
    procs: Sequence[SystemProcess],
    names: Names,
    events: Sequence[tuple[str, bytes, bytes, str]],
    *,
    idle_s: float = 3.0,
    ready_timeout: float = 90.0,
    max_s: float = 600.0,
) -> dict[str, Any]:
    """Throughput: send ``events`` as fast as possible and time the outputs.

    Events/s = inputs after the probe / (last output - produce start); CPU is the systems
    user+system time over the same span. The producer runs while the system consumes.
    """
    proc = procs[0]
    bootstrap = proc.env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    producer = await _producer(bootstrap)
    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    out_path = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        used = await _wait_first_output(producer, names.inputs, events[:200], proc, ready_timeout)
    finally:
        await producer.stop()
    child = ctx.Process(
        target=_consume_outputs,
        args=(bootstrap, names.offers, str(out_path), stop, ready),
        daemon=True,
    )
    child.start()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ready.wait, 30.0)
    body = events[used:]
    cpu0 = sum(p.cpu_seconds() for p in procs)
    rss0 = max(p.rss_bytes() for p in procs)
    t0 = time.time()
    await produce_backlog(bootstrap, names.inputs, body)
    produced_s = time.time() - t0
    await _until_idle(procs, idle_s, max_s)
    cpu = sum(p.cpu_seconds() for p in procs) - cpu0
    rss1 = max(p.rss_bytes() for p in procs)
    stop.set()
    await loop.run_in_executor(None, child.join, 30.0)
    got = orjson.loads(out_path.read_bytes()) if out_path.stat().st_size else {"ids": [], "t": []}
    out_path.unlink(missing_ok=True)
    body_ids = {e[3] for e in body}
    times = [t for i, t in zip(got["ids"], got["t"], strict=True) if i in body_ids]
    span = (max(times) - t0) if times else float("nan")
    # CPU measured over the drain plus the idle tail; the idle tail costs ~nothing.
    return {
        "system": proc.kind,
        "workers": len(procs),
        "events": len(body),
        "outputs": len(times),
        "produce_s": round(produced_s, 2),
        "drain_s": round(span, 2),
        "events_per_s": round(len(body) / span, 1) if times else None,
        "cpu_s": round(cpu, 2),
        "events_per_cpu_s": round(len(body) / cpu, 1) if cpu > 0 else None,
        "rss_mb_before": round(rss0 / 2**20, 1),
        "rss_mb_after": round(rss1 / 2**20, 1),
    }


async def produce_backlog(
    bootstrap: str, topics: dict[str, str], events: Sequence[tuple[str, bytes, bytes, str]]
) -> None:
    """Send all events as fast as possible and wait for the acks (a backlog to drain)."""
    producer = await _producer(bootstrap)
    try:
        futures = []
        for kind, key, value, _ in events:
            futures.append(await producer.send(topics[kind], value, key=key))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# -- backlog drain and idle cost, read from ``/stats`` ------------------------------------------


def _records(procs: Sequence[SystemProcess]) -> int | None:
    """Events the systems have taken off their inputs (``/stats``), or None if one is down."""
    total = 0
    for p in procs:
        doc = p.stats()
        if doc is None or "records" not in doc:
            return None
        total += int(doc["records"])
    return total


async def _sample(procs: Sequence[SystemProcess]) -> tuple[float, int | None, float]:
    """(time, records, CPU seconds): the time is the middle of the ``/stats`` requests."""
    t0 = time.monotonic()
    n = await asyncio.to_thread(_records, procs)
    t1 = time.monotonic()
    return (t0 + t1) / 2.0, n, sum(p.cpu_seconds() for p in procs)


async def measure_backlog_drain(
    kind: str,
    stack: Stack,
    names: Names,
    workdir: Path,
    events: Sequence[tuple[str, bytes, bytes, str]],
    *,
    warmup: int,
    partitions: int = 4,
    instances: int = 1,
    env: dict[str, str] | None = None,
    poll_s: float = 0.1,
    max_s: float = 900.0,
    on_drained: Callable[[Sequence[SystemProcess]], None] | None = None,
    code: Path | None = None,
) -> dict[str, Any]:
    """Produce ``events`` to fresh topics, then start ``kind`` (from the checkout ``code``,
    when given) and time its drain of them.

    Every system counts the events it has taken (its ``/stats`` ``records``); the harness
    samples (time, count, CPU) every ``poll_s``. The first ``warmup`` events (start-up, first
    batches) are left out: events/s = (count at the end - count at the first sample past the
    warm-up) / the time between those samples; CPU per event over the same samples.
    ``on_drained`` sees the processes once drained, before they are stopped.
    """
    if kind not in _COUNTED:
        raise ValueError(f"{kind!r} has no records counter; one of {_COUNTED}")
    await create_topics(stack.bootstrap, names.all_topics, partitions=partitions)
    t0 = time.monotonic()
    await produce_backlog(stack.bootstrap, names.inputs, events)
    produce_s = time.monotonic() - t0
    procs = await start_system(
        kind,
        stack,
        names,
        workdir,
        partitions=partitions,
        env=env,
        instances=instances,
        code=code,
    )
    total = len(events)
    first: tuple[float, int, float] | None = None
    last: tuple[float, int, float] | None = None
    try:
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            for p in procs:
                if not p.alive:
                    raise RuntimeError(f"{kind} exited:\n{p.log_tail()}")
            t, n, cpu = await _sample(procs)
            if n is not None and n >= warmup:
                last = (t, n, cpu)
                if first is None:
                    first = last
                if n >= total:
                    break
            await asyncio.sleep(poll_s)
        rss = max(p.rss_bytes() for p in procs)
        if on_drained is not None:
            on_drained(procs)
    finally:
        for p in procs:
            p.stop()
    if first is None or last is None or last[1] <= first[1]:
        raise RuntimeError(f"{kind} did not drain past its warm-up of {warmup} events")
    span, n, cpu = last[0] - first[0], last[1] - first[1], last[2] - first[2]
    if last[1] < total:
        logger.warning("%s drained %d of %d events in %.0f s", kind, last[1], total, max_s)
    return {
        "system": kind,
        "workers": instances,
        "events": n,
        "warmup": warmup,
        "complete": last[1] >= total,
        "produce_s": round(produce_s, 2),
        "drain_s": round(span, 2),
        "events_per_s": round(n / span, 1),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),
        "events_per_cpu_s": round(n / cpu, 1) if cpu > 0 else None,
        "cpu_util": round(cpu / span, 3),
        "rss_mb_after": round(rss / 2**20, 1),
    }


async def measure_idle(
    kind: str,
    stack: Stack,
    names: Names,
    workdir: Path,
    probes: Sequence[tuple[str, bytes, bytes, str]],
    *,
    idle_s: float,
    settle_s: float = 3.0,
    env: dict[str, str] | None = None,
    ready_timeout: float = 90.0,
) -> dict[str, Any]:
    """CPU and wake-ups of one ready ``kind`` process over ``idle_s`` with no input.

    Ready = it has handled the ``probes`` (``/stats``) or answered one (the pass-through,
    on the offers topic); then ``settle_s`` for the probes' aftermath, then the quiet span.
    """
    procs = await start_system(kind, stack, names, workdir, env=env)
    proc = procs[0]
    try:
        if kind in _COUNTED:
            await produce_backlog(stack.bootstrap, names.inputs, probes)
            deadline = time.monotonic() + ready_timeout
            while True:
                if not proc.alive:
                    raise RuntimeError(f"{kind} exited:\n{proc.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind} not ready in {ready_timeout}s:\n{proc.log_tail()}")
                n = await asyncio.to_thread(_records, procs)
                if n is not None and n >= len(probes):
                    break
                await asyncio.sleep(0.2)
        else:
            producer = await _producer(stack.bootstrap)
            try:
                await _wait_first_output(producer, names.inputs, probes, proc, ready_timeout)
            finally:
                await producer.stop()
        await asyncio.sleep(settle_s)
        cpu0, sw0, t0 = proc.cpu_seconds(), proc.voluntary_switches(), time.monotonic()
        await asyncio.sleep(idle_s)
        cpu1, sw1, t1 = proc.cpu_seconds(), proc.voluntary_switches(), time.monotonic()
        if not proc.alive:
            raise RuntimeError(f"{kind} exited while idle:\n{proc.log_tail()}")
    finally:
        proc.stop()
    wall = t1 - t0
    return {
        "system": kind,
        "idle_s": round(wall, 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_pct": round((cpu1 - cpu0) / wall * 100.0, 2),
        "wakeups_per_s": round((sw1 - sw0) / wall, 1),
    }


# -- Faust's own ceiling (``python -m benchmarks._harness faust_noop|faust_record|faust_bytes``)


# what each reference agent sends per event (``_faust_reference``)
_REFERENCE_SENDS = {"faust_noop": "none", "faust_record": "record", "faust_bytes": "bytes"}


def _faust_reference(send: str) -> None:  # pragma: no cover - runs as a subprocess
    """A Faust agent on streamscore's app (``create_app``: tuned fetch wait and session
    timeout, same settings from ``STREAMSCORE_*``) that takes the inputs in batches
    (``take_events(batch_max, within=10 ms)``) and does nothing else (``send`` "none"), or
    sends one small output per event to the offers topic and awaits the batch's acks: a
    ``faust.Record`` through the topic ("record"), or the event's own bytes through the app's
    producer, as the worker publishes ("bytes": a pass-through on Faust, whose latency the
    latency harness can measure, since its outputs carry their ``event_id``). ``/stats``
    counts the events taken, like the worker's page."""
    import faust
    from faust.types import StreamT

    from streams.app import create_app
    from streams.logs import setup_logging
    from streams.settings import Settings

    class Echo(faust.Record, serializer="json"):
        topic: str
        partition: int
        offset: int

    settings = Settings()
    setup_logging(settings.worker.log_level, json=settings.worker.log_json)
    app = create_app(settings)
    topics = settings.topics
    inputs = app.input_topics()
    offers = app.topic(topics.offers, key_type=bytes, value_type=Echo, key_serializer="raw")
    counters = {"records": 0}

    @app.agent(inputs, name="reference")
    async def reference(stream: StreamT[bytes]) -> None:
        producer = app.producer
        async for batch in stream.take_events(settings.worker.batch_max, within=0.01):
            futures = []
            for event in batch:
                m = event.message
                if send == "record":
                    echo = Echo(topic=m.topic, partition=m.partition, offset=m.offset)
                    futures.append(await offers.send(key=m.key, value=echo))
                elif send == "bytes":  # the event itself: a pass-through through Faust
                    futures.append(
                        await producer.send(topics.offers, m.key, m.value, None, None, None)
                    )
            if futures:
                await asyncio.gather(*futures)
            counters["records"] += len(batch)

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        return web.json({"ready": True, **counters})

    sys.argv = [*sys.argv[:1], "worker"]
    faust.Worker(
        app,
        loglevel=settings.worker.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    ).execute_from_commandline()


# -- the pass-through baseline (``python -m benchmarks._harness passthrough``) ------------------


async def _passthrough() -> None:  # pragma: no cover - runs as a subprocess
    """Plain aiokafka: consume the three inputs, produce every value to the offers topic.

    Same client settings as the worker: 10 ms fetch wait, 1 ms linger, acks=all, the same
    consumer group protocol; one send per record, acks awaited once per fetched batch.
    """
    env = os.environ
    bootstrap = env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    inputs = [env[f"STREAMSCORE_TOPICS__{k}"] for k in ("CLICKS", "PURCHASES", "FEEDBACK")]
    out = env["STREAMSCORE_TOPICS__OFFERS"]
    consumer = AIOKafkaConsumer(
        *inputs,
        bootstrap_servers=bootstrap,
        group_id=env["STREAMSCORE_WORKER__APP_ID"],
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        fetch_max_wait_ms=int(env.get("STREAMSCORE_KAFKA__FETCH_MAX_WAIT_MS", "10")),
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            futures = [
                await producer.send(out, r.value, key=r.key)
                for records in batches.values()
                for r in records
            ]
            if futures:
                await asyncio.gather(*futures)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["passthrough"]:
        asyncio.run(_passthrough())
    elif len(sys.argv) == 2 and sys.argv[1] in _REFERENCE_SENDS:
        _faust_reference(send=_REFERENCE_SENDS[sys.argv[1]])
    else:
        raise SystemExit(
            "usage: python -m benchmarks._harness passthrough|faust_noop|faust_record|faust_bytes"
        )
