"""Stage 6, deliver: outbox rows to each destination's webhook, signed, in order per profile.

Each destination is a `Lane` with its own worker threads, HTTP connections, store connections,
token bucket and circuit breaker, so one destination that fails or hangs never holds back
another. A worker's story: wait until the lane may send → claim the next due delivery →
re-check it → sign and POST it → record what came back. A watcher thread LISTENs for new
deliveries (woken at once) and reads which destinations an operator has disabled or enabled.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
import psycopg
import structlog

from cdc_sync.adapters.deliveries import Claim, Deliveries
from cdc_sync.adapters.outbox import NOTIFY_CHANNEL
from cdc_sync.adapters.timers import TimerStore
from cdc_sync.adapters.webhook import WebhookClient
from cdc_sync.core import triggers as t
from cdc_sync.core import webhooks as wh
from cdc_sync.core.bodies import FORMATTERS
from cdc_sync.core.config import Config
from cdc_sync.core.destinations import Credentials, Destination
from cdc_sync.core.errors import CdcSyncError, TransientError
from cdc_sync.core.limits import CircuitBreaker, CircuitState, TokenBucket
from cdc_sync.core.rules import TriggersConfig
from cdc_sync.services.telemetry import Telemetry

log = structlog.get_logger("cdc_sync.delivery")


class Lane:
    """One destination's share of the dispatcher; its state is guarded by `lock`."""

    def __init__(self, name: str, dest: Destination, creds: Credentials, dsn: str, rules: TriggersConfig,
                 excerpt: int, poll_s: float, stop: threading.Event, telemetry: Telemetry) -> None:
        self.name, self.dest, self.creds, self.dsn, self.rules = name, dest, creds, dsn, rules
        self.telemetry = telemetry
        self.poll_s, self.stop_event = poll_s, stop
        self.excerpt = excerpt
        self.own = threading.local()  # each worker's HTTP connection: one shared pool's lock cost a quarter
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.generation = 0  # bumped by every wake-up: a worker waits only if none came since it looked
        self.bucket = TokenBucket(dest.rate_limit.per_second, dest.rate_limit.burst)
        self.circuit = CircuitBreaker(dest.circuit.failures, dest.circuit.open_for, dest.circuit.open_for_max)
        self.paused_until = 0.0  # the endpoint asked us (Retry-After) to hold off until then
        self.disabled: bool | None = None  # None until the watcher has read it
        self.threads = [threading.Thread(target=self.work, name=f"cdc-sync-deliver-{name}-{i}", daemon=True)
                        for i in range(dest.concurrency)]

    # ---- the worker's story

    def work(self) -> None:
        store: Deliveries | None = None
        failures = 0
        self.own.client = WebhookClient(self.dest.timeout, 1, self.excerpt)
        while not self.stop_event.is_set():
            try:
                store = store or Deliveries.connect(self.dsn)
                self.step(store)
                failures = 0
            except TransientError as exc:
                failures += 1
                delay = random.uniform(0, min(10.0, 0.2 * 2 ** failures))
                log.warning("delivery worker: store unavailable, retrying", destination=self.name,
                            error=str(exc), retry_in_s=round(delay, 1))
                _close(store)
                store = None
                self.stop_event.wait(delay)
            except Exception:  # a bug must not end the worker: the claim's lease returns the row
                log.exception("delivery worker failed; going on", destination=self.name)
                _close(store)
                store = None
                self.stop_event.wait(1.0)
        _close(store)
        self.own.client.close()

    def step(self, store: Deliveries) -> None:
        """One round: wait, or claim one due delivery and send it."""
        with self.lock:
            seen = self.generation
            wait, probe = self._may_send(time.monotonic())
        if wait > 0:
            self._sleep(wait, seen)
            return
        answered = False
        try:
            claim = store.claim(self.name, self.dest.lease)
            if claim is None:
                self._sleep(self.poll_s, seen)
            elif self._still_wanted(store, claim):
                answer = self._attempt(store, claim)
                if answer is not None:
                    self._record(store, claim, answer)  # settles the circuit, probe or not
                    answered = True
        finally:
            if not answered:  # a probe that sent nothing (or failed before it could) frees its place
                self._unprobe(probe)

    def _attempt(self, store: Deliveries, claim: Claim) -> wh.Answer | None:
        """Sign and send; a message that cannot even be sent (no body, no request) is dead."""
        try:
            return self._send(claim)
        except Exception as exc:  # the message, not the endpoint: retrying would block its profile
            store.finish(claim, "dead", None, f"could not be sent: {type(exc).__name__}")
            self.telemetry.deliveries.labels(self.name, "dead").inc()
            log.error("delivery dead: could not be sent", destination=self.name, trigger=claim.trigger_id,
                      error=type(exc).__name__)
            return None

    def _may_send(self, now: float) -> tuple[float, bool]:
        """(seconds to wait, whether this attempt is the circuit's probe). Holds the lock."""
        if self.disabled is not False:  # disabled, or not known yet
            return self.poll_s, False
        if now < self.paused_until:
            return self.paused_until - now, False
        wait = self.circuit.allow(now)
        if wait > 0:
            return wait, False
        probe = self.circuit.state is CircuitState.PROBING
        wait = self.bucket.take(now)
        if wait > 0 and probe:
            self.circuit.state, self.circuit.until = CircuitState.OPEN, now  # the next one probes
        return wait, probe and wait == 0

    def _still_wanted(self, store: Deliveries, claim: Claim) -> bool:
        """Too old, or no longer true (a cart checked out, consent withdrawn): ended unsent."""
        age = time.time() - claim.first_queued_at.timestamp()
        if age > self.dest.max_retry_age:
            store.finish(claim, "dead", None, f"older than max_retry_age ({self.dest.max_retry_age:g}s)"
                         f" after {claim.attempts - 1} attempt(s)")
            log.warning("delivery dead: too old", destination=self.name, trigger=claim.trigger_id)
            self.telemetry.deliveries.labels(self.name, "expired").inc()
            return False
        reason = self._refusal(store, claim)
        if reason is not None:
            store.finish(claim, "cancelled", None, reason)
            self.telemetry.deliveries.labels(self.name, "cancelled").inc()
            log.info("delivery cancelled before sending", destination=self.name, trigger=claim.trigger_id,
                     reason=reason)
            return False
        return True

    def _refusal(self, store: Deliveries, claim: Claim) -> str | None:
        if not self.rules.enabled:
            return None
        p = claim.payload
        timers = TimerStore(store.conn)
        cart = None
        rule = self.rules.abandoned_cart
        if p.get("type") == t.CART_ABANDONED and rule is not None:
            cart = timers.carts(rule, [p["cart"]["id"]]).get(p["cart"]["id"])
        own = self.rules.abandoned_cart if p.get("type") == t.CART_ABANDONED else self.rules.profile_updated
        consent = own.consent_attribute if own is not None else None
        if cart is None and consent is None:
            return t.send_refusal(p, None, None, self.rules)
        profile = None
        if claim.profile_id is not None and consent:
            profile = timers.profiles([claim.profile_id], [consent], []).get(claim.profile_id)
        return t.send_refusal(p, cart, profile, self.rules)

    def _send(self, claim: Claim) -> wh.Answer:
        body = orjson.dumps(FORMATTERS[self.dest.format](claim.payload))
        headers = {**self.creds.headers,
                   **wh.headers(self.creds.key, claim.trigger_id, int(time.time()), body)}
        client: WebhookClient = self.own.client
        return client.post(self.dest.url, body, headers)

    def _observe_sent(self, claim: Claim) -> None:
        now = time.time()
        self.telemetry.delivery.labels(self.name).observe(max(0.0, now - claim.first_queued_at.timestamp()))
        occurred = claim.payload.get("occurred_at")
        if isinstance(occurred, str):
            at = datetime.fromisoformat(occurred.replace("Z", "+00:00")).timestamp()
            self.telemetry.event_to_delivered.labels(self.name, claim.type).observe(max(0.0, now - at))

    def _record(self, store: Deliveries, claim: Claim, answer: wh.Answer) -> None:
        outcome = wh.outcome(answer)
        now = time.monotonic()
        with self.lock:
            changed = self.circuit.record(not wh.counts_against_circuit(answer), now)
        if changed is not None:
            log.warning("circuit " + changed.value, destination=self.name,
                        open_for_s=self.circuit.current_open_for or None)
            self.telemetry.circuit_open.labels(self.name).set(0 if changed is CircuitState.CLOSED else 1)
        self.telemetry.deliveries.labels(self.name, outcome.value).inc()
        if outcome is wh.Outcome.SENT:
            self._observe_sent(claim)
        why = answer.error or (f"HTTP {answer.status}" if answer.status else None)
        if outcome is wh.Outcome.SENT:
            kept = store.finish(claim, "sent", answer.status)
        elif outcome is wh.Outcome.DEAD:
            kept = store.finish(claim, "dead", answer.status, why, answer.body)
            log.warning("delivery dead: refused by the endpoint", destination=self.name,
                        trigger=claim.trigger_id, status=answer.status)
        elif outcome is wh.Outcome.GONE:
            self._disable(store, answer)  # first: no sibling may claim the row put back below
            kept = store.retry_at(claim, 0.0, answer.status, "destination gone (HTTP 410): disabled",
                                  answer.body)
        else:
            kept = self._retry(store, claim, answer, why or "failed", now)
        if not kept:
            log.warning("delivery lease lost before its answer was recorded (another dispatcher may "
                        "send it again, with the same webhook-id)", destination=self.name,
                        trigger=claim.trigger_id)

    def _retry(self, store: Deliveries, claim: Claim, answer: wh.Answer, why: str, now: float) -> bool:
        r = self.dest.retry
        delay = wh.next_try_s(answer, claim.attempts, r.initial, r.max, r.retry_after_max,
                              random.random(), time.time())
        if answer.retry_after is not None:  # the endpoint spoke for itself, not for this one message
            with self.lock:
                self.paused_until = max(self.paused_until, now + delay)
        age = time.time() - claim.first_queued_at.timestamp()
        if age + delay > self.dest.max_retry_age:
            log.warning("delivery dead: retried until max_retry_age", destination=self.name,
                        trigger=claim.trigger_id, attempts=claim.attempts)
            return store.finish(claim, "dead", answer.status,
                                f"{why}; gave up after {claim.attempts} attempt(s)", answer.body)
        return store.retry_at(claim, delay, answer.status, why, answer.body)

    def _disable(self, store: Deliveries, answer: wh.Answer) -> None:
        with self.lock:
            self.disabled = True
        store.disable(self.name, f"HTTP 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        log.error("DESTINATION DISABLED: the endpoint answered 410 Gone; nothing more is sent to it "
                  f"until `cdc-sync destinations enable {self.name}`", destination=self.name)

    # ---- waiting

    def _sleep(self, seconds: float, seen: int) -> None:
        with self.wake:
            if self.generation == seen and not self.stop_event.is_set():
                self.wake.wait(min(seconds, self.poll_s))

    def notify(self) -> None:
        with self.wake:
            self.generation += 1
            self.wake.notify_all()

    def _unprobe(self, probe: bool) -> None:
        """A probe that sent nothing lets the next attempt be the probe."""
        if probe:
            with self.lock:
                if self.circuit.state is CircuitState.PROBING:
                    self.circuit.state, self.circuit.until = CircuitState.OPEN, 0.0


def _close(resource: Any) -> None:
    """Close a connection that may already be broken."""
    if resource is not None:
        with contextlib.suppress(psycopg.Error):
            resource.close()


class Dispatcher:
    """Every configured destination's lane, and the watcher that wakes them."""

    def __init__(self, cfg: Config, credentials: Mapping[str, Credentials],
                 telemetry: Telemetry | None = None) -> None:
        self.cfg = cfg
        self.telemetry = telemetry or Telemetry(cfg)
        self.stop_event = threading.Event()
        d = cfg.delivery
        self.lanes = {name: Lane(name, dest, credentials[name], cfg.store.dsn, cfg.triggers,
                                 d.response_excerpt, d.poll_interval, self.stop_event, self.telemetry)
                      for name, dest in sorted(d.destinations.items())}
        self.watcher = threading.Thread(target=self.watch, name="cdc-sync-deliver-watch", daemon=True)

    def start(self) -> None:
        if not self.lanes:
            return
        self.watcher.start()
        for lane in self.lanes.values():
            for thread in lane.threads:
                thread.start()
        log.info("dispatcher started", destinations=sorted(self.lanes),
                 workers=sum(len(lane.threads) for lane in self.lanes.values()))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; each worker finishes the request in hand (bounded by its timeout)."""
        self.stop_event.set()
        for lane in self.lanes.values():
            lane.notify()
        deadline = time.monotonic() + timeout
        for lane in self.lanes.values():
            for thread in lane.threads:
                if thread.is_alive():
                    thread.join(max(0.0, deadline - time.monotonic()))
        if self.watcher.is_alive():
            self.watcher.join(max(0.0, deadline - time.monotonic()))

    def watch(self) -> None:
        """LISTEN for new deliveries and wake the lanes; read disabled destinations now and then."""
        conn: psycopg.Connection[Any] | None = None
        last_read = 0.0
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.cfg.store.dsn, autocommit=True, connect_timeout=5)
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake_all()  # a notification may have come while we were not listening
                if time.monotonic() - last_read >= 2.0:
                    self._read_disabled(Deliveries(conn))
                    last_read = time.monotonic()
                    self.telemetry.store_used("dispatch", True)
                for _ in conn.notifies(timeout=0.5, stop_after=1):
                    self._wake_all()
            except (psycopg.Error, CdcSyncError) as exc:
                self.telemetry.store_used("dispatch", False)
                log.warning("delivery watcher: store unavailable, retrying", error=str(exc).splitlines()[0])
                _close(conn)
                conn = None
                self.stop_event.wait(2.0)
        _close(conn)

    def _wake_all(self) -> None:
        for lane in self.lanes.values():
            lane.notify()

    def _read_disabled(self, store: Deliveries) -> None:
        disabled = store.disabled()
        for name, lane in self.lanes.items():
            now_disabled = name in disabled
            if now_disabled and not lane.disabled:
                log.error("DESTINATION DISABLED: nothing is sent to it until `cdc-sync destinations "
                          f"enable {name}`", destination=name, reason=disabled[name][1])
            elif lane.disabled and not now_disabled:
                log.info("destination enabled again", destination=name)
            if lane.disabled is not now_disabled:
                with lane.lock:
                    lane.disabled = now_disabled
                lane.notify()
