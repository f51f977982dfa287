"""The program-calculated use cases (SPEC §4): ISSUE computes its lines from the basket and the
sponsor's offers, RETURN takes back what the returned items earned (from the rules stored with
the ISSUE), CALCULATE previews ISSUE without recording anything."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from fractions import Fraction
from typing import Any

import orjson
from sqlalchemy.orm import Session

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.errors import BusinessRuleError, FieldError, problem_from_error
from rewardmiles.idempotency import repository as keys
from rewardmiles.issuance import checks, keyed, rules
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance.calls import RULES, Outcome, PartnerCall
from rewardmiles.issuance.reference import registered_locations
from rewardmiles.issuance.schemas import Command, computed_lines
from rewardmiles.ledger import present
from rewardmiles.offers import applicable, engine
from rewardmiles.vocabulary import Endpoint


def preview(
    session: Session,
    settings: Settings,
    call: PartnerCall,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome:
    """CALCULATE without a key: what ISSUE would issue now, a pure preview on a read-only
    session (a failed rule raises: a 400 that leaves nothing behind)."""
    moment = now()
    offers = _preview_offers(session, settings, call.command, moment)
    return Outcome(200, _preview(settings, call.command, offers, moment))


def calculate(
    session: Session,
    _attempt: int,
    settings: Settings,
    call: PartnerCall,
    now: Callable[[], datetime] = clock.utc_now,
) -> Outcome:
    """CALCULATE with a key, in a unit of work (`Database.run_in_unit_of_work`; every attempt
    is the same): no transaction is ever recorded, but the answer — the preview, or a failed
    rule's 400 — is stored under the key like a write endpoint's (SPEC §4), and a retry replays
    it even if the offers changed in between. Without a key, the boundary runs `preview`."""
    key = present(call.idempotency_key)
    replay = keyed.claim(session, call)
    if replay is not None:
        return replay
    moment = now()
    try:
        offers = _preview_offers(session, settings, call.command, moment)
        outcome = Outcome(200, _preview(settings, call.command, offers, moment))
    except BusinessRuleError as rule:
        outcome = Outcome(400, problem_from_error(rule, call.request_id))
    keys.store(session, keyed.key_row(call, key, outcome, moment))
    return outcome


def draft_preview(
    session: Session,
    settings: Settings,
    command: Command,
    draft: engine.Offer,
    now: Callable[[], datetime] = clock.utc_now,
) -> dict[str, Any]:
    """CALCULATE's answer (`preview`) with `draft` in place of the sponsor's offer of its code,
    as if it were saved and applied to the basket: an offer's preview before it is saved."""
    moment = now()
    offers = _preview_offers(session, settings, command, moment)
    kept = [offer for offer in offers if offer.code != draft.code]
    return _preview(settings, command, [*kept, draft], moment)


def _preview_offers(
    session: Session, settings: Settings, command: Command, now: datetime
) -> list[engine.Offer]:
    """CALCULATE's reads: what ISSUE would refuse, it refuses; then the applicable offers."""
    checks.check_sponsor(session, command.sponsor_code)
    if command.collector_number is not None:
        checks.check_collector_unlocked(session, settings, command.collector_number)
    rules.check_date_window(settings, command, now)
    return _program_offers(session, settings, command)


def _preview(
    settings: Settings, command: Command, offers: list[engine.Offer], now: datetime
) -> dict[str, Any]:
    """CALCULATE's response body: ISSUE's computation with `offers`."""
    program = present(command.program)
    computed = engine.calculate(offers, program.basket)
    rules.check_line_maximum(settings, computed)
    body = _with_lines(command, computed, program.location_code, {}).echo
    if not body["issuances"]:
        del body["issuances"]
    body["transactionDateTime"] = clock.program_timestamp(now, settings.program_time_zone)
    return body


def compute(session: Session, settings: Settings, call: PartnerCall) -> Command:
    """ISSUE: the offers' lines for the basket. RETURN: what the returned items take back."""
    command = call.command
    program = present(command.program)
    if call.endpoint is Endpoint.ISSUE:
        offers = _program_offers(session, settings, command)
        basket = program.basket
        calculation = {
            "offers": applicable.snapshot(offers),
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
            "locationCode": program.location_code,
        }
        computed = engine.calculate(offers, basket)
        rules.check_line_maximum(settings, computed)
        return _with_lines(command, computed, program.location_code, calculation)
    return _compute_return(session, call)


def _program_offers(session: Session, settings: Settings, command: Command) -> list[engine.Offer]:
    program = present(command.program)
    location = program.location_code
    if location is not None:
        registers_any, known = registered_locations(session, command.sponsor_code, (location,))
        if registers_any and location not in known:
            raise BusinessRuleError(
                "LOCATION_UNKNOWN",
                f"Location {location} is not registered for sponsor {command.sponsor_code}.",
                field="locationCode",
            )
    on_date = command.moment.astimezone(clock.zone(settings.program_time_zone)).date()
    return applicable.offers(session, command.sponsor_code, on_date, location)


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


def _compute_return(session: Session, call: PartnerCall) -> Command:
    command = call.command
    program = present(command.program)
    original = checks.locked_original(session, call, RULES[Endpoint.RETURN])
    # every ISSUE stores what it computed its lines from
    calculation = present(repo.get_calculation(session, original.id))
    issued = orjson.loads(calculation)
    bought = {item["id"]: int(item["quantity"]) for item in issued["items"]}
    returned_before: dict[str, int] = defaultdict(int)
    for earlier in repo.calculations_of_reversals(session, original.id):
        for item_id, quantity in orjson.loads(earlier)["returned"].items():
            returned_before[item_id] += quantity
    items = program.basket.items
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
    rules.reject_if_any(errors, "The return exceeds the purchase.")
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
        applicable.from_snapshot(issued["offers"]), original_basket, returned_before, returned_now
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
