"""Fixtures for end-to-end tests: real worker processes on the real embedded servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.agents import Pipeline
from streams.embedded import create_topics, free_port
from streams.settings import Settings


class WorkerProcess:
    """A ``streamscore worker`` subprocess configured through environment variables."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.web_port = int(env["STREAMSCORE_WORKER__WEB_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def stats(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.web_port}/stats"
            with urllib.request.urlopen(url, timeout=1.0) as r:
                return orjson.loads(r.read())
        except (OSError, ValueError):
            return None

    def assigned(self) -> int:
        """How many partitions the group gave this worker (-1 while /stats does not answer)."""
        s = self.stats()
        return int(s.get("assigned_partitions", 0)) if s else -1

    def wait_ready(self, timeout: float = 40.0) -> dict[str, Any]:
        """Until the agent runs and the group gave this worker partitions."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            s = self.stats()
            if s and s.get("ready") and s.get("assigned_partitions", 0) > 0:
                return s
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()}")

    def wait_processed(self, n: int, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        s: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            s = self.stats()
            if s and s.get("records", 0) >= n:
                return s
            time.sleep(0.2)
        raise TimeoutError(f"worker processed {s} < {n} after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def stack_env(servers: Any, unique: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    """Environment for a worker on fresh topics, group, Redis prefix and checkpoint dir."""
    kinds = (
        "clicks", "purchases", "feedback", "offers", "alerts", "dl", "outcomes", "suppress",
        "labels", "intents",
    )  # fmt: skip
    names = {k: unique(k) for k in kinds}
    return {
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": servers.bootstrap_servers,
        "STREAMSCORE_KAFKA__SESSION_TIMEOUT_S": "3",
        "STREAMSCORE_KAFKA__HEARTBEAT_INTERVAL_S": "0.5",
        "STREAMSCORE_KAFKA__REBALANCE_TIMEOUT_S": "3",
        "STREAMSCORE_REDIS__URL": servers.redis_url,
        "STREAMSCORE_REDIS__KEY_PREFIX": unique("ss"),
        "STREAMSCORE_TOPICS__CLICKS": names["clicks"],
        "STREAMSCORE_TOPICS__PURCHASES": names["purchases"],
        "STREAMSCORE_TOPICS__FEEDBACK": names["feedback"],
        "STREAMSCORE_TOPICS__OFFERS": names["offers"],
        "STREAMSCORE_TOPICS__ALERTS": names["alerts"],
        "STREAMSCORE_TOPICS__DEAD_LETTERS": names["dl"],
        "STREAMSCORE_TOPICS__OFFER_OUTCOMES": names["outcomes"],
        "STREAMSCORE_TOPICS__SUPPRESSIONS": names["suppress"],
        "STREAMSCORE_TOPICS__LABELS": names["labels"],
        "STREAMSCORE_TOPICS__INTENTS": names["intents"],
        "STREAMSCORE_TOPICS__PARTITIONS": "2",
        "STREAMSCORE_WORKER__APP_ID": unique("app"),
        "STREAMSCORE_WORKER__WEB_PORT": str(free_port()),
        "STREAMSCORE_WORKER__DATA_DIR": str(tmp_path / "faust"),
        "STREAMSCORE_MODELS__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STREAMSCORE_MODELS__CHECKPOINT_KEY": "test-key-" + unique("k"),
        "STREAMSCORE_INTENT__DEVICE": "cpu",
    }


@pytest.fixture
def worker_factory(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make(**overrides: str) -> WorkerProcess:
        env = {**stack_env, **overrides}
        if started and "STREAMSCORE_WORKER__WEB_PORT" not in overrides:
            env["STREAMSCORE_WORKER__WEB_PORT"] = str(free_port())
        w = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log")
        asyncio.run(_create(env))
        started.append(w.start())
        return w

    yield make
    for w in started:
        w.stop(signal.SIGKILL)


@contextlib.asynccontextmanager
async def started_pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    """An in-process ``Pipeline`` on ``settings``, started, closed on the way out."""
    pipeline = Pipeline(settings)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.close()


async def _create(env: dict[str, str]) -> None:
    names = [
        v
        for k, v in env.items()
        if k.startswith("STREAMSCORE_TOPICS__")
        and not k.endswith(("PARTITIONS", "REPLICATION_FACTOR"))
    ]
    await create_topics(
        env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"],
        names,
        partitions=int(env["STREAMSCORE_TOPICS__PARTITIONS"]),
    )


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """Send (topic, key, value) records in order and wait for the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for t, k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topics: list[str],
    *,
    until: Callable[[dict[str, list[dict[str, Any]]]], bool],
    timeout: float = 30.0,
) -> dict[str, list[dict[str, Any]]]:
    """Read topics from the beginning until ``until(records_by_topic)`` or the timeout."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    got: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            batches = await consumer.getmany(timeout_ms=200)
            for tp, recs in batches.items():
                got[tp.topic].extend(orjson.loads(r.value) for r in recs)
    finally:
        await consumer.stop()
    return got
