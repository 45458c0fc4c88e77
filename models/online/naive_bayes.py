"""Multinomial naive Bayes on hashed tokens: a fixed-size model whatever text it is fed.

River's ``BagOfWords | MultinomialNB`` keeps a row for every token it ever saw, so a flood of
random words grows the model (and every checkpoint and shared snapshot of it) without bound.
``HashedNB`` hashes each token into one of ``buckets`` rows with a stable hash (BLAKE2b,
the same on every worker and every run, unlike Python's salted ``hash``) and keeps the counts in
one dense ``buckets x classes`` array: its memory is fixed when it is built, pickling it is a
copy of that array, and two workers' counts still merge exactly (``models/shared.py``: the sum
of two count tables is the table of the union). Tokens that share a bucket share their counts;
with tens of thousands of buckets that costs feedback text nothing measurable
(``tests/models/online/test_text.py`` checks the accuracy).

The classes are fixed up front (the column of each); the probabilities are River's
``MultinomialNB`` ones with Laplace smoothing ``alpha``, over the classes seen so far, with the
number of non-empty buckets as the vocabulary size.

>>> nb = HashedNB(classes=(False, True), buckets=1024)
>>> nb.learn_one({"great": 1, "fast": 1}, True)
>>> nb.learn_one({"broken": 2}, False)
>>> {c: round(p, 3) for c, p in nb.predict_proba_one({"great": 1}).items()}
{False: 0.333, True: 0.667}
>>> nb.learn_one({f"junk{i}": 1 for i in range(5000)}, True)  # a flood of new words
>>> nb.n_terms <= 1024, nb.counts.shape
(True, (1024, 2))
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["HashedNB", "bucket_of"]


def bucket_of(token: str, buckets: int) -> int:
    """The row of ``token`` among ``buckets``: stable across processes, runs and versions."""
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


class HashedNB:
    """Multinomial naive Bayes over ``buckets`` hashed token rows (module docstring).

    Parameters
    ----------
    classes
        Every label the model can learn, in a fixed order (the columns of ``counts``).
    buckets
        Rows of the count table: the model's size, fixed.
    alpha
        Laplace smoothing, as River's ``MultinomialNB(alpha)``.
    """

    def __init__(self, classes: Sequence[Hashable], buckets: int, alpha: float = 1.0) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets}")
        self.classes = tuple(classes)
        self.buckets = buckets
        self.alpha = alpha
        self._column = {c: i for i, c in enumerate(self.classes)}
        self.counts = np.zeros((buckets, len(self.classes)), dtype=np.int64)
        self.class_counts = np.zeros(len(self.classes), dtype=np.int64)
        self._totals = np.zeros(len(self.classes), dtype=np.int64)  # counts summed per class
        self._n_terms = 0

    @property
    def n_terms(self) -> int:
        """Buckets that hold a count (River's vocabulary size, here at most ``buckets``)."""
        return self._n_terms

    def hashed(self, x: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Rows and summed frequencies of the tokens of ``x``."""
        rows: dict[int, float] = {}
        for token, frequency in x.items():
            row = bucket_of(token, self.buckets)
            rows[row] = rows.get(row, 0.0) + frequency
        return np.fromiter(rows, np.int64, len(rows)), np.fromiter(
            rows.values(), np.float64, len(rows)
        )

    def learn_one(self, x: Mapping[str, float], y: Hashable) -> None:
        column = self._column.get(y)
        if column is None:
            raise ValueError(f"unknown class {y!r}: the classes are {self.classes}")
        rows, freq = self.hashed(x)
        added = np.rint(freq).astype(np.int64)
        fresh = int(np.count_nonzero(~self.counts[rows].any(axis=1) & (added != 0)))
        self.counts[rows, column] += added
        self._totals[column] += int(added.sum())
        self._n_terms += fresh
        self.class_counts[column] += 1

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[Hashable, float]:
        seen = np.flatnonzero(self.class_counts)
        if not len(seen):
            return {}
        rows, freq = self.hashed(x)
        jll = np.log(self.class_counts[seen] / self.class_counts.sum())
        if len(rows):
            den = np.log(self._totals[seen] + self.alpha * self._n_terms)
            num = np.log(self.counts[np.ix_(rows, seen)] + self.alpha)
            jll = jll + freq @ (num - den)
        top = jll.max()
        p = np.exp(jll - top)
        p /= p.sum()
        return {self.classes[c]: float(q) for c, q in zip(seen, p, strict=True)}

    def learn_many(self, X: Sequence[Mapping[str, float]], y: Sequence[Hashable]) -> None:
        for x, label in zip(X, y, strict=True):
            self.learn_one(x, label)

    def predict_proba_many(self, X: Sequence[Mapping[str, float]]) -> list[dict[Hashable, float]]:
        return [self.predict_proba_one(x) for x in X]

    # -- counts in and out (sharing, old checkpoints) ----------------------------------------

    def load(self, counts: np.ndarray, class_counts: np.ndarray) -> None:
        """Take these count tables (from a shared state): shapes must match."""
        counts = np.rint(np.asarray(counts)).astype(np.int64)
        class_counts = np.rint(np.asarray(class_counts)).astype(np.int64)
        if counts.shape != self.counts.shape or class_counts.shape != self.class_counts.shape:
            raise ValueError(
                f"counts of shape {counts.shape} do not fit a model of {self.counts.shape}: "
                "were they shared by a worker with another TEXT__VOCABULARY_BUCKETS?"
            )
        self.counts = counts
        self.class_counts = class_counts
        self._recount()

    def add_token_counts(self, rows: Iterable[tuple[str, Hashable, float]]) -> None:
        """Add per-token counts ``(token, class, count)`` (River's ``feature_counts``, an old
        checkpoint or snapshot) into their buckets: the model that hashing would have learned."""
        for token, cls, count in rows:
            column = self._column.get(cls)
            if column is not None and count:
                self.counts[bucket_of(str(token), self.buckets), column] += round(count)
        self._recount()

    def add_class_counts(self, pairs: Iterable[tuple[Hashable, float]]) -> None:
        for cls, count in pairs:
            column = self._column.get(cls)
            if column is not None:
                self.class_counts[column] += round(count)

    def _recount(self) -> None:
        self._totals = self.counts.sum(axis=0)
        self._n_terms = int(np.count_nonzero(self.counts.any(axis=1)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._column = {c: i for i, c in enumerate(self.classes)}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_column"}
