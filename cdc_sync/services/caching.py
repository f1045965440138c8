"""Which Redis cache a process uses for its profile store: the one place that decides it."""

from __future__ import annotations

from collections.abc import Collection

import structlog

from cdc_sync.adapters.cache import ProfileCache
from cdc_sync.adapters.store import ProfileStore
from cdc_sync.core.config import Config
from cdc_sync.core.errors import TransientError

log = structlog.get_logger("cdc_sync.cache")


def namespace(cfg: Config, store: ProfileStore) -> str | None:
    """`redis.namespace` if set, else the store's own; None while the store is not migrated."""
    return cfg.redis.namespace or store.cache_namespace()


def profile_cache(cfg: Config, store: ProfileStore) -> ProfileCache | None:
    """The store's cache, or None while the store is not migrated (nothing is cached then)."""
    found = namespace(cfg, store)
    return None if found is None else ProfileCache(cfg.redis.url, cfg.redis.ttl_seconds, found)


def drop(cache: ProfileCache, profile_ids: Collection[int]) -> None:
    """Drop entries now, for a one-shot command (it cannot retry later): Redis down is a
    warning that they expire by their TTL."""
    try:
        cache.delete(profile_ids)
    except TransientError as exc:
        log.warning("cached profiles not dropped (Redis unavailable): they expire by their TTL",
                    profiles=len(profile_ids), ttl_seconds=cache.ttl, error=str(exc))
