"""A throwaway profile-store database per test session, on the stack's Postgres."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

from cdc_sync import settings
from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.cache import ProfileCache
from cdc_sync.core.config import Config
from cdc_sync.services import caching
from tests import payloads

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "cdc-sync.yaml"
env = os.environ.get


def server_dsn(dbname: str) -> str:
    return (f"postgresql://{env('CDC_DB_USER', 'cdc')}:{env('CDC_DB_PASSWORD', 'cdc')}"
            f"@{env('SHOP_DB_HOST', '127.0.0.1')}:{env('SHOP_DB_PORT', '5432')}/{dbname}")


@contextmanager
def fresh_database(prefix: str = "cdc_sync_test", migrated: bool = True) -> Iterator[str]:
    """Create an empty store database, migrated unless told not to (then the daemon under test
    migrates it with its own checkout's schema); drop it afterwards. Yields its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = server_dsn(name)
    try:
        if migrated:
            with psycopg.connect(dsn) as conn:
                store_mod.migrate(conn)
        yield dsn
        payloads.validate_outbox(dsn)  # every trigger a test produced fits its JSON Schema
    finally:
        with psycopg.connect(server_dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cache_of(cfg: Config, ttl_seconds: int | None = None, retry_s: float = 2.0) -> ProfileCache:
    """The Redis cache of the store `cfg` names, keyed as the daemon and the API key it."""
    with psycopg.connect(cfg.store.dsn) as conn:
        namespace = caching.namespace(cfg, store_mod.ProfileStore(conn, {}))
    assert namespace is not None, "the store is not migrated"
    return ProfileCache(cfg.redis.url, ttl_seconds or cfg.redis.ttl_seconds, namespace, retry_s=retry_s)


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE profiles, identifiers, profile_fields, entities, merges, field_history,"
                     " dead_letters, source_rows RESTART IDENTITY CASCADE")


def demo_config(**overrides: Any) -> Config:
    """The demo's config with sections updated, e.g. store={"dsn": …}, loaded as the daemon would."""
    path = ROOT / ".stack" / f"test-config-{uuid.uuid4().hex[:8]}.yaml"
    path.parent.mkdir(exist_ok=True)
    try:
        return settings.load(write_config(path, **overrides), env={})
    finally:
        path.unlink()


def write_config(path: Path, **overrides: Any) -> Path:
    """Write the demo's config with sections updated to `path`, pointed at the stack's ports."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["kafka"]["bootstrap_servers"] = env("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    raw["redis"]["url"] = env("REDIS_URL", "redis://127.0.0.1:6379/0")
    raw["store"]["dsn"] = server_dsn("cdc_sync")
    raw.pop("delivery", None)  # the demo's destination is the demo's sink; a test names its own
    raw["metrics"] = {"port": 0}  # several daemons run at once in tests: a test that wants them asks
    for section, values in overrides.items():
        if values is None:  # the section left out
            raw.pop(section, None)
        else:
            raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def canonical_state(dsn: str) -> list[tuple[Any, ...]]:
    """The store's content with profile ids replaced by what identifies them, sorted:
    two stores hold the same people and facts exactly when these are equal."""
    with psycopg.connect(dsn) as conn:
        live = {pid: agg for pid, agg in conn.execute(
            "SELECT id, aggregates FROM profiles WHERE merged_into IS NULL")}
        ids: dict[int, list[tuple[Any, ...]]] = {pid: [] for pid in live}
        for pid, *row in conn.execute("SELECT profile_id, type, value, live, version FROM identifiers"):
            ids[pid].append(tuple(row))
        fields: dict[int, list[tuple[Any, ...]]] = {pid: [] for pid in live}
        for pid, *row in conn.execute("SELECT profile_id, name, value::text, deleted, version"
                                      " FROM profile_fields"):
            fields[pid].append(tuple(row))
        ents: dict[int | None, list[tuple[Any, ...]]] = {pid: [] for pid in live}
        ents[None] = []  # entities whose owner is not known (yet)
        for pid, *row in conn.execute("SELECT profile_id, kind, entity_id, parent_kind, parent_id,"
                                      " data::text, deleted, version FROM entities"):
            ents[pid].append(tuple(row))
    return sorted([(tuple(sorted(ids[p])), tuple(sorted(fields[p])), tuple(sorted(ents[p])),
                    yaml.safe_dump(live[p], sort_keys=True)) for p in live]
                  + [((), (), tuple(sorted(ents[None])), "owner unknown")])
