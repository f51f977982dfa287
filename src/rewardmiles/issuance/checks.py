"""The rules of `rules` applied to what the unit of work reads: each function reads what its
rule needs (`repository`, through the reference cache) and asks the pure rule."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.errors import BusinessRuleError
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance import rules
from rewardmiles.issuance.calls import RULES, TAKEN_BACK_BY, EndpointRules, PartnerCall
from rewardmiles.issuance.reference import get_offers, get_sponsor, registered_locations
from rewardmiles.issuance.schemas import Command
from rewardmiles.vocabulary import Endpoint


def check_sponsor(session: Session, code: str) -> repo.SponsorRow:
    return rules.check_sponsor(get_sponsor(session, code), code)


def check_collector_unlocked(session: Session, settings: Settings, number: str) -> None:
    """`rules.check_collector` from a read without a lock, for the calls that move no miles
    (RECORD, CALCULATE): nothing is enrolled or left pending by them."""
    rules.check_collector(settings, repo.collector_status(session, number), number)


def check_offers_and_locations(
    session: Session, settings: Settings, command: Command, *, offer_state: bool = True
) -> None:
    """`rules.check_offers` and `rules.check_locations` over the command's offers and
    locations, read through the reference cache."""
    if not command.lines:
        return
    sponsor = command.sponsor_code
    on_date = command.moment.astimezone(clock.zone(settings.program_time_zone)).date()
    offers = get_offers(session, sponsor, (line.issuance_offer_code for line in command.lines))
    rules.check_offers(command, offers, on_date, offer_state=offer_state)
    codes = {line.location_code for line in command.lines if line.location_code}
    if not codes:
        return
    registers_any, known = registered_locations(session, sponsor, codes)
    rules.check_locations(command, registers_any, known)


def load_original(
    session: Session, call: PartnerCall, endpoint_rules: EndpointRules
) -> tuple[str | None, frozenset[str]]:
    """(original transaction id, its offer codes still pending); checks rule 3.3's bounds."""
    if not call.command.original_partner_id:
        return None, frozenset()
    original = locked_original(session, call, endpoint_rules)
    totals = repo.original_totals(session, original.id)
    rules.check_reversal_bounds(call.command, totals)
    return original.id, totals.pending_offers


def locked_original(
    session: Session, call: PartnerCall, endpoint_rules: EndpointRules
) -> repo.AcceptedTransaction:
    """The accepted original the reversal names, of its endpoint's own family, under its row
    lock; rejected when there is none (`original_not_found`) or it was for another collector."""
    command = call.command
    original = repo.find_accepted(
        session,
        command.sponsor_code,
        [endpoint.value for endpoint in endpoint_rules.reversible_origins],
        command.original_partner_id or "",
        lock=True,
    )
    if original is None:
        raise original_not_found(session, call)
    if original.collector_number != command.collector_number:
        raise BusinessRuleError(
            "ORIGINAL_COLLECTOR_MISMATCH",
            "The original transaction was for a different collector.",
            field=command.original_field,
        )
    return original


def original_not_found(session: Session, call: PartnerCall) -> BusinessRuleError:
    """The rejection of a reversal whose original is none its endpoint may name:
    `ORIGINAL_WRONG_FAMILY` when the id names an accepted transaction of the other family (its
    miles go back through another endpoint), else `ORIGINAL_NOT_FOUND`. Read only on the way to
    that rejection."""
    command = call.command
    endpoint_rules = RULES[call.endpoint]
    named = command.original_partner_id or ""
    other = repo.find_accepted(
        session, command.sponsor_code, [e.value for e in endpoint_rules.other_family], named
    )
    if other is not None:
        issued_by = Endpoint(other.endpoint)
        return BusinessRuleError(
            "ORIGINAL_WRONG_FAMILY",
            f"Transaction {named} was issued by {RULES[issued_by].wire_name}; take its miles back "
            f"with {TAKEN_BACK_BY[issued_by]}.",
            field=command.original_field,
        )
    names = " or ".join(RULES[e].wire_name for e in endpoint_rules.reversible_origins)
    return BusinessRuleError(
        "ORIGINAL_NOT_FOUND",
        f"No accepted {names} {named} for sponsor {command.sponsor_code}.",
        field=command.original_field,
    )
