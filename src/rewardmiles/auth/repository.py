"""Queries of partner authentication: partner clients and token signing keys. No rules here: the
service (`auth.service`) and the key ring (`auth.keys`) decide.

The signing keys' stored private keys are also read and rewritten by `secretbox.check_and_seal`
(encryption at rest): the table is auth's, so its queries live here, as the webhook secrets' live
in `webhooks.repository`. Values go in and out as stored (sealed); the cryptography stays in
`secretbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rewardmiles.db.models import PartnerClient, PartnerClientSponsor, SigningKey, Sponsor

# --------------------------------------------------------------------------- partner clients


@dataclass(frozen=True, slots=True)
class StoredClient:
    secret_hash: str
    active: bool
    sponsor_codes: list[str]


def known_sponsor_codes(session: Session, codes: Sequence[str]) -> set[str]:
    """Those of `codes` that name a sponsor."""
    return set(session.scalars(select(Sponsor.code).where(Sponsor.code.in_(codes))))


def add_client(
    session: Session, client_id: str, secret_hash: str, now: datetime, sponsor_codes: list[str]
) -> None:
    session.add(
        PartnerClient(client_id=client_id, secret_hash=secret_hash, active=True, created_at=now)
    )
    session.flush()
    session.add_all(
        [PartnerClientSponsor(client_id=client_id, sponsor_code=c) for c in sponsor_codes]
    )


def stored_client(session: Session, client_id: str) -> StoredClient | None:
    """The client's secret hash, state and sponsor codes (sorted); None for an unknown id."""
    client = session.get(PartnerClient, client_id)
    if client is None:
        return None
    sponsors = session.scalars(
        select(PartnerClientSponsor.sponsor_code).where(PartnerClientSponsor.client_id == client_id)
    )
    return StoredClient(client.secret_hash, client.active, sorted(sponsors))


# --------------------------------------------------------------------------- signing keys


class SigningKeyRow(NamedTuple):
    kid: str
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True, slots=True)
class ActiveSigningKey:
    kid: str
    private_key_pem: str  # as stored: sealed, or in clear from before encryption at rest
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredPrivateKey:
    kid: str
    private_key_pem: str  # as stored


def add_signing_key(session: Session, kid: str, private_key_pem: str, created_at: datetime) -> None:
    session.add(
        SigningKey(kid=kid, private_key_pem=private_key_pem, created_at=created_at, retired_at=None)
    )


def signing_keys(session: Session) -> list[SigningKeyRow]:
    """Every key, retired ones too, oldest first."""
    rows = session.execute(
        select(SigningKey.kid, SigningKey.created_at, SigningKey.retired_at).order_by(
            SigningKey.created_at
        )
    ).all()
    return [SigningKeyRow(r.kid, r.created_at, r.retired_at) for r in rows]


def active_kids_newest_first(session: Session) -> list[str]:
    return list(
        session.execute(
            select(SigningKey.kid)
            .where(SigningKey.retired_at.is_(None))
            .order_by(SigningKey.created_at.desc(), SigningKey.kid.desc())
        )
        .scalars()
        .all()
    )


def has_active_signing_key(session: Session) -> bool:
    return (
        session.scalars(select(SigningKey.kid).where(SigningKey.retired_at.is_(None))).first()
        is not None
    )


def active_signing_keys(session: Session) -> list[ActiveSigningKey]:
    rows = session.execute(
        select(SigningKey.kid, SigningKey.private_key_pem, SigningKey.created_at).where(
            SigningKey.retired_at.is_(None)
        )
    ).all()
    return [ActiveSigningKey(r.kid, r.private_key_pem, r.created_at) for r in rows]


def retire_signing_key(session: Session, kid: str, now: datetime) -> None:
    row = session.get(SigningKey, kid)
    assert row is not None
    row.retired_at = now


def stored_private_keys(session: Session) -> list[StoredPrivateKey]:
    """Every key's private key as stored, retired keys' too."""
    return [
        StoredPrivateKey(kid, pem)
        for kid, pem in session.execute(select(SigningKey.kid, SigningKey.private_key_pem))
    ]


def replace_private_key(session: Session, kid: str, stored: str, private_key_pem: str) -> None:
    """Store `private_key_pem` for `kid` if the row still holds `stored` (else leave it)."""
    session.execute(
        update(SigningKey)
        .where(SigningKey.kid == kid, SigningKey.private_key_pem == stored)
        .values(private_key_pem=private_key_pem)
    )
