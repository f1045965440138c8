"""Trigger payloads against their JSON Schemas (cdc_sync/schemas), with jsonschema."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "cdc_sync" / "schemas"


@cache
def _validators() -> dict[str, Draft202012Validator]:
    docs = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))]
    registry: Registry[Any] = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    out = {}
    for doc in docs:
        Draft202012Validator.check_schema(doc)
        name = doc["$id"].rsplit("/", 1)[1].removesuffix(".v1.json")
        out[name] = Draft202012Validator(doc, registry=registry, format_checker=FormatChecker())
    return out


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    """Raise jsonschema.ValidationError unless the payload fits its type's schema; returns it."""
    _validators()[payload["type"]].validate(payload)
    return payload


def validate_outbox(dsn: str) -> int:
    """Validate every payload in a store's outbox; returns how many there were."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('outbox') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        rows = conn.execute("SELECT payload FROM outbox").fetchall()
    for (payload,) in rows:
        validate(payload)
    return len(rows)
