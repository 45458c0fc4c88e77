"""Feedback text models: NB sentiment learned from ratings, topics en + zh, reply templates."""

from __future__ import annotations

import pickle
import random
import string

import pytest

from models.online.replies import detect_language, reply_template
from models.online.text import FeedbackText, TextSentiment, TopicClassifier
from models.settings import TextSettings

NEG = ["the zipper jammed on day one", "stitching came apart", "拉链第一天就卡住了", "线头全开了"]
POS = ["the zipper glides smoothly", "stitching is neat", "拉链很顺滑", "线头整齐"]


def test_sentiment_learns_from_ratings_words_the_lexicon_does_not_know() -> None:
    model = TextSentiment(blend_examples=10, max_model_weight=0.9)
    text = "zipper jammed, stitching came apart"
    assert model.score(text, None) == 0.0, "no lexicon word: the lexicon is neutral"
    assert model.weight == 0.0
    rng = random.Random(1)
    for _ in range(60):
        model.learn_rating(rng.choice(NEG), rng.choice((1, 2)))
        model.learn_rating(rng.choice(POS), rng.choice((4, 5)))
        model.learn_rating("it is a zipper", 3)  # 3 stars: not learned
    assert model.n_learned == 120 and 0.8 < model.weight <= 0.9
    assert model.score(text, None) < -0.5
    assert model.score("拉链卡住了", None) < -0.3, "Chinese learned through char bigrams"
    assert model.score("zipper glides, stitching neat", None) > 0.5
    # With a rating the score is the lexicon's rating + text blend, as before.
    assert model.score(text, 5) == model.lexicon.score(text, 5)
    assert pickle.loads(pickle.dumps(model)).score(text, None) == model.score(text, None)


def test_young_sentiment_model_defers_to_the_lexicon() -> None:
    model = TextSentiment(blend_examples=50)
    for _ in range(20):
        model.learn_rating("the strap snapped", 1)  # one class only: the model never speaks
    assert model.weight == 0.0
    assert model.score("terrible and broken", None) == model.lexicon.score_text(
        "terrible and broken"
    )


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("The delivery was late and the box was damaged", "delivery"),
        ("Package never arrived", "delivery"),
        ("Still waiting for my refund after three weeks", "refund"),
        ("Poor quality, it broke after one day", "product_quality"),
        ("I was charged twice for one order", "billing"),
        ("快递太慢了, 包装也坏了", "delivery"),
        ("三个星期了还没退款", "refund"),
        ("质量太差了, 用了一天就坏了", "product_quality"),
        ("发票金额不对", "billing"),
        ("客服态度很差", "other"),
        ("Nobody answered my support ticket", "other"),
        ("", "other"),
    ],
)
def test_topic_seeds_en_and_zh(text: str, topic: str) -> None:
    assert TopicClassifier().classify(text)[0] == topic


def test_topic_model_learns_from_confident_seed_matches() -> None:
    clf = TopicClassifier(min_examples=20, min_proba=0.6)
    assert clf.classify("my courier parcel is stuck in customs")[2] == "seed"
    unseen = "stuck in customs for ages"  # no seed word
    assert clf.classify(unseen) == ("other", 0.0, "none")
    assert not clf.learn_from_seeds("refund for the broken item")  # two topics: ambiguous
    for n in range(30):
        clf.learn_from_seeds(f"parcel stuck in customs, tracking {n}")
        clf.learn_from_seeds(f"charged twice on my card {n}")
    topic, proba, source = clf.classify(unseen)
    assert (topic, source) == ("delivery", "model") and proba >= 0.6


def test_reply_templates_follow_topic_and_language() -> None:
    text = FeedbackText()
    zh = text.analyze("退款申请没人处理")
    assert (zh.topic, zh.language) == ("refund", "zh") and "退款" in zh.reply_template
    en = text.analyze("I was charged twice for one order")
    assert (en.topic, en.language) == ("billing", "en") and "bill" in en.reply_template
    details = en.details()
    assert {"topic", "reply_template", "language", "topic_source"} <= details.keys()
    assert detect_language("") == "en" and reply_template("delivery", "zh") != reply_template(
        "delivery", "en"
    )


def _random_text(rng: random.Random, words: int = 20) -> str:
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 9))) for _ in range(words)
    )


def test_a_flood_of_random_text_leaves_the_model_size_fixed() -> None:
    """Hostile text (the issue: 2,000 feedbacks of random words made a 39 MB model): the
    pickled models are as large after 20,000 random feedbacks as after 2,000 (the River
    models grew from 1 MB to 9.8 MB), no larger than their count tables; they still score."""
    buckets = 4096
    text = FeedbackText(TextSettings(vocabulary_buckets=buckets))
    rng = random.Random(3)
    for _ in range(100):
        text.learn(rng.choice(NEG), 1)
        text.learn(rng.choice(POS), 5)
    sizes = {}
    for n in range(1, 20_001):
        # a random rating, and a delivery seed word now and then: both models learn
        extra = " parcel" if n % 10 == 0 else ""
        text.learn(_random_text(rng) + extra, rng.choice([1, 2, 4, 5]))
        if n in (2_000, 20_000):
            sizes[n] = len(pickle.dumps(text, protocol=pickle.HIGHEST_PROTOCOL))
    tables = 8 * buckets * (2 + 5)  # int64 counts: sentiment 2 classes, topics 5
    assert max(sizes.values()) <= tables + 16_384, sizes
    assert sizes[20_000] - sizes[2_000] <= 16, sizes  # the counters' own digits, no more
    assert text.sentiment.n_learned == 20_200 and text.topics.n_learned >= 2_000
    assert -1.0 <= (text.score("great fast", None) or 0.0) <= 1.0
