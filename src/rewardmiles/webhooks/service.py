"""Webhook endpoints, the outbox of settlement events, and their delivery.

Events are written to `webhook_deliveries` in the unit of work that settles the transaction, so an
event exists exactly when its settlement committed. The dispatcher (`webhooks.dispatch`, its own
thread beside the settlement loop) delivers due rows: it leases a row (pushes `next_attempt_at`
past the delivery deadline) in one short transaction, posts outside any transaction, then records
the result. A crash mid-delivery leaves the lease to expire and another pass delivers again: at
least once. Failures back off exponentially up to a bounded attempt count, after which the
delivery stays visible as `failed`. Targets are checked by `webhooks.targets`.

Signature: header `Rewardmiles-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
The secret is stored encrypted under the key-encryption key (`rewardmiles.secretbox`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import orjson
from sqlalchemy.orm import Session

from rewardmiles import clock, limits, secretbox
from rewardmiles.config import Settings
from rewardmiles.db.models import Sponsor, Webhook, WebhookDelivery
from rewardmiles.errors import MissingError, OperatorError
from rewardmiles.issuance import lookups
from rewardmiles.vocabulary import DeliveryStatus, EventType
from rewardmiles.webhooks import repository, targets

SIGNATURE_HEADER = "Rewardmiles-Signature"
LEASE_MARGIN_SECONDS = 30.0


class WebhookError(OperatorError):
    pass


class MissingWebhookError(WebhookError, MissingError):
    pass


@dataclass(frozen=True, slots=True)
class WebhookView:
    id: str
    sponsor_code: str
    url: str
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: str
    webhook_id: str
    transaction_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance_seconds: int = 300
) -> bool:
    """What a receiver does (documented in docs/operations.md)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def add_webhook(
    session: Session,
    sponsor_code: str,
    url: str,
    now: datetime,
    box: secretbox.SecretBox,
    *,
    allow_private_targets: bool = False,
) -> tuple[str, str]:
    """(webhook id, signing secret). The secret is shown once, at creation, and stored
    encrypted. Internal targets and URLs with credentials are refused (`targets.check_url`)."""
    targets.check_url(url, allow_private=allow_private_targets)  # before the first statement
    if session.get(Sponsor, sponsor_code) is None:
        raise WebhookError(f"sponsor {sponsor_code} does not exist", field="sponsorCode")
    webhook_id = str(uuid.uuid4())
    secret = "whsec_" + secrets.token_urlsafe(32)
    session.add(
        Webhook(
            id=webhook_id,
            sponsor_code=sponsor_code,
            url=url,
            secret=box.seal(secret, secretbox.WEBHOOK_CONTEXT),
            active=True,
            created_at=now,
        )
    )
    return webhook_id, secret


def list_webhooks(session: Session, sponsor_code: str | None = None) -> list[WebhookView]:
    return [
        WebhookView(
            id=row.id,
            sponsor_code=row.sponsor_code,
            url=targets.redact(row.url),  # credentials of URLs added before they were refused
            active=row.active,
            created_at=row.created_at,
        )
        for row in repository.webhooks(session, sponsor_code)
    ]


def remove_webhook(session: Session, webhook_id: str) -> None:
    """Deactivate: no new events; pending deliveries of it are dropped as failed."""
    webhook = session.get(Webhook, webhook_id, with_for_update=True)
    if webhook is None or not webhook.active:
        raise MissingWebhookError(f"no active webhook {webhook_id}")
    webhook.active = False
    repository.fail_pending_deliveries(session, webhook_id, "webhook removed")


def list_deliveries(
    session: Session, status: str | None = None, limit: int = 200
) -> list[DeliveryView]:
    return [DeliveryView(**row._mapping) for row in repository.deliveries(session, status, limit)]


@dataclass(frozen=True, slots=True)
class DeliveryPageItem:
    id: str
    webhook_id: str
    transaction_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime


def webhook_page(
    session: Session, sponsor_code: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[WebhookView]:
    """Up to `limit` webhooks, oldest first, after the (created_at, id) `after`."""
    return [
        WebhookView(
            id=row.id,
            sponsor_code=row.sponsor_code,
            url=targets.redact(row.url),
            active=row.active,
            created_at=row.created_at,
        )
        for row in repository.webhooks_after(session, sponsor_code, after, limit)
    ]


def delivery_page(
    session: Session, status: str | None, before: tuple[datetime, str] | None, limit: int
) -> list[DeliveryPageItem]:
    """Up to `limit` deliveries, newest first, before the (created_at, id) `before`."""
    return [
        DeliveryPageItem(**row._mapping)
        for row in repository.deliveries_before(session, status, before, limit)
    ]


def retry_delivery(session: Session, delivery_id: str, now: datetime) -> tuple[str, int]:
    """Send a failed delivery again from now, its attempts counted afresh: (its status and
    attempts before). Only a failed delivery of an active webhook is retried."""
    delivery = repository.locked_delivery(session, delivery_id)
    if delivery is None:
        raise MissingWebhookError(f"no delivery {delivery_id}")
    if delivery.status != DeliveryStatus.FAILED:
        raise WebhookError(
            f"delivery {delivery_id} is {delivery.status}; only a failed delivery is retried"
        )
    webhook = session.get(Webhook, delivery.webhook_id)
    if webhook is None or not webhook.active:
        raise WebhookError(f"the webhook of delivery {delivery_id} was removed")
    before = (delivery.status, delivery.attempts)
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    return before


def enqueue_settled(session: Session, transaction_id: str, sponsor_code: str, now: datetime) -> int:
    """Outbox rows for every active webhook of the sponsor, in the caller's unit of work."""
    hooks = repository.active_webhook_ids(session, sponsor_code)
    if not hooks:
        return 0
    view = lookups.lookup(session, transaction_id, (sponsor_code,))
    for hook_id in hooks:
        delivery_id = str(uuid.uuid4())
        payload = {
            "eventId": delivery_id,
            "type": EventType.TRANSACTION_SETTLED,
            "createdAt": now.isoformat(timespec="milliseconds"),
            "data": view,
        }
        session.add(
            WebhookDelivery(
                id=delivery_id,
                webhook_id=hook_id,
                event_type=EventType.TRANSACTION_SETTLED,
                transaction_id=transaction_id,
                payload_json=orjson.dumps(payload).decode(),
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                last_error=None,
                created_at=now,
                delivered_at=None,
            )
        )
    return len(hooks)


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: str
    url: str
    secret: str
    payload_json: str
    attempts: int


def lease_due(session: Session, now: datetime, lease: timedelta, limit: int) -> list[DueDelivery]:
    """Claim up to `limit` due deliveries (rows locked by another claimer are skipped), in the
    caller's short unit of work: its commit is what hands them to this claimer."""
    rows = repository.lock_due(session, now, min(limit, limits.webhook_deliveries_per_pass_max))
    due = [DueDelivery(**row._mapping) for row in rows]
    if due:
        repository.postpone(session, [d.id for d in due], now + lease)
    return due


def lease_for(settings: Settings) -> timedelta:
    """How long a claimed delivery is left alone: past its deadline, with a margin."""
    return timedelta(seconds=settings.webhook_deadline_seconds + LEASE_MARGIN_SECONDS)


def record_attempt(
    session: Session, settings: Settings, due: DueDelivery, error: str | None, now: datetime
) -> bool:
    """Record one delivery attempt (error None: delivered), in the caller's unit of work; True
    when it was delivered."""
    attempts = due.attempts + 1
    if error is None:
        values: dict[str, object] = {
            "status": DeliveryStatus.DELIVERED,
            "attempts": attempts,
            "delivered_at": now,
            "last_error": None,
        }
    else:
        give_up = attempts >= settings.webhook_attempts_max
        delay = min(
            limits.webhook_retry_delay_seconds_max,
            settings.webhook_retry_base_seconds * 2 ** (attempts - 1),
        )
        values = {
            "status": DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING,
            "attempts": attempts,
            "next_attempt_at": now + timedelta(seconds=delay),
            "last_error": error[: limits.webhook_error_chars_max],
        }
    repository.update_pending(session, due.id, values)
    return error is None


def opened(due: DueDelivery, box: secretbox.SecretBox) -> DueDelivery:
    """The leased delivery with its webhook's secret decrypted (`secretbox.SecretKeyError` when
    it does not decrypt under the box's keys)."""
    what = "the webhook's secret"
    return replace(due, secret=box.open(due.secret, secretbox.WEBHOOK_CONTEXT, what=what))


def signed_headers(due: DueDelivery, body: bytes) -> dict[str, str]:
    """`due` as `opened` gives it: with the secret in clear."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(due.secret, int(clock.utc_now().timestamp()), body),
        "Rewardmiles-Event-Id": due.id,
        "Rewardmiles-Event-Type": EventType.TRANSACTION_SETTLED,
    }
