"""ModelBundle: versioned, signed checkpoints of the worker's River models."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import pytest

from models.bundle import ModelBundle
from models.checkpoint import CheckpointError
from models.settings import ModelSettings

SETTINGS = ModelSettings(checkpoint_key="bundle-test-key", n_segments=3)  # type: ignore[arg-type]
T0 = 1_700_000_000.0


def _trained() -> ModelBundle:
    bundle = ModelBundle(SETTINGS)
    for i in range(40):
        x = {"carts_1h": i % 3, "spend_30d": 10.0 * i}
        bundle.propensity.score_click(f"c{i}", f"e{i}", T0 + i, x)
        bundle.segments.assign(x)
    bundle.propensity.observe_purchase("c3", T0 + 50)
    bundle.propensity.expire(T0 + 20 + 1_800)
    return bundle


def test_round_trip_keeps_models_and_pending_labels(tmp_path: Path) -> None:
    bundle = _trained()
    assert bundle.propensity.n_pending > 0
    path = bundle.save(tmp_path)
    loaded = ModelBundle.load_or_new(tmp_path, SETTINGS)
    probe = [{"carts_1h": 2.0, "spend_30d": 99.0}, {}]
    assert loaded.propensity.predict_proba_many(probe) == bundle.propensity.predict_proba_many(
        probe
    )
    assert loaded.segments.predict_proba_many(probe) == bundle.segments.predict_proba_many(probe)
    assert loaded.propensity.n_pending == bundle.propensity.n_pending
    assert loaded.version == bundle.version == "v1+0"
    assert loaded.settings is SETTINGS
    # the replayed click is still recognised after a restart
    loaded.propensity.score_click("c39", "e39", T0 + 39, {})
    assert loaded.propensity.n_pending == bundle.propensity.n_pending
    assert b"bundle-test-key" not in path.read_bytes()


def test_version_counts_generations_and_updates(tmp_path: Path) -> None:
    bundle = ModelBundle(SETTINGS)
    assert bundle.version == "v0+0"
    bundle.segments.assign({"spend_30d": 1.0})
    bundle.propensity.learn_one({}, True)
    assert bundle.version == "v0+2"
    assert bundle.save(tmp_path).name == "models-00000001.ckpt"
    assert bundle.version == "v1+0"
    bundle.segments.assign({})
    assert bundle.save(tmp_path).name == "models-00000002.ckpt"
    assert ModelBundle.load_or_new(tmp_path, SETTINGS).version == "v2+0"


def test_save_keeps_the_newest_files(tmp_path: Path) -> None:
    bundle = ModelBundle(SETTINGS, keep=2)
    for _ in range(4):
        bundle.save(tmp_path)
    (tmp_path / "notes.txt").write_text("kept")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["models-00000003.ckpt", "models-00000004.ckpt", "notes.txt"]


def test_default_directory_comes_from_settings(tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"checkpoint_dir": tmp_path / "ckpt"})
    ModelBundle(settings).save()
    assert ModelBundle.load_or_new(None, settings).version == "v1+0"


def test_fresh_models_when_there_is_no_checkpoint(tmp_path: Path) -> None:
    assert ModelBundle.load_or_new(tmp_path / "missing", SETTINGS).version == "v0+0"


def test_tampered_newest_falls_back_to_the_one_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = ModelBundle(SETTINGS)
    bundle.save(tmp_path)
    newest = bundle.save(tmp_path)
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="models.bundle"):
        assert ModelBundle.load_or_new(tmp_path, SETTINGS).version == "v1+0"
    assert "refusing checkpoint" in caplog.text


def test_wrong_key_refuses_instead_of_starting_fresh(tmp_path: Path) -> None:
    ModelBundle(SETTINGS).save(tmp_path)
    other = SETTINGS.model_copy(update={"checkpoint_key": SETTINGS.checkpoint_key.__class__("x")})
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints"):
        ModelBundle.load_or_new(tmp_path, other)


def test_a_signed_file_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint, settings_key

    path = tmp_path / "models-00000001.ckpt"
    save_checkpoint(path, {"propensity": 1}, key=settings_key(SETTINGS), version="v1", meta={})
    with pytest.raises(CheckpointError, match="'propensity' is int"):
        ModelBundle.from_checkpoint(path, SETTINGS)


def test_changed_hyperparameters_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ModelBundle(SETTINGS).save(tmp_path)
    changed = SETTINGS.model_copy(update={"propensity_horizon_minutes": 5.0})
    with caplog.at_level(logging.WARNING, logger="models.bundle"):
        bundle = ModelBundle.load_or_new(tmp_path, changed)
    assert bundle.propensity.horizon_minutes == 30.0
    assert "propensity_horizon_minutes" in caplog.text


def test_checkpoint_written_before_the_package_split_still_loads(tmp_path: Path) -> None:
    # Written by the flat models/ layout (models.propensity, models.anomaly, ...) with
    # _trained() plus two feedback texts; expected.json holds what that code predicted.
    data = Path(__file__).parent / "data" / "flat-layout"
    expected = json.loads((data / "expected.json").read_text())
    shutil.copy(data / "models-00000001.ckpt", tmp_path)
    loaded = ModelBundle.load_or_new(tmp_path, SETTINGS)
    probe = [{"carts_1h": 2.0, "spend_30d": 99.0}, {}]
    as_json = json.loads(json.dumps(loaded.propensity.predict_proba_many(probe)))
    assert as_json == expected["propensity"]
    assert json.loads(json.dumps(loaded.segments.predict_proba_many(probe))) == expected["segments"]
    assert loaded.propensity.n_pending == expected["n_pending"]
    assert loaded.text.n_learned == expected["text_n_learned"]
    assert loaded.version == expected["version"]


async def test_a_checkpoint_written_in_a_thread_is_the_models_as_they_were_when_it_began(
    tmp_path: Path,
) -> None:
    """``save_async`` pickles in the loop and writes in a thread: what is learned while the
    file is written is not in it (no torn checkpoint) and counts as learned since."""
    bundle = _trained()
    bundle.text.learn("parcel never arrived, awful", 1)
    before = (bundle.text.n_learned, bundle.segments.n_learned)
    saving = asyncio.ensure_future(bundle.save_async(tmp_path))
    await asyncio.sleep(0)  # the save has pickled the models and handed the write to a thread
    for i in range(30):
        bundle.text.learn(f"great fast delivery {i}", 5)
        bundle.segments.assign({"spend_30d": float(i)})
    path = await saving
    loaded = ModelBundle.from_checkpoint(path, SETTINGS)
    assert (loaded.text.n_learned, loaded.segments.n_learned) == before
    # learned while the file was written: 30 x (sentiment, topic, segment)
    assert loaded.version == "v1+0" and bundle.version == "v1+90"
    assert bundle.last_save is not None and bundle.last_save.bytes > 0
    # and the next one follows it
    assert (await bundle.save_async(tmp_path)).name == "models-00000002.ckpt"
