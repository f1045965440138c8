"""The daemon's metrics and its probes: /healthz, /readyz and /metrics on `metrics.port`.

Series (all prefixed `cdc_sync_`), as prometheus-client writes them:
- records_consumed_total, field_changes_applied_total, dead_letters_total, triggers_written_total
- batch_records, batch_seconds (histograms): records a batch and its apply time
- commit_to_applied_seconds: from a partition's newest source commit in a batch to the batch's
  commit in the store (one observation a partition a batch)
- trigger_write_seconds: from the poll that made triggers due to the commit that wrote them
- event_to_trigger_seconds{type}: from a trigger's event time to the commit that wrote it
- event_to_delivered_seconds{destination,type}: from a trigger's event time to its accepted send
  (a trigger's event time: a profile update's newest source commit, so its coalescing window
  is in these; an abandoned cart's moment of abandonment, its last change plus the delay)
- delivery_seconds: from a trigger queued for a destination to its answered send
- deliveries_total{destination,outcome}: sent, retry, dead, gone, cancelled
- circuit_open{destination}: 1 while a destination's circuit is open or probing
- consumer_lag{topic,partition}: records the consumer has not polled yet (the client's view)
- watermark_age_seconds; timers_pending; outbox_depth{destination,status} (read every 15 s)

/readyz answers 503 while Kafka or Postgres failed its last use, the lag is above
`api.max_lag_records`, or (triggers on) the watermark is older than `api.max_watermark_age_s`.
`?exclude=lag&exclude=watermark` leaves checks out, as Kubernetes' own /readyz does: a backlog
is the whole group's and lasts until it is worked off, so the k8s readiness probe (which gates
rollouts and drains) asks only whether this replica can work. A dispatch-only process
(`run --role dispatch`) uses no Kafka: its checks are Postgres only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from cdc_sync.adapters.deliveries import Deliveries
from cdc_sync.adapters.kafka import probe
from cdc_sync.adapters.timers import TimerStore
from cdc_sync.core.config import Config
from cdc_sync.core.errors import TransientError
from cdc_sync.core.triggers import Written

log = structlog.get_logger("cdc_sync.telemetry")

CHECKS = ("kafka", "postgres", "lag", "watermark")  # what /readyz?exclude= may name
SECONDS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300)


class Telemetry:
    """One registry for a daemon process; thread-safe (prometheus-client's own locks)."""

    def __init__(self, cfg: Config, consumes: bool = True) -> None:
        self.cfg, self.consumes = cfg, consumes
        r = self.registry = CollectorRegistry()
        self.records = Counter("cdc_sync_records_consumed", "Records consumed from Kafka", registry=r)
        self.changes = Counter("cdc_sync_field_changes_applied", "Attribute changes applied", registry=r)
        self.dead_letters = Counter("cdc_sync_dead_letters", "Records sent to the dead-letter store",
                                    registry=r)
        self.triggers = Counter("cdc_sync_triggers_written", "Triggers written to the outbox", registry=r)
        self.batch_records = Histogram("cdc_sync_batch_records", "Records a batch", registry=r,
                                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
        self.batch_seconds = Histogram("cdc_sync_batch_seconds", "Apply time of a batch", registry=r,
                                       buckets=SECONDS)
        self.commit_to_applied = Histogram("cdc_sync_commit_to_applied_seconds",
                                           "Newest source commit of a batch's partition to its apply",
                                           registry=r, buckets=SECONDS)
        self.trigger_write = Histogram("cdc_sync_trigger_write_seconds",
                                       "Poll that made triggers due to the commit that wrote them",
                                       registry=r, buckets=SECONDS)
        self.event_to_trigger = Histogram("cdc_sync_event_to_trigger_seconds",
                                          "A trigger's event time to the commit that wrote it", ["type"],
                                          registry=r, buckets=SECONDS)
        self.event_to_delivered = Histogram("cdc_sync_event_to_delivered_seconds",
                                            "A trigger's event time to its accepted send",
                                            ["destination", "type"], registry=r, buckets=SECONDS)
        self.delivery = Histogram("cdc_sync_delivery_seconds", "Trigger queued to its answered send",
                                  ["destination"], registry=r, buckets=SECONDS)
        self.deliveries = Counter("cdc_sync_deliveries", "Delivery attempts by destination and outcome",
                                  ["destination", "outcome"], registry=r)
        self.circuit_open = Gauge("cdc_sync_circuit_open", "1 while a destination's circuit is open",
                                  ["destination"], registry=r)
        self.lag = Gauge("cdc_sync_consumer_lag", "Records not yet polled, per partition",
                         ["topic", "partition"], registry=r)
        self.watermark_age = Gauge("cdc_sync_watermark_age_seconds", "Now less the group's watermark",
                                   registry=r)
        self.timers_pending = Gauge("cdc_sync_timers_pending", "Trigger timers waiting for their time",
                                    registry=r)
        self.outbox_depth = Gauge("cdc_sync_outbox_depth", "Deliveries by destination and status",
                                  ["destination", "status"], registry=r)
        self.kafka_ok = True
        # each loop's last use of Postgres; keys fixed here, so the probe thread never sees them added
        self._store_ok: dict[str, bool] = {"sync": True, "dispatch": True}
        self.lag_total = 0
        self._assigned: set[tuple[str, int]] = set()
        self.watermark_us: int | None = None
        self._server: ThreadingHTTPServer | None = None

    # ---- what the loops report

    def batch(self, records: int, changes: int, dead: int, triggers: int, seconds: float,
              newest_us: Mapping[Any, int]) -> None:
        self.records.inc(records)
        self.changes.inc(changes)
        self.dead_letters.inc(dead)
        self.triggers.inc(triggers)
        if records:
            self.batch_records.observe(records)
            self.batch_seconds.observe(seconds)
        now_us = time.time() * 1e6
        for us in newest_us.values():
            if us:
                self.commit_to_applied.observe(max(0.0, (now_us - us) / 1e6))

    def written(self, triggers: Iterable[Written]) -> None:
        now = time.time()
        for trigger in triggers:
            age = now - trigger.occurred_at.timestamp()
            self.event_to_trigger.labels(trigger.type).observe(max(0.0, age))

    def partitions(self, lags: Mapping[tuple[str, int], int]) -> None:
        for topic, partition in self._assigned - set(lags):  # revoked: another replica reports them
            self.lag.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)
        self._assigned = set(lags)
        self.lag_total = sum(lags.values())

    def watermark(self, us: int | None) -> None:
        self.watermark_us = us
        if us is not None:
            self.watermark_age.set(max(0.0, time.time() - us / 1e6))

    def store_used(self, by: str, ok: bool) -> None:
        """A loop's use of the store worked (or not); Postgres is ready when every loop's did."""
        self._store_ok[by] = ok

    @property
    def store_ok(self) -> bool:
        return all(self._store_ok.values())

    # ---- readiness

    def ready(self, exclude: frozenset[str] = frozenset()) -> tuple[bool, dict[str, Any]]:
        """Whether this process can do its work, each check by name; `exclude` leaves some out."""
        checks: dict[str, Any] = {"postgres": self.store_ok}
        age = None if self.watermark_us is None else time.time() - self.watermark_us / 1e6
        if self.consumes:
            checks["kafka"] = "kafka" not in exclude and self._kafka_reachable()
            checks["lag"] = self.lag_total <= self.cfg.api.max_lag_records
            if self.cfg.triggers.enabled and age is not None:
                checks["watermark"] = age <= self.cfg.api.max_watermark_age_s
        checks = {name: ok for name, ok in checks.items() if name not in exclude}
        doc: dict[str, Any] = {"checks": checks, "excluded": sorted(exclude)}
        if self.consumes:
            doc |= {"lag_records": self.lag_total, "watermark_age_s": None if age is None else round(age, 1)}
        return all(checks.values()), doc

    def _kafka_reachable(self) -> bool:
        try:  # kafka-python's poll returns nothing, not an error, while the broker is down
            probe(self.cfg.kafka.bootstrap_servers, timeout_s=0.5)
        except TransientError:
            return False
        return self.kafka_ok

    # ---- the server

    def serve(self, poll_store: bool = True) -> None:
        """Serve the probes and metrics on `metrics.host:port` in a thread (port 0: off). A port
        already taken is logged, not fatal: the daemon's work matters more than its metrics."""
        port = self.cfg.metrics.port
        if not port:
            return
        handler = type("Handler", (Probes,), {"telemetry": self})
        try:
            self._server = ThreadingHTTPServer((self.cfg.metrics.host, port), handler)
        except OSError as exc:
            log.error("metrics and probes not served: the port is taken or not allowed",
                      host=self.cfg.metrics.host, port=port, error=exc.strerror)
            return
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="cdc-sync-metrics", daemon=True).start()
        if poll_store:
            threading.Thread(target=self._poll, name="cdc-sync-metrics-store", daemon=True).start()
        log.info("metrics and probes served", host=self.cfg.metrics.host, port=port,
                 paths=["/healthz", "/readyz", "/metrics"])

    def _poll(self, every_s: float = 15.0) -> None:
        while self._server is not None:
            try:
                self.read_store()
            except Exception as exc:  # a gauge left stale is better than a dead thread
                log.warning("metrics: store gauges not read", error=type(exc).__name__)
            time.sleep(every_s)

    def read_store(self) -> None:
        """The gauges read from the store: timers waiting and deliveries by status."""
        deliveries = Deliveries.connect(self.cfg.store.dsn)
        try:
            for (destination, status), n in deliveries.counts().items():
                self.outbox_depth.labels(destination, status).set(n)
            self.timers_pending.set(TimerStore(deliveries.conn).waiting())
        finally:
            deliveries.conn.close()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class Probes(BaseHTTPRequestHandler):
    """The probe server's requests; `telemetry` is set on a subclass made for each server."""

    telemetry: Telemetry

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._answer(200, generate_latest(self.telemetry.registry), CONTENT_TYPE_LATEST)
        elif url.path == "/healthz":
            self._answer(200, b'{"status":"ok"}', "application/json")
        elif url.path == "/readyz":
            self._ready(frozenset(parse_qs(url.query).get("exclude", [])))
        else:
            self._answer(404, b'{"status":"not found"}', "application/json")

    def _ready(self, exclude: frozenset[str]) -> None:
        if unknown := sorted(exclude - set(CHECKS)):
            self._answer(400, orjson.dumps({"status": "bad request", "unknown_checks": unknown,
                                            "checks": list(CHECKS)}), "application/json")
            return
        ok, doc = self.telemetry.ready(exclude)
        body = orjson.dumps({"status": "ok" if ok else "unavailable", **doc})
        self._answer(200 if ok else 503, body, "application/json")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        return  # probes every few seconds would drown the daemon's own log
