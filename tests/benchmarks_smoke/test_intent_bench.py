"""The intent batching benchmark runs end to end (``--quick``) and writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.intent_batching import main


def test_intent_batching_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "intent_batching.json").read_text())
    assert (tmp_path / "intent_batching.png").stat().st_size > 0
    assert [r["batch"] for r in result["step_many"]] == [1, 16, 64]
    assert all(r["steps_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in result["async_step"])
    assert [r["session_length"] for r in result["step_vs_rerun"]] == [10, 50]
    # Each path's rate as a share of the bare cell's and of the net's own, batch by batch.
    assert [r["batch"] for r in result["bare_lstm_cell_32_64"]] == [1, 16, 64]
    assert [r["batch"] for r in result["net_forward"]] == [1, 16, 64]
    for key in ("step_many", "async_step"):
        assert all(r["of_bare_cell"] > 0 and r["of_net_forward"] > 0 for r in result[key])
    out = capsys.readouterr().out
    assert "steps/s" in out and "of bare" in out
