"""The words the program's data and policies are written in: one typed vocabulary for models,
services, CLI and reports.

Each concept is a `StrEnum` whose values are the strings stored in the database, sent on the wire
or read from the environment, so a member is that string (`LineStatus.POSTED == "posted"`, and
JSON, SQL parameters and f-strings see the value). Rows read back hold plain strings, which
compare equal to the members. Outside this module no code spells one of these values as a bare
string where it stands for the word (`tests/unit/test_architecture.py`, rule
`bare-vocabulary-word`); the migrations keep theirs, being history.

The codes of refusals and rejected lines are not here: they are the error catalogue's
(`errors.py`).
"""

from __future__ import annotations

from enum import StrEnum


class CollectorStatus(StrEnum):
    """A collector's account: ACTIVE; ON_HOLD, its lines wait; CLOSED, its lines are refused."""

    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    CLOSED = "CLOSED"


class OperatorRole(StrEnum):
    """What an operator (or an admin token) may do, each role everything the one before may:
    viewer reads; agent also changes collectors and pending lines; admin also manages the
    catalogue, partners and operators."""

    VIEWER = "viewer"
    AGENT = "agent"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANKS[self]

    def includes(self, other: OperatorRole) -> bool:
        """This role may do what `other` may."""
        return self.rank >= other.rank


_ROLE_RANKS = {OperatorRole.VIEWER: 0, OperatorRole.AGENT: 1, OperatorRole.ADMIN: 2}


class OperatorStatus(StrEnum):
    """An operator account's (`operators.status`): a disabled one cannot sign in."""

    ACTIVE = "active"
    DISABLED = "disabled"


class TokenState(StrEnum):
    """An admin token's, from its dates: active until it expires or is revoked."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class PartnerClientStatus(StrEnum):
    """A partner client's, as the admin API shows it: revoked once `revoked_at` is set."""

    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"


class TransactionStatus(StrEnum):
    """A transaction's (`transactions.status`): accepted, a RECORD's, or refused (no line)."""

    POSTED = "posted"
    PENDING = "pending"
    REJECTED = "rejected"
    RECORDED = "recorded"


class LineStatus(StrEnum):
    """An issuance line's (`issuance_lines.status`): the same four words as its transaction's."""

    POSTED = "posted"
    PENDING = "pending"
    REJECTED = "rejected"
    RECORDED = "recorded"


class Direction(StrEnum):
    """Which way an endpoint's lines move miles (`issuance_lines.direction`); RECORD's none."""

    CREDIT = "credit"
    DEBIT = "debit"
    NONE = "none"


class PendingReason(StrEnum):
    """Why a line is pending (`issuance_lines.pending_reason`); `approved`: past its review."""

    REVIEW = "review"
    APPROVED = "approved"
    COLLECTOR_UNKNOWN = "collector_unknown"
    COLLECTOR_ON_HOLD = "collector_on_hold"
    ORIGINAL_PENDING = "original_pending"


class IssuanceStatus(StrEnum):
    """A line's status as a partner's response shows it (SPEC §2.5; none on a RECORD line)."""

    ISSUED = "ISSUED"
    REVERSED = "REVERSED"
    PENDING = "PENDING"
    REJECTED = "REJECTED"


class Endpoint(StrEnum):
    """The partner endpoint that took a transaction (`transactions.endpoint`, `batch_records`)."""

    POST = "post"
    POST_EVENT = "post_event"
    REVERSE = "reverse"
    REVERSE_EVENT = "reverse_event"
    RECORD = "record"
    ISSUE = "issue"
    RETURN = "return"
    CALCULATE = "calculate"  # a preview: never a transaction, only (with a key) a stored answer


class AccountKind(StrEnum):
    """The account a ledger entry posts to (`ledger_entries.account_kind`)."""

    COLLECTOR = "collector"
    SPONSOR = "sponsor"
    PROGRAM = "program"  # the program's own accounts (`ProgramAccount`): adjustments' counter-side


class ProgramAccount(StrEnum):
    """The program's accounts (`ledger_entries.account_code` of an `AccountKind.PROGRAM` entry)."""

    ADJUSTMENTS = "ADJUSTMENTS"


class AdjustmentReason(StrEnum):
    """Why an operator adjusted a collector's miles (`adjustments.reason`)."""

    GOODWILL = "GOODWILL"
    CORRECTION = "CORRECTION"
    FRAUD = "FRAUD"
    MIGRATION = "MIGRATION"


class EntrySource(StrEnum):
    """What wrote a ledger entry as a collector's history shows it, when it is not a partner
    endpoint (`Endpoint`): an operator's adjustment."""

    ADJUSTMENT = "adjustment"


class DeliveryStatus(StrEnum):
    """A webhook delivery's (`webhook_deliveries.status`): `failed` once attempts run out."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class EventType(StrEnum):
    """The type of a webhook event (`webhook_deliveries.event_type`, the payload's `type`)."""

    TRANSACTION_SETTLED = "transaction.settled"


class BatchStatus(StrEnum):
    """A partner-log batch's (`batches.status`)."""

    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class BatchOutcome(StrEnum):
    """What matching found for a log's record, or a transaction it lacks (`batch_records`)."""

    MATCHED = "matched"
    AMOUNT_MISMATCH = "amount_mismatch"
    MISSING_IN_PROGRAM = "missing_in_program"
    MISSING_IN_LOG = "missing_in_log"
    ISSUED = "issued"
    ISSUE_REJECTED = "issue_rejected"
    INVALID = "invalid"


class NegativeBalancePolicy(StrEnum):
    """Whether a debit may take a balance below zero (`REWARDMILES_NEGATIVE_BALANCE_POLICY`)."""

    ALLOW = "allow"
    REJECT = "reject"


class UnknownCollectorPolicy(StrEnum):
    """What a line for a collector not enrolled does (`REWARDMILES_UNKNOWN_COLLECTOR_POLICY`)."""

    PENDING = "pending"
    REJECT = "reject"
    ENROLL = "enroll"


class ReviewAction(StrEnum):
    """What an operator does with a line held for review (`/admin/v1/pending`, audited as
    `pending.<action>`)."""

    APPROVE = "approve"
    REJECT = "reject"
