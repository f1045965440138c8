"""`cdc-sync run`: the consumer. Poll a batch, turn it into mutations, apply it, commit, invalidate.

Offsets are committed only after the store's transaction commits, so a crash anywhere
means redelivery, and redelivery is a no-op (equal versions are the same fact).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.cache import ProfileCache
from cdc_sync.adapters.kafka import (
    EndOffsets,
    RawRecord,
    client_lag,
    generation,
    open_consumer,
    partitions,
    poll,
)
from cdc_sync.core.config import Config
from cdc_sync.core.errors import TransientError
from cdc_sync.core.mutations import RowChange
from cdc_sync.core.watermark import BatchTimes, StreamReport
from cdc_sync.services import caching
from cdc_sync.services.preparer import Preparer
from cdc_sync.services.scheduler import Scheduler
from cdc_sync.services.telemetry import Telemetry

log = structlog.get_logger("cdc_sync.sync")
T = TypeVar("T")


@dataclass
class Stats:
    batches: int = 0
    records: int = 0
    changes: int = 0
    merges: int = 0
    dead_letters: int = 0
    triggers: int = 0


Offsets = dict[TopicPartition, OffsetAndMetadata]


@dataclass
class _InFlight:
    """A batch handed to the applier thread, and the offsets to commit once it is durable."""

    records: int
    offsets: Offsets
    future: Future[store_mod.BatchResult]
    polled_at: float = 0.0  # time.monotonic() when its records were polled
    submitted_at: float = 0.0  # and when the applier was handed them
    newest_us: Mapping[tuple[str, int], int] = field(default_factory=dict)  # newest commit a partition


@dataclass
class _Outage:
    """Consecutive failures of one call the loop goes on without (a poll, an offset commit):
    each is logged on one line, and the next try waits a jittered delay that grows to 10 s."""

    what: str
    attempts: int = 0
    next_try: float = 0.0

    def failed(self, error: BaseException) -> float:
        """Count and log a failure; returns the seconds to wait before the next try."""
        self.attempts += 1
        delay = random.uniform(0, min(10.0, 0.2 * 2 ** self.attempts))  # as wait_random_exponential
        self.next_try = time.monotonic() + delay
        log.warning(f"{self.what} failed, retrying", attempt=self.attempts, retry_in_s=round(delay, 1),
                    error=str(error))
        return delay

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def ended(self) -> None:
        if self.attempts:
            log.info(f"{self.what} succeeded again", failed_attempts=self.attempts)
        self.attempts, self.next_try = 0, 0.0


class _SettleOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """On revoke, commit a batch that is applied but not yet committed (see Consumer.settle:
    the main thread normally has, before any rejoin).

    kafka-python 3 calls this on its IO thread, where a blocking commit is refused, so the
    commit is sent asynchronously (it goes out ahead of the rejoin on the same connection)."""

    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))
        self.owner.settle(on_revoke=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class Consumer:
    """The daemon's main loop and the state it owns: one Kafka consumer, one store connection.

    Two stages overlap: while the applier thread writes batch N to the store, the main thread
    polls batch N+1 and has it prepared (decoded and mapped) by the preparer's worker process
    (services/preparer.py). Batch N's offsets are committed, from the main thread, only
    once its transaction has committed, and before the group can rebalance (settle()).
    """

    def __init__(self, cfg: Config, idle_exit_s: float | None = None,
                 telemetry: Telemetry | None = None) -> None:
        self.cfg = cfg
        self.telemetry = telemetry or Telemetry(cfg)  # served by the caller (cli), or only counted
        self.stopping = False
        self.idle_exit_s = idle_exit_s
        self.last_record = time.monotonic()
        self.stats = Stats()
        self.cache: ProfileCache | None = None  # named after the store: made by run() once it is migrated
        self._store: store_mod.ProfileStore | None = None
        self._applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-sync-apply")
        self.preparer = Preparer(cfg.mapping, in_process=not cfg.kafka.prepare_process)
        self.scheduler = Scheduler(cfg.triggers, cfg.delivery.routes()) if cfg.triggers.enabled else None
        self.tick_s = 1.0  # with triggers on, an idle replica still records progress this often
        # after every poll it asks the broker whether its partitions are caught up
        self._ends = EndOffsets(cfg.kafka) if cfg.triggers.enabled else None
        self._last_tick = 0.0
        self._in_flight: _InFlight | None = None
        self._settling = threading.Lock()
        self._consumer: KafkaConsumer | None = None
        # Offsets of durable batches whose commit failed, retried with later ones while the
        # group generation they failed in lasts (after a rebalance their records are re-read).
        self._uncommitted: Offsets = {}
        self._uncommitted_generation = -1
        self._poll_outage = _Outage("kafka poll")
        self._commit_outage = _Outage("offset commit")

    def stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        if self.stopping:  # a second signal: the operator means it
            if self._store is not None:  # end the applier's statement now; its batch stays uncommitted
                self._store.conn.cancel_safe(timeout=2)
            raise SystemExit(1)
        log.info("stopping after the batch in hand", signal=signum)
        self.stopping = True

    def run(self) -> Stats:
        """Consume until SIGTERM/SIGINT (or `idle_exit_s` without a record); returns the counts."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self._retrying(lambda: store_mod.migrate(self._store_conn().conn))  # the store may start later
        self.cache = self._retrying(lambda: caching.profile_cache(self.cfg, self._store_conn()))
        if self.cache is not None:  # the API logs the same: two that differ never meet in Redis
            log.info("profile cache", namespace=self.cache.namespace)
        refreshed = self._retrying(lambda: self._store_conn().refresh_aggregates_if_changed())
        if refreshed is not None:
            log.info("aggregates recomputed for the configured set", profiles=refreshed)
        self._consumer = consumer = self._retrying(lambda: open_consumer(
            self.cfg.kafka, self.cfg.kafka.group_id, from_beginning=False,
            listener=_SettleOnRevoke(self)), system="kafka")  # the broker may start later
        try:
            while not self.stopping and not self._idle():
                self.step(consumer)
            self.settle()
        except BaseException:
            self.stopping = True  # the applier's retries give up; its batch stays uncommitted
            raise
        finally:
            self._applier.shutdown(wait=True)
            self.preparer.close()
            consumer.close(autocommit=False, timeout_ms=5000)  # bounded even when Kafka is down
            if self._ends is not None:
                self._ends.close()
            if self._store is not None:
                self._store.conn.close()
        log.info("stopped", batches=self.stats.batches, records=self.stats.records)
        return self.stats

    def step(self, consumer: KafkaConsumer) -> None:
        """Poll and prepare batch N+1 while batch N is applied; settle N; hand N+1 to the applier."""
        known = self.scheduler.heartbeats if self.scheduler is not None else {}  # before the poll
        records = self._poll(consumer)
        polled_at = time.monotonic()
        report = self._report(consumer, known) if self.scheduler is not None else None
        prepared = self.preparer(records) if records else None
        self.settle()
        if prepared is None and self.cache is not None:
            self.cache.flush()  # idle, and the applier too: invalidations an outage held back
        if prepared is not None:
            self.last_record = polled_at
            if report is not None:
                report = replace(report, times=prepared.times)
            self._submit(records, prepared.mutations, prepared.dead, report, polled_at,
                         prepared.times.partitions)
        elif report is not None and polled_at - self._last_tick >= self.tick_s:
            # No records: the partitions this replica owns may still have caught up with a newer
            # heartbeat (read by another replica), and due timers may fire.
            self._submit([], [], [], report, polled_at)

    def _submit(self, records: list[RawRecord], mutations: list[RowChange], dead: list[store_mod.DeadLetter],
                report: StreamReport | None, polled_at: float,
                newest_us: Mapping[tuple[str, int], int] | None = None) -> None:
        self._last_tick = polled_at
        self._in_flight = _InFlight(len(records), _offsets(records), self._applier.submit(
            self._apply_batch, records, mutations, dead, report), polled_at, time.monotonic(),
            newest_us or {})

    def _report(self, consumer: KafkaConsumer, heartbeats: dict[str, int]) -> StreamReport:
        """What the consumer knows of its partitions right after the poll (times come later),
        with the broker's word on which are caught up, asked on connections of its own."""
        every, caught_up = partitions(consumer, self._ends)
        return StreamReport(self.cfg.kafka.group_id, tuple(every), caught_up, BatchTimes(), heartbeats)

    def _poll(self, consumer: KafkaConsumer) -> list[RawRecord]:
        """One poll. A failed one is logged and waited out; the batch in flight is untouched.
        (During an outage kafka-python mostly returns empty polls, each after its timeout.)"""
        try:
            records = poll(consumer, timeout_ms=0 if self._in_flight else 1000)
        except TransientError as exc:
            self.telemetry.kafka_ok = False
            self._pause(self._poll_outage.failed(exc))
            return []
        self._poll_outage.ended()
        self.telemetry.kafka_ok = True
        self.telemetry.partitions(client_lag(consumer))
        return records

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake up for SIGTERM."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def settle(self, on_revoke: bool = False) -> None:
        """Wait for the batch in flight, then commit its offsets. An applier failure is raised
        here, in the main thread; on revoke (IO thread) it is left for the main thread.

        kafka-python rejoins a group only in a poll that may wait (with a pattern subscription
        a poll that may not returns before the rejoin), and step() polls without waiting while
        a batch is in flight: so the main thread settles a batch before any revoke. On revoke
        a batch still in flight is therefore not waited for (that would stall kafka-python's
        IO thread, heartbeats included); a finished one is committed, an unfinished one will
        be re-read by the next owner as a no-op."""
        # On revoke, never wait for the lock: its holder is the main thread settling this very
        # batch, and that commit needs the IO thread this callback is holding up.
        if not self._settling.acquire(blocking=not on_revoke):
            return
        try:
            in_flight = self._in_flight
            if in_flight is None:
                if self._uncommitted and (on_revoke or self.stopping or self._commit_outage.due()):
                    self._commit_durable({}, sync=not on_revoke)
                return
            if on_revoke and not (in_flight.future.done() and in_flight.future.exception() is None):
                log.warning("partitions revoked with a batch in flight; its records will be re-read",
                            records=in_flight.records)
                return
            result = in_flight.future.result()
            self._in_flight = None
            self._commit_durable(in_flight.offsets, sync=not on_revoke)
            self._count(in_flight, result)
            if result.triggers:
                # from the poll that moved the watermark past their time to their commit (make bench)
                latency = time.monotonic() - in_flight.polled_at
                self.telemetry.trigger_write.observe(latency)
                self.telemetry.written(result.triggers)
                log.info("triggers committed", count=len(result.triggers),
                         latency_ms=round(latency * 1000, 1))
            if on_revoke:
                log.info("batch in hand applied and committed before the revoke", records=in_flight.records)
        finally:
            self._settling.release()

    def _commit_durable(self, offsets: Offsets, sync: bool) -> None:
        """Commit a durable batch's offsets together with those whose commit failed earlier in
        this generation; if this commit fails too, keep them all for the next try.

        On revoke (async, IO thread) a failure is only logged: the partitions are leaving."""
        assert self._consumer is not None
        current = -1 if not sync else generation(self._consumer)
        if sync and current != self._uncommitted_generation:
            self._uncommitted = {}  # a rebalance since: the partitions' owners re-read those records
        merged = dict(self._uncommitted)
        for tp, o in offsets.items():
            if tp not in merged or o.offset > merged[tp].offset:
                merged[tp] = o
        owned = self._consumer.assignment()  # a partition that moved meanwhile is its new owner's
        merged = {tp: o for tp, o in merged.items() if tp in owned}
        self._uncommitted = {}
        try:
            commit(self._consumer, merged, sync=sync)
        except TransientError as exc:
            self._uncommitted, self._uncommitted_generation = merged, current
            self._commit_outage.failed(exc)
            return
        if sync:
            self._commit_outage.ended()

    def _apply_batch(self, records: Sequence[RawRecord], mutations: list[RowChange],
                     dead: list[store_mod.DeadLetter], report: StreamReport | None) -> store_mod.BatchResult:
        """The applier thread's work: make the batch durable with its triggers, then drop the
        cached profiles."""
        if self.scheduler is None or report is None:
            result = self._apply_isolating(records, mutations, dead)
        else:
            result = self._apply_with_triggers(records, mutations, dead, self.scheduler, report)
        assert self.cache is not None, "run() makes the cache once the store is migrated"
        self.cache.invalidate(result.profiles)
        return result

    def _apply_with_triggers(self, records: Sequence[RawRecord], mutations: list[RowChange],
                             dead: list[store_mod.DeadLetter], scheduler: Scheduler, report: StreamReport
                             ) -> store_mod.BatchResult:
        """The batch, its timers, its progress and what fires, in one transaction. When it
        must be split to find a bad record, each part schedules its own timers, and the
        batch's progress is recorded (and timers fired) only once every part is durable: a
        part alone must not claim partitions caught up whose records are in another part."""
        try:
            return self._apply_retrying(mutations, dead, partial(scheduler, report))
        except TransientError:
            raise
        except Exception:
            log.warning("batch refused, applying it in parts to find the records at fault",
                        records=len(mutations))
        result = self._apply_isolating(records, mutations, dead, scheduler.schedule)
        fired = self._apply_retrying([], [], partial(scheduler.advance, report))
        return replace(result, triggers=result.triggers + fired.triggers)

    def _apply_isolating(self, records: Sequence[RawRecord], mutations: list[RowChange],
                         dead: list[store_mod.DeadLetter], then: store_mod.AfterApply | None = None
                         ) -> store_mod.BatchResult:
        """Apply the batch; if it fails for any reason but an outage (the store refuses a value,
        a serialiser or a bug raises), find the failing records by halving and dead-letter
        them with the reason, so one bad record never stops the stream."""
        try:
            return self._apply_retrying(mutations, dead, then)
        except TransientError:
            raise
        except Exception as exc:
            if len(mutations) <= 1:
                raws = {r.ref: r for r in records}
                first_line = (str(exc).splitlines() or [""])[0][:200]
                reason = str(exc) if isinstance(exc, store_mod.StoreError) else \
                    f"unexpected {type(exc).__name__} while applying: {first_line}"
                refused = [store_mod.DeadLetter(m.ref, raws[m.ref].key, raws[m.ref].value,
                                                type(exc).__name__, reason) for m in mutations]
                for m in mutations:  # the reason is in the dead-letter row: its text may quote values
                    log.warning("record refused by the store, dead-lettered", topic=m.ref.topic,
                                partition=m.ref.partition, offset=m.ref.offset)
                return self._apply_retrying([], dead + refused, then)
        half = len(mutations) // 2
        first = self._apply_isolating(records, mutations[:half], dead, then)
        second = self._apply_isolating(records, mutations[half:], [], then)
        return store_mod.BatchResult(first.profiles | second.profiles,
                                     first.field_changes + second.field_changes,
                                     first.merges + second.merges, first.dead_letters + second.dead_letters,
                                     first.triggers + second.triggers)

    def _idle(self) -> bool:
        return self.idle_exit_s is not None and time.monotonic() - self.last_record > self.idle_exit_s

    def _apply_retrying(self, mutations: list[RowChange], dead: list[store_mod.DeadLetter],
                        then: store_mod.AfterApply | None = None) -> store_mod.BatchResult:
        """Apply a batch, retrying store outages; nothing is committed meanwhile."""
        return self._retrying(lambda: self._store_conn().apply(mutations, dead, then))

    def _retrying(self, work: Callable[[], T], system: str = "store") -> T:
        """Run `work`, retrying transient failures with jittered backoff until it succeeds or we stop."""
        for attempt in Retrying(retry=retry_if_exception_type(TransientError),
                                stop=lambda _: self.stopping,
                                wait=wait_random_exponential(multiplier=0.2, max=10),
                                before_sleep=partial(self._on_retry, system), reraise=True):
            with attempt:
                result = work()
                if system == "store":  # ready again, also when the retries were at start-up
                    self.telemetry.store_used("sync", True)
                return result
        raise AssertionError("unreachable")  # Retrying either returns or raises

    def _on_retry(self, system: str, state: Any) -> None:
        if system == "store":
            self.telemetry.store_used("sync", False)
        log.warning(f"{system} unavailable, retrying", attempt=state.attempt_number,
                    error=str(state.outcome.exception()))
        if system == "store" and self._store is not None:
            self._store.conn.close()
            self._store = None

    def _store_conn(self) -> store_mod.ProfileStore:
        if self._store is None or self._store.conn.closed:
            self._store = store_mod.ProfileStore(store_mod.connect(self.cfg.store.dsn),
                                                 self.cfg.mapping.aggregates)
        return self._store

    def _count(self, batch: _InFlight, result: store_mod.BatchResult) -> None:
        records = batch.records
        self.telemetry.store_used("sync", True)
        self.telemetry.batch(records, result.field_changes, result.dead_letters, len(result.triggers),
                             time.monotonic() - batch.submitted_at, batch.newest_us)
        if self.scheduler is not None:
            self.telemetry.watermark(self.scheduler.watermark_us)
        if not records and not result.triggers:
            return  # an idle tick
        s = self.stats
        s.batches += 1
        s.records += records
        s.changes += result.field_changes
        s.merges += result.merges
        s.dead_letters += result.dead_letters
        s.triggers += len(result.triggers)
        log.info("batch applied", records=records, changes=result.field_changes,
                 merges=result.merges, dead_letters=result.dead_letters,
                 profiles=len(result.profiles), triggers=len(result.triggers),
                 # polled to handed over (prepared, the batch before it settled), then applied
                 wait_ms=round((batch.submitted_at - batch.polled_at) * 1000, 1),
                 apply_ms=round((time.monotonic() - batch.submitted_at) * 1000, 1))


def _offsets(records: Sequence[RawRecord]) -> Offsets:
    """The offset after the last record of each partition in the batch."""
    last: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.ref.topic, r.ref.partition)
        last[tp] = max(last.get(tp, -1), r.ref.offset)
    return {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()}


def commit(consumer: KafkaConsumer, offsets: Offsets, sync: bool = True) -> None:
    """Commit a durable batch's offsets; a sync commit waits at most 5 s.

    Raises TransientError when a sync commit fails: not fatal, the batch is durable, so the
    caller may try again, and whoever reads the partitions next re-reads it as a no-op.
    An async commit's failure is only logged.
    """
    if not offsets:
        return
    try:
        if sync:
            consumer.commit(offsets, timeout_ms=5000)
        else:
            consumer.commit_async(offsets, callback=_log_async_commit)
    except KafkaError as exc:
        raise TransientError(f"offset commit failed: {exc}") from exc


def _log_async_commit(offsets: Offsets, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning("offset commit failed; the batch will be re-read as a no-op", error=str(response))
