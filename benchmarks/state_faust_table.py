"""Subprocess of ``benchmarks.state_store``: a real Faust table as the pending-label store.

    python -m benchmarks.state_faust_table MODE N OUT

with the ``STREAMSCORE_*`` environment of a worker (app id, bootstrap, data dir; the input
topic is ``STREAMSCORE_TOPICS__CLICKS``, one partition). An agent drains the topic in
``take_events`` batches, as streamscore's does:

- ``table``: each record becomes ``table[key] = value`` (a Faust ``Table`` with its changelog);
- ``plain``: the same agent without the table (the baseline of the same run);
- ``recover``: a fresh worker on the group of a ``table`` run: the time until Faust has
  recovered the table from its changelog (before which no event is processed).

Writes ``OUT`` (JSON) once the ``N`` records are drained, or the table is recovered.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from faust.types import StreamT

from benchmarks._peer_job import run_faust_worker
from streams.app import create_app
from streams.logs import setup_logging
from streams.settings import Settings

__all__ = ["main"]


def main() -> None:
    mode, n, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    settings = Settings()
    setup_logging("WARNING")
    app = create_app(settings)
    table = app.Table("pending-labels", partitions=1, key_type=bytes, value_type=bytes)
    source = app.topic(
        settings.topics.clicks,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=1,
    )
    state: dict[str, Any] = {"seen": 0, "t0": None, "done": False}

    def finish(doc: dict[str, Any]) -> None:
        if not state["done"]:
            state["done"] = True
            out.write_text(json.dumps(doc))

    @app.agent(source, name="fill")
    async def fill(stream: StreamT[bytes]) -> None:
        async for batch in stream.take_events(500, within=0.01):
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            if mode == "table":
                for event in batch:
                    # a batch has no current event: set it, as per-event iteration does, so
                    # the table writes the key's changelog partition (the event's)
                    stream._set_current_event(event)  # type: ignore[attr-defined]
                    table[event.message.key] = event.message.value
            state["seen"] += len(batch)
            if state["seen"] >= n and mode != "recover" and not state["done"]:
                await app.producer.flush()  # the changelog records are acknowledged too
                finish({"seconds": time.perf_counter() - state["t0"], "records": state["seen"]})

    @app.timer(0.05)
    async def recovered() -> None:
        if mode == "recover" and app.tables.recovery.completed.is_set():
            finish({"ready_at": time.time(), "entries": len(table)})

    run_faust_worker(app, "WARNING")


if __name__ == "__main__":
    main()
