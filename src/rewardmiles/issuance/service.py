"""Use cases of the partner endpoints (SPEC §3 and §4): POST, POST/EVENT, REVERSE,
REVERSE/EVENT, RECORD, the program-calculated CALCULATE, ISSUE and RETURN, and the transaction
lookup.

Every endpoint runs the same path on the family-neutral `Command` view of its request. Services
take a session (the unit of work) and never commit. A use case first loads and checks everything
(raising `BusinessRuleError` before any write), then writes: the transaction row, its lines and,
for posted lines, the ledger entries via `ledger.post`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rewardmiles import clock, ids, ledger, limits
from rewardmiles.config import NegativeBalancePolicy, Settings, UnknownCollectorPolicy
from rewardmiles.db.engine import (
    Database,
    batched_writes,
    insert_ignoring_conflicts,
    queued_writes,
)
from rewardmiles.db.models import PENDING, POSTED, RECORDED, REJECTED, Collector
from rewardmiles.errors import BusinessRuleError, FieldError, problem_from_error
from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance.schemas import Command, computed_lines, without_empty
from rewardmiles.ledger import GroupCommit
from rewardmiles.offers import catalogue, engine
from rewardmiles.vocabulary import CollectorStatus


class Endpoint(StrEnum):
    POST = "post"
    POST_EVENT = "post_event"
    REVERSE = "reverse"
    REVERSE_EVENT = "reverse_event"
    RECORD = "record"
    ISSUE = "issue"
    RETURN = "return"
    CALCULATE = "calculate"  # a preview: never a transaction, only (with a key) a stored answer


CREDIT = "credit"
DEBIT = "debit"
NO_EFFECT = "none"


@dataclass(frozen=True, slots=True)
class EndpointRules:
    wire_name: str
    direction: str
    reversible_origins: tuple[Endpoint, ...] = ()  # what its original may name, preferred first
    # Originals of the other family (partner- or program-calculated) the same id may name: found,
    # but their miles go back through another endpoint (`TAKEN_BACK_BY`).
    other_family: tuple[Endpoint, ...] = ()


RULES: dict[Endpoint, EndpointRules] = {
    Endpoint.POST: EndpointRules("POST", CREDIT),
    Endpoint.POST_EVENT: EndpointRules("POST/EVENT", CREDIT),
    Endpoint.REVERSE: EndpointRules("REVERSE", DEBIT, (Endpoint.POST,), (Endpoint.ISSUE,)),
    # The seed: originalClientTransactionId names a POST/EVENT, or a POST's checkoutTransactionId.
    Endpoint.REVERSE_EVENT: EndpointRules(
        "REVERSE/EVENT", DEBIT, (Endpoint.POST_EVENT, Endpoint.POST), (Endpoint.ISSUE,)
    ),
    Endpoint.RECORD: EndpointRules("RECORD", NO_EFFECT),
    Endpoint.ISSUE: EndpointRules("ISSUE", CREDIT),
    Endpoint.RETURN: EndpointRules("RETURN", DEBIT, (Endpoint.ISSUE,), (Endpoint.POST,)),
}
# The endpoints that record a transaction, each run by `execute`. CALCULATE is not one of them:
# it records nothing and is run by `calculate` alone.
WIRE_NAMES = {endpoint.value: rules.wire_name for endpoint, rules in RULES.items()}
# Program-calculated miles go back through RETURN, with the rules stored with the ISSUE;
# partner-calculated ones (no stored rules) through REVERSE or REVERSE/EVENT, with their amounts.
TAKEN_BACK_BY = {Endpoint.ISSUE: "RETURN", Endpoint.POST: "REVERSE or REVERSE/EVENT"}

INTEGRITY_RETRIES = 3


@dataclass(frozen=True, slots=True)
class PartnerCall:
    """Everything a write use case needs from the HTTP request, already shape-validated."""

    endpoint: Endpoint
    client_id: str
    command: Command
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


def wire_status(direction: str, status: str) -> str | None:
    """ISSUED/REVERSED once posted, PENDING, REJECTED; None for a RECORD line (nothing issued)."""
    if status == PENDING:
        return "PENDING"
    if status == REJECTED:
        return "REJECTED"
    if status == POSTED:
        return "ISSUED" if direction == CREDIT else "REVERSED"
    return None


def execute(
    db: Database,
    settings: Settings,
    registry: idempotency.InFlightRegistry,
    call: PartnerCall,
    *,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome:
    """Run one partner write call: idempotency, rules, effects, all in one unit of work. The
    first attempt leaves rule 3.7's duplicate check to the unique index. A call of an endpoint
    that records no transaction (CALCULATE: `calculate`) is refused before anything is read."""
    if call.endpoint not in RULES:
        raise ValueError(f"{call.endpoint.name} records no transaction: `execute` does not run it")
    return _run_keyed(
        db,
        registry,
        call,
        lambda session, attempt: _execute_once(
            session, settings, call, now(), optimistic=attempt == 1
        ),
    )


def _run_keyed(
    db: Database,
    registry: idempotency.InFlightRegistry,
    call: PartnerCall,
    once: Callable[[Session, int], Outcome],
) -> Outcome:
    """`once(session, attempt)` in a unit of work, with the call's key held in this process.

    A unique-constraint race (two processes accepting the same key or transaction id at once)
    rolls the loser back; its retry then finds the winner's result and replays it.
    """
    with registry.hold(call.client_id, call.idempotency_key):
        for attempt in range(1, INTEGRITY_RETRIES + 1):
            try:
                with db.unit_of_work() as session:
                    return once(session, attempt)
            except IntegrityError:
                if attempt == INTEGRITY_RETRIES:
                    raise
    raise AssertionError("unreachable")


async def execute_at_once(
    group: GroupCommit,
    db: Database,
    settings: Settings,
    registry: idempotency.InFlightRegistry,
    call: PartnerCall,
    *,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome | None:
    """The one-statement path (PostgreSQL, on the event loop): the outcome when the call was
    written (or its key's stored outcome replayed), None when it was not — `execute` then runs it
    as a unit of work, which answers every case. Only a POST or POST/EVENT whose every line
    posts at once qualifies (`plan_posted_issue`); `GroupCommit.post_batched` checks the rest, for
    this call and those sharing its commit."""
    with registry.hold(call.client_id, call.idempotency_key):
        moment = now()
        version, reference = repo.newest_reference(db.engine)
        writes = plan_posted_issue(settings, call, reference, moment)
        if writes is None:
            return None
        key = call.idempotency_key
        outcome = writes.outcome
        applied = await group.post_batched(
            ledger.BatchedCall(
                reference_version=version,
                client_id=call.client_id,
                key=key,
                lock=None if key is None else idempotency.lock_number(call.client_id, key),
                collector_number=call.command.collector_number or "",
                postings=writes.postings,
                now=moment,
                transaction=writes.transaction,
                lines=writes.lines,
                key_row=None if key is None else _key_row(call, key, outcome, moment),
            ),
        )
    if applied.written:
        return outcome
    stored = applied.stored
    if stored is None:
        return None
    # The key was stored, and its lock was free: the call it answered has committed. Replay it
    # as the unit of work would (`replay_stored`), from the state the statement read.
    idempotency.ensure_same_request(stored, call.fingerprint)
    if applied.current is not None and stored.transaction_id is not None:
        response_json, states = applied.current
        lines = [repo.LineState(*state) for state in states]
        return render_state(stored.transaction_id, response_json, lines, replayed=True)
    return Outcome(stored.status, stored.body, stored.transaction_id, replayed=True)


def plan_posted_issue(
    settings: Settings,
    call: PartnerCall,
    reference: dict[str, repo.SponsorEntry],
    now: datetime,
) -> WriteSet | None:
    """The writes of a POST or POST/EVENT whose every line posts at once, if the cached
    `reference` data and the request alone show that the general path would accept it so, for
    an ACTIVE collector whose key and transaction id are new; None when in any doubt (a rule
    fails, a line would wait, something is not cached, another endpoint)."""
    command = call.command
    if (
        call.endpoint not in (Endpoint.POST, Endpoint.POST_EVENT)
        or command.program is not None
        or command.original_partner_id
        or command.collector_number is None
        or not command.lines
    ):
        return None
    entry = reference.get(command.sponsor_code)
    if entry is None or entry.sponsor is None or not entry.sponsor.active:
        return None
    try:
        _check_date_window(settings, command, now)
    except BusinessRuleError:
        return None
    on_date = command.moment.astimezone(clock.zone(settings.program_time_zone)).date()
    threshold = entry.sponsor.review_threshold_miles
    for line in command.lines:
        offer = entry.offers.get(line.issuance_offer_code)
        if offer is None or not _offer_usable(offer, on_date):
            return None
        if threshold is not None and line.miles_amount > threshold:
            return None  # the line goes to review
    located = {line.location_code for line in command.lines if line.location_code}
    if located and (
        entry.registers_any is None
        or (entry.registers_any and not all(entry.locations.get(c) for c in located))
    ):
        return None
    planned = [
        PlannedLine(
            i, line.issuance_offer_code, line.location_code, line.miles_amount, POSTED, None
        )
        for i, line in enumerate(command.lines)
    ]
    return build_write(settings, call, planned, CREDIT, None, now)


def _execute_once(
    session: Session, settings: Settings, call: PartnerCall, now: datetime, *, optimistic: bool
) -> Outcome:
    replay = _claim(session, call)
    if replay is not None:
        return replay
    # The inserts (transaction, lines, ledger entries, key) go to the database together at the
    # end; nothing below reads them back. The balance update runs in place (RETURNING).
    with batched_writes(session):
        return _execute_rules(session, settings, call, now, optimistic=optimistic)


def _claim(session: Session, call: PartnerCall) -> Outcome | None:
    """The first statement of a call's unit of work: with a key, take it (409 while another
    process runs it) and return the replay of its stored outcome (422 for another request), if
    any; then use the reference-data cache of the version read."""
    key = call.idempotency_key
    if key is not None:
        claimed = idempotency.claim(session, call.client_id, key)
        if claimed.stored is not None:
            idempotency.ensure_same_request(claimed.stored, call.fingerprint)
            return replay_stored(session, claimed.stored)
        version = claimed.reference_version
    else:
        version = keys.reference_version(session)
    repo.use_reference_cache(session, version)
    return None


def _execute_rules(
    session: Session, settings: Settings, call: PartnerCall, now: datetime, *, optimistic: bool
) -> Outcome:
    key = call.idempotency_key
    try:
        outcome = _process(session, settings, call, now, optimistic=optimistic)
    except BusinessRuleError as rule:
        # Every rule is checked before the first write is queued; a rejection writes only itself.
        assert queued_writes(session) == 0, "a rule failed after writes were queued"
        outcome = _record_rejection(session, call, rule, now)
    if key is not None:
        keys.store(session, _key_row(call, key, outcome, now))
    return outcome


def _key_row(call: PartnerCall, key: str, outcome: Outcome, now: datetime) -> dict[str, object]:
    return idempotency.key_row(
        client_id=call.client_id,
        key=key,
        request_fingerprint=call.fingerprint,
        transaction_id=outcome.transaction_id,
        status=outcome.status,
        body=outcome.body,
        now=now,
    )


def replay_stored(session: Session, stored: idempotency.StoredOutcome) -> Outcome:
    if stored.transaction_id is not None and stored.status in (200, 202):
        return render_current(session, stored.transaction_id, replayed=True)
    return Outcome(stored.status, stored.body, stored.transaction_id, replayed=True)


def render_current(session: Session, transaction_id: str, *, replayed: bool) -> Outcome:
    """The response of an accepted transaction as it stands now (a 202 turns 200 once settled)."""
    response_json, lines = repo.get_transaction_state(session, transaction_id)
    return render_state(transaction_id, response_json, lines, replayed=replayed)


def render_state(
    transaction_id: str, response_json: str, lines: list[repo.LineState], *, replayed: bool
) -> Outcome:
    """`render_current` from the transaction's stored response and its lines' states."""
    # A response stored before empty optionals were left out (SPEC §2.5, amended) renders as
    # one stored now.
    body = without_empty(orjson.loads(response_json))
    for out_line, line in zip(body.get("issuances", ()), lines, strict=True):
        status = wire_status(line.direction, line.status)
        if status is not None:
            out_line["status"] = status
        if line.status == REJECTED and line.error_code:
            out_line["errorCode"] = line.error_code
    any_pending = any(line.status == PENDING for line in lines)
    return Outcome(202 if any_pending else 200, body, transaction_id, replayed)


def _record_rejection(
    session: Session, call: PartnerCall, rule: BusinessRuleError, now: datetime
) -> Outcome:
    body = problem_from_error(rule, call.request_id)
    repo.insert_transaction(
        session,
        _transaction_row(call, ids.uuid4_text(), None, REJECTED, 400, rule.code, body, now),
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
    command = call.command
    return {
        "id": transaction_id,
        "client_id": call.client_id,
        "sponsor_code": command.sponsor_code,
        "endpoint": call.endpoint.value,
        "partner_transaction_id": command.partner_transaction_id,
        "collector_number": command.collector_number,
        "original_transaction_id": original_id,
        "status": status,
        "http_status": http_status,
        "error_code": error_code,
        "fingerprint": call.fingerprint,
        "partner_datetime": command.moment,
        "processed_at": now,
        "request_json": call.request_json,
        "response_json": orjson.dumps(response).decode(),
        "calculation_json": (
            orjson.dumps(command.calculation).decode() if command.calculation is not None else None
        ),
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


def _check_collector(settings: Settings, status: str | None, number: str) -> None:
    """The collector's status (None: not enrolled) against the program's policies."""
    if status is None:
        if settings.unknown_collector_policy is UnknownCollectorPolicy.REJECT:
            raise BusinessRuleError(
                "COLLECTOR_NOT_FOUND",
                f"Collector {number} is not enrolled.",
                field="collectorNumber",
            )
        return
    if status == CollectorStatus.CLOSED:
        raise BusinessRuleError(
            "COLLECTOR_CLOSED", "The collector's account is closed.", field="collectorNumber"
        )


def _check_collector_unlocked(session: Session, settings: Settings, number: str) -> None:
    """`_check_collector` from a read without a lock, for the calls that move no miles (RECORD,
    CALCULATE): nothing is enrolled or left pending by them."""
    _check_collector(settings, repo.collector_status(session, number), number)


def _check_date_window(settings: Settings, command: Command, now: datetime) -> None:
    field = command.moment_field
    if command.moment > now + timedelta(seconds=limits.future_skew_seconds_max):
        raise BusinessRuleError(
            "DATE_OUT_OF_RANGE", f"{field} is more than 5 minutes in the future.", field=field
        )
    if command.moment < now - timedelta(days=settings.backdate_days_max):
        raise BusinessRuleError(
            "DATE_OUT_OF_RANGE",
            f"{field} is older than the backdate window ({settings.backdate_days_max} days).",
            field=field,
        )


def _offer_usable(offer: repo.OfferRow, on_date: date) -> bool:
    return (
        offer.active
        and not (offer.valid_from and on_date < offer.valid_from)
        and not (offer.valid_to and on_date > offer.valid_to)
    )


def _check_offers_and_locations(
    session: Session, settings: Settings, command: Command, *, offer_state: bool = True
) -> None:
    """Every line's offer exists (`OFFER_UNKNOWN`) and, with `offer_state`, is usable on the
    transaction date (`OFFER_INACTIVE`); every location is registered, if the sponsor registers
    any. A reversal naming its original passes `offer_state=False`: it takes back what the
    original issued (rule 3.3, bounded per offer by `_load_original`), whatever the offer's
    state today — offer state applies to new credits only."""
    if not command.lines:
        return
    sponsor = command.sponsor_code
    on_date = command.moment.astimezone(clock.zone(settings.program_time_zone)).date()
    offers = repo.get_offers(session, sponsor, (line.issuance_offer_code for line in command.lines))
    errors: list[FieldError] = []
    for i, line in enumerate(command.lines):
        offer = offers.get(line.issuance_offer_code)
        field = f"issuances[{i}].issuanceOfferCode"
        if offer is None:
            errors.append(
                FieldError(
                    "OFFER_UNKNOWN",
                    field,
                    f"Sponsor {sponsor} has no offer {line.issuance_offer_code}.",
                )
            )
        elif offer_state and not _offer_usable(offer, on_date):
            errors.append(
                FieldError(
                    "OFFER_INACTIVE",
                    field,
                    f"Offer {offer.code} is not active on {on_date.isoformat()}.",
                )
            )
    _reject_if_any(errors, "One or more offers cannot be used.")

    codes = {line.location_code for line in command.lines if line.location_code}
    if not codes:
        return
    registers_any, known = repo.registered_locations(session, sponsor, codes)
    if not registers_any:
        return
    errors = [
        FieldError(
            "LOCATION_UNKNOWN",
            f"issuances[{i}].locationCode",
            f"Location {line.location_code} is not registered for sponsor {sponsor}.",
        )
        for i, line in enumerate(command.lines)
        if line.location_code and line.location_code not in known
    ]
    _reject_if_any(errors, "One or more locations are not registered.")


def _plan_lines(
    command: Command,
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
    for i, line in enumerate(command.lines):
        # Review comes first: an approved line still waits for its collector, never the reverse.
        needs_review = (
            sponsor.review_threshold_miles is not None
            and line.miles_amount > sponsor.review_threshold_miles
        )
        reason = "review" if needs_review else collector_reason
        if reason is None and line.issuance_offer_code in pending_offers:
            reason = "original_pending"
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


def _load_original(
    session: Session, call: PartnerCall, rules: EndpointRules
) -> tuple[str | None, frozenset[str]]:
    """(original transaction id, its offer codes still pending); checks rule 3.3's bounds."""
    command = call.command
    if not command.original_partner_id:
        return None, frozenset()
    original = _locked_original(session, call, rules)
    totals = repo.original_totals(session, original.id)
    requested: dict[str, int] = defaultdict(int)
    errors: list[FieldError] = []
    for i, line in enumerate(command.lines):
        code = line.issuance_offer_code
        requested[code] += line.miles_amount
        issued = totals.issued_miles.get(code, 0)
        already = totals.reversed_miles.get(code, 0)
        if already + requested[code] > issued:
            errors.append(
                FieldError(
                    "REVERSAL_EXCEEDS_ORIGINAL",
                    f"issuances[{i}].milesAmount",
                    f"Offer {code}: {issued} miles issued on the original, {already} already "
                    f"reversed; this request would reverse {requested[code]}.",
                )
            )
    _reject_if_any(errors, "The reversal exceeds what the original issued.")
    return original.id, totals.pending_offers


def _locked_original(
    session: Session, call: PartnerCall, rules: EndpointRules
) -> repo.AcceptedTransaction:
    """The accepted original the reversal names, of its endpoint's own family, under its row
    lock; rejected when there is none (`_original_not_found`) or it was for another collector."""
    command = call.command
    original = repo.find_accepted(
        session,
        command.sponsor_code,
        [endpoint.value for endpoint in rules.reversible_origins],
        command.original_partner_id or "",
        lock=True,
    )
    if original is None:
        raise _original_not_found(session, call)
    if original.collector_number != command.collector_number:
        raise BusinessRuleError(
            "ORIGINAL_COLLECTOR_MISMATCH",
            "The original transaction was for a different collector.",
            field=command.original_field,
        )
    return original


def _original_not_found(session: Session, call: PartnerCall) -> BusinessRuleError:
    """The rejection of a reversal whose original is none its endpoint may name:
    `ORIGINAL_WRONG_FAMILY` when the id names an accepted transaction of the other family (its
    miles go back through another endpoint), else `ORIGINAL_NOT_FOUND`. Read only on the way to
    that rejection."""
    command = call.command
    rules = RULES[call.endpoint]
    named = command.original_partner_id or ""
    other = repo.find_accepted(
        session, command.sponsor_code, [e.value for e in rules.other_family], named
    )
    if other is not None:
        issued_by = Endpoint(other.endpoint)
        return BusinessRuleError(
            "ORIGINAL_WRONG_FAMILY",
            f"Transaction {named} was issued by {RULES[issued_by].wire_name}; take its miles back "
            f"with {TAKEN_BACK_BY[issued_by]}.",
            field=command.original_field,
        )
    names = " or ".join(RULES[e].wire_name for e in rules.reversible_origins)
    return BusinessRuleError(
        "ORIGINAL_NOT_FOUND",
        f"No accepted {names} {named} for sponsor {command.sponsor_code}.",
        field=command.original_field,
    )


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


def _check_not_duplicate(session: Session, call: PartnerCall) -> Outcome | None:
    """Rule 3.7: the same id again is a replay when the body is identical, else a rejection."""
    command = call.command
    existing = repo.find_accepted(
        session, command.sponsor_code, (call.endpoint.value,), command.partner_transaction_id
    )
    if existing is None:
        return None
    if existing.fingerprint == call.fingerprint:
        return render_current(session, existing.id, replayed=True)
    raise BusinessRuleError(
        "DUPLICATE_TRANSACTION",
        f"{command.id_field} {command.partner_transaction_id} was already accepted with a "
        "different body.",
        field=command.id_field,
    )


# --------------------------------------------------------------------------- use cases


def _process(
    session: Session, settings: Settings, call: PartnerCall, now: datetime, *, optimistic: bool
) -> Outcome:
    """Rules in the contract's order, then the write.

    Rule 3.7 (the same transaction id again) is checked right after the collector lock. With
    `optimistic`, that read is skipped on the way to a write: an accepted duplicate makes the
    transaction insert fail on its unique index, and `execute` runs the call again without
    `optimistic`. A rule failure still checks for a duplicate first, so the answer is the same
    as if the check had come first.
    """
    command = call.command
    sponsor = _check_sponsor(session, command.sponsor_code)
    if RULES[call.endpoint].direction == NO_EFFECT:
        return _record(session, settings, call, now)
    assert command.collector_number is not None  # every moving endpoint requires it
    account = _lock_or_enroll(session, settings, command.collector_number, now)
    if not optimistic:
        replay = _check_not_duplicate(session, call)
        if replay is not None:
            return replay
    try:
        return _apply(session, settings, call, sponsor, account, now)
    except BusinessRuleError:
        replay = _check_not_duplicate(session, call)  # raises DUPLICATE_TRANSACTION if it differs
        if replay is not None:
            return replay
        raise


def _apply(
    session: Session,
    settings: Settings,
    call: PartnerCall,
    sponsor: repo.SponsorRow,
    account: ledger.CollectorAccount | None,
    now: datetime,
) -> Outcome:
    command = call.command
    rules = RULES[call.endpoint]
    assert command.collector_number is not None
    _check_collector(settings, account.status if account else None, command.collector_number)
    _check_date_window(settings, command, now)
    if command.program is None:
        reverses_original = rules.direction == DEBIT and bool(command.original_partner_id)
        _check_offers_and_locations(session, settings, command, offer_state=not reverses_original)
    else:
        call = replace(call, command=_compute(session, settings, call))
        command = call.command
    original_id, pending_offers = _load_original(session, call, rules)
    planned = _plan_lines(command, sponsor, account, pending_offers)
    if rules.direction == DEBIT:
        _check_balance(settings, account, planned)
    return _write(session, settings, call, planned, rules.direction, account, original_id, now)


def _record(session: Session, settings: Settings, call: PartnerCall, now: datetime) -> Outcome:
    """RECORD: validated like the others, stored for audit, never touches a balance. Its
    collector (optional) is checked as the others check theirs, from a read without a lock: a
    CLOSED account is refused; an unknown one, only where the program rejects unknown collectors
    (nothing is enrolled or left pending by a RECORD)."""
    replay = _check_not_duplicate(session, call)
    if replay is not None:
        return replay
    number = call.command.collector_number
    if number is not None:
        _check_collector_unlocked(session, settings, number)
    _check_date_window(settings, call.command, now)
    _check_offers_and_locations(session, settings, call.command)
    planned = [
        PlannedLine(
            i, line.issuance_offer_code, line.location_code, line.miles_amount, RECORDED, None
        )
        for i, line in enumerate(call.command.lines)
    ]
    return _write(session, settings, call, planned, NO_EFFECT, None, None, now)


@dataclass(frozen=True, slots=True)
class WriteSet:
    """Every row an accepted call writes, built before the first of them is sent."""

    outcome: Outcome
    transaction: dict[str, object]
    lines: list[dict[str, object]]
    postings: list[ledger.Posting]  # the posted lines' moves, for the call's collector


def build_write(
    settings: Settings,
    call: PartnerCall,
    planned: list[PlannedLine],
    direction: str,
    original_id: str | None,
    now: datetime,
) -> WriteSet:
    command = call.command
    transaction_id = ids.uuid4_text()
    any_pending = any(p.status == PENDING for p in planned)
    status = 202 if any_pending else 200
    transaction_status = RECORDED if direction == NO_EFFECT else PENDING if any_pending else POSTED

    body = dict(command.echo)
    body["issuances"] = [dict(line) for line in body.get("issuances", ())]
    for out_line, p in zip(body["issuances"], planned, strict=True):
        line_status = wire_status(direction, p.status)
        if line_status is not None:
            out_line["status"] = line_status
    if not body["issuances"]:
        del body["issuances"]
    body["transactionDateTime"] = clock.program_timestamp(now, settings.program_time_zone)
    body["transactionId"] = transaction_id

    lines: list[dict[str, object]] = [
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
    ]
    sign = 1 if direction == CREDIT else -1
    postings = [
        ledger.Posting(
            transaction_id,
            p.line_no,
            command.collector_number or "",
            command.sponsor_code,
            sign * p.miles,
        )
        for p in planned
        if p.status == POSTED
    ]
    return WriteSet(
        Outcome(status, body, transaction_id),
        _transaction_row(
            call, transaction_id, original_id, transaction_status, status, None, body, now
        ),
        lines,
        postings,
    )


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
    writes = build_write(settings, call, planned, direction, original_id, now)
    repo.insert_transaction(session, writes.transaction)
    repo.insert_lines(session, writes.lines)
    if writes.postings:
        if account is None:  # `_plan_lines` posts no line of a collector not enrolled
            raise ledger.LedgerInvariantError("posted lines for a collector without an account")
        ledger.post(session, account, writes.postings, posted_at=now)
    return writes.outcome


# --------------------------------------------------------------------------- lookup


def lookup(
    session: Session, transaction_id: str, sponsor_codes: Collection[str]
) -> dict[str, Any] | None:
    """An accepted transaction of one of `sponsor_codes`, as its response stands now, with the
    endpoint that took it and, on issued lines, the miles reversed so far."""
    found = repo.get_accepted_by_id(session, transaction_id)
    if found is None or found.sponsor_code not in sponsor_codes:
        return None
    return _lookup_view(session, found)


def lookup_by_partner_id(
    session: Session,
    sponsor_code: str,
    partner_transaction_id: str,
    endpoints: Collection[Endpoint],
) -> list[dict[str, Any]]:
    rows = repo.find_accepted_all(
        session, sponsor_code, [e.value for e in endpoints], partner_transaction_id
    )
    return [_lookup_view(session, row) for row in rows]


def _lookup_view(session: Session, found: repo.AcceptedTransaction) -> dict[str, Any]:
    outcome = render_current(session, found.id, replayed=False)
    body = dict(outcome.body)
    body["transactionType"] = WIRE_NAMES[found.endpoint]
    if RULES[Endpoint(found.endpoint)].direction == CREDIT:
        reversed_left = dict(repo.original_totals(session, found.id).reversed_miles)
        for line in body.get("issuances", ()):
            if line.get("status") != "ISSUED":
                continue
            code = line["issuanceOfferCode"]
            share = min(line["milesAmount"], reversed_left.get(code, 0))
            line["milesReversed"] = share
            reversed_left[code] = reversed_left.get(code, 0) - share
    return body


# --------------------------------------------------------------------------- program-calculated


def _program_offers(session: Session, settings: Settings, command: Command) -> list[engine.Offer]:
    assert command.program is not None
    location = command.program.location_code
    if location is not None:
        registers_any, known = repo.registered_locations(session, command.sponsor_code, (location,))
        if registers_any and location not in known:
            raise BusinessRuleError(
                "LOCATION_UNKNOWN",
                f"Location {location} is not registered for sponsor {command.sponsor_code}.",
                field="locationCode",
            )
    on_date = command.moment.astimezone(clock.zone(settings.program_time_zone)).date()
    return catalogue.applicable(session, command.sponsor_code, on_date, location)


def _with_lines(
    command: Command,
    computed: list[engine.Computed],
    location: str | None,
    calculation: dict[str, Any],
) -> Command:
    lines, echoed = computed_lines(computed, location)
    body = dict(command.echo)
    body["issuances"] = echoed
    body["totalMiles"] = engine.total(computed)
    return replace(command, lines=lines, echo=dict(sorted(body.items())), calculation=calculation)


def _compute(session: Session, settings: Settings, call: PartnerCall) -> Command:
    """ISSUE: the offers' lines for the basket. RETURN: what the returned items take back."""
    command = call.command
    assert command.program is not None
    if call.endpoint is Endpoint.ISSUE:
        offers = _program_offers(session, settings, command)
        basket = command.program.basket
        calculation = {
            "offers": catalogue.snapshot(offers),
            "items": [
                {
                    "id": i.id,
                    "quantity": i.quantity,
                    "finalAmount": str(i.final_amount),
                    "departmentId": i.department_id,
                    "categoryId": i.category_id,
                }
                for i in basket.items
            ],
            "coupons": sorted(basket.coupons),
            "locationCode": command.program.location_code,
        }
        computed = engine.calculate(offers, basket)
        _check_line_maximum(settings, computed)
        return _with_lines(command, computed, command.program.location_code, calculation)
    return _compute_return(session, call)


def _check_line_maximum(settings: Settings, computed: list[engine.Computed]) -> None:
    errors = [
        FieldError(
            "MILES_AMOUNT_INVALID",
            f"issuances[{i}].milesAmount",
            f"Offer {c.offer_code} computes {c.miles} miles, above the per-line maximum of "
            f"{settings.miles_per_line_max}; the offer's rule needs a cap (capMiles).",
        )
        for i, c in enumerate(computed)
        if c.miles > settings.miles_per_line_max
    ]
    _reject_if_any(errors, "A computed line exceeds the per-line maximum.")


def _compute_return(session: Session, call: PartnerCall) -> Command:
    command = call.command
    assert command.program is not None
    original = _locked_original(session, call, RULES[Endpoint.RETURN])
    calculation = repo.get_calculation(session, original.id)
    assert calculation is not None  # every ISSUE stores what it computed its lines from
    issued = orjson.loads(calculation)
    bought = {item["id"]: int(item["quantity"]) for item in issued["items"]}
    returned_before: dict[str, int] = defaultdict(int)
    for earlier in repo.calculations_of_reversals(session, original.id):
        for item_id, quantity in orjson.loads(earlier)["returned"].items():
            returned_before[item_id] += quantity
    items = command.program.basket.items
    returned_now = {item.id: item.quantity for item in items}  # ids are unique in a basket
    errors: list[FieldError] = []
    for i, item in enumerate(items):
        already = returned_before.get(item.id, 0)
        if item.id not in bought:
            errors.append(
                FieldError(
                    "RETURN_EXCEEDS_PURCHASE",
                    f"items[{i}].id",
                    f"Item {item.id} was not bought in {command.original_partner_id}.",
                )
            )
        elif already + returned_now[item.id] > bought[item.id]:
            errors.append(
                FieldError(
                    "RETURN_EXCEEDS_PURCHASE",
                    f"items[{i}].quantity",
                    f"Item {item.id}: {bought[item.id]} bought, {already} already returned; this "
                    f"return would make {already + returned_now[item.id]}.",
                )
            )
    _reject_if_any(errors, "The return exceeds the purchase.")
    original_basket = engine.Basket(
        items=tuple(
            engine.Item(
                i["id"],
                int(i["quantity"]),
                Fraction(i["finalAmount"]),
                i["departmentId"],
                i["categoryId"],
            )
            for i in issued["items"]
        ),
        coupons=frozenset(issued["coupons"]),
    )
    computed = engine.withdrawal(
        catalogue.from_snapshot(issued["offers"]), original_basket, returned_before, returned_now
    )
    # Lines of the ISSUE rejected after the fact (review, expiry) issued nothing: take back only
    # what each offer still has issued and not yet returned.
    totals = repo.original_totals(session, original.id)
    capped = []
    for c in computed:
        left = totals.issued_miles.get(c.offer_code, 0) - totals.reversed_miles.get(c.offer_code, 0)
        if min(c.miles, left) > 0:
            capped.append(replace(c, miles=min(c.miles, left)))
    return _with_lines(command, capped, issued["locationCode"], {"returned": dict(returned_now)})


def calculate(
    db: Database,
    settings: Settings,
    registry: idempotency.InFlightRegistry,
    call: PartnerCall,
    *,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome:
    """CALCULATE: what ISSUE would issue now; no transaction is ever recorded.

    Without a key, a pure preview on a read-only session (a failed rule raises: a 400 that
    leaves nothing behind). With a key, the answer — the preview, or a failed rule's 400 — is
    stored under it like a write endpoint's (SPEC §4), and a retry replays it even if the offers
    changed in between.
    """
    key = call.idempotency_key
    if key is None:
        moment = now()
        with db.reader() as session:
            offers = _preview_offers(session, settings, call.command, moment)
        return Outcome(200, _preview(settings, call.command, offers, moment))

    def once(session: Session, _attempt: int) -> Outcome:
        replay = _claim(session, call)
        if replay is not None:
            return replay
        moment = now()
        try:
            offers = _preview_offers(session, settings, call.command, moment)
            outcome = Outcome(200, _preview(settings, call.command, offers, moment))
        except BusinessRuleError as rule:
            outcome = Outcome(400, problem_from_error(rule, call.request_id))
        keys.store(session, _key_row(call, key, outcome, moment))
        return outcome

    return _run_keyed(db, registry, call, once)


def _preview_offers(
    session: Session, settings: Settings, command: Command, now: datetime
) -> list[engine.Offer]:
    """CALCULATE's reads: what ISSUE would refuse, it refuses; then the applicable offers."""
    _check_sponsor(session, command.sponsor_code)
    if command.collector_number is not None:
        _check_collector_unlocked(session, settings, command.collector_number)
    _check_date_window(settings, command, now)
    return _program_offers(session, settings, command)


def _preview(
    settings: Settings, command: Command, offers: list[engine.Offer], now: datetime
) -> dict[str, Any]:
    """CALCULATE's response body: ISSUE's computation with `offers`."""
    assert command.program is not None
    computed = engine.calculate(offers, command.program.basket)
    _check_line_maximum(settings, computed)
    body = _with_lines(command, computed, command.program.location_code, {}).echo
    if not body["issuances"]:
        del body["issuances"]
    body["transactionDateTime"] = clock.program_timestamp(now, settings.program_time_zone)
    return body
