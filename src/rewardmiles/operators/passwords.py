"""Operator passwords: argon2id hashes (argon2-cffi), checked in constant time, at the same cost
whether or not the account exists. Pure CPU work: callers run it off the event loop and outside
any database transaction."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rewardmiles import limits
from rewardmiles.config import Settings
from rewardmiles.errors import OperatorError

PARALLELISM = 4  # argon2id lanes (RFC 9106's second recommended profile)


class PasswordError(OperatorError):
    pass


@dataclass(frozen=True, slots=True)
class HashCost:
    """argon2id parameters of new hashes (`REWARDMILES_PASSWORD_HASH_*`); a stored hash carries
    its own, so a changed cost applies at the next sign-in or reset."""

    time_cost: int
    memory_kib: int

    @classmethod
    def of(cls, settings: Settings) -> HashCost:
        return cls(settings.password_hash_time_cost, settings.password_hash_memory_kib)


@lru_cache(maxsize=4)
def _hasher(cost: HashCost) -> PasswordHasher:
    return PasswordHasher(
        time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=PARALLELISM
    )


@lru_cache(maxsize=4)
def _dummy_hash(cost: HashCost) -> str:
    """Checked against when the e-mail names no operator, so that both cost the same time."""
    return _hasher(cost).hash(secrets.token_urlsafe(16))


def check_new_password(password: str) -> None:
    """The rules of a password an operator chooses: 12 to 1024 characters, not all blank."""
    shortest, longest = limits.operator_password_chars_min, limits.operator_password_chars_max
    if not shortest <= len(password) <= longest:
        raise PasswordError(
            f"a password has {shortest} to {longest} characters (this one has {len(password)})"
        )
    if not password.strip():
        raise PasswordError("a password cannot be only blanks")


def generate_password() -> str:
    """A one-time password to hand over: 24 URL-safe characters (144 random bits)."""
    return secrets.token_urlsafe(18)


def hash_password(password: str, cost: HashCost) -> str:
    return _hasher(cost).hash(password)


def verify_password(stored: str | None, password: str, cost: HashCost) -> bool:
    """Whether `password` matches `stored`; with no stored hash (unknown e-mail), the same work
    against a dummy hash, and False."""
    try:
        matched = _hasher(cost).verify(stored or _dummy_hash(cost), password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and stored is not None


def needs_rehash(stored: str, cost: HashCost) -> bool:
    """The stored hash was made with other parameters than the configured ones."""
    try:
        return _hasher(cost).check_needs_rehash(stored)
    except InvalidHashError:
        return True
