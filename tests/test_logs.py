"""Logs: personal data is redacted before a log line is rendered."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog

from cdc_sync import logs
from cdc_sync.logs import PII_KEYS, redact_pii


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_pii(None, "info", dict(event)))


@pytest.mark.parametrize("key", sorted(PII_KEYS))
def test_a_pii_key_is_masked_whatever_its_value(key: str) -> None:
    for value in ["sally@acme.com", {"id": 1, "email": "sally@acme.com"}, ("email", "a@b.io"), 42, None]:
        assert redact(event="x", **{key: value})[key] == "[redacted]"


@pytest.mark.parametrize("key", ["first_name", "email", "before", "after", "row", "identifiers"])
def test_the_demo_pii_columns_and_row_images_are_among_the_pii_keys(key: str) -> None:
    assert key in PII_KEYS


@pytest.mark.parametrize(("text", "masked"), [
    ("user sally.thomas@acme.com signed up", "user [email] signed up"),
    ("to a.b+tag@mail.example.co.uk now", "to [email] now"),
    ("SALLY@ACME.COM", "[email]"),
    ("Ünïcødé@exämple.de", "[email]"),
    ("dup key (email)=(Bob@Example.com)", "dup key (email)=([email])"),
], ids=["plain", "plus-and-subdomains", "upper-case", "non-ascii", "inside-an-error-message"])
def test_an_email_inside_a_string_is_masked(text: str, masked: str) -> None:
    assert redact(event=text)["event"] == masked
    assert redact(event="x", error=text)["error"] == masked


@pytest.mark.parametrize(("text", "masked"), [
    ("call +44 20 7946 0001 now", "call [phone] now"),
    ("+49 (0)30 1234-5678", "[phone]"),
    ("mobile 07700900123", "mobile [phone]"),
    ("tel 555-1234", "tel [phone]"),
], ids=["international", "parentheses-and-dash", "digits-only", "local"])
def test_a_phone_number_inside_a_string_is_masked(text: str, masked: str) -> None:
    assert redact(event=text)["event"] == masked


@pytest.mark.parametrize(("key", "value"), [
    ("records", 2000),
    ("offset", 123456789012),
    ("lag_seconds", 1.25),
    ("retrying", True),
    ("error", None),
    ("topic", "shop.public.users"),
    ("partitions", ["shop.public.users/0", "crm.crm.contacts/2"]),
    ("bootstrap", "127.0.0.1:9092"),
    ("host", "192.168.100.200"),
    ("event", "batch applied"),
    ("reason", "unmapped table shop:public.users: add it to mapping.tables or mapping.ignore"),
    ("count", "1234567"),
], ids=lambda v: str(v)[:20])
def test_an_ordinary_value_is_left_alone(key: str, value: Any) -> None:
    assert redact(**{key: value}) == {key: value}


@pytest.mark.parametrize("text", [
    "restore to 2025-06-02 09:14:07",
    "as of 2025-06-02T09:14:07.318422Z",
    "committed offset 123456789",
    "version 000636932f9f3196/00000000019dbb98.00000000019dbcb8/0002/shop",
], ids=["date-and-time", "iso-timestamp", "long-number", "version-key"])
def test_dates_numbers_and_version_keys_inside_a_string_are_left_alone(text: str) -> None:
    assert redact(event=text) == {"event": text}


def test_an_email_inside_a_list_or_dict_value_is_masked() -> None:
    event = redact(event="x", recipients=["sally@acme.com"], details={"contact": "sally@acme.com"})
    assert "sally@acme.com" not in repr(event)


def test_redact_pii_returns_the_event_it_was_given() -> None:
    event: dict[str, Any] = {"event": "x", "email": "a@b.io"}
    assert redact_pii(None, "info", event) is event


def test_redact_pii_leaves_the_key_names_alone() -> None:
    assert set(redact(event="x", email="a@b.io", records=3, phone="+44 20 7946 0001")) == {
        "event", "email", "records", "phone"}


# ---------------------------------------------------------------- the configured chain


@pytest.mark.usefixtures("restore_logging")
def test_a_configured_logger_writes_no_email_or_phone_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json=True)
    structlog.get_logger("test").info("contact sally@acme.com on +44 20 7946 0001",
                                      email="sally@acme.com", records=3)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "contact [email] on [phone]"
    assert line["email"] == "[redacted]"
    assert line["records"] == 3
    assert "T" in line["timestamp"]  # stamped after redaction, so not taken for a phone number


def test_kafka_client_lines_are_throttled_per_logger_and_say_how_many_were_held_back() -> None:
    throttle = logs.Throttle(period_s=60)

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (), None)
    assert throttle.filter(record("kafka.net.manager", "refused 1"))
    assert not throttle.filter(record("kafka.net.manager", "refused 2"))
    assert throttle.filter(record("kafka.cluster", "metadata failed"))  # another logger: its own budget
    assert throttle.filter(record("cdc_sync.sync", "ours"))
    assert throttle.filter(record("cdc_sync.sync", "ours again"))  # only kafka-python is throttled
    throttle.last = {k: v - 61 for k, v in throttle.last.items()}
    again = record("kafka.net.manager", "refused 3")
    assert throttle.filter(again) and again.getMessage() == "refused 3 (1 similar held back)"
