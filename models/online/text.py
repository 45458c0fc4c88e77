"""Online text models on feedback text: learned sentiment and topics, English and Chinese.

``TextSentiment`` is a bag-of-words multinomial naive Bayes that learns positive / negative from
the feedback that comes with a star rating (4-5 positive, 1-2 negative, 3 skipped) and scores
the feedback that comes without one. Its score ``P(pos) - P(neg)`` is blended with the lexicon
(``models.online.sentiment.LexiconSentiment``): the model's weight grows with the rarer class's
count, ``m / (m + blend_examples)`` capped at ``max_model_weight``, so a young model defers to the
lexicon and a model that saw only one class never speaks.

``TopicClassifier`` labels a text delivery, refund, product_quality, billing or other. Keyword
seeds (English words, Chinese words matched as substrings) vote; a strict winner is the topic,
and an unambiguous seed match (one topic voted) also teaches a bag-of-words naive Bayes, which
answers for texts the seeds miss once it has seen ``topic_min_examples`` and is at least
``topic_min_proba`` sure. Both models use ``models.online.sentiment.tokenize`` (Chinese runs
become characters and bigrams, so they are never tokenised into nothing).

Both naive Bayes models are ``models.online.naive_bayes.HashedNB``: tokens are hashed into
``TextSettings.vocabulary_buckets`` rows (65,536), so hostile or merely endless text cannot grow
them: each is a fixed ``buckets x classes`` count table (sentiment 1 MiB, topics 2.5 MiB), and
the workers' tables still merge exactly. Checkpoints and shared snapshots of the River
``BagOfWords | MultinomialNB`` they replaced load as the hashed model those counts make.

``FeedbackText`` is the pair the model bundle checkpoints, plus the reply template.

>>> text = FeedbackText()
>>> text.learn("Package never arrived, terrible", 1)
>>> text.sentiment.n_learned, text.topics.n_learned
(1, 1)
>>> insight = text.analyze("快递太慢了, 包装也坏了")
>>> insight.topic, insight.topic_source, insight.language
('delivery', 'seed', 'zh')
>>> text.analyze("The support agent hung up on me").topic
'other'
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from models.online.naive_bayes import HashedNB
from models.online.replies import TOPICS, Language, Topic, detect_language, reply_template
from models.online.sentiment import LexiconSentiment, tokenize
from models.settings import TextSettings
from models.shared import SEP, SharedState, load_counts

__all__ = [
    "FeedbackInsight",
    "FeedbackText",
    "TextSentiment",
    "TopicClassifier",
    "fold_legacy_state",
]

TopicSource = Literal["seed", "model", "none"]

_SENTIMENT: Final = (False, True)

_SEEDS: Final[dict[Topic, tuple[frozenset[str], tuple[str, ...]]]] = {
    "delivery": (
        frozenset({
            "delivery", "deliver", "delivered", "shipping", "shipped", "shipment", "package",
            "parcel", "courier", "arrived", "arrive", "arrival", "tracking", "late", "box",
            "carrier", "dispatch", "dispatched", "postman", "lost",
        }),
        ("快递", "物流", "包裹", "配送", "送货", "发货", "到货", "收到", "送达", "包装", "快件"),
    ),
    "refund": (
        frozenset({
            "refund", "refunded", "refunds", "return", "returned", "returns", "reimburse",
            "reimbursed", "money", "chargeback", "exchange",
        }),
        ("退款", "退货", "退钱", "退回", "到账", "换货"),
    ),
    "product_quality": (
        frozenset({
            "quality", "broke", "broken", "defective", "material", "described", "fake",
            "faulty", "flimsy", "scratched", "stopped", "working", "cheaply", "made", "fabric",
            "torn", "leaking", "size", "fit",
        }),
        ("质量", "做工", "材料", "坏了", "描述", "假货", "劣质", "不符", "瑕疵", "尺码", "材质"),
    ),
    "billing": (
        frozenset({
            "charged", "charge", "charges", "invoice", "bill", "billed", "billing", "payment",
            "paid", "pay", "overcharged", "amount", "card", "receipt", "twice", "vat",
        }),
        ("扣", "账单", "发票", "付款", "支付", "金额", "收费", "扣款", "多收"),
    ),
}  # fmt: skip


def _nb(classes: Sequence[Any], buckets: int) -> HashedNB:
    return HashedNB(classes, buckets, alpha=1.0)


def _nb_state(nb: HashedNB, prefix: str) -> SharedState:
    """A naive Bayes' counts (per bucket and class, per class): sums, so merges are exact."""
    return {f"{prefix}.counts": nb.counts.copy(), f"{prefix}.class_counts": nb.class_counts.copy()}


def _load_nb(nb: HashedNB, state: Mapping[str, Any], prefix: str) -> None:
    counts = state.get(f"{prefix}.counts")
    if counts is None:  # nothing shared yet, or only a snapshot of per-token counts
        nb.load(np.zeros_like(nb.counts), np.zeros_like(nb.class_counts))
    else:
        nb.load(counts, state[f"{prefix}.class_counts"])
    _fold_legacy(nb, state, prefix)


def _fold_legacy(nb: HashedNB, state: Mapping[str, Any], prefix: str) -> None:
    """Add the per-token counts of a snapshot written before hashing (``<prefix>.tokens``)."""
    if any(name.startswith(f"{prefix}.tokens{SEP}") for name in state):
        nb.add_token_counts(load_counts(state, f"{prefix}.tokens"))
        nb.add_class_counts((c, n) for _, c, n in load_counts(state, f"{prefix}.classes"))


def _legacy_keys(state: Mapping[str, Any], prefix: str) -> list[str]:
    heads = tuple(f"{prefix}.{table}{SEP}" for table in ("tokens", "classes", "totals"))
    return [name for name in state if name.startswith(heads)]


def _from_river(model: Any, classes: Sequence[Any], buckets: int) -> HashedNB:
    """A checkpointed River ``BagOfWords | MultinomialNB`` as the hashed model it would be."""
    nb = _nb(classes, buckets)
    river_nb = model["MultinomialNB"]
    nb.add_token_counts(
        (token, cls, count)
        for token, by_class in river_nb.feature_counts.items()
        for cls, count in by_class.items()
    )
    nb.add_class_counts(river_nb.class_counts.items())
    return nb


def fold_legacy_state(state: SharedState) -> SharedState:
    """A shared state with the per-token counts of older workers (before hashing) added into
    the bucket arrays and dropped: what a worker publishes, so those keys do not live on."""
    out = dict(state)
    for prefix, classes in (("text.sentiment", _SENTIMENT), ("text.topics", TOPICS)):
        legacy = _legacy_keys(out, prefix)
        if not legacy:
            continue
        counts = out.get(f"{prefix}.counts")
        buckets = len(counts) if counts is not None else TextSettings().vocabulary_buckets
        nb = _nb(classes, buckets)
        _load_nb(nb, out, prefix)
        for name in legacy:
            del out[name]
        out.update(_nb_state(nb, prefix))
    return out


class TextSentiment:
    """Sentiment learned from rated feedback, blended with the lexicon while young.

    Parameters
    ----------
    lexicon
        The rule-based scorer (a fresh ``LexiconSentiment`` when None).
    blend_examples, max_model_weight
        The model's weight is ``min(m / (m + blend_examples), max_model_weight)`` with ``m``
        the rarer class's count of learned examples.
    buckets
        Token buckets of the hashed naive Bayes (``TextSettings.vocabulary_buckets``).
    """

    def __init__(
        self,
        lexicon: LexiconSentiment | None = None,
        blend_examples: int = 50,
        max_model_weight: float = 0.7,
        buckets: int = 1 << 16,
    ) -> None:
        self.lexicon = LexiconSentiment() if lexicon is None else lexicon
        self.blend_examples = blend_examples
        self.max_model_weight = max_model_weight
        self.buckets = buckets
        self._model = _nb(_SENTIMENT, buckets)
        self._counts = {False: 0, True: 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state.get("_model"), HashedNB):  # a checkpoint from before hashing
            state["buckets"] = TextSettings().vocabulary_buckets
            state["_model"] = _from_river(state["_model"], _SENTIMENT, state["buckets"])
        self.__dict__.update(state)

    @property
    def n_learned(self) -> int:
        return self._counts[False] + self._counts[True]

    @property
    def weight(self) -> float:
        """The learned model's share of a text-only score, in ``[0, max_model_weight]``."""
        m = min(self._counts.values())
        return min(m / (m + self.blend_examples), self.max_model_weight)

    # -- the model protocol: x is the text, y True for positive ------------------------

    def learn_one(self, x: str, y: bool) -> None:
        self._model.learn_one(_bag(x), bool(y))
        self._counts[bool(y)] += 1

    def shared_state(self) -> SharedState:
        state = _nb_state(self._model, "text.sentiment")
        state["text.sentiment.negative"] = float(self._counts[False])
        state["text.sentiment.positive"] = float(self._counts[True])
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        _load_nb(self._model, state, "text.sentiment")
        self._counts = {
            False: round(float(state.get("text.sentiment.negative", 0.0))),
            True: round(float(state.get("text.sentiment.positive", 0.0))),
        }

    def predict_proba_one(self, x: str) -> dict[bool, float]:
        proba = self._model.predict_proba_one(_bag(x))
        p = proba.get(True, 0.5) if len(proba) == 2 else 0.5
        return {False: 1.0 - p, True: p}

    def learn_many(self, X: Sequence[str], y: Sequence[bool]) -> None:
        for x, label in zip(X, y, strict=True):
            self.learn_one(x, label)

    def predict_proba_many(self, X: Sequence[str]) -> list[dict[bool, float]]:
        return [self.predict_proba_one(x) for x in X]

    # -- feedback -----------------------------------------------------------------------

    def learn_rating(self, text: str | None, rating: int | None) -> bool:
        """Learn from a rated text (4-5 positive, 1-2 negative); True when it learned."""
        if rating is None or rating == 3 or not text or not text.strip():
            return False
        self.learn_one(text, rating >= 4)
        return True

    def score(self, text: str | None, rating: int | None) -> float | None:
        """Sentiment in ``[-1, 1]``; with a rating, exactly the lexicon's (rating + text)."""
        if rating is not None or not text or not text.strip():
            return self.lexicon.score(text, rating)
        lex = self.lexicon.score_text(text)
        w = self.weight
        if w <= 0.0:
            return lex
        proba = self.predict_proba_one(text)
        learned = proba[True] - proba[False]
        return round(w * learned + (1.0 - w) * lex, self.lexicon.digits)


class TopicClassifier:
    """Keyword seeds (en + zh) first, then a model learned online from unambiguous seed matches.

    Parameters
    ----------
    min_examples
        Seed-labelled examples the model needs before it answers on its own.
    min_proba
        The model's best topic needs at least this probability, else the topic is ``other``.
    buckets
        Token buckets of the hashed naive Bayes (``TextSettings.vocabulary_buckets``).
    """

    def __init__(
        self, min_examples: int = 30, min_proba: float = 0.6, buckets: int = 1 << 16
    ) -> None:
        self.min_examples = min_examples
        self.min_proba = min_proba
        self.buckets = buckets
        self._model = _nb(TOPICS, buckets)
        self.n_learned = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state.get("_model"), HashedNB):  # a checkpoint from before hashing
            state["buckets"] = TextSettings().vocabulary_buckets
            state["_model"] = _from_river(state["_model"], TOPICS, state["buckets"])
        self.__dict__.update(state)

    @staticmethod
    def seed_votes(text: str) -> dict[Topic, int]:
        """How many seed keywords of each topic ``text`` contains (topics with none left out)."""
        folded = unicodedata.normalize("NFKC", text).lower()
        tokens = set(tokenize(folded))
        votes: dict[Topic, int] = {}
        for topic, (words, zh) in _SEEDS.items():
            n = len(words & tokens) + sum(1 for w in zh if w in folded)
            if n:
                votes[topic] = n
        return votes

    def classify(self, text: str | None) -> tuple[Topic, float, TopicSource]:
        """``(topic, confidence, source)``: a strict seed winner, else the model, else other."""
        if not text or not text.strip():
            return "other", 0.0, "none"
        votes = self.seed_votes(text)
        if votes:
            ranked = sorted(votes.values(), reverse=True)
            if len(ranked) == 1 or ranked[0] > ranked[1]:
                best = max(votes, key=votes.__getitem__)
                return best, ranked[0] / sum(ranked), "seed"
        if self.n_learned >= self.min_examples:
            proba = self._model.predict_proba_one(_bag(text))
            if proba:
                topic = max(proba, key=proba.__getitem__)
                if proba[topic] >= self.min_proba and topic in TOPICS:
                    return topic, float(proba[topic]), "model"
        return "other", 0.0, "none"

    def learn_one(self, x: str, y: Topic) -> None:
        self._model.learn_one(_bag(x), y)
        self.n_learned += 1

    def predict_proba_one(self, x: str) -> dict[str, float]:
        return {str(c): p for c, p in self._model.predict_proba_one(_bag(x)).items()}

    def shared_state(self) -> SharedState:
        state = _nb_state(self._model, "text.topics")
        state["text.topics.n_learned"] = float(self.n_learned)
        return state

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        _load_nb(self._model, state, "text.topics")
        self.n_learned = round(float(state.get("text.topics.n_learned", 0.0)))

    def learn_many(self, X: Sequence[str], y: Sequence[Topic]) -> None:
        for x, label in zip(X, y, strict=True):
            self.learn_one(x, label)

    def predict_proba_many(self, X: Sequence[str]) -> list[dict[str, float]]:
        return [self.predict_proba_one(x) for x in X]

    def learn_from_seeds(self, text: str | None) -> bool:
        """Learn ``text`` when exactly one topic's seeds match it; True when it learned."""
        if not text or not text.strip():
            return False
        votes = self.seed_votes(text)
        if len(votes) != 1:
            return False
        (topic,) = votes
        self.learn_one(text, topic)
        return True


def _bag(text: str) -> Counter[str]:
    """Token counts of ``text``, as River's ``BagOfWords(tokenizer=tokenize)`` counts them
    (accents stripped first), so a checkpoint of the River model converts exactly."""
    if not text.isascii():
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return Counter(tokenize(text.lower()))


@dataclass(frozen=True, slots=True)
class FeedbackInsight:
    """What a feedback text is about and how to answer it."""

    topic: Topic
    topic_confidence: float
    topic_source: TopicSource
    language: Language
    reply_template: str

    def details(self) -> dict[str, str | float]:
        """The fields a ``negative_feedback`` alert carries."""
        return {
            "topic": self.topic,
            "topic_confidence": round(self.topic_confidence, 4),
            "topic_source": self.topic_source,
            "language": self.language,
            "reply_template": self.reply_template,
        }


class FeedbackText:
    """The feedback text models of a worker: learned sentiment and topics, checkpointed."""

    def __init__(
        self,
        settings: TextSettings | None = None,
        *,
        lexicon: LexiconSentiment | None = None,
    ) -> None:
        s = TextSettings() if settings is None else settings
        buckets = s.vocabulary_buckets
        self.sentiment = TextSentiment(lexicon, s.blend_examples, s.max_model_weight, buckets)
        self.topics = TopicClassifier(s.topic_min_examples, s.topic_min_proba, buckets)

    @property
    def n_learned(self) -> int:
        return self.sentiment.n_learned + self.topics.n_learned

    def shared_state(self) -> SharedState:
        return {**self.sentiment.shared_state(), **self.topics.shared_state()}

    def load_shared_state(self, state: Mapping[str, Any]) -> None:
        self.sentiment.load_shared_state(state)
        self.topics.load_shared_state(state)

    def score(self, text: str | None, rating: int | None) -> float | None:
        return self.sentiment.score(text, rating)

    def learn(self, text: str | None, rating: int | None) -> None:
        """Learn from one new (not replayed) feedback event."""
        self.sentiment.learn_rating(text, rating)
        self.topics.learn_from_seeds(text)

    def analyze(self, text: str | None) -> FeedbackInsight:
        topic, confidence, source = self.topics.classify(text)
        language = detect_language(text)
        return FeedbackInsight(topic, confidence, source, language, reply_template(topic, language))
