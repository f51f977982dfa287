"""`/admin/v1` catalogue routes: sponsors, their locations and offers, webhooks and their
deliveries. Reads for any role; changes for admins, each appended to the operator audit log in
the unit of work that makes it. The rules are the CLI's (`sponsors.service`, `offers.service`,
`webhooks.service`): a refusal is a 409 `ALREADY_EXISTS`, a 404 `NOT_FOUND` or a 422
`OPERATOR_ACTION_REFUSED` with the CLI's words and the member at fault."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, BeforeValidator, StringConstraints
from sqlalchemy.orm import Session
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin import boundary
from rewardmiles.admin.boundary import (
    BODY_BYTES_MAX,
    BODY_PROBLEMS,
    ID_PATTERN,
    Body,
    change,
    checked,
    read,
)
from rewardmiles.db.models import Location, Sponsor
from rewardmiles.http import pages
from rewardmiles.http.bodies import read_json_object
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.validation import validate_body
from rewardmiles.offers import service as offers
from rewardmiles.offers.service import OfferView
from rewardmiles.operators import service as operators
from rewardmiles.operators.access import auth_problems, auth_problems_unsafe, require
from rewardmiles.operators.service import Actor
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import DeliveryStatus, OperatorRole
from rewardmiles.webhooks import service as webhooks
from rewardmiles.webhooks.service import DeliveryPageItem, WebhookView

router = APIRouter(prefix="/admin/v1", tags=["admin"])
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

READ = auth_problems(OperatorRole.VIEWER)
CHANGE = auth_problems_unsafe(OperatorRole.ADMIN)

SponsorCode = Annotated[
    str,
    Path(
        description="The sponsor's code.",
        json_schema_extra={"pattern": limits.sponsor_code_pattern},
    ),
]
OfferCode = Annotated[
    str,
    Path(description="The offer's code.", json_schema_extra={"pattern": limits.offer_code_pattern}),
]
SponsorFilter = Annotated[
    str | None,
    Query(max_length=limits.sponsor_code_chars_max, description="Only this sponsor's."),
]


# --------------------------------------------------------------------------- plumbing


def _sponsor_filter(value: str | None) -> str | None:
    return None if value is None else checked(value, limits.sponsor_code_pattern, "sponsor")


def _at(moment: datetime, request: Request) -> str:
    return clock.program_timestamp(moment, request.app.state.ctx.settings.program_time_zone)


Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]


# --------------------------------------------------------------------------- sponsors


class NewSponsor(Body):
    code: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=20)]
    name: Text


class SponsorChange(Body):
    active: bool | None = None
    reviewThresholdMiles: int | None = None  # noqa: N815  (null: no review)


def _sponsor(sponsor: Sponsor) -> dict[str, Any]:
    return sponsors.sponsor_state(sponsor)


@router.get(
    "/sponsors",
    summary="Sponsors, by code",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS),
)
async def sponsor_list(
    request: Request,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    after = pages.decode(cursor, 1)
    rows = await read(
        request,
        lambda s: [
            _sponsor(r) for r in sponsors.list_sponsors(s, after[0] if after else None, limit + 1)
        ],
    )
    return json_response(200, pages.page(rows, limit, lambda r: [r["code"]], dict))


@router.post(
    "/sponsors",
    status_code=201,
    summary="Add a sponsor (active, with its STANDARD offer)",
    responses=admin_problem_responses(
        *CHANGE, *BODY_PROBLEMS, "ALREADY_EXISTS", "OPERATOR_ACTION_REFUSED"
    ),
)
async def sponsor_add(request: Request) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    body = await boundary.body(
        request, NewSponsor, {"code": "must be a string", "name": "1–200 characters"}
    )
    actor, now = boundary.actor(request, caller), clock.utc_now()
    return json_response(
        201, await change(request, lambda s: add_sponsor(s, actor, now, body.code, body.name))
    )


def add_sponsor(
    session: Session, actor: Actor, now: datetime, code: str, name: str
) -> dict[str, Any]:
    """A new sponsor, audited: the admin API's and the console's."""
    state = _sponsor(sponsors.add_sponsor(session, code, name, now))
    operators.audit(session, actor, "sponsor.add", "sponsor", code, now, after=state)
    return state


@router.patch(
    "/sponsors/{code}",
    summary="Change a sponsor: active or not, its review threshold (null: none)",
    responses=admin_problem_responses(
        *CHANGE, *BODY_PROBLEMS, "NOT_FOUND", "OPERATOR_ACTION_REFUSED"
    ),
)
async def sponsor_change(request: Request, code: SponsorCode) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    checked(code, limits.sponsor_code_pattern, "code")
    obj = await read_json_object(request, BODY_BYTES_MAX)
    body = validate_body(SponsorChange, obj, context={}, rules={}, codes={})
    clear = "reviewThresholdMiles" in obj and obj["reviewThresholdMiles"] is None
    actor, now = boundary.actor(request, caller), clock.utc_now()

    def work(session: Session) -> dict[str, Any]:
        before = _sponsor(sponsors.sponsor_to_change(session, code))
        after = _sponsor(
            sponsors.set_sponsor(
                session,
                code,
                review_threshold_miles=body.reviewThresholdMiles,
                clear_review_threshold=clear,
                active=body.active,
            )
        )
        operators.audit(
            session, actor, "sponsor.change", "sponsor", code, now, before=before, after=after
        )
        return after

    return json_response(200, await change(request, work))


# --------------------------------------------------------------------------- locations


class NewLocation(Body):
    code: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=20)]


def _location(location: Location) -> dict[str, Any]:
    return {"sponsorCode": location.sponsor_code, "code": location.code}


@router.get(
    "/sponsors/{code}/locations",
    summary="A sponsor's registered locations, by code",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS, "NOT_FOUND"),
)
async def location_list(
    request: Request,
    code: SponsorCode,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    checked(code, limits.sponsor_code_pattern, "code")
    after = pages.decode(cursor, 1)
    rows = await read(
        request,
        lambda s: [
            _location(r)
            for r in sponsors.list_locations(s, code, after[0] if after else None, limit + 1)
        ],
    )
    return json_response(200, pages.page(rows, limit, lambda r: [r["code"]], dict))


@router.post(
    "/sponsors/{code}/locations",
    status_code=201,
    summary="Register a location of a sponsor",
    responses=admin_problem_responses(
        *CHANGE, *BODY_PROBLEMS, "NOT_FOUND", "ALREADY_EXISTS", "OPERATOR_ACTION_REFUSED"
    ),
)
async def location_add(request: Request, code: SponsorCode) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    checked(code, limits.sponsor_code_pattern, "code")
    body = await boundary.body(request, NewLocation, {"code": "must be a string"})
    actor, now = boundary.actor(request, caller), clock.utc_now()
    return json_response(
        201, await change(request, lambda s: add_location(s, actor, now, code, body.code))
    )


def add_location(
    session: Session, actor: Actor, now: datetime, sponsor: str, code: str
) -> dict[str, Any]:
    """A new location of `sponsor`, audited: the admin API's and the console's."""
    state = _location(sponsors.add_location(session, sponsor, code, now))
    operators.audit(
        session, actor, "location.add", "location", f"{sponsor}/{code}", now, after=state
    )
    return state


# --------------------------------------------------------------------------- offers


def _iso_date(value: object) -> object:
    """A date written YYYY-MM-DD, nothing else (no timestamps, no other forms)."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be a date, YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class OfferBody(Body):
    description: Annotated[
        str, StringConstraints(strict=True, max_length=limits.offer_description_chars_max)
    ] = ""
    rule: dict[str, Any] | None = None
    validFrom: IsoDate | None = None  # noqa: N815
    validTo: IsoDate | None = None  # noqa: N815
    locations: list[str] | None = None
    offerId: (  # noqa: N815
        Annotated[
            str, StringConstraints(strict=True, min_length=1, max_length=limits.offer_id_chars_max)
        ]
        | None
    ) = None


OFFER_RULES = {
    "description": f"a string of at most {limits.offer_description_chars_max} characters",
    "rule": "an offer rule object (docs/offers.md)",
    "validFrom": "a date, YYYY-MM-DD",
    "validTo": "a date, YYYY-MM-DD",
    "locations": "a list of location codes",
    "offerId": f"a string of 1 to {limits.offer_id_chars_max} characters",
}


def _offer(view: OfferView) -> dict[str, Any]:
    return view.as_dict()


@router.get(
    "/offers",
    summary="Offers, by sponsor and code",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS),
)
async def offer_list(
    request: Request,
    sponsor: SponsorFilter = None,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    sponsor = _sponsor_filter(sponsor)
    after = pages.decode(cursor, 2)
    rows = await read(
        request,
        lambda s: offers.offer_page(s, sponsor, (after[0], after[1]) if after else None, limit + 1),
    )
    return json_response(200, pages.page(rows, limit, lambda r: [r.sponsor_code, r.code], _offer))


@router.put(
    "/sponsors/{code}/offers/{offer}",
    summary="Add or replace an offer (as `offer import` does, one offer)",
    description="201 when the offer is new, 200 when it replaced one; either way it is active.",
    responses=admin_problem_responses(
        *CHANGE, *BODY_PROBLEMS, "NOT_FOUND", "OPERATOR_ACTION_REFUSED"
    ),
)
async def offer_put(request: Request, code: SponsorCode, offer: OfferCode) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    checked(code, limits.sponsor_code_pattern, "code")
    checked(offer, limits.offer_code_pattern, "offer")
    body = await boundary.body(request, OfferBody, OFFER_RULES)
    actor, now = boundary.actor(request, caller), clock.utc_now()

    created, state = await change(request, lambda s: put_offer(s, actor, now, code, offer, body))
    return json_response(201 if created else 200, state)


def put_offer(
    session: Session, actor: Actor, now: datetime, sponsor: str, code: str, body: OfferBody
) -> tuple[bool, dict[str, Any]]:
    """Add or replace an offer (active), audited; True when it is new. The admin API's and the
    console's."""
    before = offers.offer(session, sponsor, code)
    created = offers.put_offer(
        session,
        sponsor,
        code,
        description=body.description,
        rule=body.rule,
        valid_from=body.validFrom,
        valid_to=body.validTo,
        locations=body.locations,
        offer_id=body.offerId,
        now=now,
        replace=True,
    )
    session.flush()
    after = offers.offer(session, sponsor, code)
    state = None if after is None else _offer(after)
    operators.audit(
        session,
        actor,
        "offer.put",
        "offer",
        f"{sponsor}/{code}",
        now,
        before=None if before is None else _offer(before),
        after=state,
    )
    return created, state or {}


@router.post(
    "/sponsors/{code}/offers/{offer}/disable",
    summary="Disable an active offer (lines naming it are refused from then on)",
    responses=admin_problem_responses(*CHANGE, "FIELD_INVALID", "NOT_FOUND"),
)
async def offer_disable(request: Request, code: SponsorCode, offer: OfferCode) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    checked(code, limits.sponsor_code_pattern, "code")
    checked(offer, limits.offer_code_pattern, "offer")
    actor, now = boundary.actor(request, caller), clock.utc_now()

    return json_response(
        200, await change(request, lambda s: disable_offer(s, actor, now, code, offer))
    )


def disable_offer(
    session: Session, actor: Actor, now: datetime, sponsor: str, code: str
) -> dict[str, Any]:
    """Disable an active offer, audited: the admin API's and the console's."""
    offers.disable_offer(session, sponsor, code)
    session.flush()
    after = offers.offer(session, sponsor, code)
    state = {} if after is None else _offer(after)
    operators.audit(
        session,
        actor,
        "offer.disable",
        "offer",
        f"{sponsor}/{code}",
        now,
        before={"active": True},
        after={"active": False},
    )
    return state


# --------------------------------------------------------------------------- webhooks


class NewWebhook(Body):
    sponsorCode: Annotated[  # noqa: N815
        str, StringConstraints(strict=True, min_length=1, max_length=20)
    ]
    url: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=2000)]


def _webhook(view: WebhookView, request: Request) -> dict[str, Any]:
    return {
        "id": view.id,
        "sponsorCode": view.sponsor_code,
        "url": view.url,
        "active": view.active,
        "createdAt": _at(view.created_at, request),
    }


def _delivery(item: DeliveryPageItem, request: Request) -> dict[str, Any]:
    return {
        "id": item.id,
        "webhookId": item.webhook_id,
        "transactionId": item.transaction_id,
        "status": item.status,
        "attempts": item.attempts,
        "nextAttemptAt": _at(item.next_attempt_at, request),
        "lastError": item.last_error,
        "createdAt": _at(item.created_at, request),
    }


@router.get(
    "/webhooks",
    summary="Webhooks, oldest first (their secrets are never shown again)",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS),
)
async def webhook_list(
    request: Request,
    sponsor: SponsorFilter = None,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    sponsor = _sponsor_filter(sponsor)
    after = pages.decode_as(cursor, (datetime, str))
    key = None if after is None else (after[0], after[1])
    rows = await read(request, lambda s: webhooks.webhook_page(s, sponsor, key, limit + 1))
    return json_response(
        200,
        pages.page(
            rows,
            limit,
            lambda r: [r.created_at.isoformat(), r.id],
            lambda r: _webhook(r, request),
        ),
    )


@router.post(
    "/webhooks",
    status_code=201,
    summary="Add a webhook: its signing secret is in this answer only",
    responses=admin_problem_responses(*CHANGE, *BODY_PROBLEMS, "OPERATOR_ACTION_REFUSED"),
)
async def webhook_add(request: Request) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    body = await boundary.body(
        request, NewWebhook, {"sponsorCode": "a sponsor's code", "url": "a URL"}
    )
    ctx = request.app.state.ctx
    actor, now = boundary.actor(request, caller), clock.utc_now()
    box = ctx.keys.box  # the secret is sealed under the servers' key

    def work(session: Session) -> tuple[str, str]:
        webhook_id, secret = webhooks.add_webhook(
            session,
            body.sponsorCode,
            body.url,
            now,
            box,
            allow_private_targets=ctx.settings.webhook_allow_private_targets,
        )
        operators.audit(
            session,
            actor,
            "webhook.add",
            "webhook",
            webhook_id,
            now,
            after={"sponsorCode": body.sponsorCode, "url": body.url, "active": True},
        )
        return webhook_id, secret

    webhook_id, secret = await change(request, work)
    return json_response(
        201,
        {
            "id": webhook_id,
            "sponsorCode": body.sponsorCode,
            "url": body.url,
            "active": True,
            "createdAt": _at(now, request),
            "secret": secret,
        },
    )


@router.delete(
    "/webhooks/{webhookId}",
    summary="Remove a webhook: no new events; its pending deliveries are marked failed",
    responses=admin_problem_responses(*CHANGE, "FIELD_INVALID", "NOT_FOUND"),
)
async def webhook_remove(request: Request, webhookId: str) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    checked(webhookId, ID_PATTERN, "webhookId")
    actor, now = boundary.actor(request, caller), clock.utc_now()

    def work(session: Session) -> None:
        webhooks.remove_webhook(session, webhookId)
        operators.audit(
            session,
            actor,
            "webhook.remove",
            "webhook",
            webhookId,
            now,
            before={"active": True},
            after={"active": False},
        )

    await change(request, work)
    return json_response(200, {"id": webhookId, "active": False})


@router.get(
    "/webhook-deliveries",
    summary="Webhook deliveries, newest first",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS),
)
async def delivery_list(
    request: Request,
    status: Annotated[DeliveryStatus | None, Query(description="Only these.")] = None,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    before = pages.decode_as(cursor, (datetime, str))
    key = None if before is None else (before[0], before[1])
    rows = await read(request, lambda s: webhooks.delivery_page(s, status, key, limit + 1))
    return json_response(
        200,
        pages.page(
            rows,
            limit,
            lambda r: [r.created_at.isoformat(), r.id],
            lambda r: _delivery(r, request),
        ),
    )


@router.post(
    "/webhook-deliveries/{deliveryId}/retry",
    summary="Send a failed delivery again (its attempts counted afresh)",
    responses=admin_problem_responses(
        *CHANGE, "FIELD_INVALID", "NOT_FOUND", "OPERATOR_ACTION_REFUSED"
    ),
)
async def delivery_retry(request: Request, deliveryId: str) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    checked(deliveryId, ID_PATTERN, "deliveryId")
    actor, now = boundary.actor(request, caller), clock.utc_now()

    def work(session: Session) -> None:
        status, attempts = webhooks.retry_delivery(session, deliveryId, now)
        operators.audit(
            session,
            actor,
            "delivery.retry",
            "webhook_delivery",
            deliveryId,
            now,
            before={"status": status, "attempts": attempts},
            after={"status": DeliveryStatus.PENDING, "attempts": 0},
        )

    await change(request, work)
    return json_response(
        200,
        {"id": deliveryId, "status": DeliveryStatus.PENDING, "nextAttemptAt": _at(now, request)},
    )
