"""``streamscore tail`` through the real broker: ``--max`` is a maximum."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from streams.embedded import create_topics
from tests.streams.conftest import produce


def test_tail_max_stops_at_max_even_inside_one_fetch(
    servers: Any, unique: Callable[[str], str]
) -> None:
    topic = unique("tail")
    asyncio.run(create_topics(servers.bootstrap_servers, [topic], partitions=1))
    # one fetch returns all of these: the old loop printed the whole fetch before checking
    asyncio.run(
        produce(servers.bootstrap_servers, [(topic, b"k", b'{"n": %d}' % i) for i in range(50)])
    )
    env = {**os.environ, "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": servers.bootstrap_servers}
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "tail", topic, "--from-beginning", "--max", "2",
         "--timeout", "30"],
        env=env, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.decode().splitlines() == ['{"n": 0}', '{"n": 1}']
