"""Benchmark: stateful micro-batched intent stepping vs. one event at a time vs. re-running.

Measures, in one run (baselines included):

1. a bare ``nn.LSTMCell(32, 64)`` step (the reference numbers of issue 4), and the serving
   net's own step on already-encoded tensors (state gather, step, state scatter, softmax: what
   ``step_many`` costs without its per-click Python), at each batch size below;
2. ``IntentBatcher.step_many`` (the agent's path: a fetched batch, encoding included) at
   batch 1/16/64/256/1024: session-steps/s, per-step latency (a step waits for its batch) and
   its rate as a share of the bare cell's and of the net's own at the same batch size;
3. ``await IntentBatcher.step`` with B concurrent sessions (each awaits its result, then sends
   its next click) and ``max_batch=B``: steps/s and per-step latency p50/p99 including the
   wait for the batch to fill or ``max_wait_ms`` to pass;
4. per-event cost of stepping vs. re-running the whole session so far, sessions of 10/50/200.

Writes ``intent_batching.json`` and ``intent_batching.png`` under ``--out`` and prints a table.

    python -m benchmarks.intent_batching            # full run, CPU, 1 thread
    python -m benchmarks.intent_batching --quick    # a few seconds (used by the smoke test)
    python -m benchmarks.intent_batching --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.intent.batcher import IntentBatcher
from models.intent.model import EncodedSteps, IntentEncoder, IntentNet, IntentStep
from models.intent.slots import SlotTable
from models.settings import IntentSettings

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)

_ACTIONS = ("view", "search", "add_to_cart", "remove_from_cart", "checkout_start")
_CATS = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery")


def _steps(n_sessions: int, n_rounds: int, seed: int = 0) -> list[list[IntentStep]]:
    """``n_rounds`` batches, each with one step of every one of ``n_sessions`` sessions."""
    rng = random.Random(seed)
    t = 1_700_000_000.0
    rounds = []
    for _ in range(n_rounds):
        batch = []
        for i in range(n_sessions):
            t += 0.01
            batch.append(
                IntentStep(
                    f"c{i}",
                    f"s{i}",
                    t,
                    rng.choice(_ACTIONS),
                    rng.choice(_CATS),
                    f"i{rng.randrange(5000)}",
                    round(rng.uniform(1, 300), 2),
                    {"prior_orders": float(i % 5), "prior_spend": 40.0 * (i % 7)},
                )
            )
        rounds.append(batch)
    return rounds


def _model(device: str) -> tuple[IntentNet, IntentEncoder, IntentSettings]:
    settings = IntentSettings(device=device)  # type: ignore[arg-type]
    enc = IntentEncoder(customer_features=settings.customer_features)
    torch.manual_seed(0)
    net = IntentNet(enc.n_numeric, hidden_size=settings.hidden_size)
    return net, enc, settings


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bare_cell(batch: int, seconds: float, device: str) -> dict[str, float]:
    cell = torch.nn.LSTMCell(32, 64).to(device).eval()
    x = torch.randn(batch, 32, device=device)
    h = c = torch.zeros(batch, 64, device=device)
    n = 0
    with torch.inference_mode():
        for _ in range(20):
            h, c = cell(x, (h, c))
        _sync(device)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                h, c = cell(x, (h, c))
            n += 10
        _sync(device)
        dt = time.perf_counter() - t0
    return {"batch": batch, "steps_per_s": n * batch / dt, "us_per_call": dt / n * 1e6}


def net_forward(batch: int, seconds: float, device: str) -> dict[str, float]:
    """The serving net's step on encoded tensors, with the slot table's gather and scatter
    and the softmax copied to the host: the floor of ``step_many`` at this batch size."""
    net, enc, _ = _model(device)
    net = net.to(device).eval()
    slots = SlotTable(batch + 8, net.hidden_size, device=device)
    steps = _steps(batch, 1, seed=batch)[0]
    x = enc.encode(steps, prev_ts=[None] * batch, positions=[0] * batch).to(device)
    idx = torch.arange(batch, device=device)
    n = 0

    def step() -> torch.Tensor:
        logits, h, c = net.step(x, slots.h.index_select(0, idx), slots.c.index_select(0, idx))
        slots.h.index_copy_(0, idx, h)
        slots.c.index_copy_(0, idx, c)
        return torch.softmax(logits, dim=-1).cpu()

    with torch.inference_mode():
        for _ in range(20):
            step()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                step()
            n += 10
        dt = time.perf_counter() - t0
    return {"batch": batch, "steps_per_s": n * batch / dt, "us_per_call": dt / n * 1e6}


def _with_shares(rows: list[dict[str, Any]], baselines: dict[str, list[dict[str, float]]]) -> None:
    """Add each row's rate as a share of each baseline's at the same batch size."""
    for name, base in baselines.items():
        rate = {r["batch"]: r["steps_per_s"] for r in base}
        for r in rows:
            if r["batch"] in rate:
                r[f"of_{name}"] = r["steps_per_s"] / rate[r["batch"]]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sync_batches(batch: int, seconds: float, device: str) -> dict[str, float]:
    net, enc, settings = _model(device)
    settings = settings.model_copy(update={"max_batch": max(batch, 1), "max_sessions": batch + 8})
    b = IntentBatcher(net, enc, settings)
    rounds = _steps(batch, max(4, min(400, int(20_000 / batch))), seed=batch)
    for r in rounds[:3]:
        b.step_many(r)  # warm-up (and CUDA graph capture)
    lat: list[float] = []
    n = 0
    t0 = time.perf_counter()
    i = 3
    while time.perf_counter() - t0 < seconds or len(lat) < 3:
        r = rounds[i % len(rounds)]
        t1 = time.perf_counter()
        b.step_many(r)
        lat.append(time.perf_counter() - t1)
        n += len(r)
        i += 1
    dt = time.perf_counter() - t0
    return {
        "batch": batch,
        "steps_per_s": n / dt,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
        "forwards": b.forwards,
    }


async def _async_batches(
    batch: int, seconds: float, device: str, max_wait_ms: float
) -> dict[str, float]:
    net, enc, settings = _model(device)
    settings = settings.model_copy(
        update={"max_batch": batch, "max_wait_ms": max_wait_ms, "max_sessions": batch + 8}
    )
    b = IntentBatcher(net, enc, settings)
    rounds = _steps(batch, max(4, min(400, int(20_000 / batch))), seed=batch)
    lat: list[float] = []
    stop = False

    async def client(j: int) -> int:
        k = 0
        while not stop:
            step = rounds[k % len(rounds)][j]
            t1 = time.perf_counter()
            await b.step(step)
            lat.append(time.perf_counter() - t1)
            k += 1
        return k

    tasks = [asyncio.ensure_future(client(j)) for j in range(batch)]
    await asyncio.sleep(min(0.2, seconds / 4))  # warm-up
    lat.clear()
    forwards0 = b.forwards
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    n = len(lat)
    dt = time.perf_counter() - t0
    forwards = b.forwards - forwards0
    stop = True
    await asyncio.gather(*tasks)
    await b.flush()
    return {
        "batch": batch,
        "max_wait_ms": max_wait_ms,
        "steps_per_s": n / dt,
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
        "mean_batch": n / max(1, forwards),
    }


def async_batches(
    batch: int, seconds: float, device: str, max_wait_ms: float = 2.0
) -> dict[str, float]:
    return asyncio.run(_async_batches(batch, seconds, device, max_wait_ms))


def step_vs_rerun(length: int, device: str, repeats: int) -> dict[str, float]:
    """Per event of a ``length``-click session: one step vs. re-running clicks 1..t."""
    net, enc, settings = _model(device)
    session = [s[0] for s in _steps(1, length, seed=length)]
    session = [
        IntentStep("c0", "s0", s.ts, s.action, s.category, s.item_id, s.price, s.customer)
        for s in session
    ]
    b = IntentBatcher(net, enc, settings.model_copy(update={"max_sessions": 16}))
    step_times = []
    for _ in range(repeats):
        b.reset()
        t0 = time.perf_counter()
        for s in session:
            b.step_many([s])
        step_times.append((time.perf_counter() - t0) / length)
    rerun_times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for t in range(1, length + 1):
                x = enc.encode_session(session[:t])
                x = EncodedSteps(
                    x.actions[None], x.categories[None], x.items[None], x.numeric[None]
                ).to(b.device)
                probs = torch.softmax(net.forward_sequence(x)[0, -1], -1).cpu()
                probs.tolist()
            rerun_times.append((time.perf_counter() - t0) / length)
    step_us = float(np.median(step_times)) * 1e6
    rerun_us = float(np.median(rerun_times)) * 1e6
    return {
        "session_length": length,
        "step_us_per_event": step_us,
        "rerun_us_per_event": rerun_us,
        "rerun_over_step": rerun_us / step_us,
    }


def run(quick: bool, device: str, out: Path, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    seconds = 0.15 if quick else 1.5
    batches = [1, 16, 64] if quick else [1, 16, 64, 256, 1024]
    lengths = [10, 50] if quick else [10, 50, 200]
    result: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "quick": quick,
        "model": {"hidden_size": 64, "input_size": _model(device)[0].input_size},
        "bare_lstm_cell_32_64": [bare_cell(b, seconds, device) for b in batches],
        "net_forward": [net_forward(b, seconds, device) for b in batches],
        "step_many": [sync_batches(b, seconds, device) for b in batches],
        "async_step": [async_batches(b, seconds, device) for b in batches],
        "step_vs_rerun": [step_vs_rerun(n, device, 2 if quick else 5) for n in lengths],
    }
    baselines = {
        "bare_cell": result["bare_lstm_cell_32_64"],
        "net_forward": result["net_forward"],
    }
    for key in ("net_forward", "step_many", "async_step"):
        _with_shares(result[key], {k: v for k, v in baselines.items() if k != key})
    out.mkdir(parents=True, exist_ok=True)
    (out / "intent_batching.json").write_text(json.dumps(result, indent=2))
    _plot(result, out / "intent_batching.png")
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("step_many", "step_many (agent batch)"),
        ("async_step", "await step (micro-batcher)"),
    ):
        rows = result[key]
        a1.plot([r["batch"] for r in rows], [r["steps_per_s"] for r in rows], "o-", label=label)
    for key, style, label in (
        ("bare_lstm_cell_32_64", "k--", "bare LSTMCell(32,64)"),
        ("net_forward", "k:", "the net's step on encoded tensors"),
    ):
        rows = result[key]
        a1.plot([r["batch"] for r in rows], [r["steps_per_s"] for r in rows], style, label=label)
    a1.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="session-steps/s",
        title=f"intent stepping on {result['device']}",
    )
    a1.legend(fontsize=8)
    rows = result["step_vs_rerun"]
    lens = [r["session_length"] for r in rows]
    a2.plot(lens, [r["step_us_per_event"] for r in rows], "o-", label="stateful step")
    a2.plot(lens, [r["rerun_us_per_event"] for r in rows], "s-", label="re-run whole session")
    a2.set(
        xscale="log",
        yscale="log",
        xlabel="session length (events)",
        ylabel="µs per event",
        title="per-event cost, batch 1",
    )
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"device={result['device']} ({result['device_name']}) "
        f"threads={result['threads']} torch={result['torch']}"
    ]
    lines.append(
        f"{'path':<12} {'batch':>6} {'steps/s':>12} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'of bare':>8} {'of net':>7}"
    )
    for key, name in (
        ("bare_lstm_cell_32_64", "bare cell"),
        ("net_forward", "net forward"),
        ("step_many", "step_many"),
        ("async_step", "async_step"),
    ):
        for r in result[key]:
            lat = (
                f"{r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f}" if "p50_ms" in r else f"{'':>9} {'':>9}"
            )
            shares = " ".join(
                f"{r[k]:>{w}.0%}" if k in r else f"{'':>{w}}"
                for k, w in (("of_bare_cell", 8), ("of_net_forward", 7))
            )
            lines.append(f"{name:<12} {r['batch']:>6} {r['steps_per_s']:>12,.0f} {lat} {shares}")
    lines.append(f"{'session len':>11} {'step µs/event':>14} {'rerun µs/event':>15} {'ratio':>7}")
    for r in result["step_vs_rerun"]:
        lines.append(
            f"{r['session_length']:>11} {r['step_us_per_event']:>14.1f} "
            f"{r['rerun_us_per_event']:>15.1f} {r['rerun_over_step']:>7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run(args.quick, device, args.out, args.threads)
    sys.stdout.write(_table(result) + "\n")
    sys.stdout.write(f"wrote {args.out / 'intent_batching.json'} and .png\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
