"""The webhook adapter: every outcome of a POST is an Answer, and an attempt is bounded."""

from __future__ import annotations

import time

import httpx

from cdc_sync.adapters.webhook import USER_AGENT, WebhookClient


def client(handler, timeout=1.0, excerpt=16):
    return WebhookClient(timeout, 2, excerpt, transport=httpx.MockTransport(handler))


def test_a_failed_answer_keeps_a_bounded_excerpt_and_its_retry_after():
    c = client(lambda request: httpx.Response(503, headers={"retry-after": "3"}, content=b"x" * 1000))
    answer = c.post("http://esp.test/h", b"{}", {"webhook-id": "t1"})
    assert (answer.status, answer.retry_after, answer.body) == (503, "3", "x" * 16)


def test_a_success_keeps_no_body_and_the_request_names_cdc_sync():
    seen = {}

    def handler(request):
        seen.update(request.headers)
        return httpx.Response(204)

    answer = client(handler).post("http://esp.test/h", b"{}", {"webhook-id": "t1"})
    assert answer.status == 204 and answer.body == ""
    assert seen["user-agent"] == USER_AGENT and seen["webhook-id"] == "t1"


def test_no_answer_is_an_answer_without_a_status():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    answer = client(refuse).post("http://esp.test/h", b"{}", {})
    assert answer.status is None and answer.error == "no answer (ConnectError)"


def test_an_answer_trickling_in_is_abandoned_at_twice_the_timeout():
    def drip():
        for _ in range(100):
            time.sleep(0.05)
            yield b"."

    started = time.monotonic()
    answer = client(lambda request: httpx.Response(500, content=drip()), timeout=0.2).post(
        "http://esp.test/h", b"{}", {})
    assert answer.status == 500 and answer.body.startswith(".")
    assert time.monotonic() - started < 2.0  # all 100 chunks would take 5 s
