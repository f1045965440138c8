"""The profile store in Postgres: the one place that speaks SQL to it.

A batch is applied in one transaction of a few set-based statements: read the state the
batch touches, let core.profiles decide, write the result. A transaction-scoped advisory
lock serialises replicas, so identity decisions never race.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Generic, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from cdc_sync.core.errors import CdcSyncError, ConfigError, TransientError
from cdc_sync.core.events import RecordRef
from cdc_sync.core.mapping import AggregateSpec
from cdc_sync.core.mutations import ProfileMutation, Version, commit_time
from cdc_sync.core.profiles import (
    EntityKey,
    EntityState,
    FieldChange,
    FieldKey,
    FieldValue,
    IdentifierKey,
    IdentityPlan,
    Incoming,
    NewProfile,
    StoredIdentifier,
    entity_facts,
    field_facts,
    merge_fields,
    reconcile_entities,
    reconcile_fields,
    resolve_identities,
)

LOCK_KEY = 0x6364_6373_796E_63  # "cdcsync": one reconcile at a time across replicas


class StoreError(CdcSyncError):
    """The store refused something for a reason that retrying will not fix."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be applied, kept with its raw bytes and the reason."""

    ref: RecordRef
    key: bytes | None
    value: bytes | None
    error: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    profiles: frozenset[int]  # every profile whose state changed, merged-away ones included
    field_changes: int
    merges: int
    dead_letters: int


def connect(dsn: str) -> psycopg.Connection[Any]:
    """Open a connection; an unreachable database is transient."""
    try:
        # Bounded waits everywhere, so SIGTERM is honoured even when the store or a peer hangs.
        conn = psycopg.connect(dsn, autocommit=False, connect_timeout=10, keepalives=1,
                               keepalives_idle=30, options="-c lock_timeout=60s -c statement_timeout=300s")
    except psycopg.ProgrammingError as exc:
        # libpq quotes the string or the token it stopped at (the password, say): show neither
        unquoted = str(exc).partition('"')[0].strip().rstrip(":").split("\n")[0]
        raise ConfigError(f"store.dsn: {unquoted}") from None
    except psycopg.OperationalError as exc:
        raise TransientError(f"profile store unreachable: {exc}".splitlines()[0]) from exc
    set_json_loads(orjson.loads, conn)
    return conn


T = TypeVar("T")


class Pending(Generic[T]):
    """A query sent in a pipeline whose rows are read once the pipeline has synced."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read

    def result(self) -> T:
        return self._read()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _history_rows(changes: Sequence[FieldChange], cause: str) -> Iterator[tuple[Any, ...]]:
    """field_history rows in COPY order; JSON values go as text for Postgres to parse."""
    for c in changes:
        old, new, ref = c.old, c.new, c.ref
        yield (c.profile_id, c.name,
               None if old is None or old.value is None else _json(old.value),
               None if old is None else old.deleted,
               None if new.value is None else _json(new.value), new.deleted, new.version,
               commit_time(new.version), ref.topic if ref else None, ref.partition if ref else None,
               ref.offset if ref else None, cause)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Postgres errors become the project's: connection trouble is transient."""
    try:
        yield
    except psycopg.errors.ProgramLimitExceeded as exc:  # an OperationalError, but no retry fixes it
        raise StoreError(f"profile store: {exc}".splitlines()[0]) from None
    except (psycopg.OperationalError, psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure) as exc:
        raise TransientError(f"profile store: {exc}".splitlines()[0]) from exc
    except psycopg.Error as exc:
        # from None: DETAIL and CONTEXT of a refused statement quote the batch's values (PII)
        raise StoreError(f"profile store: {exc}".splitlines()[0]) from None


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply the numbered SQL files of cdc_sync/sql not yet applied; returns their names."""
    files = sorted((f for f in resources.files("cdc_sync.sql").iterdir() if f.name.endswith(".sql")),
                   key=lambda f: f.name)
    applied: list[str] = []
    with translated_errors(), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        for f in files:
            if f.name not in done:
                conn.execute(f.read_text())
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (f.name,))
                applied.append(f.name)
    return applied


def _recordset(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as one JSON array: a whole batch crosses to Postgres as a single parameter,
    unpacked there by json_to_recordset (much cheaper than one array per column)."""
    return orjson.dumps(list(rows), default=str).decode()


def _id_array(ids: Iterable[int]) -> str:
    """Profile ids as a Postgres array literal, in lock order: a few thousand ids a batch, which
    psycopg's general list adapter would walk in Python."""
    return "{" + ",".join(map(str, sorted(ids))) + "}"


class ProfileStore:
    """Writes batches of mutations; reads profiles, history and dead letters."""

    def __init__(self, conn: psycopg.Connection[Any], aggregates: Mapping[str, AggregateSpec]) -> None:
        self.conn = conn
        self._aggregate_sql = aggregate_query(aggregates) if aggregates else None
        self._all_aggregates_sql = aggregate_query(aggregates, _LIVE_PROFILES) if aggregates else None
        self._aggregate_kinds = frozenset(spec.entity for spec in aggregates.values())
        # What the aggregate query gives a profile without entities: new profiles start so.
        self._no_aggregates = orjson.dumps(
            {name: 0 for name, spec in aggregates.items() if spec.function == "count"}).decode()

    # ------------------------------------------------------------ writing

    def refresh_aggregates_if_changed(self) -> int | None:
        """Batches recompute the aggregates of the profiles they touch; when the configured
        aggregates differ from those the store was computed with, recompute every live
        profile once. Returns the number of profiles recomputed, None when nothing changed."""
        query = (self._all_aggregates_sql.as_string(self.conn) if self._all_aggregates_sql is not None
                 else "none")
        fingerprint = hashlib.sha256(query.encode()).hexdigest()
        with translated_errors(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            row = self.conn.execute("SELECT value FROM store_settings WHERE name = 'aggregates'").fetchone()
            if row is not None and row[0] == fingerprint:
                return None
            if self._all_aggregates_sql is not None:
                count = self.conn.execute(self._all_aggregates_sql).rowcount
            else:
                count = self.conn.execute("UPDATE profiles SET aggregates = '{}', updated_at = now()"
                                          " WHERE aggregates <> '{}'").rowcount
            self.conn.execute("INSERT INTO store_settings (name, value) VALUES ('aggregates', %s)"
                              " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (fingerprint,))
        return count

    def apply(self, mutations: Sequence[ProfileMutation], dead: Sequence[DeadLetter]) -> BatchResult:
        """Apply a batch in one transaction; returns what changed. Safe to repeat.

        Round trips: the lock, the identifiers, new profile ids, the current fields and
        entities (one pipeline), then every write in one pipeline.
        """
        with translated_errors(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            plan = self._plan_identities(mutations)
            new_ids = self._create_profiles(plan.new_profiles)
            pids = [new_ids[t.index] if isinstance(t, NewProfile) else t for t in plan.targets]
            merged = self._merge(plan)
            facts = field_facts(mutations, pids)
            entities = entity_facts(mutations, pids)
            with self.conn.pipeline():
                fields_now = self._current_fields(facts)
                entities_now = self._current_entities(entities)
            final, changes = reconcile_fields(fields_now.result(), facts)
            entities_before = entities_now.result()
            entities_after = reconcile_entities(entities_before, entities)
            with self.conn.pipeline():
                self._write_identifiers(plan, new_ids)
                self._upsert_fields(final)
                self._upsert_entities(entities_after)
                self._refresh_profiles(set(pids), plan, self._aggregate_owners(
                    entities_before, entities_after, plan))
                self._write_dead_letters(dead)
                # Built while Postgres runs the writes sent above.
                history = [*_history_rows(merged, "merge"), *_history_rows(changes, "change")]
            self._write_history(history)
        touched = set(pids) | {m.loser for m in plan.merges}
        return BatchResult(frozenset(touched), len(changes), len(plan.merges), len(dead))

    def _plan_identities(self, mutations: Sequence[ProfileMutation]) -> IdentityPlan:
        keys = {(c.type, c.value) for m in mutations for c in m.identifiers}
        rows = self.conn.execute(
            "SELECT i.type, i.value, i.profile_id, i.live, i.version, p.born"
            " FROM json_to_recordset(%s::json) AS k(type text, value text)"
            " JOIN identifiers i USING (type, value) JOIN profiles p ON p.id = i.profile_id",
            (_recordset({"type": t, "value": v} for t, v in keys),)).fetchall()
        known: dict[IdentifierKey, StoredIdentifier] = {}
        born: dict[int, str] = {}
        for type_, value, pid, live, version, pborn in rows:
            known[(type_, value)] = StoredIdentifier(pid, live, version)
            born[pid] = pborn
        return resolve_identities(mutations, known, born)

    def _create_profiles(self, borns: list[str]) -> list[int]:
        if not borns:
            return []
        ids = [r[0] for r in self.conn.execute(
            "SELECT nextval('profiles_id_seq') FROM generate_series(1, %s)", (len(borns),))]
        self.conn.execute("INSERT INTO profiles (id, born, aggregates)"
                          " SELECT *, %s::jsonb FROM unnest(%s::bigint[], %s::text[])",
                          (self._no_aggregates, ids, borns))
        return ids

    def _merge(self, plan: IdentityPlan) -> list[FieldChange]:
        """Fold every merged profile into its survivor, all merges of the batch at once:
        fields by version, then identifiers, entities and aliases re-pointed."""
        if not plan.merges:
            return []
        fields = self._fields_of(sorted({p for m in plan.merges for p in (m.survivor, m.loser)}))
        final: dict[FieldKey, FieldValue] = {}
        changes: list[FieldChange] = []
        for m in plan.merges:  # a survivor may absorb several losers: each sees the previous
            survivor = fields.setdefault(m.survivor, {})
            merged, merged_changes = merge_fields(survivor, fields.get(m.loser, {}), m.survivor)
            survivor.update(merged)
            final.update({(m.survivor, n): v for n, v in merged.items()})
            changes += merged_changes
        # Arrays, not a JSON recordset: each statement finds its rows through an index.
        pairs = ([m.survivor for m in plan.merges], [m.loser for m in plan.merges])
        pairs_sql = "unnest(%s::bigint[], %s::bigint[]) AS m(survivor, loser)"
        with self.conn.pipeline():
            self._upsert_fields(final)
            self.conn.execute("DELETE FROM profile_fields WHERE profile_id = ANY(%s)", (pairs[1],))
            for table in ("identifiers", "entities"):
                self.conn.execute(sql.SQL(
                    "UPDATE {} t SET profile_id = m.survivor FROM " + pairs_sql
                    + " WHERE t.profile_id = m.loser").format(sql.Identifier(table)), pairs)
            for column in ("id", "merged_into"):  # the loser, and the aliases it had gathered
                self.conn.execute(sql.SQL(
                    "UPDATE profiles p SET merged_into = m.survivor, updated_at = now() FROM " + pairs_sql
                    + " WHERE p.{} = m.loser").format(sql.Identifier(column)), pairs)
            self.conn.execute(
                "INSERT INTO merges (survivor, merged, proof_type, proof_value)"
                " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[])",
                (*pairs, [m.proof[0] for m in plan.merges], [m.proof[1] for m in plan.merges]))
        return changes

    def _fields_of(self, pids: list[int]) -> dict[int, dict[str, FieldValue]]:
        out: dict[int, dict[str, FieldValue]] = {}
        for pid, name, value, deleted, version in self.conn.execute(
                "SELECT profile_id, name, value, deleted, version FROM profile_fields"
                " WHERE profile_id = ANY(%s)", (pids,)):
            out.setdefault(pid, {})[name] = FieldValue(value, deleted, version)
        return out

    def _current_fields(self, facts: Sequence[Incoming]) -> Pending[dict[FieldKey, FieldValue]]:
        keys = {key for key, _, _ in facts}
        cur = self.conn.execute(
            "SELECT f.profile_id, f.name, f.value, f.deleted, f.version"
            " FROM json_to_recordset(%s::json) AS k(profile_id bigint, name text)"
            " JOIN profile_fields f USING (profile_id, name)",
            (_recordset({"profile_id": p, "name": n} for p, n in keys),))
        return Pending(lambda: {(p, n): FieldValue(v, d, ver) for p, n, v, d, ver in cur.fetchall()})

    def _current_entities(self, incoming: Sequence[tuple[EntityKey, EntityState]]
                          ) -> Pending[dict[EntityKey, EntityState]]:
        keys = {key for key, _ in incoming}
        cur = self.conn.execute(
            "SELECT e.kind, e.entity_id, e.profile_id, e.parent_kind, e.parent_id, e.data,"
            " e.deleted, e.version FROM json_to_recordset(%s::json) AS k(kind text, entity_id text)"
            " JOIN entities e USING (kind, entity_id)",
            (_recordset({"kind": k, "entity_id": e} for k, e in keys),))
        return Pending(lambda: {
            (kind, eid): EntityState(pid, (pk, pi) if pk else None, None if deleted else data, version)
            for kind, eid, pid, pk, pi, data, deleted, version in cur.fetchall()})

    def _write_identifiers(self, plan: IdentityPlan, new_ids: list[int]) -> None:
        if not plan.identifiers:
            return
        self.conn.execute(
            "INSERT INTO identifiers (type, value, profile_id, live, version)"
            " SELECT * FROM json_to_recordset(%s::json)"
            " AS r(type text, value text, profile_id bigint, live bool, version text)"
            " ON CONFLICT (type, value) DO UPDATE SET live = excluded.live, version = excluded.version"
            " WHERE identifiers.version < excluded.version",
            (_recordset({"type": w.type, "value": w.value, "live": w.live, "version": w.version,
                         "profile_id": new_ids[w.target.index] if isinstance(w.target, NewProfile)
                         else w.target} for w in plan.identifiers),))

    def _upsert_fields(self, final: Mapping[FieldKey, FieldValue]) -> None:
        if not final:
            return
        self.conn.execute(
            "INSERT INTO profile_fields (profile_id, name, value, deleted, version)"
            " SELECT * FROM json_to_recordset(%s::json)"
            " AS r(profile_id bigint, name text, value jsonb, deleted bool, version text)"
            " ON CONFLICT (profile_id, name) DO UPDATE SET value = excluded.value,"
            " deleted = excluded.deleted, version = excluded.version"
            " WHERE profile_fields.version < excluded.version",
            (_recordset({"profile_id": p, "name": n, "value": v.value, "deleted": v.deleted,
                         "version": v.version} for (p, n), v in sorted(final.items())),))

    def _upsert_entities(self, final: Mapping[EntityKey, EntityState]) -> None:
        if not final:
            return
        self.conn.execute(
            "INSERT INTO entities (kind, entity_id, profile_id, parent_kind, parent_id, data,"
            " deleted, version) SELECT * FROM json_to_recordset(%s::json) AS r(kind text,"
            " entity_id text, profile_id bigint, parent_kind text, parent_id text, data jsonb,"
            " deleted bool, version text)"
            " ON CONFLICT (kind, entity_id) DO UPDATE SET profile_id = excluded.profile_id,"
            " parent_kind = excluded.parent_kind, parent_id = excluded.parent_id,"
            " data = excluded.data, deleted = excluded.deleted, version = excluded.version"
            " WHERE entities.version < excluded.version",
            (_recordset({"kind": k, "entity_id": e, "profile_id": s.profile_id,
                         "parent_kind": s.parent[0] if s.parent else None,
                         "parent_id": s.parent[1] if s.parent else None,
                         "data": s.data, "deleted": s.data is None, "version": s.version}
                        for (k, e), s in sorted(final.items())),))

    def _aggregate_owners(self, before: Mapping[EntityKey, EntityState],
                          after: Mapping[EntityKey, EntityState], plan: IdentityPlan) -> set[int]:
        """Profiles whose aggregates may have moved: owners, old and new, of every entity of an
        aggregated kind that changed, and every survivor of a merge (it took the loser's)."""
        owners = {m.survivor for m in plan.merges}
        for key, state in after.items():
            if key[0] in self._aggregate_kinds:
                owners.add(state.profile_id)
                if key in before:
                    owners.add(before[key].profile_id)
        return owners

    def _refresh_profiles(self, pids: set[int], plan: IdentityPlan, regroup: set[int]) -> None:
        """Move `born` earlier where the batch proved an older fact; recompute the aggregates of
        the profiles in `regroup`; mark every touched profile updated (each row once)."""
        if plan.born:
            self.conn.execute(
                "UPDATE profiles p SET born = b.born FROM unnest(%s::bigint[], %s::text[]) AS b(id, born)"
                " WHERE p.id = b.id AND b.born < p.born",
                (list(plan.born), list(plan.born.values())))
        if self._aggregate_sql is not None and regroup:
            self.conn.execute(self._aggregate_sql, (_id_array(regroup),))
            pids = pids - regroup
        if pids:
            self.conn.execute("UPDATE profiles SET updated_at = now() WHERE id = ANY(%s::bigint[])",
                              (_id_array(pids),))

    def _write_history(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Append applied changes (rows from _history_rows) with COPY, the cheapest way into a
        table that only grows (COPY cannot run inside a pipeline: call this outside one)."""
        if not rows:
            return
        with self.conn.cursor() as cur, cur.copy(
                "COPY field_history (profile_id, field, old_value, old_deleted, new_value, new_deleted,"
                " version, commit_at, topic, kafka_partition, kafka_offset, cause) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _write_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        if not dead:
            return
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, key, value, error, reason)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(d.ref.topic, d.ref.partition, d.ref.offset, d.key, d.value, d.error, d.reason)
                 for d in dead])

    # ------------------------------------------------------------ reading

    def resolve(self, profile_id: int | None = None,
                identifier: IdentifierKey | None = None) -> int | None:
        """The live profile for an id (following merges) or an identifier; None if unknown."""
        with translated_errors(), self.conn.transaction():
            if identifier is not None:
                row = self.conn.execute("SELECT profile_id FROM identifiers WHERE type = %s AND value = %s",
                                        identifier).fetchone()
            else:
                row = self.conn.execute("SELECT coalesce(merged_into, id) FROM profiles WHERE id = %s",
                                        (profile_id,)).fetchone()
        return None if row is None else int(row[0])

    def document_rows(self, profile_id: int) -> ProfileRows:
        """Everything stored about one live profile, as rows for core.views to shape."""
        with translated_errors(), self.conn.transaction():
            c = self.conn
            profile = c.execute("SELECT id, aggregates, created_at, updated_at FROM profiles WHERE id = %s",
                                (profile_id,)).fetchone()
            return ProfileRows(
                profile=profile,
                aliases=[r[0] for r in c.execute(
                    "SELECT id FROM profiles WHERE merged_into = %s ORDER BY id", (profile_id,))],
                identifiers=c.execute(
                    "SELECT type, value, live, version FROM identifiers"
                    " WHERE profile_id = %s ORDER BY type, value", (profile_id,)).fetchall(),
                fields=c.execute("SELECT name, value, deleted, version FROM profile_fields"
                                 " WHERE profile_id = %s ORDER BY name", (profile_id,)).fetchall(),
                entities=c.execute("SELECT kind, entity_id, parent_kind, parent_id, data, deleted, version"
                                   " FROM entities WHERE profile_id = %s ORDER BY kind, entity_id",
                                   (profile_id,)).fetchall(),
            )

    def history(self, profile_id: int, field: str | None = None, limit: int = 100) -> list[tuple[Any, ...]]:
        """Applied changes of a profile and of the profiles merged into it, newest first."""
        with translated_errors(), self.conn.transaction():
            return self.conn.execute(
                "SELECT h.id, h.profile_id, h.field, h.old_value, h.old_deleted, h.new_value,"
                " h.new_deleted, h.version, h.commit_at, h.topic, h.kafka_partition, h.kafka_offset,"
                " h.cause, h.applied_at FROM field_history h"
                " WHERE h.profile_id IN (SELECT id FROM profiles WHERE id = %s OR merged_into = %s)"
                " AND (%s::text IS NULL OR h.field = %s) ORDER BY h.id DESC LIMIT %s",
                (profile_id, profile_id, field, field, limit)).fetchall()

    def restore(self, profile_id: int, as_of: datetime, version: Version) -> list[FieldChange]:
        """Set every field back to its value at `as_of` (source time), as new changes at `version`.

        A field that did not exist then becomes a tombstone. Returns the changes recorded.
        """
        with translated_errors(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            row = self.conn.execute("SELECT coalesce(merged_into, id) FROM profiles WHERE id = %s",
                                    (profile_id,)).fetchone()
            profile_id = profile_id if row is None else row[0]  # merged meanwhile: restore the survivor
            past = {name: FieldValue(value, deleted, version.key()) for name, value, deleted in
                    self.conn.execute(
                        "SELECT DISTINCT ON (field) field, new_value, new_deleted FROM field_history"
                        " WHERE profile_id IN (SELECT id FROM profiles WHERE id = %s OR merged_into = %s)"
                        " AND commit_at <= %s ORDER BY field, version DESC, id DESC",
                        (profile_id, profile_id, as_of))}
            now = self._fields_of([profile_id]).get(profile_id, {})
            facts = [((profile_id, name), past.get(name, FieldValue(None, True, version.key())), None)
                     for name in sorted(set(now) | set(past))]
            final, changes = reconcile_fields({(profile_id, n): v for n, v in now.items()}, facts)
            self._upsert_fields(final)
            self.conn.execute("UPDATE profiles SET updated_at = now() WHERE id = %s", (profile_id,))
            self._write_history(list(_history_rows(changes, "restore")))
        return changes

    def dead_letters(self, limit: int = 50) -> list[tuple[Any, ...]]:
        """The newest dead letters: where the record was, why it failed, its size."""
        with translated_errors(), self.conn.transaction():
            return self.conn.execute(
                "SELECT id, topic, kafka_partition, kafka_offset, error, reason, failed_at,"
                " length(value) FROM dead_letters ORDER BY id DESC LIMIT %s", (limit,)).fetchall()


@dataclass(frozen=True, slots=True)
class ProfileRows:
    profile: tuple[Any, ...] | None
    aliases: list[int]
    identifiers: list[tuple[Any, ...]]
    fields: list[tuple[Any, ...]]
    entities: list[tuple[Any, ...]]


_NUMBER = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def _aggregate_expr(spec: AggregateSpec, cond: sql.Composable) -> sql.Composable:
    if spec.function == "count":
        return sql.SQL("count(*) FILTER (WHERE {})").format(cond)
    text = sql.SQL("(e.data->>{})").format(sql.Literal(spec.field))
    numeric = sql.SQL("{fn}({text}::numeric) FILTER (WHERE {cond} AND {text} ~ {number})").format(
        fn=sql.SQL(spec.function), text=text, cond=cond, number=sql.Literal(_NUMBER))
    if spec.function == "sum":
        return numeric
    return sql.SQL("coalesce(to_jsonb({numeric}), to_jsonb({fn}({text}) FILTER (WHERE {cond})))").format(
        numeric=numeric, fn=sql.SQL(spec.function), text=text, cond=cond)


_GIVEN_PROFILES = sql.SQL("unnest(%s::bigint[]) AS k(id)")
_LIVE_PROFILES = sql.SQL("(SELECT id FROM profiles WHERE merged_into IS NULL) AS k")


def aggregate_query(aggregates: Mapping[str, AggregateSpec],
                    profiles: sql.Composable = _GIVEN_PROFILES) -> sql.Composed:
    """One UPDATE that recomputes every configured aggregate for the profiles given as %s
    (or, with `profiles=_LIVE_PROFILES`, for every live profile).

    `where` compares JSON values (true is not "True"); min/max compare numbers as numbers
    (decimals arrive as numeric strings) and anything else, such as ISO times, as text.
    """
    parts = []
    for name, spec in sorted(aggregates.items()):
        cond = sql.SQL("e.kind = {}").format(sql.Literal(spec.entity))
        for column, allowed in sorted((spec.where or {}).items()):
            cond = sql.SQL("{} AND e.data->{} = ANY({}::jsonb[])").format(
                cond, sql.Literal(column), sql.Literal([orjson.dumps(v).decode() for v in allowed]))
        parts.append(sql.SQL("{}, {}").format(sql.Literal(name), _aggregate_expr(spec, cond)))
    return sql.SQL(
        "UPDATE profiles p SET aggregates = a.doc, updated_at = now() FROM ("
        " SELECT k.id, jsonb_strip_nulls(jsonb_build_object({})) AS doc"
        " FROM {} LEFT JOIN entities e ON e.profile_id = k.id AND NOT e.deleted GROUP BY k.id) a"
        " WHERE p.id = a.id").format(sql.SQL(", ").join(parts), profiles)
