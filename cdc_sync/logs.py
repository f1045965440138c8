"""Logging: structlog to stderr, with identifiers and contact details redacted before output."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are personal data wherever they appear in an event.
PII_KEYS = frozenset({"email", "phone", "value", "identifier", "identifiers", "first_name", "last_name",
                      "name", "address", "before", "after", "key", "row"})
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# International (+…), national trunk-prefixed (0 and 9-10 digits) and local (555-1234) forms;
# other digit runs are offsets, times and version keys, which logs need.
PHONE = re.compile(r"\+\d[\d ()-]{6,}\d|\b0\d{9,10}\b|\b\d{3}-\d{4}\b")


def _scrub(value: Any) -> Any:
    """Mask emails and phone numbers in text, also inside lists and dicts."""
    if isinstance(value, str):
        return PHONE.sub("[phone]", EMAIL.sub("[email]", value))
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: "[redacted]" if k in PII_KEYS else _scrub(v) for k, v in value.items()}
    return value


def redact_pii(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: PII keys are masked, emails and phone numbers in text are masked."""
    for key, value in list(event.items()):
        event[key] = "[redacted]" if key in PII_KEYS else _scrub(value)
    return event


def configure(level: str = "INFO", json: bool = False) -> None:
    """Set up structlog once, at start."""
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            redact_pii,
            structlog.processors.TimeStamper(fmt="iso", utc=True),  # after redaction: digits are no phone
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
