"""Run `cdc-sync run` as a real process against the stack, and feed it records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.workload import Record

KAFKA = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")


STARTED: list[subprocess.Popen[bytes]] = []  # by the running test, not yet killed
LOGS: dict[subprocess.Popen[bytes], Path] = {}  # the log file of those started with one


def start(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "cdc_sync.cli", "--config", str(config), "run", *args],
                            stdout=out, stderr=out)
    if log:
        LOGS[proc] = log
    STARTED.append(proc)
    return proc


def kill_leftovers() -> None:
    """SIGKILL every daemon a test started and did not stop (a failed test, say)."""
    LOGS.clear()
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def joined(proc: subprocess.Popen[bytes]) -> bool:
    """The daemon has joined its group (so it handles SIGTERM), or it has exited, or we cannot tell."""
    log = LOGS.get(proc)
    if proc.poll() is not None or log is None:
        return True
    return log.exists() and "partitions assigned" in log.read_text()


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, then wait: the daemon must finish its batch and exit by itself."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def produce(records: Iterable[Record]) -> int:
    producer = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=20, batch_size=256 * 1024,
                             acks="all", max_request_size=8 * 1024 * 1024)
    count = 0
    for r in records:
        producer.send(r.topic, key=r.key, value=r.value, partition=r.partition)
        count += 1
    producer.flush(timeout=60)
    producer.close()
    return count


def start_at_the_end(group: str, topic_pattern: str) -> None:
    """Commit `group`'s offsets at the ends of the topics matching the pattern, so a daemon of
    that group reads only what comes after (no replay of the stack's history, and no window
    between joining and an auto_offset_reset in which a change would be skipped)."""
    import re

    from kafka import OffsetAndMetadata

    pattern = re.compile(topic_pattern)
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in consumer.topics() if pattern.search(t)
               for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(tps)
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
    finally:
        consumer.close(autocommit=False)


def wait_for(check: Callable[[], object], timeout: float = 90, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def lag(group: str, topic_prefix: str) -> int:
    """Records on topics starting with `topic_prefix` that `group` has not committed yet."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in consumer.topics() if t.startswith(topic_prefix)
               for p in consumer.partitions_for_topic(t) or ()]
        if not tps:  # metadata that does not list the topics yet says nothing about progress
            return sys.maxsize
        ends = consumer.end_offsets(tps)
        return sum(end - (consumer.committed(tp) or 0) for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)


def run_until_caught_up(procs: list[subprocess.Popen[bytes]], group: str, topic_prefix: str,
                        timeout: float = 240) -> None:
    """Wait until the group has committed every record of the topics, then stop the daemons
    (once they have joined: a daemon still starting up has no SIGTERM handler yet)."""
    wait_for(lambda: all(joined(p) for p in procs), timeout=60, what="the daemons to join their group")
    wait_for(lambda: lag(group, topic_prefix) == 0 or any(p.poll() is not None for p in procs),
             timeout=timeout, what=f"group {group} to catch up")
    codes = [stop(p) for p in procs]
    assert codes == [0] * len(procs), f"daemons exited with {codes}"
