"""Peer 1: a plain per-event Faust agent, written the obvious way (run as a subprocess).

Same app settings and tuned transport as streamscore (so the difference is how the job is
written, not the fetch-wait fix); ``async for value in stream``; per event: decode, Redis
HINCRBYFLOAT + HSET + HGETALL (awaited one by one), River learn/predict, ``await topic.send``.
"""

from __future__ import annotations

import json
from typing import Any

import faust
from redis.asyncio import Redis

from benchmarks._peer_job import PerEventJob, env_names
from streams.app import create_app
from streams.settings import Settings

__all__ = ["main"]


def main() -> None:
    names = env_names()
    settings = Settings()
    app = create_app(settings)
    job = PerEventJob()
    redis = Redis.from_url(names["redis_url"])
    inputs = app.topic(*names["inputs"], value_type=bytes, value_serializer="raw")
    offers = app.topic(names["offers"], value_type=bytes, value_serializer="raw")

    @app.agent(inputs, name="naive")
    async def naive(stream: Any) -> None:
        async for value in stream:
            kind = names["inputs"][stream.current_event.message.topic]
            event = job.parse(kind, value)
            if event is None:
                continue
            key = f"{names['prefix']}:{event.customer_id}"
            for field, amount in job.updates(event).items():
                await redis.hincrbyfloat(key, field, amount)
            await redis.hset(key, "last_ts", event.ts)
            raw = await redis.hgetall(key)
            raw.pop(b"last_ts", None)
            offer = job.decide(event, raw)
            if offer is not None:
                await offers.send(key=event.customer_id.encode(), value=json.dumps(offer).encode())

    faust.Worker(
        app, loglevel="WARNING", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    import sys

    sys.argv = [*sys.argv[:1], "worker"]
    main()
