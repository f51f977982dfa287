"""Partner clients: creation (secret shown once) and client-credentials authentication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from rewardmiles.auth import repository
from rewardmiles.auth.repository import StoredClient
from rewardmiles.auth.secrets import (
    dummy_hash,
    hash_secret,
    new_client_id,
    new_client_secret,
    verify_secret,
)
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
    known = repository.known_sponsor_codes(session, codes)
    missing = [c for c in codes if c not in known]
    if missing:
        raise UnknownSponsorError(f"unknown sponsor code(s): {', '.join(missing)}")
    cid = client_id or new_client_id()
    secret = client_secret or new_client_secret()
    repository.add_client(session, cid, hash_secret(secret, cost=secret_hash_cost), now, codes)
    return NewClient(cid, secret, codes)


def load_client(session: Session, client_id: str) -> StoredClient | None:
    return repository.stored_client(session, client_id)


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
