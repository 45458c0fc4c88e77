"""Operations pages on the worker's web port: ``/metrics``, ``/health`` and ``/ready``.

- ``/metrics``: Prometheus text format (``streams.metrics``), refreshed at scrape time.
- ``/health`` (liveness): 200 while the process and its event loop answer; a hung loop
  answers nothing, which a liveness probe reads as a failure.
- ``/ready`` (readiness): 200 when the pipeline has started, Redis answers a PING within
  ``READY_PING_TIMEOUT_S`` and the consumer group gave this worker partitions; 503 otherwise,
  with the failing checks in the JSON body. A worker with no partitions (more workers than
  partitions) is alive but not ready: it does no work.
- ``/models``: the models this worker serves: version, the deployment generation it last
  merged with (``models/sync.py``) and that snapshot's SHA-256, and what each model learned.
- ``POST /models/predict`` with ``{"features": [{...}, ...]}`` (customer features by the
  feature store's names, at most ``MAX_PREDICT_ROWS``): each row's segment and purchase
  propensity under the served models, without learning. Workers that serve one generation
  answer the same.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from faust.web import Request, Response, View

from streams.agents import Pipeline
from streams.app import StreamscoreApp
from streams.metrics import CONTENT_TYPE_LATEST

__all__ = ["MAX_PREDICT_ROWS", "READY_PING_TIMEOUT_S", "register_pages"]

READY_PING_TIMEOUT_S: Final = 0.5
MAX_PREDICT_ROWS: Final = 1_000


def register_pages(app: StreamscoreApp, pipeline: Pipeline) -> None:
    """Declare ``/metrics``, ``/health``, ``/ready`` and ``/models`` on ``app``."""
    started_at = time.monotonic()

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        m = pipeline.metrics
        m.update_consumer(app.consumer)
        m.update_models(pipeline.models, pipeline.model_version)
        m.update_store(pipeline.store)
        # aiohttp refuses a charset inside content_type=; the header carries it as is
        return web.bytes(m.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        uptime = round(time.monotonic() - started_at, 3)
        return web.json({"status": "ok", "pid": os.getpid(), "uptime_s": uptime})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        started = bool(pipeline.stats().get("ready"))
        redis_ok = started and await pipeline.store.ping(READY_PING_TIMEOUT_S)
        partitions = len(pipeline.metrics.input_partitions(app.consumer))
        checks = {"pipeline": started, "redis": redis_ok, "partitions": partitions}
        ok = started and redis_ok and partitions > 0
        return web.json({"ready": ok, "checks": checks}, status=200 if ok else 503)

    @app.page("/models")
    async def models(web: Any, request: Any) -> Any:
        return web.json(pipeline.models_doc())

    @app.page("/models/predict")
    class Predict(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await request.json()
                rows = body["features"]
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise TypeError("features must be a list of objects")
                if len(rows) > MAX_PREDICT_ROWS:
                    raise ValueError(f"at most {MAX_PREDICT_ROWS} rows per request")
                features = [
                    {str(k): float(v) for k, v in row.items() if isinstance(v, int | float)}
                    for row in rows
                ]
            except (ValueError, TypeError, KeyError) as exc:
                return self.json({"error": f"bad request: {exc}"}, status=400)
            return self.json(pipeline.predict(features))
