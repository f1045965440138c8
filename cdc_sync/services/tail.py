"""`cdc-sync tail`: print decoded change events as JSON lines, a debugging tool."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from cdc_sync.adapters.kafka import consumer_session, poll
from cdc_sync.core.config import KafkaConfig
from cdc_sync.core.errors import DecodeError
from cdc_sync.core.events import ChangeEvent, Decoded, Tombstone, decode


def _plain(value: Any) -> Any:
    """Row images are read-only mappings, events and refs records: make them JSON-ready."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return sorted(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        return {k: _plain(v) for k, v in value._asdict().items()}
    return value


def event_json(event: Decoded) -> str:
    """One JSON line for a decoded record; dates, decimals and other values as strings."""
    doc: dict[str, Any] = {"kind": type(event).__name__, **_plain(event)}
    if isinstance(event, ChangeEvent):
        doc["table"] = event.qualified_table
    return json.dumps(doc, default=str, sort_keys=False)


def tail(cfg: KafkaConfig, out: Callable[[str], None], err: Callable[[str], None], *,
         from_beginning: bool = False, include_all: bool = False,
         max_events: int | None = None, timeout_s: float | None = None) -> int:
    """Print change events (and with `include_all` tombstones, heartbeats…) until stopped.

    Stops after `max_events` printed lines or `timeout_s` seconds when given; returns the count.
    """
    printed = 0
    deadline = time.monotonic() + timeout_s if timeout_s else None
    # No group: tail commits nothing; without --from-beginning it starts at the end, as tail does.
    cfg = cfg.model_copy(update={"auto_offset_reset": "earliest" if from_beginning else "latest"})
    with consumer_session(cfg, group_id=None, from_beginning=from_beginning) as consumer:
        while deadline is None or time.monotonic() < deadline:
            for raw in poll(consumer, timeout_ms=500):
                try:
                    event = decode(raw.ref, raw.key, raw.value)
                except DecodeError as exc:
                    err(f"undecodable record {raw.ref.topic}/{raw.ref.partition}@{raw.ref.offset}: {exc}")
                    continue
                if not include_all and not isinstance(event, ChangeEvent | Tombstone):
                    continue
                out(event_json(event))
                printed += 1
                if max_events is not None and printed >= max_events:
                    return printed
    return printed
