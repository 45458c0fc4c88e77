"""One model per deployment: the workers merge what they learned through Redis.

Every worker learns online from its own partitions, as before, and every
``MODELS__SYNC_EVERY_S`` (5 s) runs ``ModelSync.sync``:

1. read the deployment's generation (one GET); if nobody published since this worker last
   merged and it learned nothing, stop there;
2. otherwise fetch the deployment's snapshot (a signed blob: ``models.checkpoint`` format,
   HMAC-checked before anything is unpickled), and merge: the snapshot plus what this worker
   learned since its last merge, ``current + (local - base)`` (``models/shared.py``);
3. publish the merged state as the next generation with a compare-and-set script (it fails if
   another worker published first: fetch again, merge again);
4. serve the merged models from now on; learning that happened during the round trips stays
   this worker's to push next time.

So all workers serve the same models, at most one interval apart; ``model_version`` is
``v<generation>+<updates since>`` with one generation counter for the deployment; a starting
worker (a restart, a redeploy, a scale-up) adopts the newest snapshot before it handles an
event; a worker that dies loses what it learned since its last merge (at most one interval).

Redis keys, under one hash tag so the compare-and-set runs on one Redis Cluster node:
``<prefix>:{models}:snapshot`` (the signed blob, its generation in the header) and
``<prefix>:{models}:generation``.

The event loop pickles the merged state (a consistent copy, as nothing learns meanwhile);
signing it, checking a fetched snapshot's signature and unpickling it run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections.abc import Mapping
from typing import Any, Final, Protocol

from features.scripts import ScriptStore
from models.checkpoint import CheckpointError, pickled, seal, verified
from models.shared import SharedState, merge

__all__ = ["DeploymentModels", "ModelSync"]

logger = logging.getLogger(__name__)

# KEYS: snapshot, generation; ARGV: expected generation, new generation, blob.
# -1 when published, else the generation found (another worker published first).
_PUBLISH: Final = """
local found = tonumber(redis.call('GET', KEYS[2]) or '0')
if found ~= tonumber(ARGV[1]) then return found end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
return -1
"""

_MAX_ATTEMPTS: Final = 10


class DeploymentModels(Protocol):
    """What ``ModelSync`` needs from the worker's models (``models.bundle.SharedModels``)."""

    @property
    def generation(self) -> int: ...

    def shared_state(self) -> SharedState: ...

    def load_shared_state(self, state: Mapping[str, Any]) -> None: ...

    def settle(self, state: SharedState) -> SharedState: ...

    def updates(self) -> int: ...

    def adopt(self, generation: int) -> None: ...


class ModelSync(ScriptStore):
    """Merges this worker's models with the deployment's through Redis (module docstring)."""

    what = "shared models"
    scripts = {"publish": _PUBLISH}

    def __init__(self, key_prefix: str, key: bytes) -> None:
        super().__init__()
        self.snapshot_key = f"{key_prefix}:{{models}}:snapshot"
        self.generation_key = f"{key_prefix}:{{models}}:generation"
        self._key = key
        self.generation = 0  # the deployment generation these models last merged with
        self.digest = ""  # SHA-256 of that generation's snapshot
        self._base: SharedState | None = None
        self._updates = -1
        self.published = 0
        self.adopted = 0
        self.conflicts = 0
        self.last_ms = 0.0
        self.snapshot_bytes = 0

    async def remote_generation(self) -> int:
        client = self._require()
        raw = await self._call(lambda: client.get(self.generation_key))
        return int(raw) if raw else 0

    async def fetch(self) -> tuple[int, SharedState, str] | None:
        """The deployment's snapshot: generation, state and digest (None if there is none)."""
        client = self._require()
        blob = await self._call(lambda: client.get(self.snapshot_key))
        if not blob:
            return None
        # Checking the signature and unpickling touch only the fetched bytes: off the loop.
        state, header, digest = await asyncio.to_thread(
            _opened, blob, self._key, f"Redis {self.snapshot_key}"
        )
        if not isinstance(state, dict):
            raise CheckpointError(f"Redis {self.snapshot_key} does not hold shared models")
        self.snapshot_bytes = len(blob)
        return int(header["meta"]["generation"]), state, digest

    async def _publish(self, expected: int, generation: int, state: SharedState) -> int:
        payload = pickled(state)  # in the loop: a consistent copy; signing it is not
        blob, digest = await asyncio.to_thread(_sealed, payload, self._key, generation)
        client = self._require()
        sha = self.shas["publish"]
        keys = (self.snapshot_key, self.generation_key)
        found = await self._call(
            lambda: client.evalsha(sha, 2, *keys, expected, generation, blob)  # type: ignore[misc]
        )
        if int(found) == -1:
            self.snapshot_bytes = len(blob)
            self.digest = digest
        return int(found)

    async def sync(self, models: DeploymentModels) -> str:
        """One merge round; ``"published"``, ``"adopted"`` or ``"idle"``."""
        t0 = time.perf_counter()
        first = self._base is None
        learned = models.updates() != self._updates
        found = await self.remote_generation()
        if not first and not learned and found == self.generation:
            return "idle"
        # What was learned during that await is in `local` and counts as learned.
        local = models.shared_state()
        before = models.updates()
        learned = learned or before != self._updates
        for _ in range(_MAX_ATTEMPTS):
            current: SharedState | None
            digest = self.digest
            if found == 0:
                current = None
            elif found == self.generation and self._base is not None:
                current = self._base  # nobody published since our last merge
            else:
                fetched = await self.fetch()
                if fetched is None:
                    current, found = None, 0
                else:
                    found, current, digest = fetched
            if current is not None and first and found >= models.generation:
                merged, publish = current, False  # a starting worker adopts the deployment's
            elif current is None or first:
                merged, publish = local, True  # nothing in Redis (or older than ours)
            elif learned:
                merged, publish = merge(current, local, self._base or {}), True
            else:
                merged, publish = current, False
            generation = found
            if publish:
                merged = models.settle(merged)
                generation = max(found, self.generation, models.generation) + 1
                got = await self._publish(found, generation, merged)
                if got != -1:
                    self.conflicts += 1
                    found = got
                    continue
                self.published += 1
            else:
                self.adopted += 1
                self.digest = digest
            self._adopt(models, merged, generation, local, before)
            self.last_ms = (time.perf_counter() - t0) * 1000.0
            logger.debug(
                "models %s generation %d in %.1f ms",
                "published" if publish else "adopted",
                generation,
                self.last_ms,
            )
            return "published" if publish else "adopted"
        raise RuntimeError(f"model merge lost {_MAX_ATTEMPTS} races in a row; retried next tick")

    def _adopt(
        self,
        models: DeploymentModels,
        merged: SharedState,
        generation: int,
        local: SharedState,
        before: int,
    ) -> None:
        # No await from here on: nothing learns while the models are swapped.
        concurrent = models.updates() != before  # learned during the round trips
        now = models.shared_state() if concurrent else None
        models.load_shared_state(merged)
        self._base = models.shared_state()
        if now is not None:
            models.load_shared_state(merge(self._base, now, local))  # still ours to push
        models.adopt(generation)
        self.generation = generation
        self._updates = -1 if now is not None else models.updates()

    def stats(self) -> dict[str, Any]:
        return {
            "model_generation": self.generation,
            "model_digest": self.digest,
            "model_syncs_published": self.published,
            "model_syncs_adopted": self.adopted,
            "model_sync_conflicts": self.conflicts,
            "model_sync_ms": round(self.last_ms, 2),
            "model_snapshot_bytes": self.snapshot_bytes,
        }


# A snapshot is stored deflated after this prefix: the hashed text tables are mostly zeros
# (3.7 MB as pickled, tens of KB deflated), and every worker fetches it every few seconds.
_DEFLATED: Final = b"SSZLIB01"
_MAX_SNAPSHOT: Final = 1 << 30  # inflated bytes: a bound on what a corrupt value can cost


def _sealed(payload: bytes, key: bytes, generation: int) -> tuple[bytes, str]:
    """The signed snapshot of a pickled state, deflated, and its SHA-256 (in a thread)."""
    signed = seal(payload, key=key, version=f"v{generation}", meta={"generation": generation})
    blob = _DEFLATED + zlib.compress(signed, 1)
    return blob, hashlib.sha256(blob).hexdigest()


def _opened(blob: bytes, key: bytes, source: str) -> tuple[Any, dict[str, Any], str]:
    """A snapshot's state and header, inflated and signature checked, and its SHA-256 (in a
    thread). Snapshots stored before deflating (no prefix) are read as they are."""
    signed = blob
    if blob.startswith(_DEFLATED):
        inflate = zlib.decompressobj()
        try:
            signed = inflate.decompress(blob[len(_DEFLATED) :], _MAX_SNAPSHOT)
        except zlib.error as exc:
            raise CheckpointError(f"{source} is not a readable snapshot: {exc}") from exc
        if inflate.unconsumed_tail:
            raise CheckpointError(f"{source} inflates to over {_MAX_SNAPSHOT} bytes")
    state, header = verified(signed, key=key, source=source)
    return state, header, hashlib.sha256(blob).hexdigest()
