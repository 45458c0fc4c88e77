"""Traffic in and out of the broker for the CLI: a paced producer and an output watcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.settings import Settings
from streams.simulator import SimEvent

__all__ = ["OutputWatcher", "produce_paced"]

logger = logging.getLogger(__name__)


def _topic_map(settings: Settings) -> dict[str, str]:
    t = settings.topics
    return {"clicks": t.clicks, "purchases": t.purchases, "feedback": t.feedback}


async def produce_paced(
    settings: Settings,
    events: Iterable[SimEvent],
    *,
    rate: float,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_sent: Callable[[SimEvent, float], None] | None = None,
) -> int:
    """Send ``events`` at ``rate`` events/s until exhausted, ``duration`` or ``stop``.

    Returns how many were sent (acknowledged by the broker).
    """
    topics = _topic_map(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=2, acks=1
    )
    await producer.start()
    sent = 0
    pending: deque[asyncio.Future[object]] = deque()
    start = time.monotonic()
    deadline = start + duration if duration is not None else None
    try:
        for ev in events:
            if stop is not None and stop.is_set():
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(due - now)
            fut = await producer.send(topics.get(ev.topic, ev.topic), ev.value, key=ev.key)
            if on_sent is not None:
                on_sent(ev, time.time())
            pending.append(fut)
            sent += 1
            while len(pending) > 10_000:
                await pending.popleft()
        await producer.flush()
        for fut in pending:
            await fut
    finally:
        await producer.stop()
    return sent


@dataclass
class OutputWatcher:
    """Counts what the worker publishes (offers, alerts, dead letters) and keeps samples."""

    settings: Settings
    counts: Counter[str] = field(default_factory=Counter)
    alert_types: Counter[str] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    samples: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=3))
    _consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        t = self.settings.topics
        self._consumer = AIOKafkaConsumer(
            t.offers,
            t.alerts,
            t.dead_letters,
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await self._consumer.start()
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    for r in records:
                        self._count(tp.topic, r.value)
        finally:
            await self._consumer.stop()

    def _count(self, topic: str, value: bytes | None) -> None:
        t = self.settings.topics
        doc = orjson.loads(value) if value else {}
        if topic == t.offers:
            self.counts["offers"] += 1
            self.samples.append(doc)
        elif topic == t.alerts:
            self.counts["alerts"] += 1
            self.alert_types[str(doc.get("type"))] += 1
        else:
            self.counts["dead_letters"] += 1
            self.dead_reasons[str(doc.get("reason", ""))[:40]] += 1
