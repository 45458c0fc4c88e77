"""Suggested replies to negative feedback, per topic, in the customer's language.

``detect_language`` tells Chinese from English (and anything else) by the share of CJK ideographs
among the letters; ``reply_template`` gives the agent-facing template for a topic, with
``{customer}`` and ``{order}`` placeholders left for the CRM to fill.

>>> detect_language("快递太慢了, box damaged"), detect_language("Package never arrived")
('zh', 'en')
>>> reply_template("refund", "en")[:45]
'We are sorry your refund has not reached you '
>>> reply_template("nonsense", "fr") == reply_template("other", "en")
True
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = ["TOPICS", "Language", "Topic", "detect_language", "reply_template"]

Topic = Literal["delivery", "refund", "product_quality", "billing", "other"]
Language = Literal["en", "zh"]
TOPICS: Final[tuple[Topic, ...]] = ("delivery", "refund", "product_quality", "billing", "other")

_CJK: Final = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER: Final = re.compile(r"[^\W\d_]")
# A text is Chinese when at least this share of its letters are CJK ideographs (one ideograph
# carries a word's worth of meaning, so a mixed text with a few is still Chinese).
_ZH_SHARE: Final = 0.2

_TEMPLATES: Final[dict[str, dict[str, str]]] = {
    "delivery": {
        "en": "We are sorry your order {order} did not arrive as it should. We have asked the "
        "carrier for an update and will send you the new delivery date today.",
        "zh": "很抱歉您的订单 {order} 配送出现问题。"
        "我们已联系物流公司核实, 今天内会告知您新的送达时间。",
    },
    "refund": {
        "en": "We are sorry your refund has not reached you yet. We have escalated it and it will "
        "be paid to your original payment method within 3 working days.",
        "zh": "很抱歉您的退款还未到账。我们已加急处理, 退款将在3个工作日内退回原支付账户。",
    },
    "product_quality": {
        "en": "We are sorry the product did not meet your expectations. We can send a replacement "
        "or refund it in full; just reply to tell us which you prefer.",
        "zh": "很抱歉商品质量没有达到您的期望。"
        "我们可以为您换货或全额退款, 请回复告诉我们您的选择。",
    },
    "billing": {
        "en": "We are sorry about the problem with your bill. We are checking the charges on order "
        "{order} and will correct any wrong amount within 24 hours.",
        "zh": "很抱歉您的账单出现问题。我们正在核对订单 {order} 的扣款, 如有错误将在24小时内更正。",
    },
    "other": {
        "en": "Thank you for telling us, {customer}, and we are sorry about your experience. A "
        "member of our team will contact you shortly to make it right.",
        "zh": "{customer}您好, 感谢您的反馈, 给您带来不好的体验非常抱歉。"
        "我们的客服会尽快与您联系并妥善处理。",
    },
}


def detect_language(text: str | None) -> Language:
    """``"zh"`` when CJK ideographs make up a fair share of the letters, else ``"en"``."""
    if not text:
        return "en"
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "en"
    return "zh" if len(_CJK.findall(text)) / letters >= _ZH_SHARE else "en"


def reply_template(topic: str, language: str) -> str:
    """The template for ``topic`` in ``language``; unknown ones fall back to other / English."""
    by_language = _TEMPLATES.get(topic, _TEMPLATES["other"])
    return by_language.get(language, by_language["en"])
