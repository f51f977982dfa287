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

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from rewardmiles.db.models import PartnerClient, PartnerClientSponsor, SigningKey, Sponsor

# --------------------------------------------------------------------------- partner clients


@dataclass(frozen=True, slots=True)
class StoredClient:
    secret_hash: str
    active: bool
    sponsor_codes: list[str]
    # The secret a rotation replaced and until when it still signs in (None: none).
    previous_secret_hash: str | None = None
    previous_secret_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A partner client as the admin API and `partner list` show it (never its secret)."""

    client_id: str
    name: str | None
    sponsor_codes: list[str]
    created_at: datetime
    last_token_at: datetime | None
    rotated_at: datetime | None
    revoked_at: datetime | None
    previous_secret_until: datetime | None


def known_sponsor_codes(session: Session, codes: Sequence[str]) -> set[str]:
    """Those of `codes` that name a sponsor."""
    return set(session.scalars(select(Sponsor.code).where(Sponsor.code.in_(codes))))


def add_client(
    session: Session,
    client_id: str,
    secret_hash: str,
    now: datetime,
    sponsor_codes: list[str],
    name: str | None = None,
) -> None:
    session.add(
        PartnerClient(
            client_id=client_id, secret_hash=secret_hash, active=True, created_at=now, name=name
        )
    )
    session.flush()
    session.add_all(
        [PartnerClientSponsor(client_id=client_id, sponsor_code=c) for c in sponsor_codes]
    )
    session.flush()


def stored_client(session: Session, client_id: str) -> StoredClient | None:
    """The client's secret hash, state and sponsor codes (sorted); None for an unknown id."""
    client = session.get(PartnerClient, client_id)
    if client is None:
        return None
    sponsors = session.scalars(
        select(PartnerClientSponsor.sponsor_code).where(PartnerClientSponsor.client_id == client_id)
    )
    return StoredClient(
        client.secret_hash,
        client.active,
        sorted(sponsors),
        client.previous_secret_hash,
        client.previous_secret_until,
    )


def _sponsors_of(session: Session, client_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {c: [] for c in client_ids}
    rows = session.execute(
        select(PartnerClientSponsor.client_id, PartnerClientSponsor.sponsor_code)
        .where(PartnerClientSponsor.client_id.in_(client_ids))
        .order_by(PartnerClientSponsor.client_id, PartnerClientSponsor.sponsor_code)
    )
    for client_id, code in rows:
        found[client_id].append(code)
    return found


def _row(client: PartnerClient, sponsors: list[str]) -> ClientRow:
    return ClientRow(
        client.client_id,
        client.name,
        sponsors,
        client.created_at,
        client.last_token_at,
        client.rotated_at,
        client.revoked_at,
        client.previous_secret_until,
    )


def client_page(
    session: Session, after: str | None, limit: int, sponsor_code: str | None = None
) -> list[ClientRow]:
    """Up to `limit` clients in `client_id` order, after `after` (keyset, on the primary key);
    with `sponsor_code`, only the clients that may act for that sponsor."""
    query = select(PartnerClient).order_by(PartnerClient.client_id).limit(limit)
    if after is not None:
        query = query.where(PartnerClient.client_id > after)
    if sponsor_code is not None:
        query = query.where(
            PartnerClient.client_id.in_(
                select(PartnerClientSponsor.client_id).where(
                    PartnerClientSponsor.sponsor_code == sponsor_code
                )
            )
        )
    clients = list(session.scalars(query))
    sponsors = _sponsors_of(session, [c.client_id for c in clients])
    return [_row(c, sponsors[c.client_id]) for c in clients]


def client_row(session: Session, client_id: str, *, lock: bool = False) -> ClientRow | None:
    query = select(PartnerClient).where(PartnerClient.client_id == client_id)
    client = session.scalars(query.with_for_update() if lock else query).first()
    if client is None:
        return None
    return _row(client, _sponsors_of(session, [client_id])[client_id])


def replace_secret(
    session: Session, client_id: str, secret_hash: str, now: datetime, grace_until: datetime
) -> None:
    """The new secret's hash; the current one becomes the previous, accepted until `grace_until`."""
    session.execute(
        update(PartnerClient)
        .where(PartnerClient.client_id == client_id)
        .values(
            previous_secret_hash=PartnerClient.secret_hash,
            previous_secret_until=grace_until,
            secret_hash=secret_hash,
            rotated_at=now,
        )
    )


def revoke_client(session: Session, client_id: str, now: datetime) -> None:
    """Inactive, revoked at `now`, and no previous secret left in its grace."""
    session.execute(
        update(PartnerClient)
        .where(PartnerClient.client_id == client_id)
        .values(active=False, revoked_at=now, previous_secret_hash=None, previous_secret_until=None)
    )


def revoked_client_ids(session: Session) -> set[str]:
    """Every revoked client (through `ix_partner_clients_revoked_at`; revoked clients are few)."""
    return set(
        session.scalars(
            select(PartnerClient.client_id).where(PartnerClient.revoked_at.is_not(None))
        )
    )


def record_token_times(session: Session, issued: dict[str, datetime]) -> None:
    """Each client's last token time, never moved back (another process may have a later one)."""
    for client_id, at in issued.items():
        session.execute(
            update(PartnerClient)
            .where(
                PartnerClient.client_id == client_id,
                or_(PartnerClient.last_token_at.is_(None), PartnerClient.last_token_at < at),
            )
            .values(last_token_at=at)
        )


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
