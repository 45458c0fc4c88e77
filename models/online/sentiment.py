"""Lexicon sentiment of feedback text, English and Chinese, in ``[-1, 1]``.

``tokenize`` is the reusable part: lowercased words for space-separated scripts, and for Chinese
(which has no spaces) every character plus every character bigram of each run of CJK ideographs,
so a bag-of-tokens text model can use it as is.

``LexiconSentiment`` reads the text left to right in clauses (split at punctuation): English
words, and Chinese runs segmented by longest match against the lexicon (so "不错" is one word and
"不好" is the negator "不" then "好"). Each sentiment word adds its valence, scaled by a preceding
intensifier ("very", "很") and flipped and damped by a preceding negator within the clause
("not", "n't", "不", "没有"). Clauses after "but" / "但是" count more. The sum goes through
``tanh``. When there is no text, the 1-5 star rating stands in; with both, they are averaged.

>>> tokenize("Not good, 质量不好!")
['not', 'good', '质', '量', '不', '好', '质量', '量不', '不好']
>>> s = LexiconSentiment()
>>> [s.score(t, None) for t in ("great product, love it", "not good", "质量很好", "质量不好")]
[0.9468, -0.4815, 0.7531, -0.4815]
>>> s.score(None, 1), s.score(None, None), s.score("ok", None)
(-1.0, None, 0.0)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Final

__all__ = ["LexiconSentiment", "tokenize"]

_CJK: Final = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN: Final = re.compile(f"([{_CJK}]+)")
_WORD: Final = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# Clause boundaries: negation does not reach past them.
_CLAUSE: Final = re.compile(r"[.!?;:,\n\u3002\uff01\uff1f\uff1b\uff1a\uff0c\u3001]+")


def _normalize(text: str) -> str:
    # NFKC folds full-width letters and digits (but not CJK punctuation) to ASCII.
    return unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")


def tokenize(text: str) -> list[str]:
    """Words of ``text``; Chinese runs become their characters followed by their bigrams."""
    tokens: list[str] = []
    for i, part in enumerate(_CJK_RUN.split(_normalize(text))):
        if i % 2:  # a run of CJK ideographs
            tokens.extend(part)
            tokens.extend(part[j : j + 2] for j in range(len(part) - 1))
        else:
            tokens.extend(_WORD.findall(part))
    return tokens


_EN_POSITIVE: Final = {
    "good": 0.7, "great": 0.9, "excellent": 1.0, "amazing": 1.0, "awesome": 1.0,
    "perfect": 1.0, "love": 0.9, "loved": 0.9, "loves": 0.9, "like": 0.4, "liked": 0.5,
    "nice": 0.6, "best": 0.9, "happy": 0.8, "glad": 0.6, "pleased": 0.7, "satisfied": 0.7,
    "fantastic": 1.0, "wonderful": 1.0, "recommend": 0.8, "recommended": 0.8,
    "helpful": 0.7, "friendly": 0.6, "fast": 0.5, "quick": 0.5, "easy": 0.5,
    "beautiful": 0.8, "comfortable": 0.6, "reliable": 0.6, "worth": 0.5, "thanks": 0.4,
    "thank": 0.4, "superb": 1.0, "fine": 0.3, "smooth": 0.5, "fresh": 0.4, "cool": 0.5,
}  # fmt: skip
_EN_NEGATIVE: Final = {
    "bad": -0.7, "terrible": -1.0, "awful": -1.0, "horrible": -1.0, "worst": -1.0,
    "poor": -0.7, "hate": -0.9, "hated": -0.9, "broken": -0.8, "broke": -0.7, "slow": -0.5,
    "late": -0.5, "delayed": -0.5, "disappointed": -0.8, "disappointing": -0.8,
    "useless": -0.9, "waste": -0.8, "rude": -0.8, "defective": -0.9, "damaged": -0.8,
    "overpriced": -0.6, "expensive": -0.4, "scam": -1.0, "fake": -0.9, "annoying": -0.6,
    "problem": -0.5, "problems": -0.5, "issue": -0.4, "issues": -0.4, "wrong": -0.6,
    "missing": -0.6, "dirty": -0.6, "unhappy": -0.8, "angry": -0.8, "refund": -0.5,
    "garbage": -1.0, "junk": -0.9, "crap": -0.9, "fail": -0.7, "failed": -0.7,
    "complaint": -0.6, "cheap": -0.3, "lost": -0.5, "cancel": -0.4,
}  # fmt: skip
_EN_NEGATORS: Final = frozenset({
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "hardly",
    "barely", "cannot", "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "cant",
    "couldnt", "wont", "wouldnt", "shouldnt",
})  # fmt: skip
_EN_INTENSIFIERS: Final = {
    "very": 1.5, "really": 1.4, "so": 1.3, "extremely": 1.8, "super": 1.5, "too": 1.3,
    "totally": 1.5, "absolutely": 1.6, "quite": 1.2, "slightly": 0.5, "somewhat": 0.6,
    "bit": 0.6, "little": 0.6,
}  # fmt: skip
_EN_CONTRAST: Final = frozenset({"but", "however", "although", "though"})

_ZH_POSITIVE: Final = {
    "好": 0.7, "棒": 0.9, "赞": 0.9, "喜欢": 0.8, "满意": 0.8, "不错": 0.7, "推荐": 0.8,
    "值得": 0.6, "划算": 0.7, "实惠": 0.6, "优秀": 0.9, "完美": 1.0, "开心": 0.8,
    "高兴": 0.8, "快": 0.4, "及时": 0.5, "耐心": 0.6, "热情": 0.6, "方便": 0.5,
    "舒服": 0.6, "漂亮": 0.7, "好用": 0.8, "好吃": 0.8, "好看": 0.7, "正品": 0.6,
    "物超所值": 1.0, "性价比高": 0.9, "没问题": 0.4, "感谢": 0.5, "谢谢": 0.4,
    "给力": 0.8, "惊喜": 0.8, "专业": 0.6, "新鲜": 0.5, "爱": 0.8, "清楚": 0.4, "还行": 0.3,
}  # fmt: skip
_ZH_NEGATIVE: Final = {
    "差": -0.8, "坏": -0.8, "烂": -0.9, "慢": -0.5, "贵": -0.4, "假": -0.8,
    "失望": -0.8, "垃圾": -1.0, "糟糕": -0.9, "难用": -0.8, "难吃": -0.8, "难看": -0.7,
    "退货": -0.6, "退款": -0.6, "投诉": -0.8, "骗": -1.0, "骗子": -1.0, "问题": -0.5,
    "破": -0.6, "破损": -0.8, "坑": -0.8, "后悔": -0.8, "生气": -0.8, "不满": -0.8,
    "恶心": -0.9, "态度差": -0.9, "太差": -1.0, "延迟": -0.5, "错": -0.5, "脏": -0.6,
    "缺货": -0.4, "一般": -0.2, "麻烦": -0.5, "敷衍": -0.8, "过期": -0.8, "假货": -1.0,
}  # fmt: skip
_ZH_NEGATORS: Final = frozenset(
    {"不", "没", "没有", "无", "未", "别", "不是", "并不", "从不", "不太", "不怎么", "毫不"}
)
_ZH_INTENSIFIERS: Final = {
    "很": 1.4, "非常": 1.6, "太": 1.5, "特别": 1.5, "超": 1.5, "超级": 1.6, "十分": 1.5,
    "极": 1.8, "极其": 1.8, "真": 1.3, "真的": 1.3, "挺": 1.2, "最": 1.6, "有点": 0.6,
    "有些": 0.6, "稍微": 0.5,
}  # fmt: skip
_ZH_CONTRAST: Final = frozenset({"但", "但是", "可是", "不过", "然而"})

# Neutral words that contain a sentiment character ("快递" is a courier, not "fast").
_ZH_NEUTRAL: Final = frozenset(
    {"快递", "好像", "好几", "好多", "差不多", "不过", "不管", "问问", "假如", "最后", "最近"}
)

_ZH_WORDS: Final = (
    _ZH_POSITIVE.keys()
    | _ZH_NEGATIVE.keys()
    | _ZH_NEGATORS
    | _ZH_INTENSIFIERS.keys()
    | _ZH_CONTRAST
    | _ZH_NEUTRAL
)
_ZH_MAX_LEN: Final = max(map(len, _ZH_WORDS))

_NEGATION_SCALE: Final = -0.75  # "not good" is less negative than "bad" (VADER uses -0.74)
_NEGATION_REACH: Final = 3  # tokens after a negator that it still flips
_CONTRAST_BEFORE: Final = 0.5
_CONTRAST_AFTER: Final = 1.5


def _segment_cjk(run: str) -> Iterable[str]:
    """Forward maximum matching of a CJK run against the lexicon; other characters one by one."""
    i, n = 0, len(run)
    while i < n:
        for size in range(min(_ZH_MAX_LEN, n - i), 0, -1):
            word = run[i : i + size]
            if size == 1 or word in _ZH_WORDS:
                yield word
                i += size
                break


def _clauses(text: str) -> list[list[str]]:
    clauses = []
    for clause in _CLAUSE.split(_normalize(text)):
        units: list[str] = []
        for i, part in enumerate(_CJK_RUN.split(clause)):
            units.extend(_segment_cjk(part) if i % 2 else _WORD.findall(part))
        if units:
            clauses.append(units)
    return clauses


def _is_negator(unit: str) -> bool:
    return unit in _EN_NEGATORS or unit in _ZH_NEGATORS or unit.endswith("n't")


class LexiconSentiment:
    """Deterministic English + Chinese lexicon sentiment scorer.

    Parameters
    ----------
    digits
        Scores are rounded to this many decimals, so equal inputs give equal outputs everywhere.
    """

    def __init__(self, digits: int = 4) -> None:
        self.digits = digits

    def score(self, text: str | None, rating: int | None) -> float | None:
        """Sentiment in ``[-1, 1]`` from the text, the 1-5 rating, or both; None when neither."""
        text_score = self.score_text(text) if text and text.strip() else None
        rating_score = None if rating is None else self.score_rating(rating)
        if text_score is None:
            return rating_score
        if rating_score is None:
            return text_score
        return round((text_score + rating_score) / 2.0, self.digits)

    @staticmethod
    def score_rating(rating: int) -> float:
        """1 star is -1, 3 stars 0, 5 stars 1."""
        if not 1 <= rating <= 5:
            raise ValueError(f"rating must be 1-5, got {rating}")
        return (rating - 3) / 2.0

    def score_text(self, text: str) -> float:
        """Sentiment of the text alone; 0.0 when it has no sentiment words."""
        total = 0.0
        weight = 1.0  # 1.5 after a "but": "fast delivery but it broke" is negative
        for units in _clauses(text):
            negate_left = 0
            boost = 1.0
            for unit in units:
                if unit in _EN_CONTRAST or unit in _ZH_CONTRAST:
                    total *= _CONTRAST_BEFORE
                    weight = _CONTRAST_AFTER
                    negate_left, boost = 0, 1.0
                    continue
                valence = _valence(unit)
                if valence is not None:
                    if negate_left > 0:
                        valence *= _NEGATION_SCALE
                    total += weight * boost * valence
                    negate_left, boost = 0, 1.0
                elif _is_negator(unit):
                    negate_left = _NEGATION_REACH
                elif (factor := _intensity(unit)) is not None:
                    boost *= factor
                elif negate_left > 0:
                    negate_left -= 1
        return round(math.tanh(total), self.digits)


def _valence(unit: str) -> float | None:
    for lexicon in (_EN_POSITIVE, _EN_NEGATIVE, _ZH_POSITIVE, _ZH_NEGATIVE):
        valence = lexicon.get(unit)
        if valence is not None:
            return valence
    return None


def _intensity(unit: str) -> float | None:
    factor = _EN_INTENSIFIERS.get(unit)
    return factor if factor is not None else _ZH_INTENSIFIERS.get(unit)
