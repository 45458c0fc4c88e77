"""The demo, run as a user runs it: it says "learning" until the AUC means something, and ends
with the bandit's uplift over control and a decision log that ``streamscore evaluate`` reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_the_demo_ends_with_the_uplift_and_a_log_that_evaluate_reads(tmp_path: Path) -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--duration", "45", "--intent-events",
         "0", "--customers", "400", "--rate", "250"],
        capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    said = demo.stdout
    assert demo.returncode == 0, said + demo.stderr[-3000:]
    progress = [line for line in said.splitlines() if line.startswith("[")]
    assert progress and "AUC learning" in progress[0], said  # not "0.500" or "0.000"
    assert not re.search(r"AUC 0\.(000|500)\b", said), said
    assert "uplift" in said, said
    match = re.search(
        r"KEY=\$\(cat (\S+)\) streamscore evaluate --input (\S+) --checkpoint (\S+)", said
    )
    assert match, said
    key, log, checkpoints = (Path(g) for g in match.groups())
    assert key.stat().st_mode & 0o077 == 0, "the demo's key is readable by its user only"
    assert log.read_text().count("\n") > 0, "the demo's decision log has decisions"
    evaluate = subprocess.run(
        [sys.executable, "-m", "streams.cli", "evaluate", "--input", str(log),
         "--checkpoint", str(checkpoints), "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "STREAMSCORE_MODELS__CHECKPOINT_KEY": key.read_text()},
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr[-3000:]
    assert "uniform random" in evaluate.stdout
    assert "bandit (epsilon_greedy)" in evaluate.stdout, "the demo's own bandit is evaluated"
    assert (tmp_path / "eval" / "evaluation.json").exists()
