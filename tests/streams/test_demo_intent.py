"""The demo's intent model is signed with the key the demo gives its worker."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from models.intent.train import load_checkpoint
from streams.cli import _train_demo_intent


def test_the_demos_intent_model_loads_with_the_demos_key(tmp_path: Path) -> None:
    args = argparse.Namespace(intent_events=3_000, customers=200, seed=5)
    path = _train_demo_intent(args, tmp_path, "demo-key-123")
    assert load_checkpoint(path, key=b"demo-key-123").version
    with pytest.raises(ValueError, match="signature"):
        load_checkpoint(path, key=b"another key")
