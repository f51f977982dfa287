"""The Offers page: a sponsor's offers; an admin adds, edits and disables them with the admin
API's own functions (`admin.catalogue.put_offer`, `disable_offer`: the checks of `offer import`,
audited). The rule editor checks the rule as it is typed (`POST /console/offers/validate`, the
offers service's `check_rule`) and previews what CALCULATE would answer for a sample basket with
the draft rule in place of the saved one (`POST /console/offers/preview`: the partner API's
CALCULATE body validation, then `issuance.calculated.draft_preview`, CALCULATE's own path and the
offers engine), saving nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin import catalogue
from rewardmiles.admin.catalogue import OFFER_RULES, OfferBody
from rewardmiles.console import web
from rewardmiles.console.partners import RefusedError, refusing
from rewardmiles.console.web import PREFIX, PageError
from rewardmiles.errors import BusinessRuleError, ProblemError
from rewardmiles.http.partner_json import parse_json_object
from rewardmiles.http.validation import validate_body
from rewardmiles.issuance import calculated
from rewardmiles.issuance.schemas import (
    FIELD_CODES,
    FIELD_RULES,
    CalculateRequest,
    program_command,
)
from rewardmiles.offers import engine
from rewardmiles.offers import service as offers
from rewardmiles.offers.service import OfferView, RuleError
from rewardmiles.operators.service import Caller
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import OperatorRole

router = APIRouter(include_in_schema=False)

PAGE = PREFIX + "/offers"
LIST_MAX = 500
TEXT_MAX = 64 * 1024  # a rule or a sample basket, as the admin API's body limit
FIELDS = ("code", "description", "rule", "validFrom", "validTo", "locations", "offerId")
LABELS = {
    "code": "Offer code",
    "description": "Description",
    "rule": "Rule (JSON)",
    "validFrom": "Valid from",
    "validTo": "Valid to",
    "locations": "Locations",
    "offerId": "Offer id",
    "sponsorCode": "Sponsor",
}


def _text(fields: Mapping[str, list[str]], name: str) -> str:
    value = web.one(fields, name, required=False)
    if len(value) > TEXT_MAX:
        raise PageError(
            413, "Too large", f"{LABELS.get(name, name)} exceeds {TEXT_MAX} characters."
        )
    return value


def _parse_json(text: str, what: str) -> dict[str, Any]:
    """`text` as the partner and admin APIs parse a body (numbers exact, members once): a
    `ProblemError` naming `what` otherwise."""
    try:
        return parse_json_object(text.encode("utf-8"))
    except ProblemError as exc:
        detail = exc.detail.replace("The body", what)
        raise ProblemError("MALFORMED_JSON", detail, errors=exc.errors) from None


def sample_basket() -> str:
    """A small CALCULATE body to preview a rule on, dated a moment ago."""
    moment = clock.utc_now() - timedelta(seconds=5)
    return json.dumps(
        {
            "checkoutTransactionId": "PREVIEW-1",
            "collectorNumber": "0" * limits.collector_number_digits,
            "checkoutDateTime": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "basketPreTaxAmount": 65.5,
            "basketPostTaxAmount": 65.5,
            "items": [
                {"id": "SKU-1", "quantity": 2, "finalAmount": 40.0, "categoryId": "COFFEE"},
                {"id": "SKU-2", "quantity": 1, "finalAmount": 25.5, "departmentId": "BAKERY"},
            ],
        },
        indent=2,
    )


# --------------------------------------------------------------------------- the list


@router.get(PAGE)
async def offers_page(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    sponsor = web.sponsor_of(request.query_params.get("sponsor"))

    def load(session: Any) -> dict[str, Any]:
        if sponsor is not None:
            web.known_sponsor(session, sponsor)
        every = [sponsors.sponsor_state(s) for s in sponsors.list_sponsors(session, None, LIST_MAX)]
        shown = offers.offer_page(session, sponsor, None, LIST_MAX) if sponsor else []
        return {"sponsors": every, "offers": [_row(o) for o in shown]}

    data = await web.read(request, load)
    return web.render(
        request,
        "offers.html",
        {
            **data,
            "sponsor": sponsor,
            "is_admin": caller.may(OperatorRole.ADMIN),
        },
        caller=caller,
    )


def _row(view: OfferView) -> dict[str, Any]:
    out = view.as_dict()
    out["ruleText"] = json.dumps(view.rule, sort_keys=True) if view.rule is not None else ""
    return out


def _back(caller: Caller, sponsor: str, done: str) -> str:
    return PAGE + "?" + urlencode({"sponsor": sponsor, **web.done_query(caller, done)})


# --------------------------------------------------------------------------- add and edit


def _form_values(view: OfferView | None) -> dict[str, str]:
    if view is None:
        return dict.fromkeys(FIELDS, "")
    return {
        "code": view.code,
        "description": view.description,
        "rule": json.dumps(view.rule, indent=2) if view.rule is not None else "",
        "validFrom": view.valid_from.isoformat() if view.valid_from else "",
        "validTo": view.valid_to.isoformat() if view.valid_to else "",
        "locations": ", ".join(view.locations or ()),
        "offerId": view.offer_id or "",
    }


def _edit_form(
    request: Request,
    caller: Any,
    sponsor: str,
    values: Mapping[str, str],
    *,
    editing: bool,
    basket: str | None = None,
    errors: Mapping[str, str] | None = None,
    rule_problems: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    return web.render(
        request,
        "offers_edit.html",
        {
            "sponsor": sponsor,
            "values": dict(values),
            "editing": editing,
            "basket": basket if basket is not None else sample_basket(),
            "errors": dict(errors or {}),
            "rule_problems": rule_problems or [],
        },
        caller=caller,
        status=status,
    )


@router.get(PAGE + "/edit")
async def edit_page(request: Request) -> Response:
    """The form of a new offer (no `code`) or of the sponsor's offer `code`."""
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    sponsor = web.sponsor_of(request.query_params.get("sponsor"), required=True)
    assert sponsor is not None
    code = request.query_params.get("code") or None
    if code is not None and not re.fullmatch(limits.offer_code_pattern, code):
        raise PageError(400, "Invalid offer", "code must be an offer code.", "FIELD_INVALID")

    def load(session: Any) -> OfferView | None:
        sponsors.list_locations(session, sponsor, None, 1)  # refused when there is no sponsor
        return offers.offer(session, sponsor, code) if code else None

    view = await web.read(request, load)
    if code is not None and view is None:
        raise PageError(404, "Not found", f"No offer {code} for sponsor {sponsor}.", "NOT_FOUND")
    return _edit_form(request, caller, sponsor, _form_values(view), editing=view is not None)


def _body_of(values: Mapping[str, str]) -> dict[str, Any]:
    """The admin API's offer body from the form's text fields (the rule parsed as its JSON)."""
    obj: dict[str, Any] = {"description": values["description"]}
    if values["rule"].strip():
        obj["rule"] = _parse_json(values["rule"], "The rule")
    for name in ("validFrom", "validTo", "offerId"):
        if values[name]:
            obj[name] = values[name]
    if values["locations"]:
        obj["locations"] = [c.strip() for c in re.split(r"[,\s]+", values["locations"]) if c]
    return obj


@router.post(PAGE + "/save")
async def save_offer(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    fields = await web.form(request)
    sponsor = web.sponsor_of(web.one(fields, "sponsor", required=False), required=True)
    assert sponsor is not None
    values = {name: _text(fields, name) for name in FIELDS}
    basket = _text(fields, "basket") or None
    editing = web.one(fields, "editing", required=False) == "1"

    def again(status: int, errors: Mapping[str, str], problems: Any = None) -> Response:
        return _edit_form(
            request,
            caller,
            sponsor,
            values,
            editing=editing,
            basket=basket,
            errors=errors,
            rule_problems=problems,
            status=status,
        )

    if not values["code"]:
        return again(400, {"code": "Enter the offer's code."})
    try:
        body = validate_body(OfferBody, _body_of(values), context={}, rules=OFFER_RULES, codes={})
    except ProblemError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors or ():
            errors.setdefault((error.field or "rule").split(".")[0].split("[")[0], error.message)
        return again(exc.status, errors or {"rule": exc.detail})
    actor, now = web.actor(request, caller), clock.utc_now()
    code = values["code"]
    try:
        created, _ = await web.change(
            request, refusing(lambda s: catalogue.put_offer(s, actor, now, sponsor, code, body))
        )
    except RefusedError as exc:
        if exc.status == 404:
            raise PageError(404, "Not found", exc.message, "NOT_FOUND") from None
        problems = list(exc.error.problems) if isinstance(exc.error, RuleError) else None
        return again(exc.status, {exc.field or "code": exc.message}, problems)
    verb = "added" if created else "saved"
    return web.redirect(_back(caller, sponsor, f"Offer {code} {verb}."))


@router.post(PAGE + "/disable")
async def disable_offer(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    fields = await web.form(request)
    sponsor = web.sponsor_of(web.one(fields, "sponsor"), required=True)
    assert sponsor is not None
    code = web.one(fields, "code")
    if not re.fullmatch(limits.offer_code_pattern, code):
        raise PageError(400, "Invalid offer", "code must be an offer code.", "FIELD_INVALID")
    actor, now = web.actor(request, caller), clock.utc_now()
    await web.change(request, lambda s: catalogue.disable_offer(s, actor, now, sponsor, code))
    return web.redirect(_back(caller, sponsor, f"Offer {code} disabled."))


# --------------------------------------------------------------------------- the rule editor


def _fragment(request: Request, caller: Any, name: str, context: Mapping[str, Any]) -> Response:
    """A verdict of the rule editor: answered 200 whatever it says (`data-state`)."""
    return web.render(request, name, context, caller=caller)


@router.post(PAGE + "/validate")
async def validate_rule(request: Request) -> Response:
    """The rule's check as an HTML fragment (`data-state` ok, empty or bad, with each member at
    fault): the verdict on a draft, answered 200; a request the route cannot read is 4xx."""
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    fields = await web.form(request)
    text = _text(fields, "rule")
    if not text.strip():
        return _fragment(request, caller, "offers_check.html", {"state": "empty", "problems": []})
    try:
        rule = offers.check_rule(_parse_json(text, "The rule"))
    except ProblemError as exc:
        return _fragment(
            request,
            caller,
            "offers_check.html",
            {"state": "bad", "problems": [("rule", exc.detail)]},
        )
    except RuleError as exc:
        return _fragment(
            request, caller, "offers_check.html", {"state": "bad", "problems": list(exc.problems)}
        )
    return _fragment(
        request, caller, "offers_check.html", {"state": "ok", "kind": rule.type, "problems": []}
    )


@router.post(PAGE + "/preview")
async def preview_rule(request: Request) -> Response:
    """What CALCULATE would answer for the sample basket if the draft were saved: its lines
    (miles per offer) and the total, or what is wrong with the rule or the basket, as an HTML
    fragment answered 200 (`data-state` ok, empty or bad)."""
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    fields = await web.form(request)
    sponsor = web.sponsor_of(web.one(fields, "sponsor", required=False), required=True)
    assert sponsor is not None
    code = web.one(fields, "code", required=False) or "NEW"
    rule_text = _text(fields, "rule")
    basket_text = _text(fields, "basket")
    description = _text(fields, "description")
    offer_id = _text(fields, "offerId") or None

    def refused(where: str, problems: list[tuple[str, str]]) -> Response:
        context: dict[str, Any] = {
            "where": where,
            "problems": problems,
            "lines": [],
            "total": 0,
            "code": code,
        }
        return _fragment(request, caller, "offers_preview.html", context)

    if not rule_text.strip():
        context: dict[str, Any] = {
            "where": None,
            "problems": [],
            "lines": None,
            "total": 0,
            "code": code,
        }
        return _fragment(request, caller, "offers_preview.html", context)
    try:
        rule = offers.check_rule(_parse_json(rule_text, "The rule"))
    except ProblemError as exc:
        return refused("Rule (JSON)", [("rule", exc.detail)])
    except RuleError as exc:
        return refused("Rule (JSON)", list(exc.problems))
    ctx = request.app.state.ctx
    try:
        obj = _parse_json(basket_text, "The sample basket")
        obj["sponsorCode"] = sponsor
        body = validate_body(
            CalculateRequest,
            obj,
            context={"miles_per_line_max": ctx.settings.miles_per_line_max},
            rules=FIELD_RULES,
            codes=FIELD_CODES,
        )
    except ProblemError as exc:
        problems = [(e.field or "basket", e.message) for e in exc.errors] or [
            ("basket", exc.detail)
        ]
        return refused("Sample basket (JSON)", problems)
    command = program_command(body, sponsor)
    draft = engine.Offer(code, offer_id, description, rule)
    try:
        answer = await web.read(
            request, lambda s: calculated.draft_preview(s, ctx.settings, command, draft)
        )
    except BusinessRuleError as exc:
        problems = [(e.field or "basket", e.message) for e in exc.errors] or [
            ("basket", exc.detail)
        ]
        return refused("CALCULATE refuses the basket", problems)
    context = {
        "where": None,
        "problems": [],
        "lines": answer.get("issuances", []),
        "total": answer["totalMiles"],
        "code": code,
    }
    return _fragment(request, caller, "offers_preview.html", context)
