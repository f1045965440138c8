"""`cdc-sync outbox …` and `cdc-sync destinations …`: what was written, where it went, and
putting dead deliveries or a disabled destination back to work."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any

from cdc_sync.adapters.deliveries import Deliveries
from cdc_sync.core.config import Config


def listing(cfg: Config, limit: int, status: str | None, destination: str | None, type_: str | None
            ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The newest triggers with their deliveries, and the disabled destinations (name -> why)."""
    with closing(Deliveries.connect(cfg.store.dsn)) as store:
        disabled = {n: f"since {at.isoformat()}: {why}" for n, (at, why) in store.disabled().items()}
        rows = store.listing(limit, status, destination, type_)
    for row in rows:
        row["occurred_at"], row["created_at"] = row["occurred_at"].isoformat(), row["created_at"].isoformat()
        for d in row["deliveries"]:
            if d["destination"] in disabled:
                d["destination_disabled"] = disabled[d["destination"]]
    return rows, disabled


def replay(cfg: Config, statuses: Sequence[str], trigger_id: str | None, destination: str | None) -> int:
    """Queue ended deliveries again; returns how many."""
    with closing(Deliveries.connect(cfg.store.dsn)) as store:
        return store.replay(statuses, trigger_id, destination)


def destinations(cfg: Config) -> list[dict[str, Any]]:
    """Each configured destination (and any with deliveries left but no longer configured): its
    types, format, whether it is disabled, and its deliveries by status."""
    with closing(Deliveries.connect(cfg.store.dsn)) as store:
        disabled, counts = store.disabled(), store.counts()
    names = sorted(set(cfg.delivery.destinations) | {d for d, _ in counts})
    out = []
    for name in names:
        dest = cfg.delivery.destinations.get(name)
        doc: dict[str, Any] = {"name": name, "configured": dest is not None,
                               "types": dest.types if dest else [], "format": dest.format if dest else None,
                               "state": "disabled" if name in disabled else "enabled",
                               "deliveries": {s: n for (d, s), n in sorted(counts.items()) if d == name}}
        if name in disabled:
            doc["disabled"] = f"since {disabled[name][0].isoformat()}: {disabled[name][1]}"
        out.append(doc)
    return out


def enable(cfg: Config, name: str) -> bool:
    with closing(Deliveries.connect(cfg.store.dsn)) as store:
        return store.enable(name)
