"""Stateful, micro-batched serving of the intent LSTM.

Each click advances its session's ``(h, c)`` by one LSTM step; steps of many sessions run as
one forward pass (the way Triton's sequence batcher does it). Two entry points:

* ``step_many(steps)``: synchronous, for a caller that already holds a batch (the Faust agent
  processing a fetched batch of events). Steps of the same session are applied in order.
* ``await step(step)``: gathers steps from concurrent callers and flushes at ``max_batch`` or
  after ``max_wait_ms``, then hands each caller its own result.

With a ``log`` (``features.session_log.SessionLog``), every batch appends its steps to the
session's bounded Redis list and, in the same round trip, reads the lists of sessions that
have no state here (new partition after a rebalance, evicted, restarted worker); those are
replayed first, so the intent equals the one without the rebalance. On CUDA, fixed-size
batches run as captured CUDA graphs.

>>> import torch
>>> torch.manual_seed(0) and None
>>> from models.intent.model import IntentEncoder, IntentNet, IntentStep
>>> from models.settings import IntentSettings
>>> enc = IntentEncoder()
>>> b = IntentBatcher(IntentNet(enc.n_numeric, hidden_size=8), enc,
...                   IntentSettings(device="cpu", max_sessions=10))
>>> out = b.step_many([IntentStep("c1", "s1", 1e9, "view", "shoes", "i1"),
...                    IntentStep("c2", "s7", 1e9, "search", "bags", "i2"),
...                    IntentStep("c1", "s1", 1e9 + 5, "add_to_cart", "shoes", "i1", 30.0)])
>>> [sorted(o) for o in out][0]
['abandon', 'browse', 'purchase']
>>> len(b.slots), int(b.slots.position[b.slots.row(("c1", "s1"))])
(2, 2)
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final, Protocol

import numpy as np
import torch

from models.intent.model import (
    INTENT_LABELS,
    EncodedSteps,
    IntentEncoder,
    IntentNet,
    IntentStep,
    SessionKey,
    resolve_device,
)
from models.intent.slots import SlotTable
from models.settings import IntentSettings

__all__ = ["IntentBatcher", "SessionHistory"]

logger = logging.getLogger(__name__)

Records = Mapping[Any, Sequence[Sequence[Any]]]

_session_key: Final = operator.attrgetter("customer_id", "session_id")  # IntentStep.session_key
_ABANDON: Final = INTENT_LABELS.index("abandon")


class SessionHistory(Protocol):
    """Where sessions' recent steps are kept (``features.session_log.SessionLog``).

    ``exchange`` appends ``(key, record)`` pairs and returns, for each key in ``read``, its
    records as they were *before* this append, oldest first; one round trip.
    """

    def exchange(
        self, appends: Sequence[tuple[SessionKey, Sequence[Any]]], read: Sequence[SessionKey]
    ) -> Records: ...

    async def aexchange(
        self, appends: Sequence[tuple[SessionKey, Sequence[Any]]], read: Sequence[SessionKey]
    ) -> Records: ...


class IntentBatcher:
    """Owns the net, the encoder and the slot table; turns clicks into intents."""

    def __init__(
        self,
        net: IntentNet,
        encoder: IntentEncoder,
        settings: IntentSettings | None = None,
        *,
        log: SessionHistory | None = None,
        version: str = "untrained",
    ) -> None:
        self.settings = settings if settings is not None else IntentSettings()
        self.encoder = encoder
        self.log = log
        self.version = version
        self.device = resolve_device(self.settings.device)
        self.net = net.to(self.device).eval()
        self.slots = SlotTable(
            self.settings.max_sessions,
            net.hidden_size,
            device=self.device,
            idle_s=self.settings.session_idle_minutes * 60.0,
        )
        self.steps = 0
        self.forwards = 0
        self.replayed_steps = 0
        self._lock = threading.RLock()  # forward passes vs. the trainer's weight swap
        self._pending: list[tuple[IntentStep, asyncio.Future[dict[str, float]]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._flush_lock: asyncio.Lock | None = None
        self._use_graphs = self.device.type == "cuda" and self.settings.cuda_graphs
        self._graphs: dict[int, _GraphStep] = {}

    # ------------------------------------------------------------------ synchronous side

    def missing(self, keys: Sequence[SessionKey]) -> list[SessionKey]:
        """Distinct keys of ``keys`` whose history must be read to run them.

        Those with no state here; or all of them when the batch holds more sessions than the
        slot table, since running it in parts evicts states it still needs.
        """
        distinct = list(dict.fromkeys(keys))
        if len(distinct) > self.slots.capacity:
            return distinct
        return [k for k in distinct if k not in self.slots]

    def step_many(
        self,
        steps: Sequence[IntentStep],
        *,
        history: Mapping[SessionKey, Sequence[IntentStep]] | None = None,
    ) -> list[dict[str, float]]:
        """Advance each step's session by one step, in order; one result per step.

        ``history``: earlier steps of sessions that may have no state here (oldest first);
        they are replayed before this batch. If ``history`` is None and the batcher has a
        ``log``, the log is written and read in one round trip instead.
        """
        if not steps:
            return []
        if history is None and self.log is not None:
            missing = self.missing([s.session_key for s in steps])
            records = self.log.exchange([(s.session_key, s.to_record()) for s in steps], missing)
            history = _steps_from_records(records)
        return self._apply(steps, history)

    def replay(self, history: Mapping[SessionKey, Sequence[IntentStep]]) -> int:
        """Rebuild the state of sessions absent here from their earlier steps."""
        with self._lock:
            todo = [s for k, ss in history.items() if k not in self.slots for s in ss]
            if todo:
                self._run(todo)
                self.replayed_steps += len(todo)
            return len(todo)

    def predict_proba_many(self, X: Sequence[IntentStep]) -> list[dict[Hashable, float]]:
        """The ``models.base.BatchModel`` side: same as ``step_many`` (stateful)."""
        return list(self.step_many(X))

    def abandon_rise(self, key: SessionKey) -> float:
        """How much ``abandon`` rose at the session's last step (0.0 if unknown)."""
        r = self.slots.row(key)
        if r is None:
            return 0.0
        rise = float(self.slots.last_abandon[r] - self.slots.prev_abandon[r])
        return 0.0 if math.isnan(rise) else rise  # NaN: fewer than two steps

    def end_session(self, key: SessionKey) -> bool:
        """Free a finished session's state (e.g. on its purchase)."""
        with self._lock:
            return self.slots.discard(key)

    def reset(self, keep: Callable[[SessionKey], bool] | None = None) -> int:
        """Drop states (all, or those ``keep`` rejects); call it when partitions are revoked,
        so a session that comes back later is rebuilt from the log, not from a stale state."""
        with self._lock:
            drop = [k for k in self.slots.sessions() if keep is None or not keep(k)]  # type: ignore[arg-type]
            for k in drop:
                self.slots.discard(k)
            return len(drop)

    def expire(self, now: float) -> list[Hashable]:
        """Free sessions idle longer than ``session_idle_minutes`` at event time ``now``."""
        with self._lock:
            return self.slots.expire(now)

    def swap_weights(self, state: Mapping[str, torch.Tensor], version: str) -> None:
        """Hot-swap weights in place (captured CUDA graphs stay valid); states are kept."""
        with self._lock, torch.no_grad():
            own = self.net.state_dict()
            if set(own) != set(state):
                raise ValueError("state dict does not match the serving net's parameters")
            for name, tensor in own.items():
                tensor.copy_(state[name])
            previous, self.version = self.version, version
        logger.info("intent model hot-swapped: %s -> %s", previous, version)

    def state_dict_copy(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the serving weights (for the background trainer)."""
        with self._lock:
            return {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    # ------------------------------------------------------------------ asynchronous side

    async def step(self, step: IntentStep) -> dict[str, float]:
        """Queue one step; resolves when its micro-batch has run."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, float]] = loop.create_future()
        self._pending.append((step, fut))
        if len(self._pending) >= self.settings.max_batch:
            self._schedule_flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.settings.max_wait_ms / 1000.0, self._on_timer)
        return await fut

    async def astep_many(self, steps: Sequence[IntentStep]) -> list[dict[str, float]]:
        """``step_many`` with the log's round trip awaited (an asyncio Redis client)."""
        if not steps:
            return []
        history = None
        if self.log is not None:
            missing = self.missing([s.session_key for s in steps])
            records = await self.log.aexchange(
                [(s.session_key, s.to_record()) for s in steps], missing
            )
            history = _steps_from_records(records)
        return self._apply(steps, history)

    async def flush(self) -> None:
        """Run whatever is queued now and wait for in-flight flushes."""
        if self._pending:
            self._schedule_flush()
        while self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush_batch(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_batch(
        self, batch: list[tuple[IntentStep, asyncio.Future[dict[str, float]]]]
    ) -> None:
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:  # batches apply in arrival order, even around awaits
            try:
                results = await self.astep_many([s for s, _ in batch])
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
        for (_, fut), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)

    # ------------------------------------------------------------------ the forward pass

    def _apply(
        self,
        steps: Sequence[IntentStep],
        history: Mapping[SessionKey, Sequence[IntentStep]] | None,
    ) -> list[dict[str, float]]:
        with self._lock:
            keys = list(map(_session_key, steps))
            distinct = list(dict.fromkeys(keys))
            cap = self.slots.capacity
            if len(distinct) <= cap:
                # A batch must not evict its own sessions. One ``acquire`` never does; a
                # replay, or a first wave in several chunks, acquires in more than one.
                if history or len(distinct) > self.settings.max_batch:
                    self.slots.touch(distinct)
                if history:
                    self.replay(history)
                return self._run(steps, keys, one_wave=len(distinct) == len(keys))
            # More sessions than slots: run them in parts of at most ``cap`` sessions, each
            # session whole in one part, rebuilding each part's states from the history.
            part_of = {k: i // cap for i, k in enumerate(distinct)}
            out: list[dict[str, float]] = [{}] * len(steps)
            for part in range((len(distinct) + cap - 1) // cap):
                idx = [i for i, k in enumerate(keys) if part_of[k] == part]
                part_keys = distinct[part * cap : (part + 1) * cap]
                self.slots.touch(part_keys)
                if history:
                    self.replay({k: history[k] for k in part_keys if k in history})
                results = self._run([steps[i] for i in idx], [keys[i] for i in idx])
                for i, res in zip(idx, results, strict=True):
                    out[i] = res
            return out

    def _run(
        self,
        steps: Sequence[IntentStep],
        keys: Sequence[SessionKey] | None = None,
        *,
        one_wave: bool = False,
    ) -> list[dict[str, float]]:
        """Run ``steps`` (their session ``keys``; ``one_wave``: all distinct) in order."""
        if keys is None:
            keys = list(map(_session_key, steps))
        size = self.settings.max_batch
        with torch.inference_mode():
            if one_wave and len(steps) <= size:  # the common case: one forward pass
                out = self._forward(steps, keys)
            else:
                out = self._run_waves(steps, keys, size)
        self.steps += len(steps)
        return out

    def _run_waves(
        self, steps: Sequence[IntentStep], keys: Sequence[SessionKey], size: int
    ) -> list[dict[str, float]]:
        # Wave w holds each session's w-th step of this batch: one step per session per pass.
        seen: dict[SessionKey, int] = {}
        waves: list[list[int]] = []
        for i, k in enumerate(keys):
            w = seen.get(k, 0)
            seen[k] = w + 1
            if w == len(waves):
                waves.append([])
            waves[w].append(i)
        out: list[dict[str, float]] = [{}] * len(steps)
        for wave in waves:
            for lo in range(0, len(wave), size):
                chunk = wave[lo : lo + size]
                results = self._forward([steps[i] for i in chunk], [keys[i] for i in chunk])
                for i, res in zip(chunk, results, strict=True):
                    out[i] = res
        return out

    def _forward(
        self, batch: Sequence[IntentStep], keys: Sequence[SessionKey]
    ) -> list[dict[str, float]]:
        """One LSTM step for each of ``batch`` (distinct sessions ``keys``). Per step, Python
        only reads the step's fields and builds its result; the rest is whole-batch arrays."""
        slots = self.slots
        rows = np.array(slots.acquire(keys)[0], dtype=np.int64)
        ids, numeric, ts = self.encoder.encode_arrays(
            batch, prev_ts=slots.last_ts[rows], positions=slots.position[rows]
        )
        idx = torch.from_numpy(rows)
        packed = torch.from_numpy(ids)
        x = EncodedSteps(packed[0], packed[1], packed[2], torch.from_numpy(numeric))
        graph = self._graph_for(len(batch)) if self._use_graphs else None
        if graph is not None:
            probs = graph.run(idx, x)
        else:
            if self.device.type != "cpu":
                x = x.to(self.device)
                idx = idx.to(self.device)
            logits, h, c = self.net.step(
                x, slots.h.index_select(0, idx), slots.c.index_select(0, idx)
            )
            slots.h.index_copy_(0, idx, h)
            slots.c.index_copy_(0, idx, c)
            probs = torch.softmax(logits, dim=-1).cpu()
        self.forwards += 1
        p = probs.numpy()
        slots.last_ts[rows] = ts
        slots.position[rows] += 1
        slots.prev_abandon[rows] = slots.last_abandon[rows]
        slots.last_abandon[rows] = p[:, _ABANDON]
        purchase, abandon, browse = INTENT_LABELS
        return [{purchase: a, abandon: b, browse: c} for a, b, c in p.tolist()]

    def _graph_for(self, n: int) -> _GraphStep | None:
        size = 8
        while size < n:
            size *= 2
        graph = self._graphs.get(size)
        if graph is None:
            try:
                graph = _GraphStep(self.net, self.slots, size, self.encoder.n_numeric)
            except RuntimeError:
                logger.warning("CUDA graph capture failed; falling back to eager", exc_info=True)
                self._use_graphs = False
                return None
            self._graphs[size] = graph
        return graph


class _GraphStep:
    """One captured CUDA graph of gather -> LSTM step -> scatter -> softmax at a fixed size."""

    def __init__(self, net: IntentNet, slots: SlotTable, size: int, n_numeric: int) -> None:
        dev = slots.device
        self.size = size
        self.scratch = slots.scratch_row
        self.idx = torch.full((size,), self.scratch, dtype=torch.long, device=dev)
        self.x = EncodedSteps(
            torch.zeros(size, dtype=torch.long, device=dev),
            torch.zeros(size, dtype=torch.long, device=dev),
            torch.zeros(size, dtype=torch.long, device=dev),
            torch.zeros(size, n_numeric, device=dev),
        )
        self._host = EncodedSteps(
            torch.zeros(size, dtype=torch.long).pin_memory(),
            torch.zeros(size, dtype=torch.long).pin_memory(),
            torch.zeros(size, dtype=torch.long).pin_memory(),
            torch.zeros(size, n_numeric).pin_memory(),
        )
        self._host_idx = torch.full((size,), self.scratch, dtype=torch.long).pin_memory()

        def body() -> torch.Tensor:
            logits, h, c = net.step(
                self.x, slots.h.index_select(0, self.idx), slots.c.index_select(0, self.idx)
            )
            slots.h.index_copy_(0, self.idx, h)
            slots.c.index_copy_(0, self.idx, c)
            return torch.softmax(logits, dim=-1)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm up on the scratch row only
                body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.probs = body()

    def run(self, rows: torch.Tensor, x: EncodedSteps) -> torch.Tensor:
        """``rows``: the batch's slot rows (CPU, long); ``x``: its encoding (CPU)."""
        n = rows.shape[0]
        host = self._host
        self._host_idx.fill_(self.scratch)
        self._host_idx[:n] = rows
        for dst, src in zip(
            (host.actions, host.categories, host.items, host.numeric),
            (x.actions, x.categories, x.items, x.numeric),
            strict=True,
        ):
            dst.zero_()
            dst[:n] = src
        self.idx.copy_(self._host_idx, non_blocking=True)
        for dst, src in zip(
            (self.x.actions, self.x.categories, self.x.items, self.x.numeric),
            (host.actions, host.categories, host.items, host.numeric),
            strict=True,
        ):
            dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.probs[:n].cpu()


def _steps_from_records(records: Records) -> dict[SessionKey, list[IntentStep]]:
    out: dict[SessionKey, list[IntentStep]] = {}
    for key, recs in records.items():
        k = (str(key[0]), str(key[1]))
        out[k] = [IntentStep.from_record(k, r) for r in recs]
    return out
