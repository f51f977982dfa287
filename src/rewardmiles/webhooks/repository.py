"""Queries of webhooks and their deliveries (the outbox). No rules here: the service decides.

The webhook secrets are also read and rewritten by `secretbox.check_and_seal` (encryption at rest):
the table is the webhooks', so those queries live here, as the signing keys' live in
`auth.repository`. Values go in and out as stored (sealed); the cryptography stays in `secretbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, bindparam, func, select, tuple_, update
from sqlalchemy.orm import Session

from rewardmiles.db.models import DELIVERY_IS_PENDING, Webhook, WebhookDelivery
from rewardmiles.vocabulary import DeliveryStatus


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


_ACTIVE_HOOKS = select(Webhook.id).where(
    Webhook.sponsor_code == bindparam("sponsor"), Webhook.active.is_(True)
)


def webhooks(
    session: Session, sponsor_code: str | None
) -> Sequence[Row[str, str, str, bool, datetime]]:
    """Every webhook (of `sponsor_code` when given), oldest first."""
    stmt = select(Webhook.id, Webhook.sponsor_code, Webhook.url, Webhook.active, Webhook.created_at)
    if sponsor_code:
        stmt = stmt.where(Webhook.sponsor_code == sponsor_code)
    return session.execute(stmt.order_by(Webhook.created_at)).all()


def active_webhook_ids(session: Session, sponsor_code: str) -> Sequence[str]:
    return session.connection().execute(_ACTIVE_HOOKS, {"sponsor": sponsor_code}).scalars().all()


def fail_pending_deliveries(session: Session, webhook_id: str, error: str) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.webhook_id == webhook_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.FAILED, last_error=error)
    )


def deliveries(
    session: Session, status: str | None, limit: int
) -> Sequence[Row[str, str, str, str, int, datetime, str | None]]:
    """The newest deliveries (with `status` when given)."""
    stmt = select(
        WebhookDelivery.id,
        WebhookDelivery.webhook_id,
        WebhookDelivery.transaction_id,
        WebhookDelivery.status,
        WebhookDelivery.attempts,
        WebhookDelivery.next_attempt_at,
        WebhookDelivery.last_error,
    ).order_by(WebhookDelivery.created_at.desc())
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    return session.execute(stmt.limit(limit)).all()


def webhooks_after(
    session: Session, sponsor_code: str | None, after: tuple[datetime, str] | None, limit: int
) -> Sequence[Row[str, str, str, bool, datetime]]:
    """Up to `limit` webhooks (of `sponsor_code` when given), oldest first, after the
    (created_at, id) `after`."""
    stmt = (
        select(Webhook.id, Webhook.sponsor_code, Webhook.url, Webhook.active, Webhook.created_at)
        .order_by(Webhook.created_at, Webhook.id)
        .limit(limit)
    )
    if sponsor_code:
        stmt = stmt.where(Webhook.sponsor_code == sponsor_code)
    if after is not None:
        stmt = stmt.where(tuple_(Webhook.created_at, Webhook.id) > tuple_(*after))
    return session.execute(stmt).all()


def deliveries_before(
    session: Session, status: str | None, before: tuple[datetime, str] | None, limit: int
) -> Sequence[Row[str, str, str, str, int, datetime, str | None, datetime]]:
    """Up to `limit` deliveries (with `status` when given), newest first, before the
    (created_at, id) `before`: a page through `ix_webhook_deliveries_created`."""
    stmt = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.webhook_id,
            WebhookDelivery.transaction_id,
            WebhookDelivery.status,
            WebhookDelivery.attempts,
            WebhookDelivery.next_attempt_at,
            WebhookDelivery.last_error,
            WebhookDelivery.created_at,
        )
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
    )
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if before is not None:
        stmt = stmt.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(*before))
    return session.execute(stmt).all()


def locked_delivery(session: Session, delivery_id: str) -> WebhookDelivery | None:
    """The delivery, its row locked until the unit of work ends."""
    return session.get(WebhookDelivery, delivery_id, with_for_update=True)


def lock_due(session: Session, now: datetime, limit: int) -> Sequence[Row[str, str, str, str, int]]:
    """Up to `limit` pending deliveries due at `now`, earliest first, with their webhook's URL
    and sealed secret, locked (rows locked by another claimer are skipped)."""
    return session.execute(
        select(
            WebhookDelivery.id,
            Webhook.url,
            Webhook.secret,
            WebhookDelivery.payload_json,
            WebhookDelivery.attempts,
        )
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(DELIVERY_IS_PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).all()


def postpone(session: Session, delivery_ids: list[str], until: datetime) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(delivery_ids))
        .values(next_attempt_at=until)
    )


def update_pending(session: Session, delivery_id: str, values: dict[str, object]) -> None:
    """Set `values` on the delivery while it is still pending (a removed webhook's are not)."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING)
        .values(**values)
    )


def outbox_counts(session: Session) -> tuple[int, int]:
    """(deliveries still to make, deliveries given up after their last attempt): what
    `GET /metrics` shows of the outbox."""
    status = WebhookDelivery.status
    row = session.execute(
        select(
            func.count().filter(status == DeliveryStatus.PENDING),
            func.count().filter(status == DeliveryStatus.FAILED),
        )
    ).one()
    return int(row[0]), int(row[1])
