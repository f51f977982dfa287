"""The business rules of the partner endpoints (SPEC §3), as pure functions over what was read
(the reference data, the collector, the original's totals) and the command. Each raises
`BusinessRuleError` with the contract's code and the field at fault, or returns the decision.

Both write paths ask these: the unit of work (`service`) after its reads, and the one-statement
path (`service.plan_at_once`) over the process's reference cache, which then only asks
whether every planned line posts now. No reads, no writes, no session here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from rewardmiles import limits
from rewardmiles.config import Settings
from rewardmiles.errors import BusinessRuleError, FieldError
from rewardmiles.issuance.calls import PlannedLine
from rewardmiles.issuance.repository import OfferRow, OriginalTotals, SponsorRow
from rewardmiles.issuance.schemas import Command
from rewardmiles.offers import engine
from rewardmiles.vocabulary import (
    CollectorStatus,
    LineStatus,
    NegativeBalancePolicy,
    PendingReason,
    UnknownCollectorPolicy,
)


def reject_if_any(errors: list[FieldError], detail: str) -> None:
    if not errors:
        return
    codes = {e.code for e in errors}
    code = errors[0].code if len(codes) == 1 else "VALIDATION_FAILED"
    raise BusinessRuleError(code, detail, errors=errors)


def check_sponsor(sponsor: SponsorRow | None, code: str) -> SponsorRow:
    if sponsor is None:
        raise BusinessRuleError(
            "SPONSOR_UNKNOWN", f"Sponsor {code} is unknown.", field="sponsorCode"
        )
    if not sponsor.active:
        raise BusinessRuleError(
            "SPONSOR_INACTIVE", f"Sponsor {code} is not active.", field="sponsorCode"
        )
    return sponsor


def check_collector(settings: Settings, status: str | None, number: str) -> None:
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


def check_date_window(settings: Settings, command: Command, now: datetime) -> None:
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


def offer_usable(offer: OfferRow, on_date: date) -> bool:
    return (
        offer.active
        and not (offer.valid_from and on_date < offer.valid_from)
        and not (offer.valid_to and on_date > offer.valid_to)
    )


def check_offers(
    command: Command, offers: Mapping[str, OfferRow], on_date: date, *, offer_state: bool
) -> None:
    """Every line's offer exists (`OFFER_UNKNOWN`) and, with `offer_state`, is usable on the
    transaction date (`OFFER_INACTIVE`). A reversal naming its original passes
    `offer_state=False`: it takes back what the original issued (rule 3.3, bounded per offer by
    `check_reversal_bounds`), whatever the offer's state today — offer state applies to new
    credits only."""
    sponsor = command.sponsor_code
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
        elif offer_state and not offer_usable(offer, on_date):
            errors.append(
                FieldError(
                    "OFFER_INACTIVE",
                    field,
                    f"Offer {offer.code} is not active on {on_date.isoformat()}.",
                )
            )
    reject_if_any(errors, "One or more offers cannot be used.")


def check_locations(command: Command, registers_any: bool, known: set[str]) -> None:
    """Every line's location is registered (`known`), if the sponsor registers any."""
    if not registers_any:
        return
    errors = [
        FieldError(
            "LOCATION_UNKNOWN",
            f"issuances[{i}].locationCode",
            f"Location {line.location_code} is not registered for sponsor {command.sponsor_code}.",
        )
        for i, line in enumerate(command.lines)
        if line.location_code and line.location_code not in known
    ]
    reject_if_any(errors, "One or more locations are not registered.")


def plan_lines(
    command: Command,
    sponsor: SponsorRow,
    collector_status: str | None,
    pending_offers: frozenset[str] = frozenset(),
) -> list[PlannedLine]:
    """Each line posted now, or pending with its reason: review above the sponsor's threshold,
    a collector not enrolled (`collector_status` None) or on hold, an original line still
    pending."""
    collector_reason = (
        PendingReason.COLLECTOR_UNKNOWN
        if collector_status is None
        else PendingReason.COLLECTOR_ON_HOLD
        if collector_status == CollectorStatus.ON_HOLD
        else None
    )
    pending, posted = LineStatus.PENDING, LineStatus.POSTED  # read once, not once per line
    planned = []
    for i, line in enumerate(command.lines):
        # Review comes first: an approved line still waits for its collector, never the reverse.
        needs_review = (
            sponsor.review_threshold_miles is not None
            and line.miles_amount > sponsor.review_threshold_miles
        )
        reason = PendingReason.REVIEW if needs_review else collector_reason
        if reason is None and line.issuance_offer_code in pending_offers:
            reason = PendingReason.ORIGINAL_PENDING
        planned.append(
            PlannedLine(
                i,
                line.issuance_offer_code,
                line.location_code,
                line.miles_amount,
                pending if reason else posted,
                reason,
            )
        )
    return planned


def check_reversal_bounds(command: Command, totals: OriginalTotals) -> None:
    """Rule 3.3: per offer, what this request reverses and what earlier reversals took never
    exceed what the original issued."""
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
    reject_if_any(errors, "The reversal exceeds what the original issued.")


def check_balance(
    settings: Settings, balance_miles: int | None, planned: list[PlannedLine]
) -> None:
    """A debit's posted lines never take the balance below zero, where the program says so
    (`balance_miles` None: no account, nothing posts)."""
    if (
        settings.negative_balance_policy is not NegativeBalancePolicy.REJECT
        or balance_miles is None
    ):
        return
    debit = sum(p.miles for p in planned if p.status == LineStatus.POSTED)
    if debit > balance_miles:
        raise BusinessRuleError(
            "INSUFFICIENT_BALANCE",
            f"The reversal of {debit} miles would take the balance below zero.",
            field="issuances",
        )


def check_line_maximum(settings: Settings, computed: list[engine.Computed]) -> None:
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
    reject_if_any(errors, "A computed line exceeds the per-line maximum.")
