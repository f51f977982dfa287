"""The partner-calculated write use cases (SPEC §3): POST, POST/EVENT, REVERSE, REVERSE/EVENT and
RECORD, and the write path of the program-calculated ISSUE and RETURN (`calculated` computes
their lines). One call runs a straight line: claim its key (`keyed`), read what the rules need,
ask the pure rules (`rules`), write (`records` builds the rows, `ledger` posts), respond.

Two ways to the same rows: `execute`, in a unit of work (opened by the boundary that calls it)
that answers every case, and `execute_at_once`, the one-statement path (PostgreSQL) for an issue
or a reversal whose every line posts now, written by `ledger.batched`'s group commit. Services
take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from rewardmiles import clock, ids, ledger
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database, batched_writes, queued_writes
from rewardmiles.errors import BusinessRuleError, problem_from_error
from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import calculated, checks, keyed, records, rules
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance.calls import RULES, Outcome, PartnerCall, PlannedLine
from rewardmiles.issuance.reference import SponsorEntry, newest_reference
from rewardmiles.ledger import GroupCommit
from rewardmiles.vocabulary import (
    CollectorStatus,
    Direction,
    Endpoint,
    LineStatus,
    NegativeBalancePolicy,
    TransactionStatus,
    UnknownCollectorPolicy,
)


def execute(
    session: Session,
    attempt: int,
    settings: Settings,
    call: PartnerCall,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome:
    """Run one partner write call in the unit of work `session`: idempotency, rules, effects.
    The boundary opens it (`Database.run_in_unit_of_work`, which counts the `attempt`s): the
    first attempt leaves rule 3.7's duplicate check to the unique index, a retry after a lost
    race on it checks first. A call of an endpoint that records no transaction (CALCULATE:
    `calculated.calculate`) is refused before anything is read."""
    if call.endpoint not in RULES:
        raise ValueError(f"{call.endpoint.name} records no transaction: `execute` does not run it")
    return _attempt(session, settings, call, now(), optimistic=attempt == 1)


def _attempt(
    session: Session, settings: Settings, call: PartnerCall, now: datetime, *, optimistic: bool
) -> Outcome:
    replay = keyed.claim(session, call)
    if replay is not None:
        return replay
    # The inserts (transaction, lines, ledger entries, key) go to the database together at the
    # end; nothing below reads them back. The balance update runs in place (RETURNING).
    with batched_writes(session):
        return _execute_rules(session, settings, call, now, optimistic=optimistic)


def _execute_rules(
    session: Session, settings: Settings, call: PartnerCall, now: datetime, *, optimistic: bool
) -> Outcome:
    key = call.idempotency_key
    try:
        outcome = _process(session, settings, call, now, optimistic=optimistic)
    except BusinessRuleError as rule:
        # Every rule is checked before the first write is queued; a rejection writes only itself.
        ledger.invariant(queued_writes(session) == 0)
        outcome = _record_rejection(session, call, rule, now)
    if key is not None:
        keys.store(session, keyed.key_row(call, key, outcome, now))
    return outcome


def _record_rejection(
    session: Session, call: PartnerCall, rule: BusinessRuleError, now: datetime
) -> Outcome:
    body = problem_from_error(rule, call.request_id)
    repo.insert_transaction(
        session,
        records.transaction_row(
            call, ids.uuid4_text(), None, TransactionStatus.REJECTED, 400, rule.code, body, now
        ),
    )
    return Outcome(400, body, transaction_id=None)


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
    sponsor = checks.check_sponsor(session, command.sponsor_code)
    if RULES[call.endpoint].direction == Direction.NONE:
        return _record(session, settings, call, now)
    number = ledger.present(command.collector_number)  # every moving endpoint requires it
    account = _lock_or_enroll(session, settings, number, now)
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
    endpoint_rules = RULES[call.endpoint]
    number = ledger.present(command.collector_number)
    status = account.status if account else None
    rules.check_collector(settings, status, number)
    rules.check_date_window(settings, command, now)
    if command.program is None:
        reverses_original = endpoint_rules.direction == Direction.DEBIT and bool(
            command.original_partner_id
        )
        checks.check_offers_and_locations(
            session, settings, command, offer_state=not reverses_original
        )
    else:
        call = replace(call, command=calculated.compute(session, settings, call))
        command = call.command
    original_id, pending_offers = checks.load_original(session, call, endpoint_rules)
    planned = rules.plan_lines(command, sponsor, status, pending_offers)
    if endpoint_rules.direction == Direction.DEBIT:
        rules.check_balance(settings, account.balance_miles if account else None, planned)
    direction = endpoint_rules.direction
    return _write(session, settings, call, planned, direction, account, original_id, now)


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
        checks.check_collector_unlocked(session, settings, number)
    rules.check_date_window(settings, call.command, now)
    checks.check_offers_and_locations(session, settings, call.command)
    planned = [
        PlannedLine(
            i,
            line.issuance_offer_code,
            line.location_code,
            line.miles_amount,
            LineStatus.RECORDED,
            None,
        )
        for i, line in enumerate(call.command.lines)
    ]
    return _write(session, settings, call, planned, Direction.NONE, None, None, now)


def _check_not_duplicate(session: Session, call: PartnerCall) -> Outcome | None:
    """Rule 3.7: the same id again is a replay when the body is identical, else a rejection."""
    command = call.command
    existing = repo.find_accepted(
        session, command.sponsor_code, (call.endpoint.value,), command.partner_transaction_id
    )
    if existing is None:
        return None
    if existing.fingerprint == call.fingerprint:
        return keyed.render_current(session, existing.id, replayed=True)
    raise BusinessRuleError(
        "DUPLICATE_TRANSACTION",
        f"{command.id_field} {command.partner_transaction_id} was already accepted with a "
        "different body.",
        field=command.id_field,
    )


def _lock_or_enroll(
    session: Session, settings: Settings, number: str, now: datetime
) -> ledger.CollectorAccount | None:
    account = ledger.lock_collector(session, number)
    if account is None and settings.unknown_collector_policy is UnknownCollectorPolicy.ENROLL:
        repo.enroll_collector(session, number, now)
        account = ledger.lock_collector(session, number)
    return account


def _write(
    session: Session,
    settings: Settings,
    call: PartnerCall,
    planned: list[PlannedLine],
    direction: Direction,
    account: ledger.CollectorAccount | None,
    original_id: str | None,
    now: datetime,
) -> Outcome:
    writes = records.build_write(settings, call, planned, direction, original_id, now)
    repo.insert_transaction(session, writes.transaction)
    repo.insert_lines(session, writes.lines)
    if writes.postings:
        # `rules.plan_lines` posts no line of a collector not enrolled
        ledger.post(session, ledger.present(account), writes.postings, posted_at=now)
    return writes.outcome


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
    as a unit of work, which answers every case. Only an issue (POST, POST/EVENT) or a reversal
    of an original (REVERSE, REVERSE/EVENT) whose every line posts at once qualifies
    (`plan_at_once`); `GroupCommit.post_batched` checks the rest, for this call and those
    sharing its commit."""
    with registry.hold(call.client_id, call.idempotency_key):
        moment = now()
        version, reference = newest_reference(db.engine)
        writes = plan_at_once(settings, call, reference, moment)
        if writes is None:
            return None
        command = call.command
        key = call.idempotency_key
        outcome = writes.outcome
        original = None
        if command.original_partner_id:
            original = ledger.Original(
                command.sponsor_code,
                command.original_partner_id,
                tuple(e.value for e in RULES[call.endpoint].reversible_origins),
            )
        applied = await group.post_batched(
            ledger.BatchedCall(
                reference_version=version,
                client_id=call.client_id,
                key=key,
                lock=None if key is None else idempotency.lock_number(call.client_id, key),
                collector_number=command.collector_number or "",
                postings=writes.postings,
                now=moment,
                transaction=writes.transaction,
                lines=writes.lines,
                key_row=None if key is None else keyed.key_row(call, key, outcome, moment),
                original=original,
                balance_floor=(
                    0
                    if original is not None
                    and settings.negative_balance_policy is NegativeBalancePolicy.REJECT
                    else None
                ),
            ),
        )
    if applied.written:
        return outcome
    stored = applied.stored
    if stored is None:
        return None
    # The key was stored, and its lock was free: the call it answered has committed. Replay it
    # as the unit of work would (`keyed.replay_stored`), from the state the statement read.
    idempotency.ensure_same_request(stored, call.fingerprint)
    if applied.current is not None and stored.transaction_id is not None:
        response_json, states = applied.current
        lines = [repo.LineState(*state) for state in states]
        return keyed.render_state(stored.transaction_id, response_json, lines, replayed=True)
    return Outcome(stored.status, stored.body, stored.transaction_id, replayed=True)


# The endpoints whose calls may take the one-statement path, and the direction their lines move.
_AT_ONCE = {
    Endpoint.POST: Direction.CREDIT,
    Endpoint.POST_EVENT: Direction.CREDIT,
    Endpoint.REVERSE: Direction.DEBIT,
    Endpoint.REVERSE_EVENT: Direction.DEBIT,
}


def plan_at_once(
    settings: Settings,
    call: PartnerCall,
    reference: dict[str, SponsorEntry],
    now: datetime,
) -> records.WriteSet | None:
    """The writes of an issue (POST, POST/EVENT) or of a reversal naming its original (REVERSE,
    REVERSE/EVENT) whose every line posts at once, if the cached `reference` data and the
    request alone show that the general path would accept it so, for an ACTIVE collector whose
    key and transaction id are new; None when in any doubt (a rule fails, a line would wait,
    something is not cached, another endpoint, a correction without an original). The rules are
    the unit of work's (`rules`), asked of the cache; a reference it has not cached is a doubt.
    What depends on the original — it exists, for this collector, its bounds, its pending lines —
    and on the balance is the statement's to check (`ledger.batched.REVERSE_BATCH`); the
    reversal's transaction row names no original until the statement finds it."""
    command = call.command
    direction = _AT_ONCE.get(call.endpoint)
    reversal = direction is Direction.DEBIT
    if (
        direction is None
        or command.program is not None
        or bool(command.original_partner_id) is not reversal
        or command.collector_number is None
        or not command.lines
    ):
        return None
    entry = reference.get(command.sponsor_code)
    if entry is None or entry.sponsor is None:
        return None
    offers = {
        code: offer
        for line in command.lines
        if (offer := entry.offers.get(code := line.issuance_offer_code)) is not None
    }
    located = {line.location_code for line in command.lines if line.location_code}
    if located and entry.registers_any is None:
        return None
    on_date = command.moment.astimezone(clock.zone(settings.program_time_zone)).date()
    try:
        sponsor = rules.check_sponsor(entry.sponsor, command.sponsor_code)
        rules.check_date_window(settings, command, now)
        rules.check_offers(command, offers, on_date, offer_state=not reversal)
        known = {code for code in located if entry.locations.get(code)}
        rules.check_locations(command, bool(entry.registers_any), known)
    except BusinessRuleError:
        return None
    planned = rules.plan_lines(command, sponsor, CollectorStatus.ACTIVE)
    if any(line.status != LineStatus.POSTED for line in planned):
        return None  # a line goes to review
    return records.build_write(settings, call, planned, direction, None, now)
