"""A retry is not a replay, through a real worker: a batch whose Redis reply was lost after
the script ran is learned exactly once.

A TCP proxy between the worker and Valkey forwards the first feature-store call that carries
the probe's event ids, lets Valkey run it, then closes the connection instead of returning the
reply. The worker's store retries the call; what it learned must equal a run without the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from streams.embedded import free_port
from tests.streams.conftest import produce
from tests.streams.test_pipeline_e2e import _routed, feedback

N = 24
MARKER = b"lostreply-"


class LostReplyProxy:
    """Loopback proxy to Valkey that loses the reply to the first request with ``marker``."""

    def __init__(self, target: tuple[str, int], marker: bytes) -> None:
        self.target, self.marker = target, marker
        self.port = free_port()
        self.fired = 0
        self.armed = False
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LostReplyProxy:
        self._thread.start()
        self._ready.wait(5.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        lose_next_reply = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.armed and not self.fired and self.marker in data:
                    self.fired += 1
                    lose_next_reply.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if lose_next_reply.is_set():
                    return  # the script ran; its reply never reaches the worker
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lose_reply", [False, True], ids=["baseline", "reply-lost"])
def test_a_batch_whose_reply_was_lost_is_learned_exactly_once(
    worker_factory: Any, redis_url: str, lose_reply: bool
) -> None:
    target = urlsplit(redis_url)
    with LostReplyProxy((target.hostname or "127.0.0.1", target.port or 6379), MARKER) as proxy:
        w = worker_factory(STREAMSCORE_REDIS__URL=f"redis://127.0.0.1:{proxy.port}/0")
        w.wait_ready()
        proxy.armed = lose_reply
        now = float(int(time.time()))
        texts = ("Great fast delivery, love it", "Broken on arrival, awful service")
        records = [
            feedback(f"lostreply-{n}", f"fb{n}", now + n, 5 if n % 2 else 1, texts[n % 2])
            for n in range(N)
        ]
        env = w.env
        asyncio.run(produce(env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"], _routed(env, records)))
        stats = w.wait_processed(N)
        assert proxy.fired == (1 if lose_reply else 0), "the fault happened (or not) as planned"
        assert stats["valid"] == N
        assert stats["duplicates"] == 0, "our own retry is not a replay"
        assert stats["feedback_learned"] == N, "every rated feedback learned, once"
        url = f"http://127.0.0.1:{w.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5.0) as r:
            metrics = r.read().decode()
        retries = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("streamscore_redis_retries_total")
        ]
        assert retries == [1.0 if lose_reply else 0.0], "the store retried the lost call once"
