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
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, insert, text
from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.db.engine import lock_id, write
from rewardmiles.db.models import IdempotencyKey
from rewardmiles.errors import ProblemError

IN_USE_RETRY_AFTER_SECONDS = 1
LOCK_NAMESPACE = "idempotency"

_INSERT_KEY = insert(IdempotencyKey)


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
        headers={"Retry-After": str(IN_USE_RETRY_AFTER_SECONDS)},
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


# The first statement of a keyed call: take the key's lock (PostgreSQL), read its stored
# outcome, and, riding along to save the issuance path a round trip, the reference-data version.
# The lock and the read share one snapshot, taken before the lock: if the key's previous holder
# committed in between, the read misses its row, this call runs the request again, and its
# insert of the key fails on the primary key; the unit of work is then retried and replays.
_CLAIM_SELECT = (
    "(SELECT version FROM reference_version WHERE id = 1) AS reference_version, "
    "k.fingerprint, k.transaction_id, k.response_status, k.response_json "
    "FROM (SELECT 1 AS one) AS one "
    "LEFT JOIN idempotency_keys AS k ON k.client_id = :client_id AND k.key = :key"
)
_CLAIM = {
    "postgresql": text(f"SELECT pg_try_advisory_xact_lock(:lock) AS locked, {_CLAIM_SELECT}"),
    "sqlite": text(f"SELECT 1 AS locked, {_CLAIM_SELECT}"),  # BEGIN IMMEDIATE holds the writer
}
_REFERENCE_VERSION = text("SELECT version FROM reference_version WHERE id = 1")


@dataclass(frozen=True, slots=True)
class Claim:
    stored: StoredOutcome | None  # None: the key is new
    reference_version: int


def claim(session: Session, client_id: str, key: str) -> Claim:
    """Inside the unit of work: fail with 409 if another process runs this key; else return the
    stored outcome (None when the key is new) and the reference-data version."""
    conn = session.connection()
    row = conn.execute(
        _CLAIM[conn.dialect.name],
        {"lock": lock_number(client_id, key), "client_id": client_id, "key": key},
    ).one()
    if not row.locked:
        raise in_use_error()
    if row.fingerprint is None:
        return Claim(None, row.reference_version)
    stored = StoredOutcome(
        row.fingerprint, row.transaction_id, row.response_status, orjson.loads(row.response_json)
    )
    return Claim(stored, row.reference_version)


def reference_version(session: Session) -> int:
    """The reference-data version, for a call without a key (keyed calls get it from `claim`)."""
    return int(session.connection().execute(_REFERENCE_VERSION).scalar_one())


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


def store(session: Session, row: dict[str, object]) -> None:
    """Keep a call's outcome (`key_row`), with the other writes of its unit of work."""
    write(session, _INSERT_KEY, row)


def lock_number(client_id: str, key: str) -> int:
    """The advisory lock a keyed call holds while it runs (PostgreSQL)."""
    return lock_id(f"{LOCK_NAMESPACE}:{client_id}", key)


def purge_expired(session: Session, now: datetime, retention_days: int) -> int:
    """Drop the keys stored more than `retention_days` before `now`; the number dropped."""
    result = session.connection().execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.created_at < now - timedelta(days=retention_days)
        )
    )
    return result.rowcount
