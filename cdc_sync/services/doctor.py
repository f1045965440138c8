"""`cdc-sync doctor`: one verdict per check of the running system, with what to do.

Checks, in order: each connector and its tasks (Connect REST), each Postgres connector's
replication slot (WAL it holds back), the consumer group's lag, dead letters, dead
deliveries, disabled destinations. A check that cannot run (its service is down) fails and
says so; the others still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.connect import ConnectClient
from cdc_sync.adapters.deliveries import Deliveries
from cdc_sync.adapters.kafka import group_lag
from cdc_sync.adapters.sources import slot_retained
from cdc_sync.core.config import Config
from cdc_sync.core.errors import CdcSyncError
from cdc_sync.services.connectors import first_trace_line

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    status: Status
    detail: str
    todo: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    max_slot_wal_bytes: int = 1 << 30  # 1 GiB held back by a slot fails
    max_lag_records: int = 100_000


def connector_verdicts(client: ConnectClient) -> Iterator[Verdict]:
    names = client.connectors()
    if not names:
        yield Verdict("connectors", "fail", "Kafka Connect runs no connector",
                      "apply them: `cdc-sync connectors apply connectors/*.json` (or `make connectors`)")
    for name in names:
        status = client.status(name) or {}
        state = status.get("connector", {}).get("state", "UNKNOWN")
        tasks = [t.get("state", "UNKNOWN") for t in status.get("tasks", [])]
        detail = f"{state}, tasks {','.join(tasks) or 'none'}"
        if state == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            yield Verdict(f"connector {name}", "ok", detail)
        elif "PAUSED" in (state, *tasks):
            yield Verdict(f"connector {name}", "fail", detail + " (paused: no changes flow)",
                          f"resume it: `cdc-sync connectors restart {name}`")
        elif "FAILED" in (state, *tasks):
            yield Verdict(f"connector {name}", "fail", f"{detail}: {first_trace_line(status)}",
                          f"fix the cause (Connect's log has the whole trace), then "
                          f"`cdc-sync connectors restart {name}`")
        else:
            yield Verdict(f"connector {name}", "warn", detail + " (starting or rebalancing?)",
                          "check again in a minute; if it stays so, see Connect's log")


def slot_verdicts(client: ConnectClient, limits: Limits) -> Iterator[Verdict]:
    for name in client.connectors():
        config = client.get_config(name) or {}
        if "postgresql" not in config.get("connector.class", "").lower():
            continue
        slot = config.get("slot.name", "debezium")
        check = f"slot {slot} ({name})"
        try:
            found = slot_retained(config, slot)
        except CdcSyncError as exc:  # this source only: the other slots are still checked
            yield Verdict(check, "fail", f"could not check: {exc}",
                          "is the source database up? (secrets behind a Connect config provider "
                          "cannot be read from here)")
            continue
        if found is None:
            yield Verdict(check, "warn", "no such replication slot on the source",
                          "the connector creates it when it starts; is it running?")
            continue
        active, retained = found
        detail = f"{'active' if active else 'INACTIVE'}, holds back {retained / (1 << 20):,.1f} MiB of WAL"
        if retained > limits.max_slot_wal_bytes:
            yield Verdict(check, "fail", detail,
                          "the source keeps WAL until the connector confirms it: get the connector running; "
                          "a slot left by a deleted connector must be dropped "
                          "(SELECT pg_drop_replication_slot(...)), or the source's disk fills")
        elif not active:
            yield Verdict(check, "warn", detail,
                          "no connector reads this slot now: is the connector running?")
        else:
            yield Verdict(check, "ok", detail)


def lag_verdict(cfg: Config, limits: Limits) -> Verdict:
    lag = group_lag(cfg.kafka)
    total = sum(lag.values())
    worst = max(lag.items(), key=lambda kv: kv[1], default=None)
    detail = f"group {cfg.kafka.group_id}: {total:,} records behind over {len(lag)} partitions"
    if worst is not None and worst[1]:
        detail += f" (most: {worst[0][0]}/{worst[0][1]} {worst[1]:,})"
    if not lag:
        return Verdict("consumer lag", "warn",
                       f"no topic matches kafka.topic_pattern for group {cfg.kafka.group_id}",
                       "apply the connectors, or check kafka.topic_pattern")
    if total > limits.max_lag_records:
        return Verdict("consumer lag", "fail", detail,
                       "is `cdc-sync run` running and applying? its log and /metrics say; more replicas "
                       "help up to the partition count")
    return Verdict("consumer lag", "ok", detail)


def store_verdicts(cfg: Config) -> Iterator[Verdict]:
    store = store_mod.ProfileStore(store_mod.connect(cfg.store.dsn), cfg.mapping.aggregates)
    try:
        dead = store.dead_letter_count()
    finally:
        store.conn.close()
    yield (Verdict("dead letters", "ok", "none") if not dead else
           Verdict("dead letters", "warn", f"{dead:,} records the daemon could not apply",
                   "`cdc-sync dlq list` shows why; fix the mapping or the data, then `cdc-sync dlq replay`"))
    deliveries = Deliveries.connect(cfg.store.dsn)
    try:
        counts = deliveries.counts()
        disabled = deliveries.disabled()
    finally:
        deliveries.conn.close()
    dead_by = {d: n for (d, s), n in counts.items() if s == "dead"}
    yield (Verdict("dead deliveries", "ok", "none") if not dead_by else
           Verdict("dead deliveries", "warn", ", ".join(f"{d}: {n:,}" for d, n in sorted(dead_by.items())),
                   "`cdc-sync outbox list --status dead` shows each answer; once fixed, "
                   "`cdc-sync outbox replay --destination D`"))
    for name, (at, why) in sorted(disabled.items()):
        yield Verdict(f"destination {name}", "fail", f"disabled since {at:%Y-%m-%d %H:%M} UTC: {why}",
                      f"once the endpoint is fixed, `cdc-sync destinations enable {name}`")
    if not disabled:
        yield Verdict("destinations", "ok", f"{len(cfg.delivery.destinations)} configured, none disabled")


def doctor(cfg: Config, client: ConnectClient, limits: Limits | None = None) -> list[Verdict]:
    limits = limits or Limits(max_lag_records=cfg.api.max_lag_records)
    checks: list[tuple[str, Callable[[], Iterator[Verdict]]]] = [
        ("connectors", lambda: connector_verdicts(client)),
        ("replication slots", lambda: slot_verdicts(client, limits)),
        ("consumer lag", lambda: iter([lag_verdict(cfg, limits)])),
        ("profile store", lambda: store_verdicts(cfg)),
    ]
    verdicts: list[Verdict] = []
    for name, run in checks:
        try:
            for verdict in run():  # kept one by one: a later failure does not hide earlier verdicts
                verdicts.append(verdict)
        except Exception as exc:  # its service is down or refused: this check fails, the rest run
            why = str(exc) if isinstance(exc, CdcSyncError) else type(exc).__name__
            todo = ("create its schema: `cdc-sync migrate` (the daemon migrates when it starts)"
                    if "does not exist" in why
                    else "start the service, or fix its address in the config")
            verdicts.append(Verdict(name, "fail", f"could not check: {why}", todo))
    return verdicts
