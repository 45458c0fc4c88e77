"""Signed checkpoints: round trip, and refusal of unsigned, tampered and wrongly keyed files."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest

from models.checkpoint import MAGIC, CheckpointError, load_checkpoint, save_checkpoint, settings_key
from models.settings import ModelSettings

KEY = b"test-key"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "sub" / "m.ckpt"
    save_checkpoint(path, {"weights": [0.5, -1.0], "n": 3}, key=KEY, version="v7", meta={"a": 1})
    return path


def test_round_trip(saved: Path) -> None:
    obj, header = load_checkpoint(saved, key=KEY)
    assert obj == {"weights": [0.5, -1.0], "n": 3}
    assert header["version"] == "v7"
    assert header["meta"] == {"a": 1}
    assert len(header["sha256"]) == 64
    assert header["created"].endswith("+00:00")
    assert [p.name for p in saved.parent.iterdir()] == ["m.ckpt"]  # no temporary file left


def test_wrong_key_is_refused(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="bad signature"):
        load_checkpoint(saved, key=b"other-key")


@pytest.mark.parametrize("where", ["header", "payload", "mac", "last byte"])
def test_any_flipped_byte_is_refused(saved: Path, where: str) -> None:
    data = bytearray(saved.read_bytes())
    header_end = len(MAGIC) + 4 + struct.unpack_from(">I", data, len(MAGIC))[0]
    offset = {
        "header": len(MAGIC) + 4 + 10,
        "payload": len(data) - 20,
        "mac": header_end + 5,
        "last byte": len(data) - 1,
    }[where]
    data[offset] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bad signature"):
        load_checkpoint(saved, key=KEY)


def test_changed_version_in_header_is_refused(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes().replace(b'"v7"', b'"v8"'))
    with pytest.raises(CheckpointError, match="bad signature"):
        load_checkpoint(saved, key=KEY)


def test_unsigned_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (pytest.fail, ("an unsigned pickle was unpickled",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="not a signed streamscore checkpoint"):
        load_checkpoint(path, key=KEY)


def test_appended_or_truncated_file_is_refused(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data + b"\x00")
    with pytest.raises(CheckpointError, match="bad signature"):
        load_checkpoint(saved, key=KEY)
    saved.write_bytes(data[: len(MAGIC) + 6])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(saved, key=KEY)
    saved.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a signed"):
        load_checkpoint(saved, key=KEY)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.ckpt", key=KEY)


def test_failed_save_keeps_the_old_file(saved: Path) -> None:
    before = saved.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(saved, lambda: None, key=KEY, version="v8", meta={})
    with pytest.raises(TypeError):
        save_checkpoint(saved, 1, key=KEY, version="v8", meta={"not json": object()})
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == ["m.ckpt"]


def test_empty_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key"):
        save_checkpoint(tmp_path / "m.ckpt", 1, key=b"", version="v1", meta={})
    with pytest.raises(ValueError, match="key"):
        load_checkpoint(tmp_path / "m.ckpt", key=b"")


def test_key_from_settings() -> None:
    settings = ModelSettings(checkpoint_key="s3cret")  # type: ignore[arg-type]
    assert settings_key(settings) == b"s3cret"
