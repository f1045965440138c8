"""`cdc-sync run`: the consumer. Poll a batch, turn it into mutations, apply it, commit, invalidate.

Offsets are committed only after the store's transaction commits, so a crash anywhere
means redelivery, and redelivery is a no-op (equal versions are the same fact).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import orjson
import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.cache import ProfileCache
from cdc_sync.adapters.kafka import RawRecord, open_consumer, poll
from cdc_sync.core.config import Config
from cdc_sync.core.errors import PoisonError, TransientError
from cdc_sync.core.events import ChangeEvent, decode
from cdc_sync.core.mapping import MappingConfig, map_event
from cdc_sync.core.mutations import ProfileMutation

log = structlog.get_logger("cdc_sync.sync")
T = TypeVar("T")


def prepare(records: Sequence[RawRecord], mapping: MappingConfig
            ) -> tuple[list[ProfileMutation], list[store_mod.DeadLetter]]:
    """Decode and map a batch: mutations to apply, and poison records with their reasons.

    Tombstones, heartbeats and transaction markers carry no new fact and are skipped.
    """
    mutations: list[ProfileMutation] = []
    dead: list[store_mod.DeadLetter] = []
    for raw in records:
        try:
            event = decode(raw.ref, raw.key, raw.value, orjson.loads)
            if not isinstance(event, ChangeEvent):
                continue
            mutation = map_event(event, mapping)
        except PoisonError as exc:
            dead.append(store_mod.DeadLetter(raw.ref, raw.key, raw.value, type(exc).__name__, str(exc)))
            continue
        if mutation is not None:
            mutations.append(mutation)
    return mutations, dead


@dataclass
class Stats:
    batches: int = 0
    records: int = 0
    changes: int = 0
    merges: int = 0
    dead_letters: int = 0


@dataclass
class InFlight:
    """A batch handed to the applier thread: its records (for the commit) and its outcome."""

    records: list[RawRecord]
    future: Future[store_mod.BatchResult]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """On revoke, the batch in hand is finished and committed before the partitions go."""

    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner.settle()
        log.info("partitions revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class Consumer:
    """The daemon's main loop and the state it owns.

    Two threads with one job each: the main thread owns the Kafka consumer (poll, decode,
    map, commit); the applier thread owns the store connection. While batch N is applied,
    batch N+1 is polled and prepared; N's offsets are committed once its transaction has.
    """

    def __init__(self, cfg: Config, idle_exit_s: float | None = None) -> None:
        self.cfg = cfg
        self.stopping = False
        self.idle_exit_s = idle_exit_s
        self.last_record = time.monotonic()
        self.stats = Stats()
        self.cache = ProfileCache(cfg.redis.url, cfg.redis.ttl_seconds)
        self._store: store_mod.ProfileStore | None = None
        self._applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="applier")
        self._inflight: InFlight | None = None
        self._consumer: KafkaConsumer | None = None

    def stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        if self.stopping:  # a second signal: the operator means it
            raise SystemExit(1)
        log.info("stopping after the batch in hand", signal=signum)
        self.stopping = True

    def run(self) -> Stats:
        """Consume until SIGTERM/SIGINT (or `idle_exit_s` without a record); returns the counts."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self._retrying(lambda: store_mod.migrate(self._store_conn().conn))  # the store may start later
        self._consumer = open_consumer(self.cfg.kafka, self.cfg.kafka.group_id, from_beginning=False,
                                       listener=_Rebalance(self))
        try:
            while not self.stopping and not self._idle():
                self.step()
            self.settle()
        finally:
            self._consumer.close(autocommit=False)
            self._applier.shutdown(wait=True)
            if self._store is not None:
                self._store.conn.close()
        log.info("stopped", batches=self.stats.batches, records=self.stats.records)
        return self.stats

    def step(self) -> None:
        """One batch: poll → prepare, while the previous batch is applied → settle it → hand this one over."""
        assert self._consumer is not None
        records = poll(self._consumer, timeout_ms=1000)
        batch = prepare(records, self.cfg.mapping) if records else None
        self.settle()
        if batch is not None:
            self.last_record = time.monotonic()
            self._inflight = InFlight(records, self._applier.submit(self._apply_retrying, *batch))

    def settle(self) -> None:
        """Wait for the batch in hand to be durable, then commit its offsets and drop its cache entries.
        A failure that retrying cannot fix propagates and stops the daemon, offsets uncommitted."""
        inflight, self._inflight = self._inflight, None
        if inflight is None or self._consumer is None:
            return
        result = inflight.future.result()
        commit(self._consumer, inflight.records)
        self.cache.invalidate(result.profiles)
        self._count(inflight.records, result)

    def _idle(self) -> bool:
        return self.idle_exit_s is not None and time.monotonic() - self.last_record > self.idle_exit_s

    def _apply_retrying(self, mutations: list[ProfileMutation],
                        dead: list[store_mod.DeadLetter]) -> store_mod.BatchResult:
        """Apply a batch, retrying store outages; nothing is committed meanwhile."""
        return self._retrying(lambda: self._store_conn().apply(mutations, dead))

    def _retrying(self, work: Callable[[], T]) -> T:
        """Run `work`, retrying transient failures with jittered backoff until it succeeds or we stop."""
        for attempt in Retrying(retry=retry_if_exception_type(TransientError),
                                stop=lambda _: self.stopping,
                                wait=wait_random_exponential(multiplier=0.2, max=10),
                                before_sleep=self._on_retry, reraise=True):
            with attempt:
                return work()
        raise AssertionError("unreachable")  # Retrying either returns or raises

    def _on_retry(self, state: Any) -> None:
        log.warning("store unavailable, retrying", attempt=state.attempt_number,
                    error=str(state.outcome.exception()))
        if self._store is not None:
            self._store.conn.close()
            self._store = None

    def _store_conn(self) -> store_mod.ProfileStore:
        if self._store is None or self._store.conn.closed:
            self._store = store_mod.ProfileStore(store_mod.connect(self.cfg.store.dsn),
                                                 self.cfg.mapping.aggregates)
        return self._store

    def _count(self, records: Sequence[RawRecord], result: store_mod.BatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.records += len(records)
        s.changes += result.field_changes
        s.merges += result.merges
        s.dead_letters += result.dead_letters
        log.info("batch applied", records=len(records), changes=result.field_changes,
                 merges=result.merges, dead_letters=result.dead_letters,
                 profiles=len(result.profiles))


def commit(consumer: KafkaConsumer, records: Sequence[RawRecord]) -> None:
    """Commit the offset after the last record of each partition in the batch.

    A failed commit is logged, not fatal: the batch is durable, so whoever gets the
    partitions next re-reads it as a no-op.
    """
    last: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.ref.topic, r.ref.partition)
        last[tp] = max(last.get(tp, -1), r.ref.offset)
    try:
        consumer.commit({tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()})
    except KafkaError as exc:
        log.warning("offset commit failed; the batch will be re-read as a no-op", error=str(exc))
