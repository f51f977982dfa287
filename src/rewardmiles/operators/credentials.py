"""The secrets of the admin API: session cookie values, CSRF tokens and admin tokens.

Each is 256 random bits, so a fast hash is enough to store it: the database keeps the SHA-256 of
a cookie value or a token (its lookup key), never the value. Admin tokens carry a prefix of their
own, `rma_`: the admin API refuses any other bearer token (a partner's JWT among them) before
any lookup, and the partner API cannot read one as a JWT.
"""

from __future__ import annotations

import hashlib
import secrets

ADMIN_TOKEN_PREFIX = "rma_"
_RANDOM_BYTES = 32


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def is_admin_token(value: str) -> bool:
    return value.startswith(ADMIN_TOKEN_PREFIX) and len(value) > len(ADMIN_TOKEN_PREFIX)


def new_session_secret() -> str:
    """The value of a session cookie."""
    return secrets.token_urlsafe(_RANDOM_BYTES)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(_RANDOM_BYTES)


def digest(value: str) -> str:
    """The stored form of a cookie value or token: SHA-256, hex."""
    return hashlib.sha256(value.encode()).hexdigest()


def same_secret(sent: str, expected: str) -> bool:
    """Constant-time comparison of two secrets."""
    return secrets.compare_digest(sent.encode(), expected.encode())
