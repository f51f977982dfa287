"""The schema. Every table of the service, typed; migrations in `migrations/` create exactly this.

Identity choices:
- collectors are keyed by their 11-digit number (the ledger shards by it);
- issuance lines are keyed by (transaction, line number), so a request's rows need no round trip
  to learn generated ids;
- the sponsor side of each ledger pair is append-only: no row is updated by every request.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    literal,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from rewardmiles.vocabulary import DeliveryStatus, LineStatus, TransactionStatus

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both dialects (SQLite keeps no offset; PostgreSQL uses timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ReferenceVersion(Base):
    """One row: bumped by triggers on every change to sponsors, offers and locations (0005)."""

    __tablename__ = "reference_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class Sponsor(Base):
    __tablename__ = "sponsors"
    code: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    review_threshold_miles: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Offer(Base):
    __tablename__ = "offers"
    sponsor_code: Mapped[str] = mapped_column(ForeignKey("sponsors.code"), primary_key=True)
    code: Mapped[str] = mapped_column(String(8), primary_key=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    valid_from: Mapped[date | None] = mapped_column(Date, default=None)
    valid_to: Mapped[date | None] = mapped_column(Date, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Program-calculated offers: the rule (JSON, see offers/rules.py), the partner-facing offerId,
    # and the locations it applies to (JSON list; NULL = every location).
    rule_json: Mapped[str | None] = mapped_column(Text, default=None)
    offer_id: Mapped[str | None] = mapped_column(String(64), default=None)
    location_codes_json: Mapped[str | None] = mapped_column(Text, default=None)


class Location(Base):
    __tablename__ = "locations"
    sponsor_code: Mapped[str] = mapped_column(ForeignKey("sponsors.code"), primary_key=True)
    code: Mapped[str] = mapped_column(String(10), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PartnerClient(Base):
    __tablename__ = "partner_clients"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    name: Mapped[str | None] = mapped_column(String(100))
    # The secret a rotation replaced: still accepted at /oauth/token until `previous_secret_until`.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(255))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set once, by a revocation (final): every API process refuses the client's tokens.
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_token_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_partner_clients_revoked_at", "revoked_at"),)


class PartnerClientSponsor(Base):
    __tablename__ = "partner_client_sponsors"
    client_id: Mapped[str] = mapped_column(
        ForeignKey("partner_clients.client_id"), primary_key=True
    )
    sponsor_code: Mapped[str] = mapped_column(ForeignKey("sponsors.code"), primary_key=True)


class Collector(Base):
    __tablename__ = "collectors"
    number: Mapped[str] = mapped_column(String(11), primary_key=True)
    status: Mapped[str] = mapped_column(String(10))  # vocabulary.CollectorStatus
    balance_miles: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Transaction(Base):
    """One partner request that reached the business rules: accepted (posted/pending) or rejected."""

    __tablename__ = "transactions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    sponsor_code: Mapped[str] = mapped_column(String(10))
    endpoint: Mapped[str] = mapped_column(String(32))  # vocabulary.Endpoint
    partner_transaction_id: Mapped[str] = mapped_column(String(64))
    collector_number: Mapped[str | None] = mapped_column(String(11))
    original_transaction_id: Mapped[str | None] = mapped_column(ForeignKey("transactions.id"))
    status: Mapped[str] = mapped_column(String(10))  # vocabulary.TransactionStatus
    http_status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(40))
    fingerprint: Mapped[str] = mapped_column(String(64))
    partner_datetime: Mapped[datetime] = mapped_column(UtcDateTime())
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    request_json: Mapped[str] = mapped_column(Text)
    response_json: Mapped[str] = mapped_column(Text)
    # ISSUE: the offers and basket it was computed from; RETURN: the quantities it took back.
    calculation_json: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        # Rule 3.7: an id is reserved only by an accepted transaction.
        Index(
            "uq_transactions_accepted_partner_id",
            "sponsor_code",
            "endpoint",
            "partner_transaction_id",
            unique=True,
            sqlite_where=text(f"status <> '{TransactionStatus.REJECTED}'"),
            postgresql_where=text(f"status <> '{TransactionStatus.REJECTED}'"),
        ),
        Index("ix_transactions_original", "original_transaction_id"),
        Index("ix_transactions_sponsor_processed", "sponsor_code", "processed_at"),
        # A collector's transactions in time order: its first and last activity read at an end.
        Index("ix_transactions_collector", "collector_number", "processed_at"),
        # The support desk's transaction search (0010): pages newest first, partner ids
        Index("ix_transactions_processed", "processed_at", "id"),
        Index("ix_transactions_partner_id", "partner_transaction_id"),
        # A day's answers per hour from the index alone (0012: the console's Today page).
        Index("ix_transactions_processed_status", "processed_at", "http_status"),
        # Transactions with a pending line, oldest first (0013: the oldest pending line's age).
        Index(
            "ix_transactions_pending",
            "processed_at",
            sqlite_where=text(f"status = '{TransactionStatus.PENDING}'"),
            postgresql_where=text(f"status = '{TransactionStatus.PENDING}'"),
        ),
    )


class IssuanceLine(Base):
    __tablename__ = "issuance_lines"
    transaction_id: Mapped[str] = mapped_column(ForeignKey("transactions.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(6))  # vocabulary.Direction
    offer_code: Mapped[str] = mapped_column(String(8))
    location_code: Mapped[str | None] = mapped_column(String(10))
    miles: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10))  # vocabulary.LineStatus
    pending_reason: Mapped[str | None] = mapped_column(String(20))  # vocabulary.PendingReason
    error_code: Mapped[str | None] = mapped_column(String(40))
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index(
            "ix_issuance_lines_pending",
            "status",
            sqlite_where=text(f"status = '{LineStatus.PENDING}'"),
            postgresql_where=text(f"status = '{LineStatus.PENDING}'"),
        ),
    )


# `ix_issuance_lines_pending`'s predicate as SQL text, not a parameter: PostgreSQL's generic plan
# of a prepared statement (psycopg prepares a statement from its fifth use) can use a partial
# index only where it sees the predicate, and otherwise scans every line, or every call in time
# order, for the few pending ones. For every read that looks for pending lines: the settlement
# worker's scans, the support desk's and the metrics' (`LINE_PENDING` for an aliased line).
LINE_PENDING = literal(LineStatus.PENDING.value, literal_execute=True)
LINE_IS_PENDING = IssuanceLine.status == LINE_PENDING
# `ix_transactions_pending`'s, likewise: a transaction is pending exactly while a line is.
TRANSACTION_IS_PENDING = Transaction.status == literal(
    TransactionStatus.PENDING.value, literal_execute=True
)


class Adjustment(Base):
    """An operator's adjustment of a collector's miles (migration 0009). Its ledger pair names it
    (`ledger_entries.adjustment_id`): the collector's entry and the program's `ADJUSTMENTS`
    account's, never a sponsor's. Not a partner transaction, so no partner read sees it. The
    idempotency key is scoped to the operator who sent it."""

    __tablename__ = "adjustments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collector_number: Mapped[str] = mapped_column(ForeignKey("collectors.number"))
    miles: Mapped[int] = mapped_column(BigInteger)  # signed: + credit, - debit
    reason: Mapped[str] = mapped_column(String(12))  # vocabulary.AdjustmentReason
    note: Mapped[str] = mapped_column(String(500))
    operator: Mapped[str] = mapped_column(String(320))  # the audit log's actor
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("uq_adjustments_operator_key", "operator", "idempotency_key", unique=True),
        Index("ix_adjustments_created", "created_at", "id"),
        Index("ix_adjustments_collector", "collector_number"),
    )


class LedgerEntry(Base):
    """Immutable signed posting. Each posted line writes one collector entry and one sponsor entry
    of opposite sign; each adjustment one collector entry and one program entry (0009); the sum
    over the whole table is zero. An entry names exactly one of a line (transaction, line
    number) and an adjustment."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    line_no: Mapped[int | None] = mapped_column(Integer)
    account_kind: Mapped[str] = mapped_column(String(10))  # vocabulary.AccountKind
    account_code: Mapped[str] = mapped_column(String(11))
    amount_miles: Mapped[int] = mapped_column(BigInteger)
    posted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    adjustment_id: Mapped[str | None] = mapped_column(ForeignKey("adjustments.id"), default=None)

    __table_args__ = (
        ForeignKeyConstraint(
            ["transaction_id", "line_no"],
            ["issuance_lines.transaction_id", "issuance_lines.line_no"],
        ),
        CheckConstraint(
            "(transaction_id IS NOT NULL AND line_no IS NOT NULL AND adjustment_id IS NULL) OR "
            "(transaction_id IS NULL AND line_no IS NULL AND adjustment_id IS NOT NULL)",
            name="one_source",
        ),
        Index("ix_ledger_entries_line", "transaction_id", "line_no"),
        # A collector's history, newest first, a page at a time (keyset on id).
        Index("ix_ledger_entries_account", "account_kind", "account_code", "id"),
        Index("ix_ledger_entries_adjustment", "adjustment_id"),
        # A day's entries by posting time (0012): reconciliation files, and the Today page's
        # miles per hour from the index alone.
        Index(
            "ix_ledger_entries_posted",
            "account_kind",
            "posted_at",
            "amount_miles",
            "transaction_id",
        ),
    )


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    transaction_id: Mapped[str | None] = mapped_column(String(36))
    response_status: Mapped[int] = mapped_column(Integer)
    response_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)


class SigningKey(Base):
    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Webhook(Base):
    """A sponsor's endpoint for settlement events. The secret signs deliveries (HMAC-SHA256), so it
    is kept encrypted (`rewardmiles.secretbox`) rather than hashed like client secrets."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sponsor_code: Mapped[str] = mapped_column(ForeignKey("sponsors.code"))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_webhooks_sponsor", "sponsor_code"),)


class WebhookDelivery(Base):
    """The outbox: written in the unit of work that settles, delivered later by the worker."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    event_type: Mapped[str] = mapped_column(String(40))  # vocabulary.EventType
    transaction_id: Mapped[str] = mapped_column(String(36))
    payload_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))  # vocabulary.DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_webhook_deliveries_created", "created_at", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text(f"status = '{DeliveryStatus.PENDING}'"),
            postgresql_where=text(f"status = '{DeliveryStatus.PENDING}'"),
        ),
    )


# `ix_webhook_deliveries_due`'s predicate as SQL text (as `LINE_IS_PENDING`): the outbox's polls.
DELIVERY_IS_PENDING = WebhookDelivery.status == literal(
    DeliveryStatus.PENDING.value, literal_execute=True
)


class Batch(Base):
    """A partner transaction log matched against the real-time records."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sponsor_code: Mapped[str] = mapped_column(ForeignKey("sponsors.code"))
    source: Mapped[str] = mapped_column(String(255))
    issue_missing: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(12))  # vocabulary.BatchStatus
    counts_json: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class BatchRecord(Base):
    """One outcome of a batch: a log record (by line number) or a program transaction the log
    lacks (`missing_in_log`, no line number)."""

    __tablename__ = "batch_records"
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    line_no: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))  # vocabulary.BatchOutcome
    error_code: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(String(500))
    endpoint: Mapped[str | None] = mapped_column(String(32))
    partner_transaction_id: Mapped[str | None] = mapped_column(String(64))
    collector_number: Mapped[str | None] = mapped_column(String(11))
    log_miles: Mapped[int | None] = mapped_column(BigInteger)
    program_miles: Mapped[int | None] = mapped_column(BigInteger)
    transaction_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (Index("ix_batch_records_transaction", "batch_id", "transaction_id"),)


# --------------------------------------------------------------------------- operators (0007)


class Operator(Base):
    """A person of the support desk. The e-mail is unique whatever its case (`lower(email)`);
    e-mails are ASCII, so both dialects' `lower` agree. Only an argon2id hash of the password
    is kept."""

    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10))  # vocabulary.OperatorRole
    status: Mapped[str] = mapped_column(String(10))  # vocabulary.OperatorStatus
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("uq_operators_email_lower", func.lower(email), unique=True),)


class OperatorSession(Base):
    """A browser session behind the admin cookie. `id` is the SHA-256 of the cookie's value:
    the value itself is never stored, so a read of this table signs no one in."""

    __tablename__ = "operator_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"))
    csrf_token: Mapped[str] = mapped_column(String(64))  # useless without the cookie
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    source_address: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_operator_sessions_operator", "operator_id"),)


class AdminToken(Base):
    """A bearer token of the admin API (automation), kept as the SHA-256 of its value. A name is
    held by one unrevoked token at a time."""

    __tablename__ = "admin_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(10))  # vocabulary.OperatorRole
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index(
            "uq_admin_tokens_unrevoked_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class SignInFailures(Base):
    """Failed operator sign-ins counted per key (`pair:ACCOUNT|ADDRESS`, `address:ADDRESS`,
    `account:ACCOUNT`, ACCOUNT a digest of the e-mail), forgotten a while after the last one
    (operators.service)."""

    __tablename__ = "operator_sign_in_failures"
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_operator_sign_in_failures_last", "last_failure_at"),)


class OperatorAuditEntry(Base):
    """Every change made by an operator (admin API) or the operator CLI. Append-only: triggers
    refuse an UPDATE or DELETE (migration 0007)."""

    __tablename__ = "operator_audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(320))  # an operator's e-mail, token:NAME, cli@HOST
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(128))
    before_json: Mapped[str | None] = mapped_column(Text)
    after_json: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_operator_audit_log_at", "at"),
        Index("ix_operator_audit_log_entity", "entity", "entity_id"),
        # its pages by entity or actor, newest first (0010)
        Index("ix_operator_audit_log_entity_seq", "entity", "id"),
        Index("ix_operator_audit_log_actor_seq", "actor", "id"),
    )


# --------------------------------------------------------------------------- support (0010)


class RequestFailure(Base):
    """A partner request (`/checkout/`, `/oauth/`) answered 4xx or 5xx, by the request id its
    problem document carries; written in batches by `support.recorder`, purged after
    `REWARDMILES_REQUEST_FAILURE_RETENTION_DAYS`. A request id sent by the client
    (`X-Request-Id`) may repeat: it is no key."""

    __tablename__ = "request_failures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    client_id: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(String(500))
    field: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_request_failures_request", "request_id"),
        Index("ix_request_failures_at", "at"),
    )
