"""Operator actions on offers: add, replace, disable, list, import. Callers pass the unit of work;
the rows are read and written by `offers.repository`. Which offers apply to a transaction:
`offers.applicable`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.db.models import Offer
from rewardmiles.errors import AlreadyExistsError, MissingError, OperatorError
from rewardmiles.offers import repository
from rewardmiles.offers.rules import BaseEarn, CouponBonus, ItemBonus, dump_rule, parse_rule


class OfferError(OperatorError):
    pass


class OfferExistsError(OfferError, AlreadyExistsError):
    pass


class MissingOfferError(OfferError, MissingError):
    pass


@dataclass(frozen=True, slots=True)
class OfferView:
    sponsor_code: str
    code: str
    description: str
    active: bool
    valid_from: date | None
    valid_to: date | None
    offer_id: str | None
    locations: list[str] | None
    rule: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sponsorCode": self.sponsor_code,
            "code": self.code,
            "description": self.description,
            "active": self.active,
            "validFrom": self.valid_from.isoformat() if self.valid_from else None,
            "validTo": self.valid_to.isoformat() if self.valid_to else None,
            "offerId": self.offer_id,
            "locations": self.locations,
            "rule": self.rule,
        }


class RuleError(OfferError):
    """An invalid rule: the message names each member at fault by its path under the rule's
    type (`base.miles`); `problems` are (member at fault in the rule as written, why)."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__(f"invalid rule: {message}", field="rule")
        self.problems = tuple(problems)


def check_rule(rule: object) -> BaseEarn | ItemBonus | CouponBonus:
    """`rule` parsed, or a `RuleError`: the check of `offer add`, `offer import`, the admin API
    and the console's rule editor."""
    try:
        return parse_rule(rule)
    except ValidationError as exc:
        kind = rule.get("type") if isinstance(rule, dict) else None
        paths, problems = [], []
        for e in exc.errors():
            paths.append(f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}")
            loc = e["loc"][1:] if e["loc"][:1] == (kind,) else e["loc"]  # less the type's tag
            problems.append((".".join(str(p) for p in loc) or "rule", e["msg"]))
        raise RuleError("; ".join(paths), problems) from exc


def _rule_text(rule: object) -> str:
    return json.dumps(dump_rule(check_rule(rule)), sort_keys=True)


def _check(
    code: str, valid_from: date | None, valid_to: date | None, locations: Iterable[str] | None
) -> None:
    if not re.match(limits.offer_code_pattern, code):
        raise OfferError(
            f"offer code {code!r} must be 1–{limits.offer_code_chars_max} uppercase letters or digits",
            field="code",
        )
    if valid_from and valid_to and valid_from > valid_to:
        raise OfferError("validFrom is after validTo", field="validTo")
    for location in locations or ():
        if not re.match(limits.location_code_pattern, location):
            raise OfferError(
                f"location code {location!r} must be 1–{limits.location_code_chars_max}"
                " printable characters",
                field="locations",
            )


def put_offer(
    session: Session,
    sponsor_code: str,
    code: str,
    *,
    description: str,
    rule: object | None,
    valid_from: date | None,
    valid_to: date | None,
    locations: list[str] | None,
    offer_id: str | None,
    now: datetime,
    replace: bool,
) -> bool:
    """Add an offer, or (with `replace`) overwrite one: the import is an upsert. True when the
    offer is new."""
    if not repository.sponsor_exists(session, sponsor_code):
        raise MissingOfferError(f"sponsor {sponsor_code} does not exist", field="sponsorCode")
    _check(code, valid_from, valid_to, locations)
    if offer_id is not None and not 1 <= len(offer_id) <= limits.offer_id_chars_max:
        raise OfferError(
            f"offerId must be 1–{limits.offer_id_chars_max} characters", field="offerId"
        )
    if len(description) > limits.offer_description_chars_max:
        raise OfferError(
            f"the description may be at most {limits.offer_description_chars_max} characters",
            field="description",
        )
    rule_text = _rule_text(rule) if rule is not None else None
    offer = repository.locked_offer(session, sponsor_code, code)
    if offer is not None and not replace:
        raise OfferExistsError(
            f"offer {code} already exists for sponsor {sponsor_code}", field="code"
        )
    created = offer is None
    if offer is None:
        offer = repository.new_offer(session, sponsor_code, code, now)
    offer.description = description
    offer.active = True
    offer.valid_from = valid_from
    offer.valid_to = valid_to
    offer.rule_json = rule_text
    offer.offer_id = offer_id
    offer.location_codes_json = json.dumps(sorted(locations)) if locations else None
    return created


def disable_offer(session: Session, sponsor_code: str, code: str) -> None:
    found = repository.locked_offer(session, sponsor_code, code)
    if found is None or not found.active:
        raise MissingOfferError(f"no active offer {code} for sponsor {sponsor_code}")
    found.active = False


def _view(o: Offer) -> OfferView:
    return OfferView(
        o.sponsor_code,
        o.code,
        o.description,
        o.active,
        o.valid_from,
        o.valid_to,
        o.offer_id,
        json.loads(o.location_codes_json) if o.location_codes_json else None,
        json.loads(o.rule_json) if o.rule_json else None,
    )


def list_offers(session: Session, sponsor_code: str | None = None) -> list[OfferView]:
    return [_view(o) for o in repository.offers(session, sponsor_code)]


def offer_page(
    session: Session, sponsor_code: str | None, after: tuple[str, str] | None, limit: int
) -> list[OfferView]:
    """Up to `limit` offers by sponsor and code after (sponsor, code) `after`."""
    return [_view(o) for o in repository.offers_after(session, sponsor_code, after, limit)]


def offer(session: Session, sponsor_code: str, code: str) -> OfferView | None:
    found = repository.locked_offer(session, sponsor_code, code)
    return None if found is None else _view(found)


def import_offers(session: Session, documents: Sequence[Mapping[str, Any]], now: datetime) -> int:
    """Upsert offers from parsed YAML/JSON: a list of
    `{sponsorCode, code, description, rule, validFrom?, validTo?, locations?, offerId?}`."""
    for index, doc in enumerate(documents):
        try:
            locations = doc.get("locations")
            if locations is not None and (
                not isinstance(locations, list) or not all(isinstance(x, str) for x in locations)
            ):
                raise OfferError("locations must be a list of strings (quote codes like '0037')")
            for name in ("sponsorCode", "code", "description"):
                if doc.get(name) is not None and not isinstance(doc[name], str):
                    raise OfferError(f"{name} must be a string (quote it in YAML)")
            offer_id = doc.get("offerId")
            if isinstance(offer_id, bool) or not isinstance(offer_id, str | int | None):
                raise OfferError("offerId must be a string or an integer")
            put_offer(
                session,
                doc["sponsorCode"],
                doc["code"],
                description=doc.get("description") or "",
                rule=doc.get("rule"),
                valid_from=_date(doc.get("validFrom")),
                valid_to=_date(doc.get("validTo")),
                locations=locations or None,
                offer_id=None if offer_id is None else str(offer_id),
                now=now,
                replace=True,
            )
        except KeyError as exc:
            raise OfferError(f"offer #{index + 1}: missing {exc.args[0]}") from exc
        except (OfferError, ValueError) as exc:
            raise OfferError(f"offer #{index + 1} ({doc.get('code')}): {exc}") from exc
    return len(documents)


def _date(value: object) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
