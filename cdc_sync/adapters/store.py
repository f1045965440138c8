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
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Generic, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from cdc_sync.adapters.aggregates import composed
from cdc_sync.core.errors import CdcSyncError, ConfigError, TransientError
from cdc_sync.core.events import RecordRef
from cdc_sync.core.mapping import AggregateSpec
from cdc_sync.core.mutations import (
    EntityKey,
    IdentifierKey,
    Reference,
    RowChange,
    Version,
    commit_time,
)
from cdc_sync.core.profiles import (
    FieldChange,
    FieldDecision,
    FieldKey,
    FieldValue,
    FieldWork,
    decide_fields,
    field_work,
    finish_recompute,
    fold_merge,
    same_field,
)
from cdc_sync.core.reconcile import (
    BatchPlan,
    EntityState,
    Merge,
    StoredIdentifier,
    StoreView,
    claim_keys,
    claimant_tags,
    entity_rows,
    plan_batch,
    view_keys,
)
from cdc_sync.core.rows import RowState
from cdc_sync.core.triggers import Written

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
    triggers: tuple[Written, ...] = ()  # the triggers the batch wrote to the outbox


@dataclass(frozen=True, slots=True)
class EntityChanged:
    """An entity whose data the batch really changed (created, altered or deleted)."""

    kind: str
    entity_id: str
    profile_id: int | None
    parent: EntityKey | None
    data: Mapping[str, Any] | None  # None: deleted
    version: str
    ref: RecordRef | None


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """What a batch changed, for the stages after reconcile (triggers), inside its transaction."""

    conn: psycopg.Connection[Any]
    entities: list[EntityChanged]
    changes: list[FieldChange]  # real attribute changes from source rows (merges left out)


AfterApply = Callable[[AppliedBatch], Sequence[Written]]  # returns the triggers it wrote


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


def pool(dsn: str, size: int) -> ConnectionPool:
    """Connections shared by threads (the API's), opened as connect() opens one, with shorter
    bounds: a reader waits seconds, not minutes. Not opened yet: call `open()`."""
    def configure(conn: psycopg.Connection[Any]) -> None:
        set_json_loads(orjson.loads, conn)

    return ConnectionPool(dsn, min_size=1, max_size=size, open=False, name="cdc-sync-store",
                          configure=configure, check=ConnectionPool.check_connection,
                          kwargs={"autocommit": False, "connect_timeout": 5, "keepalives": 1,
                                  "keepalives_idle": 30,
                                  "options": "-c lock_timeout=5s -c statement_timeout=10s"})


@contextmanager
def pooled(connections: ConnectionPool, aggregates: Mapping[str, AggregateSpec],
           timeout_s: float = 5.0) -> Iterator[ProfileStore]:
    """A ProfileStore on a connection borrowed for the block; TransientError when Postgres is
    not there (no connection within `timeout_s`, or one lost meanwhile)."""
    try:
        with connections.connection(timeout=timeout_s) as conn:
            yield ProfileStore(conn, aggregates)
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise TransientError(f"profile store unreachable: {type(exc).__name__}") from exc


T = TypeVar("T")


class Pending(Generic[T]):
    """A query sent in a pipeline whose rows are read once the pipeline has synced."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read

    def result(self) -> T:
        return self._read()


def _final_survivors(merges: Sequence[Merge]) -> dict[int, int]:
    """Each merged profile -> the profile it ends in after all the batch's merges."""
    into = {m.loser: m.survivor for m in merges}
    final = {}
    for loser in into:
        survivor = into[loser]
        while survivor in into:
            survivor = into[survivor]
        final[loser] = survivor
    return final


def _entity_changes(changes: Sequence[RowChange], plan: BatchPlan, real: Callable[[int], int]
                    ) -> list[EntityChanged]:
    """The entities whose data the batch changed, each with the record that changed it last."""
    refs = {(c.entity.kind, c.entity.entity_id, c.version.key()): c.ref
            for c in changes if c.entity is not None}
    out = []
    for (kind, eid), (before, after) in sorted(plan.entities.items()):
        if before is not None and before.data == after.data:
            continue  # restated: no real change
        owner = None if after.profile_id is None else real(plan.resolve(after.profile_id))
        out.append(EntityChanged(kind, eid, owner, after.parent, after.data, after.version,
                                 refs.get((kind, eid, after.version))))
    return out


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _history_rows(changes: Sequence[FieldChange], cause: str) -> Iterator[tuple[Any, ...]]:
    """field_history rows in COPY order; JSON values go as text for Postgres to parse."""
    times: dict[str, datetime] = {}  # an event's changes share its version
    for c in changes:
        old, new, ref = c.old, c.new, c.ref
        version = c.at or new.version  # the event that made the change: a delete, for a fallback
        if not version:
            raise ValueError(f"history of {c.name!r}: no version of the change that made it")
        at = times.get(version)
        if at is None:
            at = times[version] = commit_time(version)
        yield (c.profile_id, c.name,
               None if old is None or old.value is None else _json(old.value),
               None if old is None else old.deleted,
               None if new.value is None else _json(new.value), new.deleted, version,
               at, ref.topic if ref else None, ref.partition if ref else None,
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
        conn.execute("SET LOCAL statement_timeout = 0")  # a migration rewrites whole tables
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
    unpacked there by jsonb_to_recordset (much cheaper than one array per column)."""
    return orjson.dumps(list(rows), default=str).decode()


def _id_array(ids: Iterable[int]) -> str:
    """Profile ids as a Postgres array literal, in lock order: a few thousand ids a batch, which
    psycopg's general list adapter would walk in Python."""
    return "{" + ",".join(map(str, sorted(ids))) + "}"


class ProfileStore:
    """Writes batches of mutations; reads profiles, history and dead letters."""

    recompute_chunk = 5000  # profiles per statement when every profile's aggregates are recomputed

    def __init__(self, conn: psycopg.Connection[Any], aggregates: Mapping[str, AggregateSpec]) -> None:
        self.conn = conn
        queries = composed(aggregates) if aggregates else None
        self._aggregate_sql: sql.Composed | None = queries[0] if queries else None
        self._all_aggregates_sql: sql.Composed | None = queries[1] if queries else None
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
            row = self.conn.execute("SELECT value FROM store_settings WHERE name = 'aggregates'").fetchone()
        if row is not None and row[0] == fingerprint:
            return None
        count, last = 0, 0
        while True:  # in chunks: each statement stays well inside the statement timeout
            with translated_errors(), self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                ids = [r[0] for r in self.conn.execute(
                    "SELECT id FROM profiles WHERE merged_into IS NULL AND id > %s ORDER BY id LIMIT %s",
                    (last, self.recompute_chunk))]
                if not ids:
                    break
                if self._aggregate_sql is not None:
                    count += self.conn.execute(self._aggregate_sql, (_id_array(ids),)).rowcount
                else:
                    count += self.conn.execute("UPDATE profiles SET aggregates = '{}', updated_at = now()"
                                               " WHERE id = ANY(%s::bigint[]) AND aggregates <> '{}'",
                                               (_id_array(ids),)).rowcount
                last = ids[-1]
        with translated_errors(), self.conn.transaction():
            self.conn.execute("INSERT INTO store_settings (name, value) VALUES ('aggregates', %s)"
                              " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (fingerprint,))
        return count

    def apply(self, changes: Sequence[RowChange], dead: Sequence[DeadLetter],
              then: AfterApply | None = None) -> BatchResult:
        """Apply a batch in one transaction; returns what changed. Safe to repeat.

        `then` runs in the same transaction once the batch is written (the trigger stage), and
        returns the ids of the triggers it wrote.

        Round trips: the lock; what the store holds for the batch's rows, identifiers and
        entities (one pipeline, and the identifiers it claims anew); new profile ids; the new
        profiles and the attributes the batch touches (one pipeline); every write (one
        pipeline; two when an attribute's winning row withdrew, or an entity moved with its
        children: the second waits for what the first found); the history (COPY).
        """
        with translated_errors(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            plan = plan_batch(changes, self._view(changes))
            ids = self._new_profile_ids(plan.new_profiles)

            def real(pid: int) -> int:  # a new profile's temporary id -> its id in the store
                return ids[pid] if pid < 0 else pid
            plan.merges = [m._replace(survivor=real(m.survivor), loser=real(m.loser)) for m in plan.merges]
            work = field_work(plan.transitions, {(real(p), n): w for (p, n), w in plan.withdrawn.items()},
                              {(tag, (real(p), n)) for tag, (p, n) in plan.withdrawn_by}, real)
            merged, decision = self._decide(plan, work, ids)
            final = self._write(plan, real, work, merged, decision, dead)
            triggers = tuple(then(AppliedBatch(self.conn, _entity_changes(changes, plan, real),
                                               decision.changes))) if then is not None else ()
        touched = {p for p, _ in final} | {m.loser for m in plan.merges} | {
            real(t.after_profile) for t in plan.transitions if t.after_profile is not None}
        return BatchResult(frozenset(touched), len(decision.changes), len(plan.merges), len(dead), triggers)

    def _decide(self, plan: BatchPlan, work: FieldWork, ids: Mapping[int, int]
                ) -> tuple[FieldDecision, FieldDecision]:
        """Insert the new profiles, read the attributes the batch touches and decide them:
        merged profiles folded into their survivors first, then the batch's own supplies."""
        losers = [(m.survivor, m.loser) for m in plan.merges]
        with self.conn.pipeline():
            self._insert_profiles(plan.new_profiles, ids)
            now = self._current_fields(work.attributes())
            merging = self._fields_of(sorted({p for pair in losers for p in pair}))
        current = now.result()
        merged = self._fold_merges(plan, merging.result(), current)
        return merged, decide_fields(current, work)

    def _write(self, plan: BatchPlan, real: Callable[[int], int], work: FieldWork, merged: FieldDecision,
               decision: FieldDecision, dead: Sequence[DeadLetter]) -> dict[FieldKey, FieldValue]:
        """Every write of the batch, then its history; returns the attributes written. One
        pipeline when the attributes were decided in memory (the common case); otherwise the
        attribute writes wait for what the first pipeline found (winners, moved children)."""
        decided = not decision.recompute and not plan.moved

        def finish(children: set[int]) -> list[tuple[Any, ...]]:
            self._upsert_fields({**merged.final, **decision.final})
            self._refresh_profiles(plan, real, work.attributes(), children)
            self._write_dead_letters(dead)
            # Built while Postgres runs the writes sent above.
            return [*_history_rows(merged.changes, "merge"), *_history_rows(decision.changes, "change")]
        with self.conn.pipeline():
            self._write_merges(plan)
            self._write_rows(plan, real)
            self._write_identifiers(plan, real)
            self._write_entities(plan, real)
            children = self._move_children(plan, real)
            winners = self._winners(decision)
            if decided:
                history = finish(set())
        if not decided:
            finish_recompute(decision, winners.result())
            with self.conn.pipeline():
                history = finish(children.result())
        self._write_history(history)
        return {**merged.final, **decision.final}

    # ---- reading what the batch touches

    def _view(self, changes: Sequence[RowChange]) -> StoreView:
        """What the store holds for the batch: its rows, referenced identifiers and entities (one
        pipeline); then the identifiers it claims anew or releases; then, only when the batch
        needs them, the profiles of other rows its new claims may join."""
        rows_keys, id_keys, entity_keys = view_keys(changes)
        view = StoreView({}, {}, {}, {})
        with self.conn.pipeline():
            rows = self.conn.execute(
                "SELECT r.source_table, r.row_key, r.profile_id, r.live, r.version, r.claims, r.owner,"
                " r.entity_kind, r.entity_id, r.attrs, p.born"
                " FROM jsonb_to_recordset(%s::jsonb) AS k(t text, k text)"
                " JOIN source_rows r ON r.source_table = k.t AND r.row_key = k.k"
                " LEFT JOIN profiles p ON p.id = r.profile_id",
                (_recordset({"t": t, "k": k} for t, k in rows_keys),))
            ids = self._identifiers(id_keys)
            entities = self.conn.execute(
                "SELECT e.kind, e.entity_id, e.profile_id, e.parent_kind, e.parent_id, e.data, e.deleted,"
                " e.version, p.born FROM jsonb_to_recordset(%s::jsonb) AS k(kind text, entity_id text)"
                " JOIN entities e USING (kind, entity_id) LEFT JOIN profiles p ON p.id = e.profile_id",
                (_recordset({"kind": k, "entity_id": e} for k, e in entity_keys),))
        for t, k, pid, live, version, claims, owner, ekind, eid, attrs, born in rows.fetchall():
            view.rows[(t, k)] = RowState(
                pid, live, version, tuple((c[0], c[1]) for c in claims),
                Reference(*owner) if owner else None, (ekind, eid) if ekind is not None else None,
                {name: (v[0], v[1]) for name, v in attrs.items()})
            if pid is not None:
                view.born[pid] = born
        self._read_identifiers(ids, view)
        for kind, eid, pid, pkind, parent, data, deleted, version, born in entities.fetchall():
            view.entities[(kind, eid)] = EntityState(
                pid, (pkind, parent) if pkind is not None else None, None if deleted else data, version)
            if pid is not None:
                view.born[pid] = born
        view.rows.update(entity_rows(changes, view.entities))
        claims = claim_keys(changes, view)
        if claims:
            self._read_identifiers(self._identifiers(claims), view)
        tags = claimant_tags(changes, view)
        if tags:
            with self.conn.pipeline():
                claimants = self.conn.execute(
                    "SELECT r.source_table || ' ' || r.row_key, r.profile_id, p.born"
                    " FROM jsonb_to_recordset(%s::jsonb) AS k(t text, k text)"
                    " JOIN source_rows r ON r.source_table = k.t AND r.row_key = k.k"
                    " LEFT JOIN profiles p ON p.id = r.profile_id",
                    (_recordset(dict(zip(("t", "k"), tag.split(" ", 1), strict=True)) for tag in tags),))
            for tag, pid, born in claimants.fetchall():
                view.claimant_profiles[tag] = pid
                if pid is not None:
                    view.born[pid] = born
        return view

    def _identifiers(self, keys: Iterable[IdentifierKey]) -> psycopg.Cursor[Any]:
        return self.conn.execute(
            "SELECT i.type, i.value, i.profile_id, i.claimants, i.version, i.released, p.born"
            " FROM jsonb_to_recordset(%s::jsonb) AS k(type text, value text)"
            " JOIN identifiers i USING (type, value) JOIN profiles p ON p.id = i.profile_id",
            (_recordset({"type": t, "value": v} for t, v in keys),))

    @staticmethod
    def _read_identifiers(cur: psycopg.Cursor[Any], view: StoreView) -> None:
        for type_, value, pid, claimants, version, released, born in cur.fetchall():
            view.identifiers[(type_, value)] = StoredIdentifier(pid, frozenset(claimants), version, released)
            view.born[pid] = born

    def _new_profile_ids(self, new: Mapping[int, str]) -> dict[int, int]:
        """Real ids for the plan's new profiles (temporary ids are negative)."""
        if not new:
            return {}
        ids = [r[0] for r in self.conn.execute(
            "SELECT nextval('profiles_id_seq') FROM generate_series(1, %s)", (len(new),))]
        temp = sorted(new, reverse=True)  # -1, -2, ...: in the order the batch made them
        return dict(zip(temp, ids, strict=True))

    def _insert_profiles(self, new: Mapping[int, str], ids: Mapping[int, int]) -> None:
        if new:
            self.conn.execute("INSERT INTO profiles (id, born, aggregates)"
                              " SELECT *, %s::jsonb FROM unnest(%s::bigint[], %s::text[])",
                              (self._no_aggregates, [ids[t] for t in new], list(new.values())))

    def _current_fields(self, keys: Iterable[FieldKey]) -> Pending[dict[FieldKey, FieldValue]]:
        cur = self.conn.execute(
            "SELECT f.profile_id, f.name, f.value, f.deleted, f.version, f.supplier, f.withdrawn"
            " FROM jsonb_to_recordset(%s::jsonb) AS k(profile_id bigint, name text)"
            " JOIN profile_fields f USING (profile_id, name)",
            (_recordset({"profile_id": p, "name": n} for p, n in keys if p >= 0),))
        return Pending(lambda: {(p, n): FieldValue(v, d, ver, sup, w)
                                for p, n, v, d, ver, sup, w in cur.fetchall()})

    def _fields_of(self, pids: list[int]) -> Pending[dict[int, dict[str, FieldValue]]]:
        cur = self.conn.execute(
            "SELECT profile_id, name, value, deleted, version, supplier, withdrawn FROM profile_fields"
            " WHERE profile_id = ANY(%s)", (pids,))

        def read() -> dict[int, dict[str, FieldValue]]:
            out: dict[int, dict[str, FieldValue]] = {}
            for pid, name, value, deleted, version, supplier, withdrawn in cur.fetchall():
                out.setdefault(pid, {})[name] = FieldValue(value, deleted, version, supplier, withdrawn)
            return out
        return Pending(read)

    def _fold_merges(self, plan: BatchPlan, fields: dict[int, dict[str, FieldValue]],
                     current: dict[FieldKey, FieldValue]) -> FieldDecision:
        """Every merged profile's attributes folded into its survivor (each sees the previous);
        `current` is updated to the folded state for the batch's own decisions."""
        folded = FieldDecision({}, [], {})
        for m in plan.merges:
            survivor = fields.setdefault(m.survivor, {})
            after = fold_merge(survivor, fields.pop(m.loser, {}))
            for name, value in after.items():
                old = survivor.get(name)
                if value != old:
                    folded.final[(m.survivor, name)] = value
                    if not same_field(old, value) and not (old is None and value.deleted):
                        folded.changes.append(FieldChange(m.survivor, name, old, value, None, m.version))
            fields[m.survivor] = after
        losers = {m.loser for m in plan.merges}  # a survivor that lost later keeps nothing
        folded.final = {k: v for k, v in folded.final.items() if k[0] not in losers}
        folded.changes = [c for c in folded.changes if c.profile_id not in losers]
        for (pid, name), value in folded.final.items():
            current[(pid, name)] = value
        return folded

    def _winners(self, decision: FieldDecision
                 ) -> Pending[dict[FieldKey, tuple[FieldValue, RecordRef | None]]]:
        """For attributes whose winning row withdrew: the newest supply among the profile's live
        rows, read after the batch's row writes (same pipeline, so they are visible)."""
        if not decision.recompute:
            return Pending(dict)
        cur = self.conn.execute(
            "SELECT k.profile_id, k.name, w.value, w.version, w.supplier"
            " FROM jsonb_to_recordset(%s::jsonb) AS k(profile_id bigint, name text) CROSS JOIN LATERAL ("
            "  SELECT r.attrs->k.name->0 AS value, (r.attrs->k.name->>1) COLLATE \"C\" AS version,"
            "  (r.source_table || ' ' || r.row_key) COLLATE \"C\" AS supplier FROM source_rows r"
            "  WHERE r.profile_id = k.profile_id AND r.live AND r.attrs ? k.name"
            "  ORDER BY 2 DESC, 3 DESC LIMIT 1) w",
            (_recordset({"profile_id": p, "name": n} for p, n in decision.recompute),))
        return Pending(lambda: {(p, n): (FieldValue(v, False, ver, sup), None)
                                for p, n, v, ver, sup in cur.fetchall()})

    # ---- writing

    def _write_merges(self, plan: BatchPlan) -> None:
        """Fold every merged profile into its survivor: rows, identifiers, entities, deliveries
        and aliases re-pointed, its attributes dropped (folded into the survivor's), the merge recorded."""
        if not plan.merges:
            return
        # Arrays, not a JSON recordset: each statement finds its rows through an index. Every
        # loser goes to its final survivor: a survivor may itself lose later in the batch.
        final = _final_survivors(plan.merges)
        pairs = ([final[m.loser] for m in plan.merges], [m.loser for m in plan.merges])
        pairs_sql = "unnest(%s::bigint[], %s::bigint[]) AS m(survivor, loser)"
        self.conn.execute("DELETE FROM profile_fields WHERE profile_id = ANY(%s)", (pairs[1],))
        # deliveries too: a person's messages stay in one queue, in order, across the merge
        for table in ("identifiers", "entities", "source_rows", "deliveries"):
            self.conn.execute(sql.SQL(
                "UPDATE {} t SET profile_id = m.survivor FROM " + pairs_sql
                + " WHERE t.profile_id = m.loser").format(sql.Identifier(table)), pairs)
        for column in ("id", "merged_into"):  # the loser, and the aliases it had gathered
            self.conn.execute(sql.SQL(
                "UPDATE profiles p SET merged_into = m.survivor, updated_at = now() FROM " + pairs_sql
                + " WHERE p.{} = m.loser").format(sql.Identifier(column)), pairs)
        self.conn.execute(
            "INSERT INTO merges (survivor, merged, proof_type, proof_value, proof_table, proof_row)"
            " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[],"
            " %s::text[], %s::text[])",
            ([m.survivor for m in plan.merges], pairs[1], [m.proof[0] for m in plan.merges],
             [m.proof[1] for m in plan.merges], [m.proof_row[0] for m in plan.merges],
             [m.proof_row[1] for m in plan.merges]))

    def _write_rows(self, plan: BatchPlan, real: Callable[[int], int]) -> None:
        if len(plan.rows) == len(plan.untracked):
            return
        self.conn.execute(
            "INSERT INTO source_rows (source_table, row_key, profile_id, live, version, claims, owner,"
            " entity_kind, entity_id, attrs) SELECT * FROM jsonb_to_recordset(%s::jsonb)"
            " AS r(source_table text, row_key text, profile_id bigint, live bool, version text,"
            " claims jsonb, owner jsonb, entity_kind text, entity_id text, attrs jsonb)"
            " ON CONFLICT (source_table, row_key) DO UPDATE SET profile_id = excluded.profile_id,"
            " live = excluded.live, version = excluded.version, claims = excluded.claims,"
            " owner = excluded.owner, entity_kind = excluded.entity_kind, entity_id = excluded.entity_id,"
            " attrs = excluded.attrs",
            (_recordset({"source_table": t, "row_key": k, "live": r.live, "version": r.version,
                         "profile_id": None if r.profile_id is None else real(plan.resolve(r.profile_id)),
                         "claims": r.claims, "owner": list(r.owner) if r.owner else None,
                         "entity_kind": r.entity[0] if r.entity else None,
                         "entity_id": r.entity[1] if r.entity else None, "attrs": r.attrs}
                        for (t, k), r in sorted(plan.rows.items()) if (t, k) not in plan.untracked),))

    def _write_identifiers(self, plan: BatchPlan, real: Callable[[int], int]) -> None:
        if not plan.identifiers:
            return
        self.conn.execute(
            "INSERT INTO identifiers (type, value, profile_id, live, version, claimants, released)"
            " SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(type text, value text, profile_id bigint,"
            " live bool, version text, claimants text[], released jsonb)"
            " ON CONFLICT (type, value) DO UPDATE SET profile_id = excluded.profile_id,"
            " live = excluded.live, version = excluded.version, claimants = excluded.claimants,"
            " released = excluded.released",
            (_recordset({"type": t, "value": v, "profile_id": real(plan.resolve(i.profile_id)),
                         "live": bool(i.claimants), "version": i.version, "claimants": sorted(i.claimants),
                         "released": i.released}
                        for (t, v), i in sorted(plan.identifiers.items())),))

    def _write_entities(self, plan: BatchPlan, real: Callable[[int], int]) -> None:
        if not plan.entities:
            return
        self.conn.execute(
            "INSERT INTO entities (kind, entity_id, profile_id, parent_kind, parent_id, data,"
            " deleted, version) SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(kind text,"
            " entity_id text, profile_id bigint, parent_kind text, parent_id text, data jsonb,"
            " deleted bool, version text)"
            " ON CONFLICT (kind, entity_id) DO UPDATE SET profile_id = excluded.profile_id,"
            " parent_kind = excluded.parent_kind, parent_id = excluded.parent_id,"
            " data = excluded.data, deleted = excluded.deleted, version = excluded.version",
            (_recordset({"kind": k, "entity_id": e,
                         "profile_id": None if s.profile_id is None else real(plan.resolve(s.profile_id)),
                         "parent_kind": s.parent[0] if s.parent else None,
                         "parent_id": s.parent[1] if s.parent else None,
                         "data": s.data, "deleted": s.data is None, "version": s.version}
                        for (k, e), (_, s) in sorted(plan.entities.items())),))

    def _move_children(self, plan: BatchPlan, real: Callable[[int], int]) -> Pending[set[int]]:
        """Entities whose owner changed take their children (and theirs) along: a cart item
        follows its cart, also when it arrived first. (A child row is just its entity: the
        mapping gives rows owned through an entity no identifiers and no attributes.)
        Returns the old and new owners of moved children of an aggregated kind."""
        if not plan.moved:
            return Pending(set)
        moved = sorted(plan.moved.items())
        cur = self.conn.execute(
            "WITH RECURSIVE moved(kind, entity_id, profile_id) AS ("
            " SELECT k COLLATE \"C\", e COLLATE \"C\", p FROM unnest(%s::text[], %s::text[], %s::bigint[])"
            " AS u(k, e, p)"
            " UNION SELECT c.kind, c.entity_id, m.profile_id FROM moved m"
            " JOIN entities c ON c.parent_kind = m.kind AND c.parent_id = m.entity_id),"
            " kids AS (SELECT e.kind, e.entity_id, e.profile_id AS old, m.profile_id AS new FROM moved m"
            " JOIN entities e ON e.kind = m.kind AND e.entity_id = m.entity_id"
            " WHERE e.profile_id IS DISTINCT FROM m.profile_id),"
            " moved_entities AS (UPDATE entities e SET profile_id = k.new FROM kids k"
            " WHERE e.kind = k.kind AND e.entity_id = k.entity_id RETURNING e.kind)"
            " SELECT kind, old, new FROM kids WHERE kind = ANY(%s::text[])",
            ([k for (k, _), _ in moved], [e for (_, e), _ in moved],
             [None if p is None else real(plan.resolve(p)) for _, p in moved], sorted(self._aggregate_kinds)))
        return Pending(lambda: {p for _, old, new in cur.fetchall() for p in (old, new) if p is not None})

    def _upsert_fields(self, final: Mapping[FieldKey, FieldValue]) -> None:
        if not final:
            return
        self.conn.execute(
            "INSERT INTO profile_fields (profile_id, name, value, deleted, version, supplier, withdrawn)"
            " SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(profile_id bigint, name text, value jsonb,"
            " deleted bool, version text, supplier text, withdrawn text)"
            " ON CONFLICT (profile_id, name) DO UPDATE SET value = excluded.value,"
            " deleted = excluded.deleted, version = excluded.version, supplier = excluded.supplier,"
            " withdrawn = excluded.withdrawn",
            (_recordset({"profile_id": p, "name": n, "value": v.value, "deleted": v.deleted,
                         "version": v.version, "supplier": v.supplier, "withdrawn": v.withdrawn}
                        for (p, n), v in ((k, final[k]) for k in sorted(final))),))

    def _aggregate_owners(self, plan: BatchPlan, real: Callable[[int], int]) -> set[int]:
        """Profiles whose aggregates may have moved: owners, old and new, of every changed entity
        of an aggregated kind, and every survivor of a merge (it took the loser's)."""
        owners = {m.survivor for m in plan.merges}
        for key, (before, after) in plan.entities.items():
            if key[0] in self._aggregate_kinds:
                for state in (before, after):
                    if state is not None and state.profile_id is not None:
                        owners.add(real(plan.resolve(state.profile_id)))
        return owners

    def _refresh_profiles(self, plan: BatchPlan, real: Callable[[int], int],
                          keys: Iterable[FieldKey], children: set[int]) -> None:
        """Move `born` earlier where the batch proved an older fact; recompute the aggregates of
        the profiles whose entities moved (`children`: those whose entities moved with a parent);
        mark every touched profile updated (each row once)."""
        if plan.born:
            self.conn.execute(
                "UPDATE profiles p SET born = b.born FROM unnest(%s::bigint[], %s::text[]) AS b(id, born)"
                " WHERE p.id = b.id AND b.born < p.born",
                ([real(p) for p in plan.born], list(plan.born.values())))
        pids = {p for p, _ in keys} | {
            real(plan.resolve(r.profile_id)) for r in plan.rows.values() if r.profile_id is not None}
        regroup = self._aggregate_owners(plan, real) | children
        if self._aggregate_sql is not None and regroup:
            self.conn.execute(self._aggregate_sql, (_id_array(regroup),))
            pids -= regroup
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
                "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, key, value, error, reason,"
                " record_hash) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " sha256(coalesce(sha256(%s::bytea), '') || coalesce(sha256(%s::bytea), '')))"
                " ON CONFLICT (topic, kafka_partition, kafka_offset, record_hash) DO NOTHING",
                [(d.ref.topic, d.ref.partition, d.ref.offset, d.key, d.value, d.error, d.reason,
                  d.key, d.value) for d in dead])

    # ------------------------------------------------------------ reading

    def resolve(self, profile_id: int | None = None,
                identifier: IdentifierKey | None = None, live_only: bool = False) -> int | None:
        """The live profile for an id (following merges) or an identifier (with `live_only`,
        one the profile still holds, not a removed one); None if unknown."""
        with translated_errors(), self.conn.transaction():
            if identifier is not None:
                row = self.conn.execute("SELECT profile_id FROM identifiers WHERE type = %s AND value = %s"
                                        + (" AND live" if live_only else ""), identifier).fetchone()
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
                fields=c.execute("SELECT name, value, deleted, version, split_part(supplier, ' ', 1)"
                                 " FROM profile_fields"
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

    def restore(self, profile_id: int, as_of: datetime) -> list[FieldChange]:
        """Set every attribute back to its value at `as_of` (source commit time), recorded as new
        changes; an attribute that did not exist then becomes a tombstone. Returns the changes.

        Event time throughout: the restore's version is one microsecond after the newest fact the
        profile holds, so a source change committed later than that still wins over it, however
        late it is applied.
        """
        with translated_errors(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            row = self.conn.execute("SELECT coalesce(merged_into, id) FROM profiles WHERE id = %s",
                                    (profile_id,)).fetchone()
            profile_id = profile_id if row is None else row[0]  # merged meanwhile: restore the survivor
            now = self._fields_of([profile_id]).result().get(profile_id, {})
            newest = max((commit_time(v.version) for v in now.values() if v.version), default=as_of)
            version = Version(_epoch_us(max(newest, as_of)) + 1, 0xFFFF, "restore", ()).key()
            past = {name: FieldValue(value, deleted, version, None) for name, value, deleted in
                    self.conn.execute(
                        "SELECT DISTINCT ON (field) field, new_value, new_deleted FROM field_history"
                        " WHERE profile_id IN (SELECT id FROM profiles WHERE id = %s OR merged_into = %s)"
                        " AND commit_at <= %s ORDER BY field, commit_at DESC, version DESC, id DESC",
                        (profile_id, profile_id, as_of))}
            changes = []
            final: dict[FieldKey, FieldValue] = {}
            for name in sorted(set(now) | set(past)):
                new = past.get(name, FieldValue(None, True, version, None))
                if not same_field(now.get(name), new):
                    final[(profile_id, name)] = new
                    changes.append(FieldChange(profile_id, name, now.get(name), new, None, version))
            self._upsert_fields(final)
            self.conn.execute("UPDATE profiles SET updated_at = now() WHERE id = %s", (profile_id,))
            self._write_history(list(_history_rows(changes, "restore")))
        return changes

    def dead_letter_records(self, ids: Sequence[int] = (), reason: str | None = None
                            ) -> list[tuple[int, DeadLetter]]:
        """Dead letters with their raw records: those with the given ids, or whose reason holds
        `reason` (case-insensitive), or (neither given) all; oldest first."""
        with translated_errors(), self.conn.transaction():
            rows = self.conn.execute(
                "SELECT id, topic, kafka_partition, kafka_offset, key, value, error, reason FROM dead_letters"
                " WHERE (cardinality(%s::bigint[]) = 0 OR id = ANY(%s::bigint[]))"
                " AND (%s::text IS NULL OR strpos(lower(reason), lower(%s::text)) > 0) ORDER BY id",
                (list(ids), list(ids), reason, reason)).fetchall()
        return [(i, DeadLetter(RecordRef(t, p, o), bytes(k) if k is not None else None,
                               bytes(v) if v is not None else None, e, r))
                for i, t, p, o, k, v, e, r in rows]

    def settle_dead_letters(self, applied: Sequence[int], failed: Mapping[int, DeadLetter]) -> None:
        """After a replay: drop the dead letters that applied; count another attempt, with its
        reason, for those that failed again."""
        with translated_errors(), self.conn.transaction():
            if applied:
                self.conn.execute("DELETE FROM dead_letters WHERE id = ANY(%s::bigint[])", (list(applied),))
            if failed:
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE dead_letters SET error = %s, reason = %s, attempts = attempts + 1,"
                        " failed_at = now() WHERE id = %s",
                        [(d.error, d.reason, i) for i, d in sorted(failed.items())])

    def freshness_mark(self, profile_id: int) -> tuple[Any, ...] | None:
        """What changes whenever the profile does (updated_at, merged_into): read after caching
        a document to see whether it went stale meanwhile."""
        with translated_errors(), self.conn.transaction():
            row = self.conn.execute("SELECT updated_at, merged_into FROM profiles WHERE id = %s",
                                    (profile_id,)).fetchone()
        return None if row is None else tuple(row)

    def cache_namespace(self) -> str | None:
        """What names this store's entries in a shared Redis: its database cluster's system
        identifier, the database's name, and the id the store drew when migrated (0010), hashed.
        A logical copy (a dump restored elsewhere) gets a namespace of its own; a physical one
        (a snapshot restore) does not: `redis.namespace` sets one by hand. None while the store
        is not migrated yet."""
        with translated_errors(), self.conn.transaction():
            if self.conn.execute("SELECT to_regclass('store_settings')").fetchone() == (None,):
                return None
            row = self.conn.execute("SELECT current_database(), value FROM store_settings"
                                    " WHERE name = 'instance'").fetchone()
            if row is None:
                return None
            try:
                with self.conn.transaction():  # a savepoint: a role may not be allowed to call it
                    system = self.conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction):
                system = None
        parts = f"{system[0] if system else ''}:{row[0]}:{row[1]}"
        return hashlib.sha256(parts.encode()).hexdigest()[:16]

    def dead_letter_count(self) -> int:
        with translated_errors(), self.conn.transaction():
            row = self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        return int(row[0]) if row else 0

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
