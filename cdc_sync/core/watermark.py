"""Event time of the stream: how far every partition has come, and the watermark below it.

A partition's time is the newest source commit time processed there; a partition seen caught
up (every record it held at the last fetch processed) counts at least at its source's time
then: the newest commit time processed from any of the source's topics. Debezium reads a
source's log in commit order, so a change committed at T is produced after every change
committed before it, whatever its table. When the shop is quiet, the source's heartbeat table
(written by Debezium's `heartbeat.action.query` every few seconds) moves that time on. The
heartbeat message's own `ts_ms` is the connector's clock, not the source's, and is never used.

A group's watermark is the minimum over every partition of its subscribed topics, less the
allowed lateness: every event committed before it has been applied. Replicas of one group
share it through the store. A group fires timers by its own watermark only: another group on
the same store (a replay, a narrower topic pattern) speaks for its own topics and offsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from cdc_sync.core.events import HEARTBEAT_TOPIC_PREFIX

PartitionKey = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class BatchTimes:
    """What one prepared batch says about event time."""

    partitions: Mapping[PartitionKey, int] = field(default_factory=dict)  # newest commit µs seen
    heartbeats: Mapping[str, int] = field(default_factory=dict)  # source -> newest commit µs seen from it


@dataclass(frozen=True, slots=True)
class StreamReport:
    """A batch's event times with what the consumer knew of its partitions when it polled it.

    `heartbeats` are the sources' heartbeat times the consumer knew *before* that poll: a
    partition it then found caught up holds every record produced before those heartbeats, so
    it counts at them (a heartbeat learnt after the poll may be newer than what the poll saw)."""

    group: str
    partitions: tuple[PartitionKey, ...]  # every partition of the subscribed topics
    caught_up: frozenset[PartitionKey]  # of those, the assigned ones with nothing left to read
    times: BatchTimes
    heartbeats: Mapping[str, int] = field(default_factory=dict)

    def caught_up_us(self, key: PartitionKey) -> int:
        """How far a partition has come by being caught up (0 when it is not)."""
        if key not in self.caught_up:
            return 0
        source = topic_source(key[0])
        return max(self.heartbeats.get(source, 0), self.times.heartbeats.get(source, 0))


class PartitionTime(NamedTuple):
    group: str
    topic: str
    partition: int
    event_us: int  # newest commit time processed
    caught_up_us: int  # the source's heartbeat time when the partition was last seen caught up


def topic_source(topic: str) -> str:
    """The source (Debezium topic prefix) a topic belongs to: `shop.public.carts` -> `shop`,
    `__debezium-heartbeat.shop` -> `shop`."""
    if topic.startswith(HEARTBEAT_TOPIC_PREFIX + "."):
        return topic[len(HEARTBEAT_TOPIC_PREFIX) + 1:]
    return topic.split(".", 1)[0]


def watermark(partitions: Iterable[PartitionTime], lateness_us: int, group: str) -> int | None:
    """The group's watermark in µs of event time; None while it has no partition."""
    times = [max(p.event_us, p.caught_up_us) for p in partitions if p.group == group]
    return min(times) - lateness_us if times else None


def slowest(partitions: Iterable[PartitionTime], group: str) -> PartitionTime | None:
    """The partition holding the group's watermark back (for operators)."""
    return min((p for p in partitions if p.group == group), key=lambda p: max(p.event_us, p.caught_up_us),
               default=None)
