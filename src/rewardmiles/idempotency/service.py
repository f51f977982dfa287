"""Idempotency rules, independent of any endpoint.

A key is scoped per partner client. Its stored outcome is written in the same database transaction
as the effects it records, so a key is either absent (nothing happened; retry processes afresh) or
present with the final outcome. "Still executing" is detected two ways: a registry of the keys this
process is running now, and (PostgreSQL) a transaction-scoped advisory lock for other processes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.db.engine import lock_id
from rewardmiles.errors import ProblemError
from rewardmiles.idempotency import repository

LOCK_NAMESPACE = "idempotency"


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    fingerprint: str
    transaction_id: str | None
    status: int
    body: dict[str, Any]


def parse_key(raw: str | None) -> str | None:
    """`Idempotency-Key`: 1–255 printable ASCII; a quoted structured-field string is accepted."""
    if raw is None:
        return None
    value = raw.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if (
        not value
        or len(value) > limits.idempotency_key_chars_max
        or not all(" " <= ch <= "~" for ch in value)
    ):
        raise ProblemError(
            "IDEMPOTENCY_KEY_INVALID",
            f"Idempotency-Key must be 1–{limits.idempotency_key_chars_max} printable ASCII characters.",
            field="Idempotency-Key",
        )
    return value


def fingerprint(method: str, path: str, canonical_body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"{method.upper()} {path}\n".encode())
    digest.update(canonical_body)
    return digest.hexdigest()


def in_use_error() -> ProblemError:
    return ProblemError(
        "IDEMPOTENCY_KEY_IN_USE",
        "A request with this Idempotency-Key is still executing; retry shortly.",
        headers={"Retry-After": str(limits.in_use_retry_after_seconds)},
    )


class InFlightRegistry:
    """The (client, key) pairs this process is executing right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[tuple[str, str]] = set()

    @contextmanager
    def hold(self, client_id: str, key: str | None) -> Iterator[None]:
        if key is None:
            yield
            return
        token = (client_id, key)
        with self._lock:
            if token in self._running:
                raise in_use_error()
            self._running.add(token)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(token)


@dataclass(frozen=True, slots=True)
class Claim:
    stored: StoredOutcome | None  # None: the key is new
    reference_version: int


def claim(session: Session, client_id: str, key: str) -> Claim:
    """Inside the unit of work: fail with 409 if another process runs this key; else return the
    stored outcome (None when the key is new) and the reference-data version."""
    row = repository.claim_row(session, client_id, key, lock_number(client_id, key))
    if not row.locked:
        raise in_use_error()
    if row.fingerprint is None:
        return Claim(None, row.reference_version)
    stored = StoredOutcome(
        row.fingerprint, row.transaction_id, row.response_status, orjson.loads(row.response_json)
    )
    return Claim(stored, row.reference_version)


def ensure_same_request(stored: StoredOutcome, request_fingerprint: str) -> None:
    if stored.fingerprint != request_fingerprint:
        raise ProblemError(
            "IDEMPOTENCY_KEY_REUSED",
            "This Idempotency-Key was already used with a different request.",
            field="Idempotency-Key",
        )


def key_row(
    *,
    client_id: str,
    key: str,
    request_fingerprint: str,
    transaction_id: str | None,
    status: int,
    body: dict[str, Any],
    now: datetime,
) -> dict[str, object]:
    """The `idempotency_keys` row that keeps a call's outcome."""
    return {
        "client_id": client_id,
        "key": key,
        "fingerprint": request_fingerprint,
        "transaction_id": transaction_id,
        "response_status": status,
        "response_json": orjson.dumps(body).decode(),
        "created_at": now,
    }


def lock_number(client_id: str, key: str) -> int:
    """The advisory lock a keyed call holds while it runs (PostgreSQL)."""
    return lock_id(f"{LOCK_NAMESPACE}:{client_id}", key)
