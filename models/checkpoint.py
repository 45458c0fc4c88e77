"""Signed model checkpoints: refuse to unpickle anything this service did not write.

A checkpoint file is::

    MAGIC (8 bytes) | header length (4 bytes, big-endian) | header (JSON) | HMAC (32) | payload

The payload is a pickle of the object; the header holds the model version, the creation time,
free-form metadata and the payload's SHA-256. The HMAC-SHA256, under the configured key, covers
the magic, the header and the payload, and ``load_checkpoint`` checks it with
``hmac.compare_digest`` before parsing the header or unpickling anything. Writes are atomic
(temporary file in the same directory, fsync, ``os.replace``), so a crash leaves the old file.

``save_checkpoint`` is ``pickled`` (the object's bytes: a consistent copy, taken where nothing
mutates it, e.g. in the event loop), then ``seal`` (hash, sign) and ``write_atomically``, which
touch only those bytes and may run in another thread (``hashlib`` and file I/O release the GIL).

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "m.ckpt"
>>> save_checkpoint(path, {"w": [1.0, 2.0]}, key=b"k1", version="v1", meta={"n": 2})
>>> obj, header = load_checkpoint(path, key=b"k1")
>>> obj, header["version"], header["meta"]
({'w': [1.0, 2.0]}, 'v1', {'n': 2})
>>> load_checkpoint(path, key=b"another key")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
models.checkpoint.CheckpointError: checkpoint ... has a bad signature: it was modified or signed ...
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import logging
import os
import pickle
import struct
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from models.settings import ModelSettings

__all__ = [
    "MAGIC",
    "CheckpointError",
    "load_checkpoint",
    "pickled",
    "save_checkpoint",
    "seal",
    "settings_key",
    "signed_bytes",
    "verified",
    "write_atomically",
]

logger = logging.getLogger(__name__)

MAGIC: Final = b"SSCKPT01"
_LENGTH: Final = struct.Struct(">I")
_MAC_SIZE: Final = hashlib.sha256().digest_size
_MAX_HEADER: Final = 1 << 20
# Modules whose classes checkpoints pickle, under the names they had in an earlier layout:
# a checkpoint written before a move still loads (without this, a worker would refuse to
# start after the upgrade rather than silently lose its models).
_MOVED_MODULES: Final = {
    "models.propensity": "models.online.propensity",
    "models.segments": "models.online.segments",
    "models.sentiment": "models.online.sentiment",
    "models.text": "models.online.text",
    "models.replies": "models.online.replies",
    "models.transform": "models.online.transform",
    "models.anomaly": "models.alerts.anomaly",
}


class CheckpointError(Exception):
    """A checkpoint that is unsigned, tampered with, signed with another key, or unreadable."""


class _Unpickler(pickle.Unpickler):
    """Finds classes that moved since the checkpoint was written (``_MOVED_MODULES``)."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED_MODULES.get(module, module), name)


def settings_key(settings: ModelSettings) -> bytes:
    """The HMAC key from the settings' ``checkpoint_key`` secret."""
    return settings.checkpoint_key.get_secret_value().encode()


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or not key:
        raise ValueError("the checkpoint key must be non-empty bytes")


def _mac(key: bytes, head: bytes, payload: bytes) -> bytes:
    mac = hmac.new(key, head, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def pickled(obj: Any) -> bytes:
    """The payload of a checkpoint: ``obj`` pickled (run it where ``obj`` is not changing)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def seal(payload: bytes, *, key: bytes, version: str, meta: dict[str, Any]) -> bytes:
    """A pickled payload, signed: the bytes of a checkpoint file. Safe in a worker thread."""
    _check_key(key)
    now = time.time()
    header = orjson.dumps(
        {
            "format": 1,
            "version": version,
            "created": datetime.fromtimestamp(now, UTC).isoformat(),
            "created_ts": now,
            "meta": meta,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload),
        }
    )
    head = MAGIC + _LENGTH.pack(len(header)) + header
    return head + _mac(key, head, payload) + payload


def signed_bytes(obj: Any, *, key: bytes, version: str, meta: dict[str, Any]) -> bytes:
    """``obj`` pickled and signed: the bytes of a checkpoint file (also kept in Redis)."""
    _check_key(key)
    return seal(pickled(obj), key=key, version=version, meta=meta)


def save_checkpoint(
    path: Path, obj: Any, *, key: bytes, version: str, meta: dict[str, Any]
) -> None:
    """Pickle ``obj`` and write it, signed, to ``path`` atomically."""
    data = signed_bytes(obj, key=key, version=version, meta=meta)
    write_atomically(path, data)
    logger.info("checkpoint %s written: version %s, %d bytes", path, version, len(data))


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` to ``path``: a temporary file beside it, fsync, rename, fsync the directory.
    A crash leaves the old file or the new one, never a part. Safe in a worker thread."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    logger.debug("%s written: %d bytes", path, len(data))


def load_checkpoint(path: Path, *, key: bytes) -> tuple[Any, dict[str, Any]]:
    """The object and header of a checkpoint, after its signature is verified."""
    _check_key(key)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return verified(data, key=key, source=str(path))


def verified(data: bytes, *, key: bytes, source: str) -> tuple[Any, dict[str, Any]]:
    """The object and header of ``signed_bytes`` output, after its signature is verified;
    ``source`` names where the bytes came from in errors."""
    _check_key(key)
    path = source
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size:
        raise CheckpointError(f"{path} is not a signed streamscore checkpoint (bad magic)")
    (header_len,) = _LENGTH.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    if header_len > _MAX_HEADER or start + header_len + _MAC_SIZE > len(data):
        raise CheckpointError(f"checkpoint {path} is truncated or malformed")
    head = data[: start + header_len]
    mac = data[start + header_len : start + header_len + _MAC_SIZE]
    payload = data[start + header_len + _MAC_SIZE :]
    if not hmac.compare_digest(mac, _mac(key, head, payload)):
        raise CheckpointError(
            f"checkpoint {path} has a bad signature: it was modified or signed with another key"
        )
    # Signed by us from here on: the header and payload are what signed_bytes wrote.
    try:
        header = orjson.loads(head[start:])
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable header: {exc}") from exc
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"checkpoint {path}: payload does not match its SHA-256")
    try:
        obj = _Unpickler(io.BytesIO(payload)).load()
    except Exception as exc:  # e.g. a class that no longer exists in this code version
        raise CheckpointError(f"checkpoint {path} cannot be unpickled: {exc!r}") from exc
    return obj, header


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
