"""Benchmark outputs: JSON, PNG plots and a markdown summary under ``benchmarks/results/``."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

__all__ = [
    "environment",
    "load_avg",
    "markdown_table",
    "plot_bars",
    "plot_cdfs",
    "plot_lines",
    "source",
    "write",
]


def environment() -> dict[str, Any]:
    """Where the figures were taken (they depend on it)."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "load_avg_1m": round(psutil.getloadavg()[0], 2),
        "broker": "Tansu (embedded, memory storage)",
        "redis": "Valkey (embedded)",
    }


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages now: how busy the shared machine was."""
    return [round(x, 2) for x in psutil.getloadavg()]


def source() -> dict[str, Any]:
    """The commit measured and how many tracked files differed from it (work in progress)."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            done = subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "files_changed": len(changed)}


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write(out: Path, name: str, doc: Mapping[str, Any], summary_md: str) -> None:
    """``<name>.json`` and ``<name>.md`` under ``out``; prints the summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=_default) + "\n")
    (out / f"{name}.md").write_text(summary_md + "\n")
    print(summary_md)
    print(f"\nwrote {out / (name + '.json')}, {out / (name + '.md')}")


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cdfs(
    path: Path, series: Mapping[str, np.ndarray], title: str, xlabel: str = "latency (ms)"
) -> None:
    """One empirical CDF per series, log x axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values in series.items():
        if values.size == 0:
            continue
        x = np.sort(values)
        y = np.arange(1, x.size + 1) / x.size
        ax.plot(np.maximum(x, 1e-3), y, label=label, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of events")
    ax.axhline(0.99, color="grey", lw=0.5, ls="--")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lines(
    path: Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(
    path: Path, values: Mapping[str, float], title: str, ylabel: str, horizontal: bool = True
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels, vals = list(values), list(values.values())
    if horizontal:
        ax.barh(labels, vals)
        ax.set_xlabel(ylabel)
        ax.invert_yaxis()
    else:
        ax.bar(labels, vals)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x" if horizontal else "y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
