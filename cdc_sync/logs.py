"""Logging: structlog to stderr, with identifiers and contact details redacted before output."""

from __future__ import annotations

import logging
import re
import sys
import time
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
    if value is None or isinstance(value, bool | int | float):
        return value
    return _scrub(str(value))  # an exception or other object: its text may quote a row


def redact_pii(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: PII keys are masked, emails and phone numbers in text are masked."""
    for key, value in list(event.items()):
        event[key] = "[redacted]" if key.lower() in PII_KEYS else _scrub(value)
    return event


class Throttle(logging.Filter):
    """During a broker outage kafka-python logs every reconnect attempt, several lines a second:
    let one line per kafka logger and level through every `period_s`, counting those held back."""

    def __init__(self, period_s: float = 30.0) -> None:
        super().__init__()
        self.period_s = period_s
        self.last: dict[tuple[str, int], float] = {}
        self.held: dict[tuple[str, int], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka"):
            return True
        key, now = (record.name, record.levelno), time.monotonic()
        if key in self.last and now - self.last[key] < self.period_s:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        self.last[key] = now
        if held := self.held.pop(key, 0):
            record.msg, record.args = f"{record.getMessage()} ({held} similar held back)", ()
        return True


_settings: tuple[str, bool] | None = None


def settings() -> tuple[str, bool] | None:
    """The (level, json) logging was configured with, for a worker process to do the same."""
    return _settings


def configure(level: str = "INFO", json: bool = False) -> None:
    """Set up logging once, at start: structlog's own events and the standard library's (kafka,
    psycopg) go through the same chain, so redaction sees every line, tracebacks included."""
    global _settings
    _settings = (level, json)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback)
    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,  # the traceback becomes text, before redaction
        redact_pii,
        structlog.processors.TimeStamper(fmt="iso", utc=True),  # after redaction: digits are no phone
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Throttle())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                                             renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # httpx logs every request at INFO with its URL, which may carry a token: the dispatcher logs outcomes
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*chain, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
