"""The one place Redis keys are built: ``{prefix}:{{customer_id}}:{part}``.

The customer id sits in a Redis Cluster hash tag, so every key of one customer lands in the
same slot and one Lua script may touch all of them. Every key of a customer starts with the
same ``{prefix}:{`` + id, so they share a tag even when the id itself holds braces.

>>> customer_key("ss", "c42", "state")
'ss:{c42}:state'
>>> CustomerKeys.of("ss", "c42").all
('ss:{c42}:state', 'ss:{c42}:seen', 'ss:{c42}:offers', 'ss:{c42}:sums')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["PARTS", "CustomerKeys", "customer_key"]

# The parts of a customer's data (see docs/feature-store.md for what each holds).
PARTS: Final = ("state", "seen", "offers", "sums")


def customer_key(prefix: str, customer_id: str, part: str) -> str:
    """The key of one part of one customer's data."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"key prefix must be non-empty and brace-free, got {prefix!r}")
    if not customer_id:
        raise ValueError("customer_id must not be empty")
    return f"{prefix}:{{{customer_id}}}:{part}"


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    """All keys of one customer, in the order the Lua scripts take them as KEYS."""

    state: str
    seen: str
    offers: str
    sums: str

    @classmethod
    def of(cls, prefix: str, customer_id: str) -> CustomerKeys:
        head = customer_key(prefix, customer_id, "")
        return cls(
            state=head + "state", seen=head + "seen", offers=head + "offers", sums=head + "sums"
        )

    @property
    def all(self) -> tuple[str, str, str, str]:
        return (self.state, self.seen, self.offers, self.sums)
