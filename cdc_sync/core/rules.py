"""The `triggers:` section: which rules fire, validated at start like the mapping.

Durations are seconds (a number) or a number with a unit: `500ms`, `90s`, `15m`, `1h`, `2d`.
`check_rules` checks the rules against the mapping (entity kinds and columns they read), so a
rule naming a kind no table maps fails the start with its key's path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import time
from decimal import Decimal
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from cdc_sync.core.mapping import MappingConfig, Name, TableMapping

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*")


def _seconds(value: Any) -> Any:
    """A duration as seconds: a number, or text such as `90s`, `15m`, `1h`."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError("a duration is seconds, or a number with ms, s, m, h or d (e.g. 90s, 1h)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Rule):
    """No abandoned-cart trigger between `start` and `end` in the profile's local time: one due
    then is held and written when the window ends. `end` before `start` spans midnight."""

    start: time
    end: time
    timezone_attribute: str | None = "timezone"  # a profile attribute holding an IANA zone name
    default_timezone: str = "UTC"

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return name

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


class Payload(_Rule):
    """What of the profile a trigger carries beside its own facts."""

    attributes: list[str] = []  # attribute names, e.g. first_name
    identifiers: list[Name] = []  # identifier types, e.g. email (every live value)


class AbandonedCartRule(Payload):
    """A cart left alone for `delay` after its last real change, not checked out or emptied."""

    cart: Name = "cart"  # entity kinds, as the mapping names them
    item: Name = "cart_item"
    order: Name = "order"
    product: Name | None = None  # a catalogue kind: items then carry the product's name
    order_cart_field: str = "cart_id"  # the order column naming the cart it checks out
    status_field: str | None = "status"
    checked_out_statuses: list[str] = ["checked_out"]
    emptied_statuses: list[str] = ["emptied"]
    product_field: str = "product_id"
    quantity_field: str = "quantity"
    price_field: str = "unit_price"
    product_name_field: str = "name"
    currency_field: str | None = None  # a cart column; else `currency`
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    delay: Duration = 3600.0
    min_items: int = Field(default=1, ge=0)  # total quantity
    min_value: Decimal = Field(default=Decimal(0), ge=0)
    cooldown: Duration = 86400.0
    max_age: Duration = 86400.0  # a timer the watermark passed longer ago than this expires unsent
    quiet_hours: QuietHours | None = None
    consent_attribute: str | None = "consent_email_marketing"


class ProfileUpdatedRule(Payload):
    """Real changes to watched attributes, coalesced per profile over `window` of event time."""

    watch: Annotated[list[str], Field(min_length=1)]
    window: Duration = 5.0
    max_age: Duration = 3600.0  # a window the watermark passed longer ago than this expires unsent
    consent_attribute: str | None = None


class TriggersConfig(_Rule):
    """The `triggers:` section; a rule left out is off."""

    allowed_lateness: Duration = 5.0  # held below the stream's watermark
    fire_batch: int = Field(default=500, gt=0)  # due timers fired per applied batch, at most
    abandoned_cart: AbandonedCartRule | None = None
    profile_updated: ProfileUpdatedRule | None = None

    @property
    def enabled(self) -> bool:
        return self.abandoned_cart is not None or self.profile_updated is not None


def check_rules(triggers: TriggersConfig, mapping: MappingConfig, auto_offset_reset: str = "earliest"
                ) -> list[tuple[str, str]]:
    """Problems of the rules against the mapping, as (dotted key path, why); empty when fine."""
    problems = []
    if triggers.enabled and auto_offset_reset != "earliest":
        problems.append(("kafka.auto_offset_reset", "triggers need every change: with 'latest' a new "
                         "consumer group skips what came before it (a checkout, say); use 'earliest'"))
    rule = triggers.abandoned_cart
    if rule is None:
        return problems
    kinds = _entity_tables(mapping.tables)
    for key in ("cart", "item", "order", "product"):
        kind = getattr(rule, key)
        if kind is not None and kind not in kinds:
            problems.append((f"triggers.abandoned_cart.{key}", f"{kind!r} is no table's entity kind"))
    if any(path.startswith("triggers.") for path, _ in problems):
        return problems
    if not any(t.owner is not None and t.owner.entity == rule.cart for t in kinds[rule.item]):
        problems.append(("triggers.abandoned_cart.item", f"{rule.item!r} rows are not owned through "
                         f"the cart kind {rule.cart!r} (owner: {{entity: {rule.cart}, ...}})"))
    problems += _missing_columns(rule, kinds)
    return problems


def _missing_columns(rule: AbandonedCartRule, kinds: Mapping[str, list[TableMapping]]
                     ) -> Iterator[tuple[str, str]]:
    needs = {"status_field": rule.cart, "currency_field": rule.cart, "order_cart_field": rule.order,
             "product_field": rule.item, "quantity_field": rule.item, "price_field": rule.item}
    if rule.product is not None:
        needs["product_name_field"] = rule.product
    for key, kind in needs.items():
        column = getattr(rule, key)
        if column is None:
            continue
        kept = [t.entity.columns for t in kinds[kind] if t.entity is not None]
        if all(cols is not None and column not in cols for cols in kept):
            yield (f"triggers.abandoned_cart.{key}", f"entity {kind!r} keeps no column {column!r}")


def _entity_tables(tables: Mapping[str, TableMapping]) -> dict[str, list[TableMapping]]:
    kinds: dict[str, list[TableMapping]] = {}
    for table in tables.values():
        if table.entity is not None:
            kinds.setdefault(table.entity.kind, []).append(table)
    return kinds
