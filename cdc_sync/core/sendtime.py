"""The send-time profile document: what an email provider asks for while it renders a message.

Built from the stored profile document (core/views.py) with time given as data, so it can be
cached as it is and still say how old it is when it is served (`freshness`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cdc_sync.core.rules import AbandonedCartRule, TriggersConfig


class Shape(BaseModel):
    """Which entity kinds are carts, their items and orders, and which attributes are consent."""

    model_config = ConfigDict(frozen=True)

    cart: str = "cart"
    item: str = "cart_item"
    order: str = "order"
    status_field: str | None = "status"
    closed_statuses: tuple[str, ...] = ("checked_out", "emptied")
    consent: tuple[str, ...] = ("consent_email_marketing",)
    recent_orders: int = Field(default=5, ge=0)

    @classmethod
    def of(cls, triggers: TriggersConfig, recent_orders: int) -> Shape:
        """The kinds the trigger rules name (the cart rule's, else the defaults)."""
        rule = triggers.abandoned_cart or AbandonedCartRule()
        consent = {r.consent_attribute for r in (triggers.abandoned_cart, triggers.profile_updated)
                   if r is not None and r.consent_attribute}
        return cls(cart=rule.cart, item=rule.item, order=rule.order, status_field=rule.status_field,
                   closed_statuses=(*rule.checked_out_statuses, *rule.emptied_statuses),
                   consent=tuple(sorted(consent or {"consent_email_marketing"})),
                   recent_orders=recent_orders)


def _versions(doc: Any) -> list[str]:
    """Every commit time under a document (the `version.commit_at` values)."""
    if isinstance(doc, Mapping):
        found = [str(doc["commit_at"])] if "commit_at" in doc and "source" in doc else []
        return found + [t for v in doc.values() for t in _versions(v)]
    if isinstance(doc, list):
        return [t for v in doc for t in _versions(v)]
    return []


def _time(entity: Mapping[str, Any]) -> str:
    version = entity.get("version") or {}
    return str(version.get("commit_at") or "")


def document(profile: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
    """The send-time document of a stored profile document, without `freshness.age_seconds`."""
    entities = profile.get("entities", {})
    open_carts = [c for c in entities.get(shape.cart, [])
                  if shape.status_field is None or c.get(shape.status_field) not in shape.closed_statuses]
    cart = max(open_carts, key=_time, default=None)
    orders = sorted(entities.get(shape.order, []), key=_time, reverse=True)[:shape.recent_orders]
    attributes = {name: a["value"] for name, a in profile.get("attributes", {}).items() if not a["deleted"]}
    newest = max(_versions(profile), default=None)
    return {
        "id": profile["id"],
        "aliases": profile.get("aliases", []),
        "identifiers": {t: sorted(i["value"] for i in profile.get("identifiers", [])
                                  if i["type"] == t and i["live"])
                        for t in sorted({i["type"] for i in profile.get("identifiers", []) if i["live"]})},
        "attributes": attributes,
        "consent": {name: attributes.get(name) is True for name in shape.consent},
        "cart": None if cart is None else {**{k: v for k, v in cart.items() if k != shape.item},
                                           "items": cart.get(shape.item, [])},
        "orders": orders,
        "aggregates": profile.get("aggregates") or {},
        "freshness": {"source_commit_at": newest},
        "updated_at": profile.get("updated_at"),
    }


def served(doc: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The document as served at `now`: with the seconds since its newest source commit."""
    newest = doc.get("freshness", {}).get("source_commit_at")
    age = None if newest is None else round((now - datetime.fromisoformat(newest)).total_seconds(), 3)
    return {**doc, "freshness": {**doc.get("freshness", {}), "age_seconds": age}}


def live_identifier(doc: Mapping[str, Any], kind: str, value: str) -> bool:
    return value in doc.get("identifiers", {}).get(kind, ())


