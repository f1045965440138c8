"""The source databases themselves (not their change streams): what `cdc-sync doctor` asks them."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg

from cdc_sync.core.errors import TransientError


def slot_retained(connector_config: Mapping[str, str], slot: str) -> tuple[bool, int] | None:
    """Whether a Postgres connector's replication slot is active and the WAL it holds back
    (bytes), read with the connector's own connection settings; None when there is no such
    slot. Raises TransientError when the database does not answer (the message never quotes
    the settings: they hold a password)."""
    try:
        with psycopg.connect(host=connector_config.get("database.hostname", "127.0.0.1"),
                             port=connector_config.get("database.port", "5432"),
                             user=connector_config.get("database.user"),
                             password=connector_config.get("database.password"),
                             dbname=connector_config.get("database.dbname"), connect_timeout=5) as conn:
            row = conn.execute("SELECT active,"
                               " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)"
                               " FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    except psycopg.Error as exc:
        raise TransientError(f"source database unreachable ({type(exc).__name__})") from None
    return None if row is None else (bool(row[0]), int(row[1]))
