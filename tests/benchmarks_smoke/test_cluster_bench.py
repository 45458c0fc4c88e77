"""``streamscore bench cluster`` runs end to end at a tiny size and writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import bench_main

pytestmark = pytest.mark.timeout(120)


def test_cluster_quick(tmp_path: Path) -> None:
    assert bench_main(["cluster", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "redis_cluster.md").stat().st_size > 0
    assert (tmp_path / "redis_cluster.png").stat().st_size > 0
    doc = json.loads((tmp_path / "redis_cluster.json").read_text())
    rows = {(r["setup"], r["customers_per_batch"]): r for r in doc["results"]}
    assert rows["server", 50]["round_trips_per_batch"] == 1.0  # one pipeline
    assert rows["server", 50]["script_calls_per_batch"] == 1.0  # up to 64 customers a call
    # one call per hash slot on the cluster: 50 random customers fill ~50 slots on 3 nodes,
    # sent as one pipeline per node
    assert rows["cluster", 50]["script_calls_per_batch"] >= 40
    assert 1 <= rows["cluster", 50]["round_trips_per_batch"] <= 3.5
    assert rows["cluster", 50]["nodes_used"] == 3
    assert all(r["ms_per_batch_p99"] >= r["ms_per_batch_p50"] > 0 for r in rows.values())
