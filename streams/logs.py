"""Logging setup for the service: plain text or one JSON object per line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

__all__ = ["JsonFormatter", "event_fields", "setup_logging"]

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; extra fields (e.g. ``event_id``) are kept."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(level: str = "INFO", *, json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def event_fields(topic: str, partition: int, offset: int, value: bytes | None) -> dict[str, Any]:
    """Log ``extra=`` fields that identify an input record, ``event_id`` when it has one.

    For records that failed validation: the id is read best-effort from the raw bytes.

    >>> event_fields("clicks", 0, 7, b'{"event_id": "e-1", "action": "teleport"}')
    {'topic': 'clicks', 'partition': 0, 'offset': 7, 'event_id': 'e-1'}
    >>> event_fields("clicks", 0, 8, b"{not json")["event_id"] is None
    True
    """
    event_id: str | None = None
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("event_id"), str):
        event_id = doc["event_id"][:128]
    return {"topic": topic, "partition": partition, "offset": offset, "event_id": event_id}
