"""Shared fixtures: the real embedded broker and Valkey, started once per session.

Without Docker (the default) the servers are the pip-installed Tansu broker and Valkey.
With ``--docker`` the same tests run on testcontainers' Apache Kafka and Redis instead.
Each test gets fresh topic, group and key-prefix names from ``unique``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from streams.embedded import EmbeddedBroker, EmbeddedValkey, EmbeddedValkeyCluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--docker",
        action="store_true",
        default=bool(os.environ.get("STREAMSCORE_TEST_DOCKER")),
        help="run integration tests on testcontainers Kafka and Redis instead of embedded ones",
    )


@dataclass(frozen=True)
class Servers:
    bootstrap_servers: str
    redis_url: str


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker."""
    if request.config.getoption("--docker"):
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker() as b:
        yield b.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a real Redis-protocol server."""
    if request.config.getoption("--docker"):
        from testcontainers.redis import RedisContainer

        with RedisContainer() as r:
            yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
        return
    with EmbeddedValkey() as v:
        yield v.url


@pytest.fixture(scope="session")
def servers(broker: str, redis_url: str) -> Servers:
    return Servers(bootstrap_servers=broker, redis_url=redis_url)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A node of a real 3-master Redis Cluster (embedded Valkey, cluster mode)."""
    with EmbeddedValkeyCluster(masters=3) as cluster:
        yield cluster.url


@pytest.fixture(params=["server", "cluster"])
async def any_redis(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[redis.asyncio.Redis | RedisCluster]:
    """An async client of one Valkey server, then of the 3-master cluster: stores whose keys
    must share hash tags are tested on both."""
    if request.param == "server":
        client: redis.asyncio.Redis | RedisCluster = redis.asyncio.Redis.from_url(redis_url)
    else:
        client = RedisCluster.from_url(request.getfixturevalue("redis_cluster_url"))
    yield client
    await client.aclose()


_counter = itertools.count()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Fresh names per test: ``unique("clicks")`` -> ``clicks-3f9a1c-7``."""
    tag = uuid.uuid4().hex[:6]

    def make(base: str) -> str:
        return f"{base}-{tag}-{next(_counter)}"

    return make
