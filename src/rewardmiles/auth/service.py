"""Partner clients: creation (secret shown once) and client-credentials authentication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rewardmiles.auth.secrets import (
    dummy_hash,
    hash_secret,
    new_client_id,
    new_client_secret,
    verify_secret,
)
from rewardmiles.db.models import PartnerClient, PartnerClientSponsor, Sponsor
from rewardmiles.errors import OperatorError


class UnknownSponsorError(OperatorError):
    pass


@dataclass(frozen=True, slots=True)
class NewClient:
    client_id: str
    client_secret: str
    sponsor_codes: list[str]


def create_client(
    session: Session,
    sponsor_codes: list[str],
    now: datetime,
    *,
    secret_hash_cost: int,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> NewClient:
    codes = sorted(set(sponsor_codes))
    if not codes:
        raise UnknownSponsorError("a partner client needs at least one sponsor")
    known = set(session.scalars(select(Sponsor.code).where(Sponsor.code.in_(codes))))
    missing = [c for c in codes if c not in known]
    if missing:
        raise UnknownSponsorError(f"unknown sponsor code(s): {', '.join(missing)}")
    cid = client_id or new_client_id()
    secret = client_secret or new_client_secret()
    session.add(
        PartnerClient(
            client_id=cid,
            secret_hash=hash_secret(secret, cost=secret_hash_cost),
            active=True,
            created_at=now,
        )
    )
    session.flush()
    session.add_all([PartnerClientSponsor(client_id=cid, sponsor_code=c) for c in codes])
    return NewClient(cid, secret, codes)


@dataclass(frozen=True, slots=True)
class StoredClient:
    secret_hash: str
    active: bool
    sponsor_codes: list[str]


def load_client(session: Session, client_id: str) -> StoredClient | None:
    client = session.get(PartnerClient, client_id)
    if client is None:
        return None
    sponsors = session.scalars(
        select(PartnerClientSponsor.sponsor_code).where(PartnerClientSponsor.client_id == client_id)
    )
    return StoredClient(client.secret_hash, client.active, sorted(sponsors))


def check_secret(
    stored: StoredClient | None, client_secret: str, *, secret_hash_cost: int
) -> list[str] | None:
    """The client's sponsor codes when the secret matches an active client, else None.

    Runs outside any database transaction: the hash is deliberately slow.
    """
    if stored is None:
        verify_secret(client_secret, dummy_hash(secret_hash_cost))
        return None
    if not verify_secret(client_secret, stored.secret_hash) or not stored.active:
        return None
    return stored.sponsor_codes
