"""Queries of idempotency keys, and the pieces of SQL that other statements reuse to claim a
key (`ledger.batched`'s one statement claims keys exactly as `claim_row` does, from these same
definitions)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, insert, text
from sqlalchemy.orm import Session

from rewardmiles.db.engine import PerDialect, try_xact_lock_sql, write
from rewardmiles.db.models import IdempotencyKey

_INSERT_KEY = insert(IdempotencyKey)

# The stored outcome's columns, and the join that finds a client's key (`k`): `client_id` and
# `key` are SQL expressions (bound parameters or another relation's columns). Module-level
# values, not functions: built at import, they are what every statement runs.
STORED_OUTCOME = "k.fingerprint, k.transaction_id, k.response_status, k.response_json"


KEY_OF = f"{IdempotencyKey.__tablename__} AS k ON k.client_id = {{client_id}} AND k.key = {{key}}"

REFERENCE_VERSION = "SELECT version FROM reference_version WHERE id = 1"


# The first statement of a keyed call: take the key's lock (PostgreSQL), read its stored
# outcome, and, riding along to save the issuance path a round trip, the reference-data version.
# The lock and the read share one snapshot, taken before the lock: if the key's previous holder
# committed in between, the read misses its row, this call runs the request again, and its
# insert of the key fails on the primary key; the unit of work is then retried and replays.
_CLAIM = PerDialect(
    lambda dialect: text(
        f"SELECT {try_xact_lock_sql(dialect, ':lock')} AS locked, "  # noqa: S608 - no values
        f"({REFERENCE_VERSION}) AS reference_version, {STORED_OUTCOME} "
        f"FROM (SELECT 1 AS one) AS one "
        f"LEFT JOIN {KEY_OF.format(client_id=':client_id', key=':key')}"
    )
)
_REFERENCE_VERSION = text(REFERENCE_VERSION)


def claim_row(session: Session, client_id: str, key: str, lock: int) -> Row[Any]:
    """(locked, reference_version, fingerprint, transaction_id, response_status,
    response_json): whether the key's lock was taken, and its stored outcome (all None when the
    key is new)."""
    conn = session.connection()
    return conn.execute(_CLAIM.of(conn), {"lock": lock, "client_id": client_id, "key": key}).one()


def reference_version(session: Session) -> int:
    """The reference-data version, for a call without a key (keyed calls get it from `claim`)."""
    return int(session.connection().execute(_REFERENCE_VERSION).scalar_one())


def store(session: Session, row: dict[str, object]) -> None:
    """Keep a call's outcome (`service.key_row`), with the other writes of its unit of work."""
    write(session, _INSERT_KEY, row)


def purge_expired(session: Session, now: datetime, retention_days: int) -> int:
    """Drop the keys stored more than `retention_days` before `now`; the number dropped."""
    result = session.connection().execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.created_at < now - timedelta(days=retention_days)
        )
    )
    return result.rowcount
