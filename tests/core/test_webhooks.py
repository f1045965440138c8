"""Standard Webhooks signing, answers, retries, rate and circuit: the pure part of delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from cdc_sync.core import webhooks as wh
from cdc_sync.core.limits import CircuitBreaker, CircuitState, TokenBucket

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def spec_signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side, written from the Standard Webhooks spec alone: the key is the base64
    after `whsec_`; the content is `id.timestamp.body`; any `v1,` entry must match."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(version == "v1" and hmac.compare_digest(value, expected)
               for version, _, value in (e.partition(",") for e in headers["webhook-signature"].split(" ")))


def test_the_spec_example_signs_to_its_published_signature():
    key = wh.secret_key(SECRET)
    assert wh.sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@given(msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
       body=st.binary(max_size=300), timestamp=st.integers(1_600_000_000, 2_000_000_000))
def test_signed_headers_verify_with_an_independent_implementation(msg_id, body, timestamp):
    headers = wh.headers(wh.secret_key(SECRET), msg_id, timestamp, body)
    assert spec_signature_ok(SECRET, headers, body)
    assert not spec_signature_ok(SECRET, headers, body + b" ")


def test_signed_headers_verify_with_the_reference_library():
    body = b'{"id": "t1", "type": "cart.abandoned"}'
    now = int(datetime.now(UTC).timestamp())
    headers = wh.headers(wh.secret_key(SECRET), "t1", now, body)
    assert Webhook(SECRET).verify(body, headers) == {"id": "t1", "type": "cart.abandoned"}


def test_the_id_is_the_idempotency_key_and_the_signature_is_per_attempt():
    key = wh.secret_key(SECRET)
    first, second = wh.headers(key, "t1", 1_700_000_000, b"{}"), wh.headers(key, "t1", 1_700_000_005, b"{}")
    assert first["webhook-id"] == first["idempotency-key"] == second["webhook-id"] == "t1"
    assert first["webhook-signature"] != second["webhook-signature"]


def test_verify_refuses_another_key_a_changed_body_and_an_old_timestamp():
    key = wh.secret_key(SECRET)
    h = wh.headers(key, "t1", 1_700_000_000, b"{}")
    args = ("t1", h["webhook-timestamp"], h["webhook-signature"])
    assert wh.verify([key], *args, b"{}", now=1_700_000_010)
    assert not wh.verify([wh.secret_key("whsec_" + base64.b64encode(b"x" * 24).decode())], *args, b"{}",
                         now=1_700_000_010)
    assert not wh.verify([key], *args, b"{ }", now=1_700_000_010)
    assert not wh.verify([key], *args, b"{}", now=1_700_000_000 + 301)


@pytest.mark.parametrize("secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!",
                                    "whsec_c2hvcnQ="])
def test_a_secret_that_is_no_whsec_key_is_refused_without_quoting_it(secret):
    with pytest.raises(ValueError) as err:
        wh.secret_key(secret)
    assert secret not in str(err.value)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, wh.Outcome.SENT), (204, wh.Outcome.SENT), (None, wh.Outcome.RETRY),
    *((s, wh.Outcome.RETRY) for s in (408, 425, 429, 500, 502, 503, 504)),
    (301, wh.Outcome.DEAD), (400, wh.Outcome.DEAD), (401, wh.Outcome.DEAD), (404, wh.Outcome.DEAD),
    (422, wh.Outcome.DEAD), (501, wh.Outcome.DEAD), (410, wh.Outcome.GONE)])
def test_what_an_answer_means(status, outcome):
    assert wh.outcome(wh.Answer(status)) is outcome


def test_retry_after_in_seconds_and_as_an_http_date():
    now = 1_700_000_000.0
    assert wh.retry_after_s("3", now) == 3.0
    date = format_datetime(datetime.fromtimestamp(now + 120, UTC), usegmt=True)
    assert wh.retry_after_s(date, now) == pytest.approx(120, abs=1)
    assert wh.retry_after_s("soon", now) is None
    assert wh.retry_after_s(None, now) is None
    past = format_datetime(datetime.fromtimestamp(now - 60, UTC), usegmt=True)
    assert wh.retry_after_s(past, now) == 0.0


def test_retry_after_wins_over_backoff_and_is_clamped():
    answer = wh.Answer(429, retry_after="3")
    assert wh.next_try_s(answer, 1, 1.0, 300.0, 3600.0, draw=0.0, now=0.0) == 3.0
    assert wh.next_try_s(wh.Answer(429, retry_after="86400"), 1, 1.0, 300.0, 600.0, 0.0, 0.0) == 600.0


@given(attempt=st.integers(1, 200), draw=st.floats(0, 1, exclude_max=True))
def test_full_jitter_stays_under_the_exponential_ceiling(attempt, draw):
    delay = wh.backoff_s(attempt, 1.0, 300.0, draw)
    assert 0 <= delay <= min(300.0, 2 ** (attempt - 1))


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0
    assert bucket.take(10.0) == 0  # refilled, but never above the burst
    assert sum(bucket.take(10.0) == 0 for _ in range(5)) == 2


def test_circuit_opens_after_failures_probes_once_and_closes_on_success():
    c = CircuitBreaker(threshold=3, open_for=10.0, open_for_max=40.0)
    for _ in range(2):
        c.record(False, 0.0)
    assert c.allow(0.0) == 0
    assert c.record(False, 1.0) is CircuitState.OPEN
    assert c.allow(5.0) == pytest.approx(6.0)
    assert c.allow(11.0) == 0 and c.state is CircuitState.PROBING
    assert c.allow(11.0) > 0  # the probe is out: nobody else goes
    assert c.record(False, 12.0) is CircuitState.OPEN and c.until == 32.0  # twice as long
    assert c.allow(32.0) == 0
    assert c.record(False, 33.0) is CircuitState.OPEN and c.until == 73.0  # capped at open_for_max
    assert c.allow(73.0) == 0
    assert c.record(True, 74.0) is CircuitState.CLOSED
    assert c.allow(74.0) == 0 and c.failures == 0


def test_a_success_between_failures_keeps_the_circuit_closed():
    c = CircuitBreaker(threshold=3, open_for=10.0, open_for_max=40.0)
    for ok in (False, False, True, False, False):
        c.record(ok, 0.0)
    assert c.state is CircuitState.CLOSED


def test_failures_that_land_while_open_do_not_extend_it():
    c = CircuitBreaker(threshold=1, open_for=10.0, open_for_max=40.0)
    c.record(False, 0.0)
    c.record(False, 5.0)  # an attempt that started before it opened
    assert c.until == 10.0
