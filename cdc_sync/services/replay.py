"""`cdc-sync dlq replay`: apply dead letters again after a fix (a mapping change, say).

Each dead letter's raw record goes through the daemon's own stages (`preparer.prepare`, then the
store) with the current configuration. Those that apply now, or now map to nothing (a table
moved to `ignore`), are removed; those that fail again stay, with their new reason and one
more attempt counted. Applying is idempotent (a row's older event changes nothing), so the
removal runs after the apply, in its own transaction: a replay interrupted between the two
re-applies as a no-op next time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.core.config import Config
from cdc_sync.core.errors import TransientError
from cdc_sync.core.events import RecordRef
from cdc_sync.core.mutations import RowChange
from cdc_sync.services import caching
from cdc_sync.services.inspection import open_store
from cdc_sync.services.preparer import prepare
from cdc_sync.services.scheduler import Scheduler

log = structlog.get_logger("cdc_sync.replay")
CHUNK = 500  # dead letters applied per transaction

Letter = tuple[int, store_mod.DeadLetter]  # (dead-letter id, the record and its last reason)


@dataclass
class ReplayResult:
    replayed: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)  # error class -> dead letters


def replay(cfg: Config, ids: Sequence[int] = (), reason: str | None = None) -> ReplayResult:
    """Replay the dead letters with these ids, or whose reason contains `reason`, or all."""
    store = open_store(cfg)
    cache = caching.profile_cache(cfg, store)
    result = ReplayResult()
    try:
        for chunk in _chunks(store.dead_letter_records(ids, reason)):
            applied, failed, profiles = _replay_chunk(store, cfg, chunk)
            store.settle_dead_letters(applied, failed)
            if cache is not None:
                caching.drop(cache, profiles)  # as the daemon does after a batch
            result.replayed += len(applied)
            result.still_failing.update(d.error for d in failed.values())
    finally:
        store.conn.close()
    log.info("dead letters replayed", replayed=result.replayed,
             still_failing=sum(result.still_failing.values()))
    return result


def _chunks(letters: list[Letter]) -> list[list[Letter]]:
    """Chunks in which no two dead letters share a position (a recreated topic's records do):
    within a chunk a record is known by its position."""
    chunks: list[list[Letter]] = []
    pending = letters
    while pending:
        seen: set[RecordRef] = set()
        chunk: list[Letter] = []
        rest: list[Letter] = []
        for letter in pending:
            if letter[1].ref in seen or len(chunk) == CHUNK:
                rest.append(letter)
            else:
                seen.add(letter[1].ref)
                chunk.append(letter)
        chunks.append(chunk)
        pending = rest
    return chunks


def _replay_chunk(store: store_mod.ProfileStore, cfg: Config, chunk: list[Letter]
                  ) -> tuple[list[int], dict[int, store_mod.DeadLetter], frozenset[int]]:
    """(ids that applied, id -> the new dead letter of those that failed again, the profiles
    that changed)."""
    by_ref = {d.ref: i for i, d in chunk}
    changes, dead = prepare([RawRecord(d.ref, d.key, d.value) for _, d in chunk], cfg.mapping)
    failed = {by_ref[d.ref]: d for d in dead}
    profiles: frozenset[int] = frozenset()
    # A replayed change schedules its timers as the daemon would; the daemon fires them.
    then = Scheduler(cfg.triggers).schedule if cfg.triggers.enabled else None
    try:
        profiles = store.apply(changes, [], then).profiles
    except TransientError:
        raise
    except Exception:  # one of them fails: find which, one at a time
        retried, profiles = _apply_one_by_one(store, changes, {i: d for i, d in chunk}, by_ref, then)
        failed.update(retried)
    return [i for i, _ in chunk if i not in failed], failed, profiles


def _apply_one_by_one(store: store_mod.ProfileStore, changes: list[RowChange],
                      letters: dict[int, store_mod.DeadLetter], by_ref: dict[RecordRef, int],
                      then: store_mod.AfterApply | None
                      ) -> tuple[dict[int, store_mod.DeadLetter], frozenset[int]]:
    failed: dict[int, store_mod.DeadLetter] = {}
    profiles: set[int] = set()
    for change in changes:
        try:
            profiles |= store.apply([change], [], then).profiles
        except TransientError:
            raise
        except Exception as exc:
            i = by_ref[change.ref]
            reason = str(exc) if isinstance(exc, store_mod.StoreError) else \
                f"unexpected {type(exc).__name__} while applying"
            old = letters[i]
            failed[i] = store_mod.DeadLetter(old.ref, old.key, old.value, type(exc).__name__, reason)
    return failed, frozenset(profiles)
