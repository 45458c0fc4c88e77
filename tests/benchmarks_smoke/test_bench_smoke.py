"""Each benchmark runs end to end at a tiny size and writes its JSON, PNG and markdown.

These prove the scripts work; the figures come from full runs (benchmarks/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import bench_main

pytestmark = pytest.mark.timeout(240)


def _load(out: Path, name: str) -> dict:
    assert (out / f"{name}.md").stat().st_size > 0
    return json.loads((out / f"{name}.json").read_text())


def test_latency_quick(tmp_path: Path) -> None:
    assert bench_main(["latency", "--quick", "--rates", "1000", "--out", str(tmp_path)]) == 0
    doc = _load(tmp_path, "latency")
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0
    by = {r["system"]: r for r in doc["runs"]}
    assert by["passthrough"]["matched"] > 0 and by["streamscore"]["matched"] > 0
    assert by["streamscore"]["p99_ms"] >= by["streamscore"]["p50_ms"] > 0
    assert doc["added_over_baseline"][0]["system"] == "streamscore"
    # the headline: added p99 at 1,000 ev/s, the same figure as the comparison's
    head = doc["headline"]
    assert head["added_p99_ms_at_1000"] == doc["added_over_baseline"][0]["added_p99_ms"]
    assert head["streamscore_p99_ms_at_1000"] == by["streamscore"]["p99_ms"]
    assert len(head["added_p99_ms_at_1000_pairs"]) == 1  # --quick: one pair at 1,000 ev/s
    assert head["compared_added_p99_ms_at_1000"] == {}
    # idle cost: every idle system measured, ready and then quiet (some CPU, less than a core)
    idle = {r["system"]: r for r in doc["idle"]}
    assert set(idle) == {"passthrough", "faust_noop", "streamscore"}
    for r in idle.values():
        assert 0 < r["cpu_pct"] < 100 and r["wakeups_per_s"] > 0
    assert by["streamscore"]["cpu_us_per_event"] > 0
    assert by["streamscore"]["cpu_us_per_event_above_idle"] is not None
    assert len(doc["load_avg"]["start"]) == len(doc["load_avg"]["end"]) == 3


def test_latency_compares_another_checkout_in_the_same_run(tmp_path: Path) -> None:
    checkout = Path(__file__).resolve().parents[2]  # here this one's own
    other = f"streamscore@{checkout}"
    argv = ["latency", "--quick", "--rates", "1000", "--idle-s", "0"]
    argv += ["--systems", f"passthrough,{other}", "--out", str(tmp_path)]
    assert bench_main(argv) == 0
    doc = _load(tmp_path, "latency")
    by = {r["system"]: r for r in doc["runs"]}
    assert by[other]["matched"] > 0 and by[other]["p99_ms"] > 0
    added = doc["headline"]["compared_added_p99_ms_at_1000"][other]
    assert added == doc["added_over_baseline"][0]["added_p99_ms"]


def test_throughput_quick(tmp_path: Path) -> None:
    # another version's checkout is compared in the same run: here this one's own
    checkout = Path(__file__).resolve().parents[2]
    argv = ["throughput", "--quick", "--compare-with", str(checkout), "--out", str(tmp_path)]
    assert bench_main(argv) == 0
    doc = _load(tmp_path, "throughput")
    assert (tmp_path / "stage_breakdown.png").stat().st_size > 0
    assert (tmp_path / "throughput_drain.png").stat().st_size > 0
    assert doc["stages"]["events_per_s_in_process"] > 0
    # the no-op Faust agent before and after, the Record- and bytes-sending agents, one
    # streamscore worker and the compared checkout's
    systems = [d["system"] for d in doc["drain"]]
    assert systems == [
        "faust_noop",
        "faust_record",
        "faust_bytes",
        "streamscore",
        "streamscore",
        "faust_noop",
    ]
    assert doc["headline"]["compared_code"] == str(checkout)
    assert doc["headline"]["compared_events_per_s"] > 0
    for d in doc["drain"]:
        assert d["complete"] and d["events_per_s"] > 0 and d["cpu_us_per_event"] > 0
    head = doc["headline"]
    assert 0 < head["fraction_of_noop"] < 2  # streamscore / the mean no-op drain
    assert head["cpu_us_per_event"] > 0
    assert 0 < head["ms_per_batch_1"] <= head["p99_ms_per_batch_1"]
    assert doc["batch_size_1"]["batches"] > 0
    assert len(doc["load_avg"]["start"]) == len(doc["load_avg"]["end"]) == 3


def test_peers_quick(tmp_path: Path) -> None:
    argv = ["peers", "--quick", "--systems", "streamscore,faust_naive", "--out", str(tmp_path)]
    assert bench_main(argv) == 0
    rows = {r["system"]: r for r in _load(tmp_path, "peers")["results"]}
    assert "error" not in rows["faust_naive"], rows["faust_naive"].get("error")
    assert rows["faust_naive"]["matched"] > 0  # the per-event Pipeline made offers
    assert rows["faust_naive"]["p99_vs_streamscore"] > 0


def test_memory_quick(tmp_path: Path) -> None:
    assert bench_main(["memory", "--quick", "--out", str(tmp_path)]) == 0
    (row,) = _load(tmp_path, "memory")["results"]
    assert row["rss_mb_end"] > 0 and row["redis_bytes_per_customer"] > 0


def test_unknown_benchmark_is_an_error() -> None:
    assert bench_main(["nope"]) == 2


def test_state_store_quick(tmp_path: Path) -> None:
    assert bench_main(["state", "--quick", "--out", str(tmp_path)]) == 0
    doc = _load(tmp_path, "state_store")
    assert (tmp_path / "state_store.png").stat().st_size > 0
    rows = {r["store"]: r for r in doc["results"]}
    assert rows["redis"]["write_us_per_entry"] > 0 and rows["redis"]["resolve_us_per_entry"] > 0
    assert rows["changelog"]["recovery_s_per_100k"] > 0
    assert rows["faust_table"]["recovered_entries"] > 0  # a real Faust table, written and recovered


def test_learning_quick(tmp_path: Path) -> None:
    assert bench_main(["learning", "--quick", "--out", str(tmp_path)]) == 0
    doc = _load(tmp_path, "learning")
    assert (tmp_path / "learning.png").stat().st_size > 0
    rows = {r["workers"]: r for r in doc["rows"]}
    assert set(rows) == {1, 2}
    for r in rows.values():
        assert r["labels"] > 0 and 0.0 <= r["auc"] <= 1.0
        assert r["segment_agreement_within"] == 1.0, "every worker gives the same segment id"
        assert len(r["model_versions"]) == 1, "one model lineage per deployment"


def test_checkpoint_stall_quick(tmp_path: Path) -> None:
    assert bench_main(["checkpoint", "--quick", "--out", str(tmp_path)]) == 0
    doc = _load(tmp_path, "checkpoint_stall")
    assert (tmp_path / "checkpoint_stall.png").stat().st_size > 0
    rows = {r["mode"]: r for r in doc["results"]}
    assert rows["checkpoint, off the loop (now)"]["bytes"] > 0
    assert rows["share: one publish round (now)"]["bytes"] > 0
    assert doc["checkpoint_in_loop_ms_now"] is not None


def test_ope_quick(tmp_path: Path) -> None:
    assert bench_main(["ope", "--quick", "--out", str(tmp_path)]) == 0
    doc = _load(tmp_path, "offer_ope")
    assert (tmp_path / "offer_ope.png").stat().st_size > 0
    targets = {r["target"] for r in doc["summary"]}
    assert {"fixed rule", "uniform random"} <= targets
    for rep in doc["replications"]:
        assert rep["decisions"] > 0 and 0.0 < rep["min_propensity"] < 1.0
        for t in rep["targets"].values():
            assert 0.0 <= t["true"] <= 1.0 and t["dr"]["low"] <= t["dr"]["value"] <= t["dr"]["high"]
    assert doc["replications"][0]["uplift"]["difference"] is not None


def test_offer_policy_quick_measures_the_exploring_bandit(tmp_path: Path) -> None:
    from benchmarks.offer_policy import main

    assert main(["--quick", "--out", str(tmp_path)]) == 0
    doc = _load(tmp_path, "offer_policy")
    assert doc["totals"]["explore"]["offers"] > 0 and doc["totals"]["bandit"]["offers"] > 0
    assert doc["explore_vs_greedy"]["rate"] > 0
