"""The project's error tree: every failure cdc-sync raises on purpose is one of these.

`PoisonError` means the record itself is bad: dead-letter it and go on.
`TransientError` means the world is down: retry, and do not commit the offset.
`ConfigError` means the operator's input is wrong: fail at start with the key's path.
"""


class CdcSyncError(Exception):
    """Root of every error cdc-sync raises on purpose."""


class PoisonError(CdcSyncError):
    """The record cannot be processed, now or ever: it belongs in the dead-letter store."""


class DecodeError(PoisonError):
    """The record is not a Debezium envelope this decoder understands."""


class MappingError(PoisonError):
    """The change event does not fit the configured mapping."""


class TransientError(CdcSyncError):
    """An external system is unavailable; the same work may succeed later."""


class ConfigError(CdcSyncError):
    """A configuration file or value is invalid; raised at start, names the offending key."""
