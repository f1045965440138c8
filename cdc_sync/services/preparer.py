"""Stages 1 and 2, decode and map, for the daemon: in a worker process of their own.

The applier thread spends a batch waiting on Postgres between short bursts of planning in
Python. Preparing the next batch in the daemon's own process held the interpreter lock
against it, so every round trip of the batch in flight also waited for the decoder. In a
worker process the two stages overlap for real (README, "Development": `make bench`
figures, side by side).

The worker is started on the first batch (spawned, never forked: kafka-python runs
threads). It ignores SIGTERM and SIGINT, which are the daemon's to handle (systemd and
Kubernetes signal the whole group; the daemon finishes its batch, then stops the worker),
and it exits by itself within a second of the daemon's end, however the daemon ended. If
the worker fails, the batch it was given is prepared in the daemon and a new worker takes
the next one; after three failures in a row the daemon prepares every batch itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import orjson
import structlog

from cdc_sync import logs, runtime
from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.core.errors import PoisonError
from cdc_sync.core.events import ChangeEvent, decode
from cdc_sync.core.mapping import MappingConfig, map_event
from cdc_sync.core.mutations import RowChange
from cdc_sync.core.watermark import BatchTimes, topic_source

log = structlog.get_logger("cdc_sync.prepare")

class Prepared(NamedTuple):
    """A decoded and mapped batch: mutations to apply, poison records, and its event times."""

    mutations: list[RowChange]
    dead: list[store_mod.DeadLetter]
    times: BatchTimes


def prepare(records: Sequence[RawRecord], mapping: MappingConfig
            ) -> tuple[list[RowChange], list[store_mod.DeadLetter]]:
    """Decode and map a batch: mutations to apply, and poison records with their reasons."""
    prepared = prepare_batch(records, mapping)
    return prepared.mutations, prepared.dead


def prepare_batch(records: Sequence[RawRecord], mapping: MappingConfig) -> Prepared:
    """Decode and map a batch, noting the newest commit time seen on each partition and from
    each source, its heartbeat table included (core/watermark.py).

    Tombstones, heartbeat messages and transaction markers carry no new fact and are skipped;
    heartbeat table writes only move event time. Any exception a record raises, not only the
    poison ones the stages name, dead-letters that record: one bad record never stops the stream.
    """
    mutations: list[RowChange] = []
    dead: list[store_mod.DeadLetter] = []
    seen: dict[tuple[str, int], int] = {}
    beats: dict[str, int] = {}
    for raw in records:
        try:
            event = decode(raw.ref, raw.key, raw.value, orjson.loads)
            if not isinstance(event, ChangeEvent):
                continue
            # A snapshot read's time is when it was read: streamed changes committed earlier may
            # follow. A streamed change says its source has come that far (Debezium reads the WAL
            # and the binlog in commit order), on every topic; a heartbeat table write says so too.
            if not event.snapshot:
                where, source = (raw.ref.topic, raw.ref.partition), topic_source(raw.ref.topic)
                seen[where] = max(seen.get(where, 0), event.commit_us)
                beats[source] = max(beats.get(source, 0), event.commit_us)
            if mapping.is_heartbeat(event):
                continue
            mutation = map_event(event, mapping)
        except PoisonError as exc:
            dead.append(store_mod.DeadLetter(raw.ref, raw.key, raw.value, type(exc).__name__, str(exc)))
            continue
        except Exception as exc:  # a case no stage foresaw: the record, not the stream, stops
            dead.append(store_mod.DeadLetter(raw.ref, raw.key, raw.value, type(exc).__name__,
                                             f"unexpected {type(exc).__name__} while decoding or mapping"))
            log.warning("record raised an unexpected error, dead-lettered", topic=raw.ref.topic,
                        partition=raw.ref.partition, offset=raw.ref.offset, error=type(exc).__name__)
            continue
        if mutation is not None:
            mutations.append(mutation)
    return Prepared(mutations, dead, BatchTimes(seen, beats))


_worker_mapping: MappingConfig | None = None  # set in the worker process by _start_worker


def _start_worker(mapping: MappingConfig, log_settings: tuple[str, bool] | None, daemon_pid: int) -> None:
    global _worker_mapping
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the daemon stops the worker when it is done
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_settings is not None:
        logs.configure(*log_settings)
    _worker_mapping = mapping
    threading.Thread(target=_exit_with, args=(daemon_pid,), name="cdc-sync-orphan-watch", daemon=True).start()
    runtime.tune_gc()  # the worker process's entry point


def _exit_with(daemon_pid: int) -> None:
    """End the worker once the daemon is gone (killed, say: it had no chance to stop it); the
    worker would otherwise wait on its task queue for ever, deaf to SIGTERM."""
    while os.getppid() == daemon_pid:
        time.sleep(1)
    os._exit(0)


def _prepare_in_worker(records: Sequence[RawRecord]) -> Prepared:
    assert _worker_mapping is not None, "the worker was started without its mapping"
    return prepare_batch(records, _worker_mapping)


class Preparer:
    """Prepares batches in a worker process, or in this one when `in_process` is set."""

    max_failures = 3  # worker failures in a row after which the daemon prepares every batch

    def __init__(self, mapping: MappingConfig, in_process: bool = False) -> None:
        self.mapping = mapping
        self.in_process = in_process
        self._pool: ProcessPoolExecutor | None = None
        self._failures = 0

    def __call__(self, records: Sequence[RawRecord]) -> Prepared:
        if self.in_process:
            return prepare_batch(records, self.mapping)
        try:
            prepared = self._worker().submit(_prepare_in_worker, records).result()
        except Exception as exc:  # a dead worker (BrokenProcessPool), a result it could not send…
            self._failures += 1
            self.close()
            if self._failures >= self.max_failures:
                self.in_process = True
                log.error("the prepare worker failed again; the daemon prepares every batch itself"
                          " from now on", failures=self._failures, error=type(exc).__name__)
            else:
                log.warning("the prepare worker failed; this batch is prepared in the daemon, a new"
                            " worker takes the next one", error=type(exc).__name__,
                            dead=isinstance(exc, BrokenProcessPool))
            return prepare_batch(records, self.mapping)
        self._failures = 0
        return prepared

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker,
                                             initargs=(self.mapping, logs.settings(), os.getpid()))
        return self._pool

    def _processes(self) -> list[multiprocessing.process.BaseProcess]:
        # concurrent.futures has no public way to reach its workers before Python 3.14
        return [] if self._pool is None else list(self._pool._processes.values())

    def worker_pids(self) -> list[int]:
        """The worker's process id, once it has started (for operators and tests)."""
        return [p.pid for p in self._processes() if p.pid]

    def close(self) -> None:
        """Stop the worker. It keeps no state: a batch it is still preparing is not waited for."""
        if self._pool is None:
            return
        processes = self._processes()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        for p in processes:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
