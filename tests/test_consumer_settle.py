"""How the consumer settles the batch in flight: offsets only after the store has it, never
from kafka-python's IO thread by waiting. A stand-in consumer records the commits."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.structs import ConsumerGroupMetadata

from cdc_sync.adapters.store import BatchResult
from cdc_sync.services.sync import Consumer, _InFlight
from tests import storedb

TP, GONE = TopicPartition("shop.public.users", 0), TopicPartition("shop.public.users", 1)
OFFSETS = {TP: OffsetAndMetadata(11, "", -1), GONE: OffsetAndMetadata(7, "", -1)}


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[str, dict[Any, Any]]] = []
        self.down = False  # the broker: commits time out
        self.generation = 1

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def group_metadata(self) -> Any:
        return ConsumerGroupMetadata(group_id="g", generation_id=self.generation)

    def commit(self, offsets: dict[Any, Any], timeout_ms: int | None = None) -> None:
        if self.down:
            raise KafkaTimeoutError()
        self.commits.append(("sync", offsets))

    def commit_async(self, offsets: dict[Any, Any], callback: Any = None) -> None:
        self.commits.append(("async", offsets))


def consumer_with(future: Future[BatchResult]) -> tuple[Consumer, RecordingConsumer]:
    daemon = Consumer(storedb.demo_config())
    kafka = RecordingConsumer()
    daemon._consumer = kafka  # type: ignore[assignment]
    daemon._in_flight = _InFlight(2, dict(OFFSETS), future)
    return daemon, kafka


def done(result: BatchResult | None = None, error: Exception | None = None) -> Future[BatchResult]:
    future: Future[BatchResult] = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or BatchResult(frozenset({1}), 3, 0, 0))
    return future


def test_settle_commits_the_owned_partitions_once_the_store_has_the_batch() -> None:
    daemon, kafka = consumer_with(done())
    daemon.settle()
    assert kafka.commits == [("sync", {TP: OFFSETS[TP]})]
    assert daemon._in_flight is None and daemon.stats.records == 2 and daemon.stats.changes == 3
    daemon.settle()  # nothing left in flight: nothing more to commit
    assert len(kafka.commits) == 1


def test_an_applier_failure_is_raised_in_the_main_thread_and_nothing_is_committed() -> None:
    daemon, kafka = consumer_with(done(error=RuntimeError("store refused")))
    with pytest.raises(RuntimeError, match="store refused"):
        daemon.settle()
    assert kafka.commits == []


def test_on_revoke_a_finished_batch_is_committed_without_blocking() -> None:
    daemon, kafka = consumer_with(done())
    daemon.settle(on_revoke=True)
    assert kafka.commits == [("async", {TP: OFFSETS[TP]})]


def test_on_revoke_an_unfinished_batch_is_not_waited_for_nor_committed() -> None:
    pending: Future[BatchResult] = Future()
    daemon, kafka = consumer_with(pending)
    daemon.settle(on_revoke=True)  # would hang if it waited: the future never completes here
    assert kafka.commits == [] and daemon._in_flight is not None


def test_on_revoke_a_failed_batch_is_left_for_the_main_thread_to_raise() -> None:
    daemon, kafka = consumer_with(done(error=RuntimeError("store refused")))
    daemon.settle(on_revoke=True)
    assert kafka.commits == [] and daemon._in_flight is not None
    with pytest.raises(RuntimeError):
        daemon.settle()


def test_a_commit_that_fails_is_retried_by_the_next_one_even_for_partitions_it_lacks() -> None:
    daemon, kafka = consumer_with(done())
    kafka.down = True
    daemon.settle()  # applied, but the broker is down: nothing committed, nothing lost
    assert kafka.commits == [] and daemon.stats.batches == 1
    kafka.down = False
    other = TopicPartition("shop.public.orders", 0)
    kafka.assignment = lambda: {TP, other}  # type: ignore[method-assign]
    daemon._in_flight = _InFlight(1, {other: OffsetAndMetadata(3, "", -1)}, done())
    daemon.settle()
    assert kafka.commits == [("sync", {TP: OFFSETS[TP], other: OffsetAndMetadata(3, "", -1)})]
    daemon.settle()  # all committed: nothing left to retry
    assert len(kafka.commits) == 1


def test_a_failed_commit_is_retried_without_a_new_batch_after_its_backoff() -> None:
    daemon, kafka = consumer_with(done())
    kafka.down = True
    daemon.settle()
    kafka.down = False
    daemon._commit_outage.next_try = 0.0  # the backoff has passed
    daemon.settle()
    assert kafka.commits == [("sync", {TP: OFFSETS[TP]})]


def test_a_failed_commit_is_dropped_after_a_rebalance_its_records_are_re_read() -> None:
    daemon, kafka = consumer_with(done())
    kafka.down = True
    daemon.settle()
    kafka.down, kafka.generation = False, 2
    later = OffsetAndMetadata(20, "", -1)
    daemon._in_flight = _InFlight(1, {TP: later}, done())
    daemon.settle()
    assert kafka.commits == [("sync", {TP: later})]
    kafka.generation = 3
    kafka.down = True
    daemon._in_flight = _InFlight(1, {TP: OffsetAndMetadata(25, "", -1)}, done())
    daemon.settle()
    kafka.down, kafka.generation = False, 4
    daemon._commit_outage.next_try = 0.0
    daemon.settle()  # generation 3's offsets are not committed in generation 4
    assert kafka.commits == [("sync", {TP: later})]


def test_on_stop_a_failed_commit_is_tried_once_more_whatever_the_backoff() -> None:
    daemon, kafka = consumer_with(done())
    kafka.down = True
    daemon.settle()
    kafka.down, daemon.stopping = False, True
    daemon._commit_outage.next_try = float("inf")
    daemon.settle()
    assert kafka.commits == [("sync", {TP: OFFSETS[TP]})]
