"""API bearer tokens: configured as salted hashes, never as the token itself.

A token is 32 random bytes (urlsafe base64, prefixed `cds_` so secret scanners can spot one).
It is stored as `sha256$<salt>$<hex digest of salt + token>`. A token is random, not a
password: one salted SHA-256 is enough to make the stored form useless to a reader, and it
costs microseconds, not the tens of milliseconds a password hash would add to every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "cds_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str, salt: str | None = None) -> str:
    salt = secrets.token_hex(8) if salt is None else salt
    return f"sha256${salt}${hashlib.sha256((salt + token).encode()).hexdigest()}"


def check_hash(stored: str) -> str:
    """`stored` if it has the hashed form; else ValueError (the value is never quoted)."""
    scheme, _, rest = stored.partition("$")
    salt, _, digest = rest.partition("$")
    if scheme != "sha256" or not salt or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError("not a token hash of the form sha256$<salt>$<64 hex digits>; make one with "
                         "`cdc-sync api token`")
    return stored


def matches(token: str, stored: str) -> bool:
    _, salt, digest = stored.split("$", 2)
    return hmac.compare_digest(hash_token(token, salt).rpartition("$")[2], digest)


def allows(granted: frozenset[str], needed: str) -> bool:
    """Whether the scopes hold `needed`; admin holds every scope."""
    return needed in granted or "admin" in granted
