"""Request bodies by destination format: a trigger payload (schemas/*.v1.json) as each ESP's
ingestion API wants it. docs/delivery.md says what goes where.

- `standard`: the payload as it is.
- `klaviyo_events`: Klaviyo's Create Event (`POST /api/events`, JSON:API): the trigger type
  is the metric, the payload's cart or changes are the properties, the trigger id is the
  event's `unique_id` (Klaviyo de-duplicates on it).
- `klaviyo_profiles`: Klaviyo's Create or Update Profile (`POST /api/profile-import`): the
  profile's attributes and identifiers as profile fields, the rest as custom properties.
- `braze_users_track`: Braze's `POST /users/track`: the profile's attributes in `attributes`,
  the trigger in `events`, both keyed by `external_id` (the profile id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

_KLAVIYO_FIELDS: Final = {"first_name": "first_name", "last_name": "last_name", "phone": "phone_number",
                          "organization": "organization", "title": "title"}
_LOCATION_FIELDS: Final = {"city": "city", "country": "country", "region": "region", "zip": "zip",
                           "timezone": "timezone"}


def _identity(payload: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """The profile id (as text), its first email if any, and its attributes."""
    profile = payload.get("profile") or {}
    emails = (profile.get("identifiers") or {}).get("email") or []
    return str(payload["profile_id"]), (emails[0] if emails else None), dict(profile.get("attributes") or {})


def _properties(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the trigger says besides who: the cart, or the changed fields."""
    if payload["type"] == "cart.abandoned":
        return {"cart": payload["cart"], "trigger_id": payload["id"]}
    return {"changes": payload["changes"], "trigger_id": payload["id"]}


def standard(payload: Mapping[str, Any]) -> Any:
    return payload


def klaviyo_profile_attributes(payload: Mapping[str, Any]) -> dict[str, Any]:
    pid, email, attrs = _identity(payload)
    out: dict[str, Any] = {"external_id": pid, **({"email": email} if email else {})}
    location = {}
    properties = {}
    for name, value in attrs.items():
        if name in _KLAVIYO_FIELDS:
            out[_KLAVIYO_FIELDS[name]] = value
        elif name in _LOCATION_FIELDS:
            location[_LOCATION_FIELDS[name]] = value
        else:
            properties[name] = value
    if location:
        out["location"] = location
    if properties:
        out["properties"] = properties
    return out


def klaviyo_events(payload: Mapping[str, Any]) -> Any:
    attributes: dict[str, Any] = {
        "properties": _properties(payload), "time": payload["occurred_at"], "unique_id": payload["id"],
        "metric": {"data": {"type": "metric", "attributes": {"name": payload["type"]}}},
        "profile": {"data": {"type": "profile", "attributes": klaviyo_profile_attributes(payload)}},
    }
    if payload["type"] == "cart.abandoned":
        attributes["value"] = float(payload["cart"]["total"])
        attributes["value_currency"] = payload["cart"]["currency"]
    return {"data": {"type": "event", "attributes": attributes}}


def klaviyo_profiles(payload: Mapping[str, Any]) -> Any:
    return {"data": {"type": "profile", "attributes": klaviyo_profile_attributes(payload)}}


def braze_users_track(payload: Mapping[str, Any]) -> Any:
    pid, email, attrs = _identity(payload)
    return {"attributes": [{"external_id": pid, **({"email": email} if email else {}), **attrs}],
            "events": [{"external_id": pid, "name": payload["type"], "time": payload["occurred_at"],
                        "properties": _properties(payload)}]}


FORMATTERS: Final[Mapping[str, Callable[[Mapping[str, Any]], Any]]] = {
    "standard": standard, "klaviyo_events": klaviyo_events, "klaviyo_profiles": klaviyo_profiles,
    "braze_users_track": braze_users_track,
}
