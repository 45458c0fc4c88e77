"""LexiconSentiment and tokenize: English, Chinese, negation, ratings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.online.sentiment import LexiconSentiment, tokenize

S = LexiconSentiment()


def test_tokenize_english_words() -> None:
    assert tokenize("I DON'T like it… at ALL!!") == ["i", "don't", "like", "it", "at", "all"]
    assert tokenize("don\u2019t") == ["don't"]  # curly apostrophe


def test_tokenize_chinese_into_characters_and_bigrams() -> None:
    assert tokenize("质量不好") == ["质", "量", "不", "好", "质量", "量不", "不好"]
    assert tokenize("好") == ["好"]
    assert tokenize("iPhone很好用") == ["iphone", "很", "好", "用", "很好", "好用"]


def test_tokenize_full_width_and_empty() -> None:
    full_width = "\uff27\uff2f\uff2f\uff24\u3000\uff11\uff12\uff13"  # "GOOD 123"
    assert tokenize(full_width) == ["good", "123"]
    assert tokenize("") == []
    assert tokenize("!!! ...") == []


@pytest.mark.parametrize(
    "text",
    [
        "Great product, I love it",
        "excellent service, very fast delivery",
        "not bad at all",
        "质量很好\uff0c推荐",
        "物超所值",
        "不错",
        "快递很快\uff0c客服很耐心",
        "没问题",
    ],
)
def test_positive(text: str) -> None:
    assert S.score(text, None) > 0.2


@pytest.mark.parametrize(
    "text",
    [
        "terrible, it arrived broken",
        "not good",
        "I don't like it",
        "never buying again, total scam",
        "质量不好",
        "太差了",
        "不满意",
        "很失望\uff0c要退货",
        "快递很快\uff0c但是质量很差",
        "fast shipping but the product is awful",
    ],
)
def test_negative(text: str) -> None:
    assert S.score(text, None) < -0.2


def test_negation_flips_and_damps() -> None:
    assert S.score("not good", None) == -S.score("not bad", None)
    assert -S.score("bad", None) > -S.score("not good", None) > 0
    assert S.score("不好", None) < 0 < S.score("好", None)
    assert S.score("不是很好", None) < 0


def test_negation_stops_at_the_clause_end() -> None:
    assert S.score("not late. good", None) > S.score("not late, not good", None)
    assert S.score("没有问题。很好", None) > 0.5


def test_intensifiers() -> None:
    assert S.score("very good", None) > S.score("good", None) > S.score("slightly good", None)
    assert S.score("非常好", None) > S.score("好", None)


def test_rating_stands_in_without_text() -> None:
    assert [S.score(None, r) for r in (1, 2, 3, 4, 5)] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert S.score("   ", 5) == 1.0
    assert S.score(None, None) is None
    assert S.score("", None) is None


def test_text_and_rating_are_averaged() -> None:
    text = S.score("good", None)
    assert text is not None
    assert S.score("good", 1) == pytest.approx((text - 1.0) / 2, abs=1e-4)


def test_text_without_sentiment_words_is_neutral() -> None:
    assert S.score("order 12345 arrived on tuesday", None) == 0.0
    assert S.score("我昨天买的", None) == 0.0


def test_bad_rating_is_an_error() -> None:
    with pytest.raises(ValueError, match="rating"):
        S.score(None, 6)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_scores_in_range_and_deterministically(text: str) -> None:
    score = S.score(text, None)
    assert score is None or -1.0 <= score <= 1.0
    assert S.score(text, None) == score
    assert isinstance(tokenize(text), list)
