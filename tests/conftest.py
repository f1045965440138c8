"""Shared fixtures: connections to the real services that `make stack-up` started."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pymysql
import pytest
import structlog
from kafka import KafkaConsumer, TopicPartition

from tests import backend

env = os.environ.get
KAFKA = env("KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture(scope="session")
def containers() -> Iterator[None]:
    """compose/'s containers for the session (tests/backend.py), or a skip saying why not."""
    why = backend.docker_missing()
    if why is not None:
        pytest.skip(why)
    with backend.containers():
        yield


@pytest.fixture(autouse=True)
def services(request: pytest.FixtureRequest) -> None:
    """A stack test's services: the local stack `make test` started, or, with
    CDC_SYNC_TEST_BACKEND=testcontainers, compose/'s containers."""
    if backend.chosen() == "testcontainers" and request.node.get_closest_marker("stack"):
        request.getfixturevalue("containers")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put logging and structlog back as they were after a test configured them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**saved)


@pytest.fixture
def shop_db() -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    conn = psycopg.connect(
        f"host={env('SHOP_DB_HOST', '127.0.0.1')} port={env('SHOP_DB_PORT', '5432')} dbname=shop "
        f"user={env('CDC_DB_USER', 'cdc')} password={env('CDC_DB_PASSWORD', 'cdc')}",
        autocommit=True,
    )
    yield conn
    conn.close()


@pytest.fixture
def crm_db() -> Iterator[pymysql.connections.Connection]:
    conn = pymysql.connect(
        host=env("CRM_DB_HOST", "127.0.0.1"), port=int(env("CRM_DB_PORT", "3306")),
        user=env("CDC_DB_USER", "cdc"), password=env("CDC_DB_PASSWORD", "cdc"),
        database="crm", autocommit=True,
    )
    yield conn
    conn.close()


class TopicReader:
    """Reads one topic from its current end onwards, as a test would watch it."""

    def __init__(self, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False,
                                      group_id=None)
        parts = self.consumer.partitions_for_topic(topic) or set()
        assert parts, f"topic {topic} does not exist: are the connectors applied?"
        self.tps = [TopicPartition(topic, p) for p in parts]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_end(*self.tps)
        for tp in self.tps:  # resolve the end offsets now, before the test writes
            self.consumer.position(tp)

    def read_until(self, done: Callable[[list[tuple[Any, Any]]], bool],
                   timeout: float = 60.0) -> list[tuple[Any, Any]]:
        """Collect (key, value) JSON pairs until `done(records)` or the timeout."""
        records: list[tuple[Any, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(records):
            for msgs in self.consumer.poll(timeout_ms=500).values():
                records += [(json.loads(m.key) if m.key else None,
                             json.loads(m.value) if m.value else None) for m in msgs]
        return records

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topic_reader() -> Iterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        readers.append(TopicReader(topic))
        return readers[-1]

    yield make
    for r in readers:
        r.close()
