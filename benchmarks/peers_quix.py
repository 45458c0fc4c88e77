"""Peer 2: the same per-event job in Quix Streams (run as a subprocess).

Stateless ``StreamingDataFrame``: ``apply`` does the Redis calls (a sync client: Quix's
callbacks are synchronous) and the models, ``filter`` drops events without an offer,
``to_topic`` publishes. Quix's own state (RocksDB) is not used: the features live in the
same Redis as streamscore's. Quix describes topic configs on start; if the broker cannot
answer that (Tansu returns empty configs), the error is printed and the process exits 3.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

__all__ = ["main"]


def main() -> int:
    import redis
    from quixstreams import Application

    from benchmarks._peer_job import PerEventJob, env_names

    names = env_names()
    job = PerEventJob()
    r = redis.Redis.from_url(names["redis_url"])
    app = Application(
        broker_address=names["bootstrap"],
        consumer_group=names["group"],
        auto_offset_reset="earliest",
        auto_create_topics=False,
        use_changelog_topics=False,
        commit_interval=1.0,
        producer_extra_config={"linger.ms": 1},
        consumer_extra_config={"fetch.wait.max.ms": 10},
    )
    topics = [
        app.topic(t, value_deserializer="bytes", key_deserializer="bytes") for t in names["inputs"]
    ]
    offers = app.topic(names["offers"], value_serializer="bytes", key_serializer="bytes")

    def score(value: bytes, key: Any, timestamp: int, headers: Any) -> bytes | None:
        from quixstreams import message_context

        kind = names["inputs"][message_context().topic]
        event = job.parse(kind, value)
        if event is None:
            return None
        k = f"{names['prefix']}:{event.customer_id}"
        for field, amount in job.updates(event).items():
            r.hincrbyfloat(k, field, amount)
        r.hset(k, "last_ts", event.ts)
        raw = r.hgetall(k)
        raw.pop(b"last_ts", None)
        offer = job.decide(event, raw)
        return None if offer is None else json.dumps(offer).encode()

    for topic in topics:
        sdf = app.dataframe(topic)
        sdf = sdf.apply(score, metadata=True).filter(lambda v: v is not None)
        sdf.to_topic(offers)
    app.run()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SystemExit:
        raise
    except BaseException:
        sys.stderr.write("QUIX_FAILED\n" + traceback.format_exc())
        sys.stderr.flush()
        raise SystemExit(3) from None
