"""``streamscore evaluate`` on decision-log files: the report, and what it refuses to guess."""

from __future__ import annotations

import json
from pathlib import Path

from models.decisioning.decision_log import write_decisions
from streams.cli import main
from tests.models.decisioning.test_ope import simulate


def test_evaluate_a_decision_log_writes_markdown_json_and_png(tmp_path: Path) -> None:
    records, _, _ = simulate(2_000, seed=11)
    for i, r in enumerate(records):
        r["customer_id"] = f"c{i % 300}"
        r["arm"] = "control" if i % 300 < 30 else "bandit"
    log = tmp_path / "decisions.jsonl"
    write_decisions(log, records)
    scores = tmp_path / "scores.json"
    scores.write_text('{"c": 2, "a": 1}')
    out = tmp_path / "eval"
    argv = ["evaluate", "--input", str(log), "--out", str(out), "--always", "a"]
    assert main([*argv, "--scores", str(scores), "--checkpoint", str(tmp_path)]) == 0
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["decisions"] == 2_000 and doc["left_out"]["deterministic"] == 0
    assert set(doc["targets"]) == {"fixed rule", "uniform random", "always a", "scores scores.json"}
    for t in doc["targets"].values():
        for e in ("ips", "snips", "dr"):
            assert t[e]["low"] <= t[e]["value"] <= t[e]["high"]
    u = doc["uplift"]
    assert u["method"] == "cluster" and u["control_customers"] == 30
    assert (out / "evaluation.png").stat().st_size > 0
    assert "| uniform random |" in (out / "evaluation.md").read_text()


def test_logs_of_the_fixed_rule_alone_are_not_evaluated(tmp_path: Path) -> None:
    records = [
        {"decision_id": str(i), "arm": "fixed", "eligible": ["a", "b"], "action": "a",
         "propensity": 1.0, "reward": float(i % 4 == 0)}
        for i in range(50)
    ]  # fmt: skip
    log = tmp_path / "fixed.jsonl"
    write_decisions(log, records)
    out = tmp_path / "eval"
    argv = ["evaluate", "--input", str(log), "--out", str(out)]
    assert main([*argv, "--checkpoint", str(tmp_path)]) == 0
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["decisions"] == 0 and doc["targets"] == {}
    assert doc["left_out"]["deterministic"] == 50
    assert any("deterministically" in note for note in doc["notes"]), doc["notes"]
    assert "deterministically" in (out / "evaluation.md").read_text()
