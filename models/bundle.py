"""The River models of one worker, checkpointed and versioned together.

``ModelBundle`` groups the propensity model, the segment model and the sentiment scorer. The
worker calls ``ModelBundle.load_or_new(directory, settings)`` on start and ``bundle.save()``
periodically and on shutdown; every output it publishes carries ``bundle.version``.

The version is ``v<generation>+<updates>``: the generation of the last checkpoint this state was
saved to or loaded from (0 for fresh models), then how many learning steps were taken since. A
bundle that has just been saved or loaded reads ``v<N>+0``, which names exactly the file
``models-<N>.ckpt``.

>>> import tempfile
>>> from pathlib import Path
>>> from models.settings import ModelSettings
>>> directory = Path(tempfile.mkdtemp())
>>> bundle = ModelBundle.load_or_new(directory, ModelSettings())
>>> bundle.version
'v0+0'
>>> _ = bundle.segments.assign({"spend_30d": 50.0})
>>> bundle.version
'v0+1'
>>> bundle.save(directory).name
'models-00000001.ckpt'
>>> ModelBundle.load_or_new(directory, ModelSettings()).version
'v1+0'
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from models.alerts.anomaly import PurchaseAnomaly
from models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    pickled,
    seal,
    settings_key,
    write_atomically,
)
from models.decisioning.bandit import LinUCB
from models.online.propensity import PropensityModel
from models.online.segments import SegmentModel
from models.online.sentiment import LexiconSentiment
from models.online.text import FeedbackText, fold_legacy_state
from models.settings import AlertSettings, ModelSettings, TextSettings
from models.shared import SharedState

if TYPE_CHECKING:
    from models.intent.service import IntentService

__all__ = ["ModelBundle", "SaveStats", "SharedModels", "new_anomaly"]

logger = logging.getLogger(__name__)

_FILE: Final = re.compile(r"models-(\d{8})\.ckpt")
# Parts that checkpoints written before them lack.
_ADDED_LATER: Final = frozenset({"text", "anomaly", "bandit"})


@dataclass(frozen=True, slots=True)
class SaveStats:
    """The last ``save_async``: seconds in the event loop (pickling), in the writer thread
    (signing, writing, fsync), in all, and the payload's size."""

    in_loop_s: float
    write_s: float
    total_s: float
    bytes: int


@dataclass(frozen=True, slots=True)
class _Draft:
    path: Path
    payload: bytes
    version: str
    meta: dict[str, Any]
    generation: int
    next_generation: bool
    updates: int  # learning steps when pickled
    pickle_s: float


class ModelBundle:
    """Propensity, segments and sentiment, saved and loaded as one signed checkpoint.

    Parameters
    ----------
    settings
        Model settings; the checkpoint key and default directory come from here. Settings are
        never written into a checkpoint (they hold the key).
    propensity, segments, sentiment
        The models; fresh ones built from ``settings`` when None.
    text, anomaly
        The feedback text models and the purchase anomaly detector; fresh ones when None
        (also when loading a checkpoint written before they existed).
    bandit
        The offer bandit (the worker's arbiter owns its settings); None until it is attached.
    keep
        How many checkpoint files ``save`` keeps in its directory (older ones are deleted).
    """

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        propensity: PropensityModel | None = None,
        segments: SegmentModel | None = None,
        sentiment: LexiconSentiment | None = None,
        text: FeedbackText | None = None,
        anomaly: PurchaseAnomaly | None = None,
        bandit: LinUCB | None = None,
        keep: int = 3,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.settings = ModelSettings() if settings is None else settings
        self.propensity = (
            PropensityModel.from_settings(self.settings) if propensity is None else propensity
        )
        self.segments = SegmentModel.from_settings(self.settings) if segments is None else segments
        self.sentiment = LexiconSentiment() if sentiment is None else sentiment
        self.text = FeedbackText(TextSettings(), lexicon=self.sentiment) if text is None else text
        self.anomaly = new_anomaly(AlertSettings()) if anomaly is None else anomaly
        self.bandit = bandit
        self.keep = keep
        self.last_save: SaveStats | None = None
        self._saving = asyncio.Lock()
        self._generation = 0
        self._updates_at_generation = self._updates()

    @property
    def version(self) -> str:
        """``v<checkpoint generation>+<learning steps since>``, e.g. ``v12+3051``."""
        return f"v{self._generation}+{self._updates() - self._updates_at_generation}"

    @property
    def generation(self) -> int:
        return self._generation

    def _updates(self) -> int:
        return (
            self.propensity.n_learned
            + self.segments.n_learned
            + self.text.n_learned
            + self.anomaly.n_learned
            + (self.bandit.n_learned if self.bandit is not None else 0)
        )

    def adopt(self, generation: int) -> None:
        """These models are now the deployment's generation ``generation`` (a merge)."""
        self._generation = generation
        self._updates_at_generation = self._updates()

    def shared_state(self) -> SharedState:
        """Everything the workers of a deployment share (``models/shared.py``)."""
        state = {
            **self.propensity.shared_state(),
            **self.segments.shared_state(),
            **self.text.shared_state(),
            **self.anomaly.shared_state(),
        }
        if self.bandit is not None:
            state.update(self.bandit.shared_state())
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        self.propensity.load_shared_state(state)
        self.segments.load_shared_state(state)
        self.text.load_shared_state(state)
        self.anomaly.load_shared_state(state)
        if self.bandit is not None:
            self.bandit.load_shared_state(state)

    # -- one file -----------------------------------------------------------------------------

    def to_checkpoint(self, path: Path, *, next_generation: bool = True) -> None:
        """Write the models to ``path`` as the next generation (or as the current one: a
        worker whose generations are the deployment's, ``SharedModels``)."""
        draft = self._draft(path, next_generation)
        self._write(draft)
        self._commit(draft)

    def _draft(self, path: Path, next_generation: bool) -> _Draft:
        """The models pickled now: a consistent copy (nothing learns while this runs)."""
        t0 = time.perf_counter()
        generation = self._generation + 1 if next_generation else self._generation
        state = {
            "generation": generation,
            "propensity": self.propensity,
            "segments": self.segments,
            "sentiment": self.sentiment,
            "text": self.text,
            "anomaly": self.anomaly,
            "bandit": self.bandit,
        }
        meta = {
            "generation": generation,
            "propensity_n_learned": self.propensity.n_learned,
            "propensity_n_pending": self.propensity.n_pending,
            "segments_n_learned": self.segments.n_learned,
        }
        payload = pickled(state)
        return _Draft(
            Path(path),
            payload,
            f"v{generation}+0",
            meta,
            generation,
            next_generation,
            self._updates(),
            time.perf_counter() - t0,
        )

    def _write(self, draft: _Draft) -> float:
        """Sign and write ``draft`` (touches only its bytes: safe in a worker thread)."""
        t0 = time.perf_counter()
        data = seal(
            draft.payload, key=settings_key(self.settings), version=draft.version, meta=draft.meta
        )
        write_atomically(draft.path, data)
        logger.info(
            "checkpoint %s written: version %s, %d bytes", draft.path, draft.version, len(data)
        )
        return time.perf_counter() - t0

    def _commit(self, draft: _Draft) -> None:
        if draft.next_generation:  # the learning since the draft is after this generation
            self._generation = draft.generation
            self._updates_at_generation = draft.updates

    @classmethod
    def from_checkpoint(cls, path: Path, settings: ModelSettings, *, keep: int = 3) -> ModelBundle:
        """The bundle saved at ``path``; ``CheckpointError`` if it is not validly signed."""
        state, header = load_checkpoint(path, key=settings_key(settings))
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {path} does not hold a model bundle")
        parts = _typed_parts(path, state)
        bundle = cls(settings, keep=keep, **parts)
        bundle._generation = int(state.get("generation", 0))
        bundle._updates_at_generation = bundle._updates()
        _warn_on_changed_settings(bundle, settings)
        logger.info("models loaded from %s: version %s", path, header.get("version"))
        return bundle

    # -- a directory of generations -----------------------------------------------------------

    def save(self, directory: Path | None = None, *, next_generation: bool = True) -> Path:
        """Checkpoint into ``directory`` (default: ``settings.checkpoint_dir``); keep the newest.
        ``next_generation=False`` saves as the current generation (``to_checkpoint``)."""
        draft = self._draft(self._path(directory, next_generation), next_generation)
        self._write(draft)
        self._prune(draft.path.parent)
        self._commit(draft)
        return draft.path

    async def save_async(
        self, directory: Path | None = None, *, next_generation: bool = True
    ) -> Path:
        """``save`` without stalling the event loop: the models are pickled in the loop
        (a consistent copy: nothing learns meanwhile), then signed and written, fsync
        included, in a worker thread; one save at a time. ``last_save`` says how long each
        part took."""
        async with self._saving:
            t0 = time.perf_counter()
            draft = self._draft(self._path(directory, next_generation), next_generation)

            def write() -> float:
                took = self._write(draft)
                self._prune(draft.path.parent)
                return took

            write_s = await asyncio.to_thread(write)
            self._commit(draft)
            self.last_save = SaveStats(
                in_loop_s=draft.pickle_s,
                write_s=write_s,
                total_s=time.perf_counter() - t0,
                bytes=len(draft.payload),
            )
            return draft.path

    def _path(self, directory: Path | None, next_generation: bool) -> Path:
        directory = Path(self.settings.checkpoint_dir if directory is None else directory)
        generation = self._generation + 1 if next_generation else self._generation
        return directory / f"models-{generation:08d}.ckpt"

    def _prune(self, directory: Path) -> None:
        for old in _checkpoints(directory)[self.keep :]:
            try:
                old.unlink()
            except OSError as exc:
                logger.warning("cannot delete old checkpoint %s: %s", old, exc)

    @classmethod
    def load_or_new(
        cls, directory: Path | None, settings: ModelSettings, *, keep: int = 3
    ) -> ModelBundle:
        """The newest checkpoint in ``directory`` that verifies, or fresh models if none exist.

        A newest file that fails verification is skipped (logged as an error) for the one
        before it; if checkpoints exist but none verifies (a wrong key, say), this raises
        ``CheckpointError`` rather than silently starting from scratch.
        """
        directory = Path(settings.checkpoint_dir if directory is None else directory)
        files = _checkpoints(directory)
        errors: list[str] = []
        for path in files:
            try:
                return cls.from_checkpoint(path, settings, keep=keep)
            except CheckpointError as exc:
                logger.error("refusing checkpoint %s: %s", path, exc)
                errors.append(str(exc))
        if files:
            raise CheckpointError(
                f"none of the {len(files)} checkpoints in {directory} could be loaded "
                f"(newest: {errors[0]})"
            )
        logger.info("no checkpoint in %s: starting with fresh models", directory)
        return cls(settings, keep=keep)


class SharedModels:
    """The worker's models as the deployment shares them (``models.sync.ModelSync``): the
    bundle, with its bandit, and the intent LSTM's weights when intent scoring is on."""

    def __init__(self, bundle: ModelBundle, intent: IntentService | None = None) -> None:
        self.bundle = bundle
        self.intent = intent
        bundle.anomaly.share()

    @property
    def generation(self) -> int:
        return self.bundle.generation

    def shared_state(self) -> SharedState:
        state = self.bundle.shared_state()
        if self.intent is not None:
            state.update(self.intent.shared_state())
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        self.bundle.load_shared_state(state)
        if self.intent is not None:
            self.intent.load_shared_state(state)

    def settle(self, state: SharedState) -> SharedState:
        """The state as published: anomaly masses settled, and the per-token text counts of
        workers from before hashing folded into the bucket tables."""
        return fold_legacy_state(self.bundle.anomaly.settle_shared_state(state))

    def updates(self) -> int:
        tuned = self.intent.trainer.accepted if self.intent is not None else 0
        return self.bundle._updates() + tuned

    def adopt(self, generation: int) -> None:
        self.bundle.adopt(generation)


def new_anomaly(s: AlertSettings) -> PurchaseAnomaly:
    return PurchaseAnomaly(
        warmup=s.anomaly_warmup,
        threshold=s.anomaly_threshold,
        quantile=s.anomaly_quantile,
        window_size=s.anomaly_window,
        max_customers=s.anomaly_max_customers,
    )


def _checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest generation first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _FILE.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def _typed_parts(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    expected = {
        "propensity": PropensityModel,
        "segments": SegmentModel,
        "sentiment": LexiconSentiment,
        "text": FeedbackText,
        "anomaly": PurchaseAnomaly,
        "bandit": LinUCB,
    }
    parts = {}
    for name, kind in expected.items():
        part = state.get(name)
        if part is None and name in _ADDED_LATER:
            continue  # an older checkpoint: this part starts fresh
        if not isinstance(part, kind):
            raise CheckpointError(
                f"checkpoint {path}: {name!r} is {type(part).__name__}, not {kind.__name__}"
            )
        parts[name] = part
    return parts


def _warn_on_changed_settings(bundle: ModelBundle, settings: ModelSettings) -> None:
    p, s = bundle.propensity, bundle.segments
    changed = [
        f"{name}: checkpoint {old!r}, settings {new!r}"
        for name, old, new in (
            ("propensity_horizon_minutes", p.horizon_minutes, settings.propensity_horizon_minutes),
            ("propensity_learning_rate", p.learning_rate, settings.propensity_learning_rate),
            ("max_pending_labels", p.max_pending, settings.max_pending_labels),
            ("n_segments", s.n_clusters, settings.n_segments),
        )
        if old != new
    ]
    if changed:
        logger.warning("checkpointed models keep their own hyperparameters: %s", "; ".join(changed))
