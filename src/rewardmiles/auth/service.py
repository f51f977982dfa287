"""Partner clients: creation (secret shown once), client-credentials authentication, and the
operators' lifecycle of a client: list, rotate (the old secret keeps signing in for a grace
period) and revoke (final: its secrets stop at once and every API process refuses its tokens
within seconds, `auth.revocation`). Every operator change is appended to the operator audit log
in the caller's unit of work; a secret never is, only its existence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles.auth import repository
from rewardmiles.auth.repository import ClientRow, StoredClient
from rewardmiles.auth.secrets import (
    dummy_hash,
    hash_secret,
    new_client_id,
    new_client_secret,
    verify_secret,
)
from rewardmiles.errors import OperatorError
from rewardmiles.operators.service import Actor, audit
from rewardmiles.vocabulary import PartnerClientStatus

AUDIT_ENTITY = "partner_client"


class UnknownSponsorError(OperatorError):
    pass


class UnknownClientError(OperatorError):
    pass


class ClientRevokedError(OperatorError):
    pass


@dataclass(frozen=True, slots=True)
class NewClient:
    client_id: str
    client_secret: str
    sponsor_codes: list[str]


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A secret and its hash, made before any unit of work (the hash is deliberately slow)."""

    secret: str
    secret_hash: str


@dataclass(frozen=True, slots=True)
class RotatedClient:
    client_id: str
    client_secret: str
    previous_secret_until: datetime


def new_secret(*, secret_hash_cost: int, secret: str | None = None) -> NewSecret:
    value = secret or new_client_secret()
    return NewSecret(value, hash_secret(value, cost=secret_hash_cost))


def status_of(row: ClientRow) -> PartnerClientStatus:
    return PartnerClientStatus.ACTIVE if row.revoked_at is None else PartnerClientStatus.REVOKED


def previous_secret_in_grace(row: ClientRow, now: datetime) -> bool:
    return row.previous_secret_until is not None and now < row.previous_secret_until


def _audit_state(row: ClientRow, now: datetime) -> dict[str, Any]:
    """What the audit log keeps of a client: never a secret or its hash."""
    return {
        "name": row.name,
        "sponsors": row.sponsor_codes,
        "status": status_of(row).value,
        "rotatedAt": None if row.rotated_at is None else row.rotated_at.isoformat(),
        "revokedAt": None if row.revoked_at is None else row.revoked_at.isoformat(),
        "previousSecretUntil": (
            row.previous_secret_until.isoformat()
            if row.previous_secret_until is not None and previous_secret_in_grace(row, now)
            else None
        ),
    }


def create_client(
    session: Session,
    sponsor_codes: list[str],
    now: datetime,
    *,
    secret_hash_cost: int,
    client_id: str | None = None,
    client_secret: str | None = None,
    name: str | None = None,
    secret: NewSecret | None = None,
    actor: Actor | None = None,
) -> NewClient:
    """A new client of `sponsor_codes`; its secret is in the answer and nowhere else. With
    `actor` (an operator's command), the creation is audited."""
    codes = sorted(set(sponsor_codes))
    if not codes:
        raise UnknownSponsorError("a partner client needs at least one sponsor")
    known = repository.known_sponsor_codes(session, codes)
    missing = [c for c in codes if c not in known]
    if missing:
        raise UnknownSponsorError(f"unknown sponsor code(s): {', '.join(missing)}")
    cid = client_id or new_client_id()
    made = secret or new_secret(secret_hash_cost=secret_hash_cost, secret=client_secret)
    repository.add_client(session, cid, made.secret_hash, now, codes, name)
    if actor is not None:
        row = repository.client_row(session, cid)
        assert row is not None
        audit(
            session, actor, "partner.create", AUDIT_ENTITY, cid, now, after=_audit_state(row, now)
        )
    return NewClient(cid, made.secret, codes)


def load_client(session: Session, client_id: str) -> StoredClient | None:
    return repository.stored_client(session, client_id)


def check_secret(
    stored: StoredClient | None,
    client_secret: str,
    *,
    secret_hash_cost: int,
    now: datetime | None = None,
) -> list[str] | None:
    """The client's sponsor codes when the secret matches an active client — its secret, or the
    one a rotation replaced while `now` is within its grace period — else None.

    Runs outside any database transaction: the hash is deliberately slow.
    """
    if stored is None:
        verify_secret(client_secret, dummy_hash(secret_hash_cost))
        return None
    matched = verify_secret(client_secret, stored.secret_hash)
    if (
        not matched
        and now is not None
        and stored.previous_secret_hash is not None
        and stored.previous_secret_until is not None
        and now < stored.previous_secret_until
    ):
        matched = verify_secret(client_secret, stored.previous_secret_hash)
    if not matched or not stored.active:
        return None
    return stored.sponsor_codes


def client(session: Session, client_id: str) -> ClientRow | None:
    return repository.client_row(session, client_id)


def list_clients(
    session: Session, after: str | None, limit: int, sponsor_code: str | None = None
) -> list[ClientRow]:
    return repository.client_page(session, after, limit, sponsor_code)


def _locked(session: Session, client_id: str) -> ClientRow:
    row = repository.client_row(session, client_id, lock=True)
    if row is None:
        raise UnknownClientError(f"no partner client {client_id}")
    return row


def rotate_client(
    session: Session,
    client_id: str,
    secret: NewSecret,
    now: datetime,
    grace: timedelta,
    actor: Actor,
    *,
    reason: str | None = None,
) -> RotatedClient:
    """Replace the client's secret by `secret`; the current one keeps signing in until
    `now + grace` (a secret still in the grace of an earlier rotation stops now)."""
    before = _locked(session, client_id)
    if before.revoked_at is not None:
        raise ClientRevokedError(f"partner client {client_id} is revoked")
    until = now + grace
    repository.replace_secret(session, client_id, secret.secret_hash, now, until)
    after = _locked(session, client_id)
    audit(
        session,
        actor,
        "partner.rotate",
        AUDIT_ENTITY,
        client_id,
        now,
        before=_audit_state(before, now),
        after=_audit_state(after, now),
        note="; ".join(
            p for p in (reason, f"previous secret accepted until {until.isoformat()}") if p
        ),
    )
    return RotatedClient(client_id, secret.secret, until)


def revoke_client(
    session: Session, client_id: str, now: datetime, actor: Actor, *, reason: str | None = None
) -> ClientRow:
    """Revoke the client (final): its secrets stop signing in with this commit, and every API
    process refuses its tokens from its next refresh of the revoked set. Revoking a revoked
    client changes nothing and is not audited again."""
    before = _locked(session, client_id)
    if before.revoked_at is not None:
        return before
    repository.revoke_client(session, client_id, now)
    after = _locked(session, client_id)
    audit(
        session,
        actor,
        "partner.revoke",
        AUDIT_ENTITY,
        client_id,
        now,
        before=_audit_state(before, now),
        after=_audit_state(after, now),
        note=reason,
    )
    return after


def revoked_client_ids(session: Session) -> set[str]:
    return repository.revoked_client_ids(session)


def record_token_times(session: Session, issued: dict[str, datetime]) -> None:
    repository.record_token_times(session, issued)
