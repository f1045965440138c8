"""Stages 1 and 2, decode and map, for the daemon: in a worker process of their own.

The applier thread spends a batch waiting on Postgres between short bursts of planning in
Python. Preparing the next batch in the daemon's own process held the interpreter lock
against it, so every round trip of the batch in flight also waited for the decoder. In a
worker process the two stages overlap for real: `make bench` applies the bulk workload at
about 1.3 to 1.6 times the events per second (README, "Throughput").

The worker is started on the first batch (spawned, never forked: kafka-python runs
threads) and ignores SIGTERM and SIGINT, which are the daemon's to handle. If it dies, the
batch it was given is prepared in the daemon and a new worker takes the next one.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import orjson
import structlog

from cdc_sync import logs
from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.core.errors import PoisonError
from cdc_sync.core.events import ChangeEvent, decode
from cdc_sync.core.mapping import MappingConfig, map_event
from cdc_sync.core.mutations import RowChange

log = structlog.get_logger("cdc_sync.prepare")

Prepared = tuple[list[RowChange], list[store_mod.DeadLetter]]


def prepare(records: Sequence[RawRecord], mapping: MappingConfig) -> Prepared:
    """Decode and map a batch: mutations to apply, and poison records with their reasons.

    Tombstones, heartbeats and transaction markers carry no new fact and are skipped. Any
    exception a record raises, not only the poison ones the stages name, dead-letters that
    record: one bad record never stops the stream.
    """
    mutations: list[RowChange] = []
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
        except Exception as exc:  # a case no stage foresaw: the record, not the stream, stops
            dead.append(store_mod.DeadLetter(raw.ref, raw.key, raw.value, type(exc).__name__,
                                             f"unexpected {type(exc).__name__} while decoding or mapping"))
            log.warning("record raised an unexpected error, dead-lettered", topic=raw.ref.topic,
                        partition=raw.ref.partition, offset=raw.ref.offset, error=type(exc).__name__)
            continue
        if mutation is not None:
            mutations.append(mutation)
    return mutations, dead


_worker_mapping: MappingConfig | None = None  # set in the worker process by _start_worker


def _start_worker(mapping: MappingConfig, log_settings: tuple[str, bool] | None) -> None:
    global _worker_mapping
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the daemon stops the worker when it is done
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_settings is not None:
        logs.configure(*log_settings)
    _worker_mapping = mapping


def _prepare_in_worker(records: Sequence[RawRecord]) -> Prepared:
    assert _worker_mapping is not None, "the worker was started without its mapping"
    return prepare(records, _worker_mapping)


class Preparer:
    """Prepares batches in a worker process, or in this one when `in_process` is set."""

    def __init__(self, mapping: MappingConfig, in_process: bool = False) -> None:
        self.mapping = mapping
        self.in_process = in_process
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, records: Sequence[RawRecord]) -> Prepared:
        if self.in_process:
            return prepare(records, self.mapping)
        try:
            return self._worker().submit(_prepare_in_worker, records).result()
        except BrokenProcessPool:
            log.warning("the prepare worker process ended; this batch is prepared in the daemon,"
                        " a new worker takes the next one")
            self.close()
            return prepare(records, self.mapping)

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker,
                                             initargs=(self.mapping, logs.settings()))
        return self._pool

    def worker_pids(self) -> list[int]:
        """The worker's process id, once it has started (for operators and tests)."""
        return [] if self._pool is None else [p.pid for p in self._pool._processes.values() if p.pid]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
