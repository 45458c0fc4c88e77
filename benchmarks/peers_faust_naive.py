"""Peer 1: streamscore's job in a plain per-event Faust agent, written the obvious way.

Run as a subprocess by the harness (``python -m benchmarks.peers_faust_naive``), with the
same ``STREAMSCORE_*`` environment as the streamscore worker. It runs streamscore's own
``Pipeline`` (same features, models, decisions, outcomes) but one event at a time:
``async for event in stream.events()``, ``await pipeline.handle([record])``, then
``await topic.send(...)`` for each output in turn, plus the same 1 s tick timer. Same app
class and tuned transport as streamscore (so the fetch-wait fix is not what is compared):
the difference is the per-event loop instead of ``take_events`` batches with one wait for
all acks.
"""

from __future__ import annotations

from faust.types import StreamT

from benchmarks._peer_job import outputs, prepare_process, record, run_faust_worker, tick
from streams.agents import BatchOutputs, Pipeline, freeze_heap
from streams.app import create_app
from streams.settings import Settings

__all__ = ["main"]


def main() -> None:
    settings = Settings()
    prepare_process(settings)
    app = create_app(settings)
    pipeline = Pipeline(settings)
    topics = settings.topics
    inputs = app.input_topics()
    sinks = {name: app.topic(name, key_type=bytes, key_serializer="raw") for name in topics.outputs}

    async def send(out: BatchOutputs) -> None:
        for o in outputs(topics, out):
            await sinks[o.topic].send(key=o.key, value=o.record)

    @app.agent(inputs, name="naive")
    async def naive(stream: StreamT[bytes]) -> None:
        await pipeline.start()
        freeze_heap()
        try:
            async for event in stream.events():
                m = event.message
                rec = record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                await send(await pipeline.handle([rec]))
        finally:
            await pipeline.close()

    @app.timer(1.0)
    async def every_second() -> None:
        await send(await tick(pipeline))

    run_faust_worker(app, settings.worker.log_level)


if __name__ == "__main__":
    main()
