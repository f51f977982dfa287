"""Queries of the operators package: operators, their sessions, admin tokens, failed sign-ins and
the audit log. No rules here: `operators.service` decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from rewardmiles.db.engine import insert_or_update
from rewardmiles.db.models import (
    AdminToken,
    Operator,
    OperatorAuditEntry,
    OperatorSession,
    SignInFailures,
)
from rewardmiles.vocabulary import OperatorRole, OperatorStatus

FAILURES = cast(Table, SignInFailures.__table__)

# --------------------------------------------------------------------------- operators


@dataclass(frozen=True, slots=True)
class StoredOperator:
    id: str
    email: str
    display_name: str
    role: str
    status: str
    password_hash: str
    created_at: datetime
    last_sign_in_at: datetime | None


_OPERATOR_COLUMNS = (
    Operator.id,
    Operator.email,
    Operator.display_name,
    Operator.role,
    Operator.status,
    Operator.password_hash,
    Operator.created_at,
    Operator.last_sign_in_at,
)


def operator_by_email(session: Session, email: str) -> StoredOperator | None:
    """The operator whose e-mail is `email` whatever its case (`email` is ASCII)."""
    row = session.execute(
        select(*_OPERATOR_COLUMNS).where(func.lower(Operator.email) == email.lower())
    ).first()
    return StoredOperator(*row) if row is not None else None


def operator_by_id(session: Session, operator_id: str) -> StoredOperator | None:
    row = session.execute(select(*_OPERATOR_COLUMNS).where(Operator.id == operator_id)).first()
    return StoredOperator(*row) if row is not None else None


def operators_after(session: Session, after: str | None, limit: int) -> list[StoredOperator]:
    """Up to `limit` operators by id, after the id `after` (a page through the primary key)."""
    stmt = select(*_OPERATOR_COLUMNS).order_by(Operator.id).limit(limit)
    if after is not None:
        stmt = stmt.where(Operator.id > after)
    return [StoredOperator(*row) for row in session.execute(stmt)]


def active_admins(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Operator)
            .where(Operator.role == OperatorRole.ADMIN, Operator.status == OperatorStatus.ACTIVE)
        )
        or 0
    )


def tokens_after(session: Session, after: str | None, limit: int) -> list[StoredToken]:
    """Up to `limit` admin tokens by id, after the id `after`."""
    stmt = select(*_TOKEN_COLUMNS).order_by(AdminToken.id).limit(limit)
    if after is not None:
        stmt = stmt.where(AdminToken.id > after)
    return [StoredToken(*row) for row in session.execute(stmt)]


def operators(session: Session) -> list[StoredOperator]:
    """Every operator, by e-mail."""
    rows = session.execute(select(*_OPERATOR_COLUMNS).order_by(func.lower(Operator.email)))
    return [StoredOperator(*row) for row in rows]


def add_operator(session: Session, operator: StoredOperator) -> None:
    session.execute(insert(Operator).values(**asdict(operator)))


def change_operator(
    session: Session,
    operator_id: str,
    *,
    role: str | None = None,
    status: str | None = None,
    password_hash: str | None = None,
    last_sign_in_at: datetime | None = None,
) -> None:
    """Set the given columns of one operator (the others stay as they are)."""
    values = {
        name: value
        for name, value in (
            ("role", role),
            ("status", status),
            ("password_hash", password_hash),
            ("last_sign_in_at", last_sign_in_at),
        )
        if value is not None
    }
    session.execute(update(Operator).where(Operator.id == operator_id).values(**values))


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class StoredSession:
    id: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    operator_id: str
    email: str
    display_name: str
    role: str
    status: str


def add_session(
    session: Session,
    session_id: str,
    operator_id: str,
    csrf_token: str,
    now: datetime,
    source_address: str,
) -> None:
    session.execute(
        insert(OperatorSession).values(
            id=session_id,
            operator_id=operator_id,
            csrf_token=csrf_token,
            created_at=now,
            last_seen_at=now,
            source_address=source_address,
        )
    )


def session_by_id(session: Session, session_id: str) -> StoredSession | None:
    """The session and its operator."""
    row = session.execute(
        select(
            OperatorSession.id,
            OperatorSession.csrf_token,
            OperatorSession.created_at,
            OperatorSession.last_seen_at,
            Operator.id,
            Operator.email,
            Operator.display_name,
            Operator.role,
            Operator.status,
        )
        .join(Operator, Operator.id == OperatorSession.operator_id)
        .where(OperatorSession.id == session_id)
    ).first()
    return StoredSession(*row) if row is not None else None


def touch_session(session: Session, session_id: str, now: datetime) -> None:
    session.execute(
        update(OperatorSession).where(OperatorSession.id == session_id).values(last_seen_at=now)
    )


def delete_session(session: Session, session_id: str) -> int:
    result = session.execute(delete(OperatorSession).where(OperatorSession.id == session_id))
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_sessions_of(session: Session, operator_id: str) -> int:
    result = session.execute(
        delete(OperatorSession).where(OperatorSession.operator_id == operator_id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_ended_sessions_of(
    session: Session, operator_id: str, *, seen_before: datetime, created_before: datetime
) -> int:
    """The operator's sessions last seen before `seen_before` or created before
    `created_before` (ended by the timeouts, never signed out)."""
    result = session.execute(
        delete(OperatorSession).where(
            OperatorSession.operator_id == operator_id,
            or_(
                OperatorSession.last_seen_at < seen_before,
                OperatorSession.created_at < created_before,
            ),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_ended_sessions(
    session: Session, *, seen_before: datetime, created_before: datetime
) -> int:
    """Every operator's sessions ended by the timeouts (last seen before `seen_before`, or
    created before `created_before`): the worker's purge of those never signed out."""
    result = session.execute(
        delete(OperatorSession).where(
            or_(
                OperatorSession.last_seen_at < seen_before,
                OperatorSession.created_at < created_before,
            )
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- admin tokens


@dataclass(frozen=True, slots=True)
class StoredToken:
    id: str
    name: str
    role: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


_TOKEN_COLUMNS = (
    AdminToken.id,
    AdminToken.name,
    AdminToken.role,
    AdminToken.created_by,
    AdminToken.created_at,
    AdminToken.expires_at,
    AdminToken.revoked_at,
    AdminToken.last_used_at,
)


def add_token(session: Session, token: StoredToken, token_hash: str) -> None:
    session.execute(insert(AdminToken).values(**asdict(token), token_hash=token_hash))


def token_by_hash(session: Session, token_hash: str) -> StoredToken | None:
    row = session.execute(
        select(*_TOKEN_COLUMNS).where(AdminToken.token_hash == token_hash)
    ).first()
    return StoredToken(*row) if row is not None else None


def token_by_id(session: Session, token_id: str) -> StoredToken | None:
    row = session.execute(select(*_TOKEN_COLUMNS).where(AdminToken.id == token_id)).first()
    return StoredToken(*row) if row is not None else None


def unrevoked_token_by_name(session: Session, name: str) -> StoredToken | None:
    row = session.execute(
        select(*_TOKEN_COLUMNS).where(AdminToken.name == name, AdminToken.revoked_at.is_(None))
    ).first()
    return StoredToken(*row) if row is not None else None


def tokens(session: Session) -> list[StoredToken]:
    """Every admin token, revoked ones too, oldest first."""
    rows = session.execute(select(*_TOKEN_COLUMNS).order_by(AdminToken.created_at, AdminToken.id))
    return [StoredToken(*row) for row in rows]


def revoke_token(session: Session, token_id: str, now: datetime) -> None:
    session.execute(update(AdminToken).where(AdminToken.id == token_id).values(revoked_at=now))


def touch_token(session: Session, token_id: str, now: datetime) -> None:
    session.execute(update(AdminToken).where(AdminToken.id == token_id).values(last_used_at=now))


# --------------------------------------------------------------------------- failed sign-ins


@dataclass(frozen=True, slots=True)
class FailureCount:
    failures: int
    last_failure_at: datetime


def failure_counts(
    session: Session, keys: Sequence[str], *, since: datetime
) -> dict[str, FailureCount]:
    """The counts of `keys` whose last failure is at `since` or later (older ones are
    forgotten)."""
    rows = session.execute(
        select(SignInFailures.key, SignInFailures.failures, SignInFailures.last_failure_at).where(
            SignInFailures.key.in_(keys), SignInFailures.last_failure_at >= since
        )
    )
    return {key: FailureCount(failures, last) for key, failures, last in rows}


def count_failure(
    session: Session, keys: Sequence[str], now: datetime, *, forget_before: datetime
) -> None:
    """One more failure for each of `keys`: a count whose last failure is older than
    `forget_before` starts again at 1."""
    statement = insert_or_update(
        session,
        FAILURES,
        ["key"],
        {
            "failures": case(
                (FAILURES.c.last_failure_at < forget_before, 1),
                else_=FAILURES.c.failures + 1,
            ),
            "last_failure_at": now,
        },
    )
    session.execute(
        statement, [{"key": key, "failures": 1, "last_failure_at": now} for key in keys]
    )


def forget_failures(session: Session, key: str) -> None:
    session.execute(delete(SignInFailures).where(SignInFailures.key == key))


def purge_failures(session: Session, *, before: datetime) -> None:
    """Counts whose last failure is older than `before`: forgotten already, now removed."""
    session.execute(delete(SignInFailures).where(SignInFailures.last_failure_at < before))


# --------------------------------------------------------------------------- audit log


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before_json: str | None
    after_json: str | None
    note: str | None
    request_id: str | None


def append_audit(session: Session, entry: AuditEntry) -> None:
    session.execute(insert(OperatorAuditEntry).values(**asdict(entry)))
