"""The ``streamscore`` command: demo, worker, simulate, tail, evaluate, export-decisions,
train-intent, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import orjson

from streams.settings import KafkaSettings, Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="embedded broker + Valkey + worker + simulated traffic")
    d.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    d.add_argument("--rate", type=float, default=300.0, help="events/s of simulated traffic")
    d.add_argument("--customers", type=int, default=2_000)
    d.add_argument("--malformed-rate", type=float, default=0.002)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--speedup",
        type=float,
        default=60.0,
        help="simulated minutes per wall minute (event time starts in the past and runs this "
        "much faster, so 30-minute label horizons and cart timeouts resolve within the demo)",
    )
    d.add_argument(
        "--intent-events",
        type=int,
        default=20_000,
        help="simulated events to train the session-intent LSTM on before starting (0: none, "
        "the model then starts untrained and learns online)",
    )

    sub.add_parser("worker", help="run a worker against the configured broker and Redis")

    o = sub.add_parser("suppress", help="opt a customer out of offers (or back in)")
    o.add_argument("customer_id")
    o.add_argument("--remove", action="store_true", help="lift the suppression")
    o.add_argument("--reason", default="cli", help="why (kept with the opt-out)")

    s = sub.add_parser("simulate", help="produce simulated traffic to the configured broker")
    s.add_argument("--rate", type=float, default=500.0)
    s.add_argument("--duration", type=float, default=60.0)
    s.add_argument("--customers", type=int, default=2_000)
    s.add_argument("--malformed-rate", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=None, help="write JSON lines here instead")
    s.add_argument("--events", type=int, default=None, help="with --out: how many events")

    t = sub.add_parser("tail", help="print events of a topic as JSON lines")
    t.add_argument("topic")
    t.add_argument("--max", type=int, default=None)
    t.add_argument("--from-beginning", action="store_true")
    t.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")

    from streams.evaluate import add_parsers

    add_parsers(sub)

    sub.add_parser(
        "train-intent", help="train the session-intent LSTM from an events file", add_help=False
    )
    sub.add_parser("bench", help="benchmarks (see benchmarks/README.md)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train-intent":
        from models.intent.train import train_intent_main

        return train_intent_main(argv[1:])
    if argv and argv[0] == "bench":
        from benchmarks.cli import bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "worker":
        from streams.worker import run_worker

        run_worker(Settings())
        return 0
    if args.command == "demo":
        return _demo(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "suppress":
        return asyncio.run(_suppress(Settings(), args))
    if args.command == "tail":
        return asyncio.run(_tail(Settings(), args))
    if args.command in ("evaluate", "export-decisions"):
        from streams.evaluate import evaluate_main, export_main

        run = evaluate_main if args.command == "evaluate" else export_main
        return run(Settings(), args)
    raise AssertionError(args.command)  # pragma: no cover - argparse guards this


def _simulate(args: argparse.Namespace) -> int:
    from streams.logs import setup_logging
    from streams.simulator import Simulator
    from streams.traffic import produce_paced

    setup_logging("INFO")
    sim = Simulator(args.customers, seed=args.seed, malformed_rate=args.malformed_rate)
    if args.out is not None:
        n = args.events or int(args.rate * args.duration)
        with args.out.open("wb") as f:
            for ev in sim.events(n, rate=args.rate):
                f.write(
                    orjson.dumps(
                        {"topic": ev.topic, "value": ev.doc, "session_outcome": ev.session_outcome}
                    )
                )
                f.write(b"\n")
        logger.info("wrote %d events to %s", n, args.out)
        return 0
    settings = Settings()
    n_max = int(args.rate * args.duration) + 1
    sent = asyncio.run(
        produce_paced(
            settings, sim.events(n_max, clock=time.time), rate=args.rate, duration=args.duration
        )
    )
    logger.info("sent %d events to %s", sent, settings.kafka.bootstrap_servers)
    return 0


async def _suppress(settings: Settings, args: argparse.Namespace) -> int:
    """Produce ``{customer_id, suppressed, reason}`` to the suppressions topic; the worker
    stores it in Redis and the contact policy blocks (or unblocks) the customer's offers."""
    from aiokafka import AIOKafkaProducer

    doc = {"customer_id": args.customer_id, "suppressed": not args.remove, "reason": args.reason}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.suppressions, orjson.dumps(doc), key=args.customer_id.encode()
        )
    finally:
        await producer.stop()
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    return 0


async def _tail(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.max is None or seen < args.max:
            if deadline is not None and time.monotonic() > deadline:
                break
            left = None if args.max is None else args.max - seen
            batches = await consumer.getmany(timeout_ms=200, max_records=left)
            for records in batches.values():
                for r in records[:left] if left is not None else records:
                    sys.stdout.write((r.value or b"").decode("utf-8", "replace") + "\n")
                    seen += 1
                if left is not None:
                    left = args.max - seen
            sys.stdout.flush()
    finally:
        await consumer.stop()
    return 0


# -- demo ----------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from streams.embedded import EmbeddedBroker, EmbeddedValkey, create_topics, free_port

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="streamscore-demo-"))
    out = sys.stdout
    out.write("streamscore demo: starting embedded Tansu broker and Valkey...\n")
    with EmbeddedBroker() as broker, EmbeddedValkey() as valkey:
        web_port = free_port()
        key = secrets.token_hex(32)  # the demo's own: a worker refuses the built-in key
        # kept beside the demo's checkpoints, readable by this user only, for `evaluate`
        key_file = workdir / "checkpoint.key"
        key_file.touch(mode=0o600)
        key_file.write_text(key)
        env = {
            **os.environ,
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMSCORE_REDIS__URL": valkey.url,
            "STREAMSCORE_WORKER__WEB_PORT": str(web_port),
            "STREAMSCORE_WORKER__DATA_DIR": str(workdir / "faust"),
            "STREAMSCORE_MODELS__CHECKPOINT_DIR": str(workdir / "checkpoints"),
            "STREAMSCORE_MODELS__CHECKPOINT_KEY": key,
            # 20 min of event time (20 s of the demo at --speedup 60) instead of 24 h, so
            # offers' outcomes, misses included, come within the demo and the uplift can be read
            "STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES": os.environ.get(
                "STREAMSCORE_DECISION__ATTRIBUTION_WINDOW_MINUTES", "20"
            ),
        }
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
        t = settings.topics
        asyncio.run(
            create_topics(
                broker.bootstrap_servers,
                list(t.all),
                partitions=t.partitions,
            )
        )
        if args.intent_events > 0:
            trained = _train_demo_intent(args, workdir, key)
            env["STREAMSCORE_INTENT__CHECKPOINT_PATH"] = str(trained)
        log_path = workdir / "worker.log"
        out.write(
            f"  broker {broker.bootstrap_servers}, Valkey {valkey.url}\n"
            f"  worker log {log_path}, stats http://127.0.0.1:{web_port}/stats\n"
        )
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                asyncio.run(_demo_loop(settings, args, web_port, worker, workdir))
            except KeyboardInterrupt:
                out.write("\ninterrupted, stopping...\n")
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
    return 0


def _fast_clock(speedup: float, horizon_s: float = 6 * 3600.0) -> Callable[[], float]:
    """Event time that runs ``speedup`` times faster than the wall clock, never ahead of it.

    It starts ``horizon_s`` in the past; after that much simulated time it follows real time.
    """
    wall0 = time.time()
    start = wall0 - horizon_s

    def clock() -> float:
        wall = time.time()
        return min(start + (wall - wall0) * speedup, wall)

    return clock


def _train_demo_intent(args: argparse.Namespace, workdir: Path, key: str) -> Path:
    """Train the intent LSTM on a short simulated history (other seed than the live traffic)."""
    from models.intent.train import train_intent
    from streams.simulator import Simulator

    out = sys.stdout
    out.write(f"  training the session-intent LSTM on {args.intent_events} simulated events...\n")
    out.flush()
    path = workdir / "intent-history.jsonl"
    sim = Simulator(args.customers, seed=args.seed + 1, start_ts=time.time() - 30 * 86400)
    with path.open("wb") as f:
        for ev in sim.events(args.intent_events, rate=2.0):
            if ev.doc is not None:
                f.write(orjson.dumps({"topic": ev.topic, "doc": ev.doc}) + b"\n")
    result = train_intent(path, workdir / "intent", epochs=2, seed=args.seed, key=key)
    m = result.metrics
    out.write(
        f"  intent LSTM held-out session-purchase AUC {m['purchase_auc']:.3f}, "
        f"accuracy {m['accuracy']:.3f} ({result.train_sessions} training sessions)\n"
    )
    return Path(result.checkpoint)


def _worker_stats(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=0.5) as r:
            return orjson.loads(r.read())
    except (OSError, ValueError):
        return None


async def _demo_loop(
    settings: Settings,
    args: argparse.Namespace,
    web_port: int,
    worker: subprocess.Popen[bytes],
    workdir: Path,
) -> None:
    from streams.simulator import Simulator
    from streams.traffic import OutputWatcher, produce_paced

    out = sys.stdout
    stop = asyncio.Event()
    sim = Simulator(args.customers, seed=args.seed, malformed_rate=args.malformed_rate)
    n_max = int(args.rate * args.duration) + 1 if args.duration else 10**12
    watcher = OutputWatcher(settings)
    sent = 0

    def on_sent(_ev: object, _ts: float) -> None:
        nonlocal sent
        sent += 1

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    producer = asyncio.create_task(
        produce_paced(
            settings,
            sim.events(n_max, clock=_fast_clock(args.speedup)),
            rate=args.rate,
            duration=args.duration,
            stop=stop,
            on_sent=on_sent,
        )
    )
    watch = asyncio.create_task(watcher.run(stop))
    started = time.monotonic()
    last_valid, last_t = 0, started
    first_seen: tuple[float, int] | None = None  # (when, processed) at the first progress
    stats: dict[str, object] = {}
    out.write(
        f"  simulating {args.customers} customers at {args.rate:.0f} events/s"
        f"{f' for {args.duration:.0f}s' if args.duration else ' (Ctrl-C to stop)'}\n"
    )
    try:
        while not stop.is_set():
            await asyncio.sleep(2.0)
            if worker.poll() is not None:
                out.write(f"worker exited with code {worker.returncode}; see its log\n")
                break
            stats = await asyncio.to_thread(_worker_stats, web_port) or {}
            now = time.monotonic()
            processed = int(stats.get("records", 0) or 0)
            if first_seen is None and processed > 0:
                first_seen = (now, processed)
            eps = (processed - last_valid) / (now - last_t)
            last_valid, last_t = processed, now
            c = watcher.counts
            out.write(
                f"[{now - started:5.0f}s] sent {sent:>7}  processed {processed:>7} "
                f"({eps:6.0f}/s)  offers {c['offers']:>6}  alerts {c['alerts']:>5}  "
                f"dead letters {c['dead_letters']:>4}  AUC {_auc(stats)}"
                f"{'' if stats.get('ready') else '  (worker starting...)'}\n"
            )
            if watcher.samples and int(now - started) % 10 < 2:
                sample = watcher.samples[-1]
                out.write(f"    sample offer: {orjson.dumps(sample).decode()[:300]}\n")
            out.flush()
            drained = processed >= sent or now - started > (args.duration or 0) + 30
            if producer.done() and drained:  # the worker has what was sent: stop
                break
    finally:
        stop.set()
        await asyncio.gather(producer, watch, return_exceptions=True)
    c = watcher.counts
    if first_seen is not None and last_t > first_seen[0]:
        sustained = (last_valid - first_seen[1]) / (last_t - first_seen[0])
        out.write(
            f"summary: worker sustained {sustained:.0f} events/s (offered {args.rate:.0f}/s); "
            f"propensity progressive ROC AUC {_auc(stats)} over "
            f"{stats.get('labels_scored', 0)} of {stats.get('labels_learned', 0)} resolved "
            "labels (those predicted after the model had learned); "
            f"model {stats.get('model_version')}\n"
        )
    out.write(
        f"done: sent {sent} events; offers {c['offers']}, alerts {dict(watcher.alert_types)}, "
        f"dead letters {c['dead_letters']} {dict(watcher.dead_reasons.most_common(3))}\n"
    )
    await _demo_verdict(settings, workdir, out)


async def _demo_verdict(settings: Settings, workdir: Path, out: TextIO) -> None:
    """The bandit's uplift over the control group, with its interval, and the decision log
    written while the embedded broker still runs, with the command that evaluates it."""
    from models.decisioning.decision_log import join_decisions, settled, write_decisions
    from models.decisioning.uplift import uplift
    from streams.evaluate import read_outputs

    offers, outcomes = await read_outputs(settings, timeout=20.0)
    outcomes, _ = settled(outcomes)  # only offers whose attribution window closed
    u = uplift(outcomes)
    if u.difference is None or u.low is None or u.high is None:
        out.write(
            f"uplift: not yet measurable ({u.treatment_n} bandit and {u.control_n} control "
            "offers with a settled outcome: outcomes settle as attribution windows close)\n"
        )
    else:
        out.write(
            f"uplift of the bandit over the control group: {100 * u.difference:+.1f} points of "
            f"conversion [{100 * u.low:+.1f}, {100 * u.high:+.1f}] ({100 * u.confidence:.0f}% "
            f"interval, {u.method}); {100 * (u.treatment_rate or 0):.1f}% of "
            f"{u.treatment_n} bandit offers vs {100 * (u.control_rate or 0):.1f}% of "
            f"{u.control_n} control offers converted\n"
        )
    lines, _ = join_decisions(offers, outcomes)
    log = workdir / "decisions.jsonl"
    n = write_decisions(log, lines)
    out.write(
        f"decision log: {n} decisions with settled outcomes in {log}; evaluate other policies "
        "on them (the worker's bandit from its last checkpoint among them, signed with the "
        "demo's key) with:\n"
        f"  STREAMSCORE_MODELS__CHECKPOINT_KEY=$(cat {workdir / 'checkpoint.key'}) "
        f"streamscore evaluate --input {log} --checkpoint {workdir / 'checkpoints'}\n"
    )


def _auc(stats: dict[str, object]) -> str:
    """The propensity AUC for the demo's lines: "learning" until the worker reports one (the
    first labels to resolve were predicted by an untrained model, 0.5 for every click)."""
    auc = stats.get("propensity_auc")
    return f"{auc:.3f}" if isinstance(auc, float) else "learning"


if __name__ == "__main__":
    sys.exit(main())
