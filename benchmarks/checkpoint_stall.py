"""How long a checkpoint stalls the worker's event loop, with the models at their size caps.

The worker's models are built at their caps: both text models' hashed count tables full (a
flood of random words, ``TEXT__VOCABULARY_BUCKETS`` rows), the anomaly detector remembering
``ALERTS__ANOMALY_MAX_CUSTOMERS`` customers, a bandit over ``--arms`` offers, propensity and
segments trained; the shared snapshot also carries the intent LSTM's weights (the LSTM has its
own checkpoint file, written by its trainer, not by the worker's checkpoint). A probe task
sleeps 1 ms in a loop and records how late it wakes: the longest of those is the longest
stall of the event loop. In the same run, on the same models:

- **checkpoint, in the loop (before)**: ``ModelBundle.save`` called from the loop, as
  ``Pipeline.checkpoint`` did: pickle, sign, write, fsync, all in the loop;
- **checkpoint, off the loop (now)**: ``await ModelBundle.save_async``: pickled in the loop
  (the consistent copy), signed, written and fsynced in a worker thread;
- **share, signed in the loop (before)** and **share (now)**: one ``ModelSync`` publish round
  through Valkey; before, the snapshot was pickled and signed in the loop (here: the same
  round with ``asyncio.to_thread`` run inline), now it is pickled in the loop and signed (and
  a fetched snapshot checked and unpickled) in a thread;
- **River text models (before hashing)**: the River ``BagOfWords | MultinomialNB`` pair on
  the same number of random feedbacks: pickled size and time to pickle (in the loop), growing
  with every new word (``--flood``), where the hashed tables stay at their fixed size.

    streamscore bench checkpoint                 # 65,536 buckets, 100k customers, 5 repeats
    streamscore bench checkpoint --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import pickle
import random
import statistics
import string
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis
from river import feature_extraction, naive_bayes

from benchmarks import _report
from models.bundle import ModelBundle, SharedModels
from models.checkpoint import settings_key
from models.decisioning.bandit import LinUCB, context_vector
from models.intent.model import IntentNet
from models.online.sentiment import tokenize
from models.online.text import FeedbackText
from models.settings import AlertSettings, ModelSettings, TextSettings
from models.shared import SEP, SharedState
from models.sync import ModelSync
from streams.embedded import EmbeddedValkey

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)

_KEY = "bench-checkpoint-key"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamscore bench checkpoint", description=__doc__)
    p.add_argument("--buckets", type=int, default=TextSettings().vocabulary_buckets)
    p.add_argument("--customers", type=int, default=AlertSettings().anomaly_max_customers)
    p.add_argument("--arms", type=int, default=200, help="offers the bandit has learned")
    p.add_argument("--flood", type=int, default=2_000, help="random feedbacks for the River row")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", type=Path, default=None, help="checkpoint directory (a temp dir)")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of Valkey")
    p.add_argument("--out", type=Path, default=_report_dir())
    p.add_argument("--quick", action="store_true")
    return p


def _report_dir() -> Path:
    return Path(__file__).parent / "results"


def _random_text(rng: random.Random, words: int = 450) -> str:
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 8))) for _ in range(words)
    )[:4000]


def _full_text(buckets: int, rng: random.Random) -> tuple[FeedbackText, int]:
    """Text models whose every bucket holds counts: random feedback until the tables are full."""
    text = FeedbackText(TextSettings(vocabulary_buckets=buckets))
    n = 0
    while text.sentiment._model.n_terms < buckets or text.topics._model.n_terms < buckets:
        text.learn(_random_text(rng) + " parcel", rng.choice((1, 5)))
        n += 1
    return text, n


def _capped_bundle(args: argparse.Namespace, settings: ModelSettings) -> ModelBundle:
    rng = random.Random(0)
    text, n_text = _full_text(args.buckets, rng)
    bundle = ModelBundle(settings, text=text)
    anomaly = bundle.anomaly
    for i in range(args.customers):  # the per-customer state the detector keeps, at its cap
        anomaly._remember(f"customer-{i:07d}", 1_700_000_000.0 + i)
    d = len(context_vector({}, 0.0, 0, settings.n_segments, None, 0.0, False, False, 0.0))
    bandit = LinUCB(d)
    x = np.ones(d)
    for arm in range(args.arms):
        for _ in range(3):
            bandit.learn_one(f"offer-{arm}", x, 1.0)
    bundle.bandit = bandit
    for i in range(2_000):
        bundle.segments.assign({"spend_30d": float(i % 300), "clicks_24h": float(i % 17)})
        bundle.propensity.learn_one({"carts_1h": float(i % 3), "spend_30d": float(i)}, i % 5 == 0)
    logger.info("text tables filled by %d random feedbacks", n_text)
    return bundle


class _LSTMWeights:
    """The intent LSTM's shared weights (``IntentService.shared_state``), without a service."""

    def __init__(self) -> None:
        self.net = IntentNet(2)

    def shared_state(self) -> SharedState:
        state: SharedState = {
            f"intent.w{SEP}{k}": v.detach().numpy().astype(np.float64)
            for k, v in self.net.state_dict().items()
            if v.is_floating_point()
        }
        state["intent.finetunes"] = 0.0
        return state

    def load_shared_state(self, state: Any) -> None:
        return None

    @property
    def trainer(self) -> Any:
        return argparse.Namespace(accepted=0)


async def _stall(op: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(longest stall of the loop, seconds ``op`` took) while ``op`` runs."""
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.05)
    lags.clear()
    t0 = time.perf_counter()
    await op()
    took = time.perf_counter() - t0
    await asyncio.sleep(0.02)
    done.set()
    await task
    return max(lags, default=0.0), took


@contextlib.contextmanager
def _inline_threads() -> Iterator[None]:
    """``asyncio.to_thread`` runs its function in the loop: the code before it was used."""

    async def inline(fn: Callable[..., Any], /, *a: Any, **k: Any) -> Any:
        return fn(*a, **k)

    real = asyncio.to_thread
    asyncio.to_thread = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        asyncio.to_thread = real


def _river_row(n: int) -> dict[str, Any]:
    rng = random.Random(1)
    pair = [
        feature_extraction.BagOfWords(tokenizer=tokenize) | naive_bayes.MultinomialNB(1.0)
        for _ in range(2)
    ]
    for _ in range(n):
        text = _random_text(rng) + " parcel"
        pair[0].learn_one(text, rng.random() < 0.5)
        pair[1].learn_one(text, "delivery")
    t0 = time.perf_counter()
    size = len(pickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL))
    return {
        "mode": f"River text models after {n:,} random feedbacks (before hashing)",
        "max_stall_ms": round((time.perf_counter() - t0) * 1000.0, 1),  # pickled in the loop
        "duration_ms": None,
        "bytes": size,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-checkpoint-"))
    settings = ModelSettings(checkpoint_key=_KEY, checkpoint_dir=directory)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    bundle = _capped_bundle(args, settings)
    build_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []

    async def measure(mode: str, op: Callable[[], Awaitable[Any]], nbytes: int) -> None:
        stalls, took = [], []
        for _ in range(args.repeats):
            s, d = await _stall(op)
            stalls.append(s * 1000.0)
            took.append(d * 1000.0)
        rows.append(
            {
                "mode": mode,
                "max_stall_ms": round(max(stalls), 1),
                "median_max_stall_ms": round(statistics.median(stalls), 1),
                "duration_ms": round(statistics.median(took), 1),
                "bytes": nbytes,
            }
        )

    async def idle() -> None:
        await asyncio.sleep(0.2)

    async def in_loop() -> None:
        bundle.save(directory)

    async def off_loop() -> None:
        await bundle.save_async(directory)

    await measure("idle loop (no checkpoint)", idle, 0)
    await measure("checkpoint, in the loop (before)", in_loop, 0)
    await measure("checkpoint, off the loop (now)", off_loop, 0)
    ckpt = max(directory.glob("models-*.ckpt"), key=lambda p: p.name).stat().st_size
    rows[1]["bytes"] = rows[2]["bytes"] = ckpt
    last = bundle.last_save
    in_loop_ms = round(last.in_loop_s * 1000.0, 1) if last else None

    async with AsyncExitStack() as stack:
        url = args.redis_url or stack.enter_context(EmbeddedValkey()).url
        client = Redis.from_url(url)
        stack.push_async_callback(client.aclose)
        shared = SharedModels(bundle, _LSTMWeights())  # type: ignore[arg-type]
        sync = ModelSync(f"bench-{uuid.uuid4().hex[:6]}", settings_key(settings))
        await sync.start(client)
        await sync.sync(shared)

        async def share() -> None:
            bundle.segments.assign({"spend_30d": 1.0})  # something learned: a publish round
            await sync.sync(shared)

        async def share_in_loop() -> None:
            with _inline_threads():
                await share()

        await measure("share: one publish round, signed in the loop (before)", share_in_loop, 0)
        await measure("share: one publish round (now)", share, 0)
        rows[-1]["bytes"] = rows[-2]["bytes"] = sync.snapshot_bytes

    rows.append(_river_row(args.flood))
    by = {r["mode"]: r for r in rows}
    before = by["checkpoint, in the loop (before)"]["max_stall_ms"]
    now = by["checkpoint, off the loop (now)"]["max_stall_ms"]
    return {
        "buckets": args.buckets,
        "customers": args.customers,
        "arms": args.arms,
        "repeats": args.repeats,
        "build_s": round(build_s, 1),
        "checkpoint_in_loop_ms_now": in_loop_ms,
        "stall_ratio_before_over_now": round(before / now, 1) if now > 0 else None,
        "results": rows,
        "environment": _report.environment(),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    args = _parser().parse_args(argv)
    if args.quick:
        args.buckets, args.customers, args.arms = 4096, 2_000, 10
        args.flood, args.repeats = 50, 1
    doc = asyncio.run(run(args))
    cols = ["mode", "max_stall_ms", "median_max_stall_ms", "duration_ms", "bytes"]
    md = "\n".join(
        [
            f"# Event-loop stall during a checkpoint, models at their caps ({doc['buckets']:,} "
            f"text buckets, {doc['customers']:,} anomaly customers, {doc['arms']} bandit arms; "
            f"max over {doc['repeats']} repeats)",
            "",
            _report.markdown_table(doc["results"], cols),
            "",
            f"Longest loop stall of a checkpoint: x{doc['stall_ratio_before_over_now']} shorter "
            f"off the loop; its in-loop part (pickling) took {doc['checkpoint_in_loop_ms_now']} ms "
            "the last time. The River row is the text models before hashing: size and pickle "
            "time grow with every new word.",
        ]
    )
    _report.write(args.out, "checkpoint_stall", doc, md)
    _report.plot_bars(
        args.out / "checkpoint_stall.png",
        {r["mode"]: r["max_stall_ms"] for r in doc["results"]},
        "Longest event-loop stall (ms)",
        "ms",
    )
    return 0
