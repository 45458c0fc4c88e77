"""The hashed naive Bayes of the text models: fixed size, River's answers, old state loads."""

from __future__ import annotations

import pickle
import random
import string

import numpy as np
import pytest
from river import feature_extraction, naive_bayes

from models.online.naive_bayes import HashedNB, bucket_of
from models.online.sentiment import tokenize
from models.online.text import FeedbackText, TextSentiment, TopicClassifier, fold_legacy_state
from models.shared import SEP, counts_state, merge

_GOOD = ["great", "fast", "love", "perfect", "nice", "works", "好评", "很快"]
_BAD = ["broken", "late", "awful", "refund", "never", "rude", "太慢", "坏了"]


def _labelled(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        good = rng.random() < 0.5
        words = rng.sample(_GOOD if good else _BAD, 3) + rng.sample(_GOOD + _BAD, 1)
        out.append((" ".join(words), 5 if good else 1))
    return out


def _random_text(rng: random.Random, words: int = 20) -> str:
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 9))) for _ in range(words)
    )


def test_the_bucket_of_a_token_is_stable() -> None:
    # Fixed values (BLAKE2b, not the salted hash()): every worker, run and version agrees.
    assert [bucket_of(t, 1 << 16) for t in ("great", "快递", "")] == [41850, 35835, 42724]


def test_without_collisions_it_answers_as_rivers_multinomial_nb() -> None:
    river = feature_extraction.BagOfWords(tokenizer=tokenize) | naive_bayes.MultinomialNB(1.0)
    sentiment = TextSentiment(buckets=1 << 22)  # a few dozen tokens: no two share a bucket
    for text, rating in _labelled(300, seed=1):
        river.learn_one(text, rating >= 4)
        sentiment.learn_rating(text, rating)
    for text, _ in _labelled(50, seed=2):
        want = river.predict_proba_one(text)[True]
        assert sentiment.predict_proba_one(text)[True] == pytest.approx(want, abs=1e-9)


def test_counts_merge_exactly_across_workers() -> None:
    samples = _labelled(120, seed=5)
    one, a, b = FeedbackText(), FeedbackText(), FeedbackText()
    base = a.shared_state()
    for i, (sample, rating) in enumerate(samples):
        one.learn(sample, rating)
        (a if i % 2 else b).learn(sample, rating)
    merged = merge(a.shared_state(), b.shared_state(), base)
    for name, want in one.shared_state().items():
        np.testing.assert_array_equal(merged[name], want, err_msg=name)


def _river_state(prefix: str, river: object) -> dict[str, float]:
    """The shared state the River-based models published (the code before hashing)."""
    nb = river["MultinomialNB"]  # type: ignore[index]
    state = counts_state(f"{prefix}.tokens", nb.feature_counts)
    state.update(counts_state(f"{prefix}.classes", {"n": nb.class_counts}))
    state.update(counts_state(f"{prefix}.totals", {"n": nb.class_totals}))
    return state


def test_river_era_checkpoints_and_snapshots_load_as_the_hashed_model() -> None:
    samples = [*_labelled(200, seed=6), ("快递太慢了, 包装也坏了 Délivery", 1)]
    river = feature_extraction.BagOfWords(tokenizer=tokenize) | naive_bayes.MultinomialNB(1.0)
    hashed = TextSentiment()
    for sample, rating in samples:
        river.learn_one(sample, rating >= 4)
        hashed.learn_rating(sample, rating)
    # an old checkpoint: a pickled TextSentiment whose _model is the River pipeline
    old = TextSentiment.__new__(TextSentiment)
    old.__dict__.update(
        lexicon=hashed.lexicon,
        blend_examples=50,
        max_model_weight=0.7,
        _model=river,
        _counts=dict(hashed._counts),
    )
    loaded = pickle.loads(pickle.dumps(old))
    np.testing.assert_array_equal(loaded._model.counts, hashed._model.counts)
    assert loaded.score("great fast", None) == hashed.score("great fast", None)
    # an old snapshot in Redis: per-token keys, read by a new worker and folded on publish
    legacy = _river_state("text.sentiment", river)
    fresh = TextSentiment()
    fresh.load_shared_state(legacy)
    np.testing.assert_array_equal(fresh._model.counts, hashed._model.counts)
    folded = fold_legacy_state({**legacy, **TopicClassifier().shared_state()})
    assert not any(SEP in name for name in folded)
    np.testing.assert_array_equal(folded["text.sentiment.counts"], hashed._model.counts)


def test_counts_of_another_bucket_count_are_refused_with_the_setting_named() -> None:
    state = TextSentiment(buckets=1024).shared_state()
    with pytest.raises(ValueError, match="VOCABULARY_BUCKETS"):
        TextSentiment(buckets=2048).load_shared_state(state)


def test_unknown_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        HashedNB(classes=(False, True), buckets=16).learn_one({"a": 1}, "maybe")
