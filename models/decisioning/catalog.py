"""The offer catalog: which offers exist, what they are worth and who may get them.

A catalog is a JSON file ``{"version": 1, "offers": [...]}`` (``DecisionSettings.catalog_path``),
or the one shipped with the package (``models/decisioning/default_catalog.json``) when no path
is set. Every field is validated; a bad file raises ``CatalogError`` naming the offer and the field.

>>> catalog = Catalog.load()
>>> len(catalog) >= 8, "cart_saver" in {o.kind for o in catalog}
(True, True)
>>> Catalog.from_json(b'{"version": 1, "offers": [{"offer_id": "x", "name": "X",'
...                   b' "kind": "discount", "value": -1}]}', source="inline")
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
models.decisioning.catalog.CatalogError: catalog inline: offers[0] (x).value: Input should be ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CATALOG_VERSION",
    "INTENTS",
    "Catalog",
    "CatalogError",
    "Offer",
    "OfferIntent",
    "OfferKind",
    "load_catalog",
]

logger = logging.getLogger(__name__)

CATALOG_VERSION: Final = 1
INTENTS: Final = ("purchase", "abandon", "browse")

OfferKind = Literal[
    "discount", "free_shipping", "cart_saver", "bundle", "loyalty", "recommendation", "cross_sell"
]
OfferIntent = Literal["purchase", "abandon", "browse"]

_DEFAULT_RESOURCE: Final = "default_catalog.json"
_MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
_Category = Annotated[str, Field(min_length=1, max_length=128)]


class CatalogError(ValueError):
    """A catalog file that cannot be read or breaks the schema; the message says where."""


class Offer(BaseModel):
    """One offer and its eligibility rules (all rules must hold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    offer_id: _Id
    name: str = Field(min_length=1, max_length=200)
    kind: OfferKind
    # Expected value of a conversion (e.g. margin), in the shop's currency.
    value: float = Field(gt=0, allow_inf_nan=False)
    target_categories: tuple[_Category, ...] = ()  # empty: any category
    min_spend_30d: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_spend_30d: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # None: no cap
    segments: tuple[Annotated[int, Field(ge=0)], ...] = ()  # empty: every segment
    min_cart_value: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    requires_cart: bool = False
    min_propensity: float = Field(default=0.0, ge=0, le=1)
    # The session intent this offer answers, e.g. "abandon" for a cart saver.
    intent: OfferIntent | None = None

    @field_validator("target_categories", "segments")
    @classmethod
    def _no_duplicates(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(set(value)) != len(value):
            raise ValueError("contains duplicates")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Offer:
        if self.max_spend_30d is not None and self.max_spend_30d < self.min_spend_30d:
            raise ValueError(
                f"max_spend_30d {self.max_spend_30d:g} is below min_spend_30d "
                f"{self.min_spend_30d:g}"
            )
        return self

    @property
    def needs_cart(self) -> bool:
        """A non-empty cart is required (explicitly, by a cart minimum, or by intent "abandon")."""
        return self.requires_cart or self.min_cart_value > 0 or self.intent == "abandon"


class Catalog(BaseModel):
    """A validated, immutable list of offers with unique ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = CATALOG_VERSION
    offers: tuple[Offer, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        if not self.offers:
            raise ValueError("offers must not be empty")
        seen: set[str] = set()
        for offer in self.offers:
            if offer.offer_id in seen:
                raise ValueError(f"duplicate offer_id {offer.offer_id!r}")
            seen.add(offer.offer_id)
        return self

    def __len__(self) -> int:
        return len(self.offers)

    def __iter__(self) -> Iterator[Offer]:  # type: ignore[override]
        return iter(self.offers)

    def get(self, offer_id: str) -> Offer | None:
        """The offer with this id, or None."""
        for offer in self.offers:
            if offer.offer_id == offer_id:
                return offer
        return None

    @classmethod
    def from_json(cls, raw: bytes | str, *, source: str = "<json>") -> Catalog:
        """Parse and validate catalog JSON; ``source`` names it in error messages."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CatalogError(f"catalog {source}: not valid JSON: {exc}") from None
        return cls.from_dict(doc, source=source)

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "<dict>") -> Catalog:
        """Validate an already-decoded catalog document."""
        if not isinstance(doc, dict):
            kind = type(doc).__name__
            raise CatalogError(f"catalog {source}: expected a JSON object, got {kind}")
        try:
            catalog = cls.model_validate(doc)
        except ValidationError as exc:
            raise CatalogError(f"catalog {source}: {_describe(exc, doc)}") from None
        _warn_odd(catalog, source)
        return catalog

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """Load ``path``, or the catalog shipped with the package when ``path`` is None."""
        if path is None:
            raw = resources.files("models.decisioning").joinpath(_DEFAULT_RESOURCE).read_bytes()
            return cls.from_json(raw, source=f"<package>/{_DEFAULT_RESOURCE}")
        try:
            size = path.stat().st_size
            if size > _MAX_FILE_BYTES:
                raise CatalogError(f"catalog {path}: {size} bytes exceeds {_MAX_FILE_BYTES}")
            raw = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"catalog {path}: cannot read: {exc.strerror or exc}") from None
        catalog = cls.from_json(raw, source=str(path))
        logger.info("loaded %d offers from %s", len(catalog), path)
        return catalog


def _describe(exc: ValidationError, doc: dict[str, Any]) -> str:
    """The first few errors as ``offers[3] (offer_id).field: message``."""
    parts = []
    offers = doc.get("offers")
    for err in exc.errors()[:3]:
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "offers" and isinstance(loc[1], int):
            index = loc[1]
            where = f"offers[{index}]"
            if isinstance(offers, list) and index < len(offers) and isinstance(offers[index], dict):
                offer_id = offers[index].get("offer_id")
                if isinstance(offer_id, str):
                    where += f" ({offer_id[:64]})"
            loc = loc[2:]
        rest = ".".join(str(part) for part in loc)
        where = ".".join(p for p in (where, rest) if p)
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more error(s)")
    return "; ".join(parts)


def _warn_odd(catalog: Catalog, source: str) -> None:
    """Log (not reject) offers that are valid but probably not what the author meant."""
    for offer in catalog.offers:
        if offer.kind == "cart_saver" and offer.intent != "abandon":
            logger.warning(
                "catalog %s: cart_saver offer %s has intent %r, not 'abandon'",
                source,
                offer.offer_id,
                offer.intent,
            )


def load_catalog(path: Path | None = None) -> Catalog:
    """``Catalog.load``: the catalog at ``path``, or the shipped one when ``path`` is None."""
    return Catalog.load(path)
