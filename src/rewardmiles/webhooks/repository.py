"""Queries of partner webhooks. No rules here.

The webhook secrets are read and rewritten by `secretbox.check_and_seal` (encryption at rest): the
table is the webhooks', so those queries live here, as the signing keys' live in
`auth.repository`. Values go in and out as stored (sealed); the cryptography stays in `secretbox`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rewardmiles.db.models import Webhook


@dataclass(frozen=True, slots=True)
class StoredWebhookSecret:
    webhook_id: str
    secret: str  # as stored


def stored_webhook_secrets(session: Session) -> list[StoredWebhookSecret]:
    """Every webhook's secret as stored, inactive webhooks' too."""
    return [
        StoredWebhookSecret(webhook_id, secret)
        for webhook_id, secret in session.execute(select(Webhook.id, Webhook.secret))
    ]


def replace_webhook_secret(session: Session, webhook_id: str, stored: str, secret: str) -> None:
    """Store `secret` for the webhook if the row still holds `stored` (else leave it)."""
    session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.secret == stored)
        .values(secret=secret)
    )
