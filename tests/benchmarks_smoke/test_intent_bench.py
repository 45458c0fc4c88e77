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
    assert "steps/s" in capsys.readouterr().out
