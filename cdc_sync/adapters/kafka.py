"""Kafka through kafka-python: the one place that knows the client and its errors."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from cdc_sync.core.config import KafkaConfig
from cdc_sync.core.errors import TransientError
from cdc_sync.core.events import RecordRef


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as bytes, before decoding."""

    ref: RecordRef
    key: bytes | None
    value: bytes | None

    def __reduce__(self) -> tuple[type[RawRecord], tuple[RecordRef, bytes | None, bytes | None]]:
        return (RawRecord, (self.ref, self.key, self.value))  # cheaper than the dataclass default


def open_consumer(cfg: KafkaConfig, group_id: str | None, from_beginning: bool,
                  listener: ConsumerRebalanceListener | None = None) -> KafkaConsumer:
    """A consumer subscribed to the configured topic pattern; offsets are committed by hand.

    Raises TransientError when no broker answers; call again to retry.
    """
    probe(cfg.bootstrap_servers)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=cfg.bootstrap_servers.split(","),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else cfg.auto_offset_reset,
            max_poll_records=cfg.max_poll_records,
            session_timeout_ms=cfg.session_timeout_ms,
            metadata_max_age_ms=5000,  # pick up new source topics quickly
            # The broker holds a fetch open this long when there is nothing to read; a short
            # hold keeps a poll quick once its batch is in (end offsets: see EndOffsets).
            fetch_max_wait_ms=100,
            client_id="cdc-sync",
            bootstrap_timeout_ms=10_000,  # a bounded wait, so a retry loop can honour SIGTERM
        )
        consumer.subscribe(pattern=cfg.topic_pattern, listener=listener)
    except KafkaError as exc:
        raise TransientError(f"Kafka at {cfg.bootstrap_servers} unavailable: {exc}") from exc
    return consumer


def probe(bootstrap_servers: str, timeout_s: float = 3.0) -> None:
    """Raise TransientError unless one bootstrap server accepts a TCP connection.

    kafka-python leaves an IO thread running for every consumer whose start-up fails, so a
    broker that is plainly down is detected here, before one is built."""
    errors = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return
        except OSError as exc:
            errors.append(f"{server.strip()} {exc.strerror or type(exc).__name__}")
    raise TransientError(f"Kafka unreachable: {'; '.join(errors)}")


def generation(consumer: KafkaConsumer) -> int:
    """The consumer's group generation: offsets read in one generation are committed in it."""
    return int(consumer.group_metadata().generation_id)


class EndOffsets:
    """Asks the broker for partitions' end offsets on connections of its own.

    The group consumer's own request queues behind the fetch the broker holds open while
    there is nothing new to read (`fetch_max_wait_ms`), so asking through it after every poll
    would hold the loop up to that long each time. This client never fetches: its answer
    comes in a round trip (about a millisecond here), so it can be asked after every poll.
    Built lazily, and rebuilt after a failure; never raises."""

    def __init__(self, cfg: KafkaConfig, retry_s: float = 5.0) -> None:
        self._cfg = cfg
        self._client: KafkaConsumer | None = None
        self._retry_s = retry_s  # after a failure, no answer (and no new client) for this long
        self._retry_at = 0.0

    def __call__(self, tps: list[TopicPartition], timeout_ms: int = 2000) -> dict[TopicPartition, int] | None:
        """The end offset of each partition asked now, or None when the broker does not answer."""
        if time.monotonic() < self._retry_at:
            return None
        try:
            if self._client is None:
                probe(self._cfg.bootstrap_servers, timeout_s=timeout_ms / 1000)
                self._client = KafkaConsumer(
                    bootstrap_servers=self._cfg.bootstrap_servers.split(","), group_id=None,
                    enable_auto_commit=False, client_id="cdc-sync-end-offsets",
                    bootstrap_timeout_ms=timeout_ms)
            # kafka-python 3.0 drops a partition whose leader it does not know yet from the
            # request, then fails on the missing answer (KeyError): learn the topics first.
            cluster = self._client._manager.cluster
            unknown = {tp.topic for tp in tps if cluster.leader_for_partition(tp) in (None, -1)}
            if unknown:  # ask for their metadata without waiting: the next call has it
                for topic in unknown:
                    cluster.add_topic(topic)
                cluster.request_update()
                tps = [tp for tp in tps if tp.topic not in unknown]
                if not tps:
                    return None
            return {tp: end for tp, end in self._client.end_offsets(tps, timeout_ms=timeout_ms).items()
                    if end is not None}
        except (KafkaError, KeyError, TransientError):
            self.close()
            self._retry_at = time.monotonic() + self._retry_s
            return None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with suppress(KafkaError):
                client.close(autocommit=False, timeout_ms=2000)


def partitions(consumer: KafkaConsumer, ends: EndOffsets | None
               ) -> tuple[list[tuple[str, int]], frozenset[tuple[str, int]]]:
    """Every partition of the subscribed topics (from the client's cached metadata), and, of
    the assigned ones, those whose every record is returned by a poll: their position is at
    the end offset the broker gives now (asked now, so that a heartbeat read before this call
    was produced before the end the partition is compared with). None are caught up when the
    broker does not answer within 2 s, or without `ends` (no request then)."""
    cluster = consumer._manager.cluster  # kafka-python offers no public, non-blocking way
    every = [(t, p) for t in sorted(consumer.subscription() or ())
             for p in sorted(cluster.partitions_for_topic(t) or ())]
    positions = {tp: state.position.offset for tp, state in list(consumer._subscription.assignment.items())
                 if state.position is not None and state.highwater is not None
                 and state.position.offset >= state.highwater}  # caught up as far as the client knows
    if not positions or ends is None:
        return every, frozenset()
    answer = ends(list(positions))
    if answer is None:
        return every, frozenset()
    return every, frozenset((tp.topic, tp.partition) for tp, end in answer.items() if positions[tp] >= end)


def client_lag(consumer: KafkaConsumer) -> dict[tuple[str, int], int]:
    """Records of each assigned partition not yet polled, as far as the client knows (the high
    watermark of its last fetch): no request."""
    return {(tp.topic, tp.partition): max(0, state.highwater - state.position.offset)
            for tp, state in list(consumer._subscription.assignment.items())
            if state.position is not None and state.highwater is not None}


def group_lag(cfg: KafkaConfig, timeout_ms: int = 5000) -> dict[tuple[str, int], int]:
    """Records of the configured topics the group has not committed yet, per partition (a
    partition it never committed counts from its beginning). Raises TransientError when Kafka
    does not answer."""
    probe(cfg.bootstrap_servers)
    pattern = re.compile(cfg.topic_pattern)
    try:
        consumer = KafkaConsumer(bootstrap_servers=cfg.bootstrap_servers.split(","), group_id=cfg.group_id,
                                 enable_auto_commit=False, client_id="cdc-sync-doctor",
                                 bootstrap_timeout_ms=timeout_ms)
    except KafkaError as exc:
        raise TransientError(f"Kafka at {cfg.bootstrap_servers} unavailable: {exc}") from exc
    try:
        tps = [TopicPartition(t, p) for t in sorted(consumer.topics()) if pattern.search(t)
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps, timeout_ms=timeout_ms)
        begins = consumer.beginning_offsets(tps, timeout_ms=timeout_ms)
        lag = {}
        for tp in tps:
            committed = consumer.committed(tp, timeout_ms=timeout_ms)
            start = begins[tp] if committed is None else committed
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - start)
        return lag
    except (KafkaError, KeyError, TypeError) as exc:  # KeyError, TypeError: a partition left unanswered
        raise TransientError(f"Kafka: {type(exc).__name__} {exc}") from exc
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)


def poll(consumer: KafkaConsumer, timeout_ms: int) -> list[RawRecord]:
    """One poll, flattened into records in partition order."""
    try:
        batches = consumer.poll(timeout_ms=timeout_ms)
    except KafkaError as exc:
        raise TransientError(f"Kafka poll failed: {exc}") from exc
    return [
        RawRecord(RecordRef(tp.topic, tp.partition, msg.offset), msg.key, msg.value)
        for tp, messages in batches.items()
        for msg in messages
    ]


@contextmanager
def consumer_session(cfg: KafkaConfig, group_id: str | None,
                     from_beginning: bool) -> Iterator[KafkaConsumer]:
    consumer = open_consumer(cfg, group_id, from_beginning)
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False)
