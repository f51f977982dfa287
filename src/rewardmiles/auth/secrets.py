"""Client secrets: generated once, shown once, stored only as a slow scrypt hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from rewardmiles.codec import b64url, unb64url

SCHEME = "scrypt"
_R = 8
_P = 1
_DKLEN = 32


def new_client_id() -> str:
    return "rmc_" + secrets.token_hex(12)


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, *, cost: int) -> str:
    salt = secrets.token_bytes(16)
    n = 2**cost
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=_R, p=_P, dklen=_DKLEN, maxmem=256 * n * _R
    )
    return f"{SCHEME}${cost}${b64url(salt)}${b64url(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, cost_text, salt_text, digest_text = stored.split("$")
        cost = int(cost_text)
    except ValueError:
        return False
    if scheme != SCHEME:
        return False
    n = 2**cost
    expected = unb64url(digest_text)
    actual = hashlib.scrypt(
        secret.encode(),
        salt=unb64url(salt_text),
        n=n,
        r=_R,
        p=_P,
        dklen=len(expected),
        maxmem=256 * n * _R,
    )
    return hmac.compare_digest(actual, expected)


@lru_cache(maxsize=4)
def dummy_hash(cost: int) -> str:
    """Checked against when the client id is unknown, so both paths cost the same time."""
    return hash_secret("not-a-secret", cost=cost)
