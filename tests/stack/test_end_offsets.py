"""EndOffsets: the broker's end offsets on connections of its own (watermark "caught up")."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import TopicPartition

from cdc_sync.adapters import kafka as kafka_mod
from cdc_sync.adapters.kafka import EndOffsets
from cdc_sync.core.config import KafkaConfig
from tests.stack import daemon
from tests.workload import Record

pytestmark = pytest.mark.stack


def test_end_offsets_of_a_topic_the_client_has_never_seen() -> None:
    """kafka-python 3.0 leaves a partition of an unknown topic out of its request and then
    fails on the missing answer; EndOffsets asks for the topic's metadata, answers None, and
    answers once it has it."""
    topic = f"test-ends-{uuid.uuid4().hex[:8]}"
    daemon.produce([Record(topic, 0, b"k", b"v") for _ in range(3)])
    ends = EndOffsets(KafkaConfig(bootstrap_servers=daemon.KAFKA, group_id="unused", topic_pattern="^x$"))
    try:
        # the first ask only requests the topic's metadata (the loop must not wait for it)
        assert daemon.wait_for(lambda: ends([TopicPartition(topic, 0)]), timeout=10,
                               what="an answer") == {TopicPartition(topic, 0): 3}
        daemon.produce([Record(topic, 0, b"k", b"v")])
        assert ends([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 4}
    finally:
        ends.close()


def test_end_offsets_without_a_broker_is_no_answer() -> None:
    ends = EndOffsets(KafkaConfig(bootstrap_servers="127.0.0.1:1", group_id="unused", topic_pattern="^x$"))
    try:
        assert ends([TopicPartition("t", 0)], timeout_ms=500) is None
    finally:
        ends.close()


def test_after_a_failure_it_waits_before_trying_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """During an outage the loop asks after every poll: each ask must not try the broker (and
    wait for it) again."""
    tries = []
    real = kafka_mod.probe

    def probe(servers: str, timeout_s: float) -> None:
        tries.append(servers)
        real(servers, timeout_s)

    monkeypatch.setattr(kafka_mod, "probe", probe)
    ends = EndOffsets(KafkaConfig(bootstrap_servers="127.0.0.1:1", group_id="unused", topic_pattern="^x$"),
                      retry_s=0.5)
    try:
        assert ends([TopicPartition("t", 0)], timeout_ms=500) is None
        assert ends([TopicPartition("t", 0)], timeout_ms=500) is None
        assert len(tries) == 1
        time.sleep(0.6)
        assert ends([TopicPartition("t", 0)], timeout_ms=500) is None
        assert len(tries) == 2
    finally:
        ends.close()
