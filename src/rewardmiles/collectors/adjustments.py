"""Operators' adjustments of a collector's miles: the rules, the operator's idempotency key, the
posting and the audit entry, in the caller's unit of work.

An adjustment is a row of `adjustments` and one balanced pair in the ledger, written by
`ledger.post_adjustment` under the collector's row lock: the collector's account moves by the
signed miles, the program's `ADJUSTMENTS` account by the opposite (never a sponsor's issuance
account). No transaction or issuance line is written, so no partner-facing read (lookups,
reports, reconciliation files, partner logs) can show one; `ledger verify` checks its pair.

Rules, in order: the request's shape; the caller's role (an agent up to
`REWARDMILES_ADJUSTMENT_AGENT_LIMIT_MILES` in absolute value, an admin above it); the key
(a replay of the same request answers the stored adjustment, another request under it is
`IDEMPOTENCY_KEY_REUSED`); the collector (unknown: `NOT_FOUND`; ON_HOLD or CLOSED: only FRAUD and
CORRECTION adjustments, `ADJUSTMENT_COLLECTOR_INACTIVE`); a debit under the negative-balance
policy `reject` never takes the balance below zero (`INSUFFICIENT_BALANCE`, as a partner's
reversal).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from rewardmiles import ledger, limits
from rewardmiles.collectors import repository
from rewardmiles.collectors.repository import StoredAdjustment
from rewardmiles.config import Settings
from rewardmiles.errors import OperatorError
from rewardmiles.operators.service import Actor, audit
from rewardmiles.vocabulary import (
    AdjustmentReason,
    CollectorStatus,
    NegativeBalancePolicy,
    OperatorRole,
)

# Reasons that may move the miles of a collector who is not ACTIVE.
WHILE_INACTIVE = (AdjustmentReason.FRAUD, AdjustmentReason.CORRECTION)


class AdjustmentError(OperatorError):
    """A refused adjustment: the catalogue's code, and the field it is about."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True, slots=True)
class AdjustmentRequest:
    collector_number: str
    miles: int
    reason: str
    note: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class AdjustmentOutcome:
    adjustment: StoredAdjustment
    replayed: bool


def check_request(request: AdjustmentRequest) -> None:
    """The shape of an adjustment: non-zero whole miles within the maximum, a known reason, a
    note of 1 to 500 characters that is not only spaces."""
    miles = request.miles
    if isinstance(miles, bool) or not isinstance(miles, int):
        raise AdjustmentError("FIELD_INVALID", "miles must be an integer", "miles")
    if miles == 0 or abs(miles) > limits.adjustment_miles_max:
        raise AdjustmentError(
            "FIELD_INVALID",
            f"miles must be a non-zero integer of at most {limits.adjustment_miles_max:,} "
            "either way",
            "miles",
        )
    if request.reason not in tuple(AdjustmentReason):
        raise AdjustmentError(
            "FIELD_INVALID",
            f"reason must be one of {', '.join(AdjustmentReason)}",
            "reason",
        )
    if not request.note.strip() or len(request.note) > limits.adjustment_note_chars_max:
        raise AdjustmentError(
            "FIELD_INVALID",
            f"note must be 1 to {limits.adjustment_note_chars_max} characters, not only spaces",
            "note",
        )


def fingerprint(request: AdjustmentRequest) -> str:
    """What a replay must repeat: collector, miles, reason and note."""
    canonical = json.dumps(
        [request.collector_number, request.miles, request.reason, request.note],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_role(miles: int, role: OperatorRole, settings: Settings) -> None:
    """A viewer makes none; an agent up to the limit either way; an admin any."""
    if not role.includes(OperatorRole.AGENT):
        raise AdjustmentError(
            "ADMIN_FORBIDDEN", f"An adjustment needs the role agent; the caller is {role.value}."
        )
    limit = settings.adjustment_agent_limit_miles
    if abs(miles) > limit and not role.includes(OperatorRole.ADMIN):
        raise AdjustmentError(
            "ADMIN_FORBIDDEN",
            f"An adjustment of more than {limit:,} miles either way needs the role admin; "
            f"the caller is {role.value}.",
        )


def adjust(
    session: Session,
    request: AdjustmentRequest,
    *,
    actor: Actor,
    role: OperatorRole,
    settings: Settings,
    now: datetime,
) -> AdjustmentOutcome:
    """Make the adjustment (or find the one the key already made); see the module's rules."""
    check_request(request)
    check_role(request.miles, role, settings)
    digest = fingerprint(request)
    found = repository.adjustment_by_key(session, actor.name, request.idempotency_key)
    if found is not None:
        if found.fingerprint != digest:
            raise AdjustmentError(
                "IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key was already used for another adjustment.",
                "Idempotency-Key",
            )
        return AdjustmentOutcome(found, replayed=True)
    account = ledger.lock_collector(session, request.collector_number)
    if account is None:
        raise AdjustmentError("NOT_FOUND", f"No collector {request.collector_number}.")
    if account.status != CollectorStatus.ACTIVE and request.reason not in WHILE_INACTIVE:
        raise AdjustmentError(
            "ADJUSTMENT_COLLECTOR_INACTIVE",
            f"Collector {account.number} is {account.status}: only "
            f"{' or '.join(WHILE_INACTIVE)} adjustments may move its miles.",
            "reason",
        )
    after = account.balance_miles + request.miles
    if (
        settings.negative_balance_policy is NegativeBalancePolicy.REJECT
        and request.miles < 0
        and after < 0
    ):
        raise AdjustmentError(
            "INSUFFICIENT_BALANCE",
            f"A debit of {-request.miles} miles would take the balance of "
            f"{account.balance_miles} below zero.",
            "miles",
        )
    made = StoredAdjustment(
        str(uuid.uuid4()),
        account.number,
        request.miles,
        request.reason,
        request.note,
        actor.name,
        request.idempotency_key,
        digest,
        after,
        now,
    )
    repository.insert_adjustment(session, made)
    moved = ledger.post_adjustment(session, account, made.id, request.miles, posted_at=now)
    ledger.invariant(moved.balance_miles == after)
    audit(
        session,
        actor,
        "collector.adjust",
        "collector",
        account.number,
        now,
        before={"balance": account.balance_miles},
        after={
            "adjustmentId": made.id,
            "balance": after,
            "miles": made.miles,
            "reason": made.reason,
        },
        note=made.note,
    )
    return AdjustmentOutcome(made, replayed=False)


def list_adjustments(
    session: Session,
    start: datetime | None,
    end: datetime | None,
    operator: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredAdjustment]:
    return repository.adjustments(session, start, end, operator, after, limit)
