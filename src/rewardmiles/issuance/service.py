"""Use cases of the event endpoints (POST/EVENT, REVERSE/EVENT): SPEC §3 and §4.

Services take a session (the unit of work) and never commit. Each use case first loads and checks
everything (raising `BusinessRuleError` before any write), then writes: the transaction row, its
lines and, for posted lines, the ledger entries via `ledger.post`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rewardmiles import clock, ledger
from rewardmiles.config import NegativeBalancePolicy, Settings, UnknownCollectorPolicy
from rewardmiles.db.engine import Database, insert_ignoring_conflicts
from rewardmiles.db.models import Collector
from rewardmiles.errors import BusinessRuleError, FieldError, problem_from_error
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance.schemas import EventRequestBase, ReverseEventRequest, echo


class Endpoint(StrEnum):
    POST = "post"
    POST_EVENT = "post_event"
    REVERSE = "reverse"
    REVERSE_EVENT = "reverse_event"


class CollectorStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    CLOSED = "CLOSED"


CREDIT = "credit"
DEBIT = "debit"
POSTED = "posted"
PENDING = "pending"
REJECTED = "rejected"

WIRE_STATUS = {(CREDIT, POSTED): "ISSUED", (DEBIT, POSTED): "REVERSED"}

# What REVERSE/EVENT's originalClientTransactionId may name, in order of preference (seed).
REVERSIBLE_BY_REVERSE_EVENT = (Endpoint.POST_EVENT.value, Endpoint.POST.value)

INTEGRITY_RETRIES = 2


@dataclass(frozen=True, slots=True)
class PartnerCall:
    """Everything a write use case needs from the HTTP request, already shape-validated."""

    endpoint: Endpoint
    client_id: str
    body: EventRequestBase
    request_json: str
    fingerprint: str
    idempotency_key: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    transaction_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PlannedLine:
    line_no: int
    offer_code: str
    location_code: str | None
    miles: int
    status: str
    pending_reason: str | None


def wire_status(direction: str, status: str) -> str:
    if status == PENDING:
        return "PENDING"
    if status == REJECTED:
        return "REJECTED"
    return WIRE_STATUS[(direction, status)]


def execute(
    db: Database,
    settings: Settings,
    registry: idempotency.InFlightRegistry,
    call: PartnerCall,
    *,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome:
    """Run one partner write call: idempotency, rules, effects, all in one unit of work.

    A unique-constraint race (two processes accepting the same key or transaction id at once)
    rolls the loser back; its retry then finds the winner's result and replays it.
    """
    with registry.hold(call.client_id, call.idempotency_key):
        for attempt in range(1, INTEGRITY_RETRIES + 1):
            try:
                with db.unit_of_work() as session:
                    return _execute_once(session, settings, call, now())
            except IntegrityError:
                if attempt == INTEGRITY_RETRIES:
                    raise
    raise AssertionError("unreachable")


def _execute_once(
    session: Session, settings: Settings, call: PartnerCall, now: datetime
) -> Outcome:
    key = call.idempotency_key
    if key is not None:
        stored = idempotency.claim(session, call.client_id, key)
        if stored is not None:
            idempotency.ensure_same_request(stored, call.fingerprint)
            return replay_stored(session, stored)
    try:
        outcome = _process(session, settings, call, now)
    except BusinessRuleError as rule:
        outcome = _record_rejection(session, call, rule, now)
    if key is not None:
        idempotency.store(
            session,
            client_id=call.client_id,
            key=key,
            request_fingerprint=call.fingerprint,
            transaction_id=outcome.transaction_id,
            status=outcome.status,
            body=outcome.body,
            now=now,
        )
    return outcome


def replay_stored(session: Session, stored: idempotency.StoredOutcome) -> Outcome:
    if stored.transaction_id is not None and stored.status in (200, 202):
        return render_current(session, stored.transaction_id, replayed=True)
    return Outcome(stored.status, stored.body, stored.transaction_id, replayed=True)


def render_current(session: Session, transaction_id: str, *, replayed: bool) -> Outcome:
    """The response of an accepted transaction as it stands now (a 202 turns 200 once settled)."""
    response_json, lines = repo.get_transaction_state(session, transaction_id)
    body = orjson.loads(response_json)
    for out_line, line in zip(body["issuances"], lines, strict=True):
        out_line["status"] = wire_status(line.direction, line.status)
        if line.status == REJECTED and line.error_code:
            out_line["errorCode"] = line.error_code
    any_pending = any(line.status == PENDING for line in lines)
    return Outcome(202 if any_pending else 200, body, transaction_id, replayed)


def _record_rejection(
    session: Session, call: PartnerCall, rule: BusinessRuleError, now: datetime
) -> Outcome:
    transaction_id = str(uuid.uuid4())
    body = problem_from_error(rule, call.request_id)
    repo.insert_transaction(
        session,
        _transaction_row(call, transaction_id, None, REJECTED, 400, rule.code, body, now),
    )
    return Outcome(400, body, transaction_id=None)


def _transaction_row(
    call: PartnerCall,
    transaction_id: str,
    original_id: str | None,
    status: str,
    http_status: int,
    error_code: str | None,
    response: dict[str, Any],
    now: datetime,
) -> dict[str, object]:
    request = call.body
    return {
        "id": transaction_id,
        "client_id": call.client_id,
        "sponsor_code": request.sponsor_code,
        "endpoint": call.endpoint.value,
        "partner_transaction_id": request.client_transaction_id,
        "collector_number": request.collector_number,
        "original_transaction_id": original_id,
        "status": status,
        "http_status": http_status,
        "error_code": error_code,
        "fingerprint": call.fingerprint,
        "partner_datetime": request.transaction_date_time,
        "processed_at": now,
        "request_json": call.request_json,
        "response_json": orjson.dumps(response).decode(),
    }


# --------------------------------------------------------------------------- rules


def _reject_if_any(errors: list[FieldError], detail: str) -> None:
    if not errors:
        return
    codes = {e.code for e in errors}
    code = errors[0].code if len(codes) == 1 else "VALIDATION_FAILED"
    raise BusinessRuleError(code, detail, errors=errors)


def _check_sponsor(session: Session, code: str) -> repo.SponsorRow:
    sponsor = repo.get_sponsor(session, code)
    if sponsor is None:
        raise BusinessRuleError(
            "SPONSOR_UNKNOWN", f"Sponsor {code} is unknown.", field="sponsorCode"
        )
    if not sponsor.active:
        raise BusinessRuleError(
            "SPONSOR_INACTIVE", f"Sponsor {code} is not active.", field="sponsorCode"
        )
    return sponsor


def _lock_or_enroll(
    session: Session, settings: Settings, number: str, now: datetime
) -> ledger.CollectorAccount | None:
    account = ledger.lock_collector(session, number)
    if account is None and settings.unknown_collector_policy is UnknownCollectorPolicy.ENROLL:
        session.execute(
            insert_ignoring_conflicts(session, Collector.__table__).values(  # type: ignore[arg-type]
                number=number,
                status=CollectorStatus.ACTIVE.value,
                balance_miles=0,
                created_at=now,
                updated_at=now,
            )
        )
        account = ledger.lock_collector(session, number)
    return account


def _check_collector(
    settings: Settings, account: ledger.CollectorAccount | None, number: str
) -> None:
    if account is None:
        if settings.unknown_collector_policy is UnknownCollectorPolicy.REJECT:
            raise BusinessRuleError(
                "COLLECTOR_NOT_FOUND",
                f"Collector {number} is not enrolled.",
                field="collectorNumber",
            )
        return
    if account.status == CollectorStatus.CLOSED:
        raise BusinessRuleError(
            "COLLECTOR_CLOSED", "The collector's account is closed.", field="collectorNumber"
        )


def _check_date_window(settings: Settings, moment: datetime, now: datetime) -> None:
    latest = now + timedelta(seconds=300)
    earliest = now - timedelta(days=settings.backdate_days_max)
    if moment > latest:
        raise BusinessRuleError(
            "DATE_OUT_OF_RANGE",
            "transactionDateTime is more than 5 minutes in the future.",
            field="transactionDateTime",
        )
    if moment < earliest:
        raise BusinessRuleError(
            "DATE_OUT_OF_RANGE",
            f"transactionDateTime is older than the backdate window ({settings.backdate_days_max} days).",
            field="transactionDateTime",
        )


def _check_offers_and_locations(
    session: Session, settings: Settings, request: EventRequestBase
) -> None:
    on_date = request.transaction_date_time.astimezone(
        clock.zone(settings.program_time_zone)
    ).date()
    offers = repo.get_offers(
        session, request.sponsor_code, (line.issuance_offer_code for line in request.issuances)
    )
    errors: list[FieldError] = []
    for i, line in enumerate(request.issuances):
        offer = offers.get(line.issuance_offer_code)
        field = f"issuances[{i}].issuanceOfferCode"
        if offer is None:
            errors.append(
                FieldError(
                    "OFFER_UNKNOWN",
                    field,
                    f"Sponsor {request.sponsor_code} has no offer {line.issuance_offer_code}.",
                )
            )
        elif (
            not offer.active
            or (offer.valid_from and on_date < offer.valid_from)
            or (offer.valid_to and on_date > offer.valid_to)
        ):
            errors.append(
                FieldError(
                    "OFFER_INACTIVE",
                    field,
                    f"Offer {offer.code} is not active on {on_date.isoformat()}.",
                )
            )
    _reject_if_any(errors, "One or more offers cannot be used.")

    codes = {line.location_code for line in request.issuances if line.location_code}
    if not codes:
        return
    registers_any, known = repo.registered_locations(session, request.sponsor_code, codes)
    if not registers_any:
        return
    errors = [
        FieldError(
            "LOCATION_UNKNOWN",
            f"issuances[{i}].locationCode",
            f"Location {line.location_code} is not registered for sponsor {request.sponsor_code}.",
        )
        for i, line in enumerate(request.issuances)
        if line.location_code and line.location_code not in known
    ]
    _reject_if_any(errors, "One or more locations are not registered.")


def _plan_lines(
    request: EventRequestBase,
    sponsor: repo.SponsorRow,
    account: ledger.CollectorAccount | None,
    pending_offers: frozenset[str] = frozenset(),
) -> list[PlannedLine]:
    collector_reason = (
        "collector_unknown"
        if account is None
        else "collector_on_hold"
        if account.status == CollectorStatus.ON_HOLD
        else None
    )
    planned = []
    for i, line in enumerate(request.issuances):
        reason = collector_reason
        if reason is None and line.issuance_offer_code in pending_offers:
            reason = "original_pending"
        if (
            reason is None
            and sponsor.review_threshold_miles is not None
            and line.miles_amount > sponsor.review_threshold_miles
        ):
            reason = "review"
        planned.append(
            PlannedLine(
                i,
                line.issuance_offer_code,
                line.location_code,
                line.miles_amount,
                PENDING if reason else POSTED,
                reason,
            )
        )
    return planned


def _check_reversal_bounds(request: ReverseEventRequest, totals: repo.OriginalTotals) -> None:
    requested: dict[str, int] = defaultdict(int)
    errors: list[FieldError] = []
    for i, line in enumerate(request.issuances):
        code = line.issuance_offer_code
        requested[code] += line.miles_amount
        issued = totals.issued_miles.get(code, 0)
        already = totals.reversed_miles.get(code, 0)
        if already + requested[code] > issued:
            errors.append(
                FieldError(
                    "REVERSAL_EXCEEDS_ORIGINAL",
                    f"issuances[{i}].milesAmount",
                    f"Offer {code}: {issued} miles issued on the original, {already} already reversed; "
                    f"this request would reverse {requested[code]}.",
                )
            )
    _reject_if_any(errors, "The reversal exceeds what the original issued.")


def _check_balance(
    settings: Settings, account: ledger.CollectorAccount | None, planned: list[PlannedLine]
) -> None:
    if settings.negative_balance_policy is not NegativeBalancePolicy.REJECT or account is None:
        return
    debit = sum(p.miles for p in planned if p.status == POSTED)
    if debit > account.balance_miles:
        raise BusinessRuleError(
            "INSUFFICIENT_BALANCE",
            f"The reversal of {debit} miles would take the balance below zero.",
            field="issuances",
        )


# --------------------------------------------------------------------------- use case


def _process(session: Session, settings: Settings, call: PartnerCall, now: datetime) -> Outcome:
    request = call.body
    sponsor = _check_sponsor(session, request.sponsor_code)
    account = _lock_or_enroll(session, settings, request.collector_number, now)

    existing = repo.find_accepted(
        session, request.sponsor_code, (call.endpoint.value,), request.client_transaction_id
    )
    if existing is not None:
        if existing.fingerprint == call.fingerprint:
            return render_current(session, existing.id, replayed=True)
        raise BusinessRuleError(
            "DUPLICATE_TRANSACTION",
            f"clientTransactionId {request.client_transaction_id} was already accepted with a "
            "different body.",
            field="clientTransactionId",
        )

    _check_collector(settings, account, request.collector_number)
    _check_date_window(settings, request.transaction_date_time, now)
    _check_offers_and_locations(session, settings, request)

    direction = CREDIT if call.endpoint is Endpoint.POST_EVENT else DEBIT
    original_id: str | None = None
    pending_offers: frozenset[str] = frozenset()
    if isinstance(request, ReverseEventRequest) and request.original_client_transaction_id:
        original = repo.find_accepted(
            session,
            request.sponsor_code,
            REVERSIBLE_BY_REVERSE_EVENT,
            request.original_client_transaction_id,
            lock=True,
        )
        if original is None:
            raise BusinessRuleError(
                "ORIGINAL_NOT_FOUND",
                f"No accepted POST/EVENT or POST {request.original_client_transaction_id} for "
                f"sponsor {request.sponsor_code}.",
                field="originalClientTransactionId",
            )
        if original.collector_number != request.collector_number:
            raise BusinessRuleError(
                "ORIGINAL_COLLECTOR_MISMATCH",
                "The original transaction was for a different collector.",
                field="originalClientTransactionId",
            )
        totals = repo.original_totals(session, original.id)
        _check_reversal_bounds(request, totals)
        original_id, pending_offers = original.id, totals.pending_offers

    planned = _plan_lines(request, sponsor, account, pending_offers)
    if direction == DEBIT:
        _check_balance(settings, account, planned)
    return _write(session, settings, call, planned, direction, account, original_id, now)


def _write(
    session: Session,
    settings: Settings,
    call: PartnerCall,
    planned: list[PlannedLine],
    direction: str,
    account: ledger.CollectorAccount | None,
    original_id: str | None,
    now: datetime,
) -> Outcome:
    request = call.body
    transaction_id = str(uuid.uuid4())
    any_pending = any(p.status == PENDING for p in planned)
    status = 202 if any_pending else 200

    body = echo(request)
    for out_line, p in zip(body["issuances"], planned, strict=True):
        out_line["status"] = wire_status(direction, p.status)
    body["transactionDateTime"] = clock.program_timestamp(now, settings.program_time_zone)
    body["transactionId"] = transaction_id

    repo.insert_transaction(
        session,
        _transaction_row(
            call,
            transaction_id,
            original_id,
            PENDING if any_pending else POSTED,
            status,
            None,
            body,
            now,
        ),
    )
    repo.insert_lines(
        session,
        [
            {
                "transaction_id": transaction_id,
                "line_no": p.line_no,
                "direction": direction,
                "offer_code": p.offer_code,
                "location_code": p.location_code,
                "miles": p.miles,
                "status": p.status,
                "pending_reason": p.pending_reason,
                "error_code": None,
                "settled_at": now if p.status == POSTED else None,
            }
            for p in planned
        ],
    )
    sign = 1 if direction == CREDIT else -1
    postings = [
        ledger.Posting(
            transaction_id,
            p.line_no,
            request.collector_number,
            request.sponsor_code,
            sign * p.miles,
        )
        for p in planned
        if p.status == POSTED
    ]
    if postings:
        if account is None:
            raise ledger.LedgerInvariantError("posted lines for a collector without an account")
        ledger.post(session, account, postings, posted_at=now)
    return Outcome(status, body, transaction_id)
