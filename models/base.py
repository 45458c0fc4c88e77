"""The one protocol every model in ``models/`` follows (River's classifier interface).

A record is a ``Mapping`` of feature name to float; a batch is a ``Sequence`` of them. Probabilities
are returned River-style, as a dict from label to probability (``{False: 0.8, True: 0.2}``) for
one record and a list of such dicts for a batch, so callers never need pandas.

``OnlineModel`` learns and predicts one record at a time and also on batches; ``BatchModel`` is
the batched-only side (the session-intent LSTM steps a whole micro-batch at once).

>>> class Constant:
...     def learn_one(self, x, y): pass
...     def predict_proba_one(self, x): return {False: 0.5, True: 0.5}
...     def learn_many(self, X, y): pass
...     def predict_proba_many(self, X): return [self.predict_proba_one(x) for x in X]
>>> isinstance(Constant(), OnlineModel), isinstance(Constant(), BatchModel)
(True, True)
>>> isinstance(object(), BatchModel)
False
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["BatchModel", "OnlineModel", "Proba"]

Proba = dict[Hashable, float]
"""Label -> probability; the values sum to 1."""


@runtime_checkable
class BatchModel(Protocol):
    """A model that learns and predicts on batches only."""

    def learn_many(self, X: Sequence[Any], y: Sequence[Any]) -> None:
        """Update the model with a batch of records and their labels."""
        ...

    def predict_proba_many(self, X: Sequence[Any]) -> list[Proba]:
        """Label probabilities for each record of a batch, in order."""
        ...


@runtime_checkable
class OnlineModel(BatchModel, Protocol):
    """A model that also learns and predicts one record at a time."""

    def learn_one(self, x: Any, y: Any) -> None:
        """Update the model with one record and its label."""
        ...

    def predict_proba_one(self, x: Any) -> Proba:
        """Label probabilities for one record."""
        ...
