"""The Partners page: partner API clients per sponsor, sponsors and their locations. Any role
sees them; an admin creates a client (its secret shown once), rotates its secret (the old one
signs in for the grace period), revokes it (after a confirm step naming it), adds sponsors and
locations. Every change goes through the admin API's own functions (`admin.partners`,
`admin.catalogue`), audited the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin import catalogue
from rewardmiles.admin import partners as admin_partners
from rewardmiles.admin.partners import CREATE_RULES, CreatePartnerRequest
from rewardmiles.auth import service as clients
from rewardmiles.console import web
from rewardmiles.console.web import PREFIX, PageError
from rewardmiles.errors import OperatorError, ProblemError
from rewardmiles.http.validation import validate_body
from rewardmiles.operators.service import Caller
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import OperatorRole

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

PAGE = PREFIX + "/partners"
LIST_MAX = 500  # sponsors and clients shown on the page
SPONSOR_RULES = {"code": "must be a string", "name": "1–200 characters"}


async def _page(
    request: Request,
    caller: Any,
    sponsor: str | None,
    *,
    errors: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    status: int = 200,
) -> Response:
    ctx = request.app.state.ctx
    now = clock.utc_now()
    zone = ctx.settings.program_time_zone

    def load(session: Any) -> dict[str, Any]:
        if sponsor is not None:
            web.known_sponsor(session, sponsor)
        every = [sponsors.sponsor_state(s) for s in sponsors.list_sponsors(session, None, LIST_MAX)]
        rows = clients.list_clients(session, None, LIST_MAX, sponsor)
        shown = [admin_partners.partner_json(r, now, zone) for r in rows]
        locations = (
            [loc.code for loc in sponsors.list_locations(session, sponsor, None, LIST_MAX)]
            if sponsor is not None
            else []
        )
        return {"sponsors": every, "clients": shown, "locations": locations}

    data = await web.read(request, load)
    return web.render(
        request,
        "partners.html",
        {
            **data,
            "sponsor": sponsor,
            "errors": dict(errors or {}),
            "values": dict(values or {}),
            "is_admin": caller.may(OperatorRole.ADMIN),
            "grace_hours": ctx.settings.partner_secret_grace_seconds / 3600,
        },
        caller=caller,
        status=status,
    )


def _back(caller: Caller, sponsor: str | None, done: str) -> str:
    query = {"sponsor": sponsor} if sponsor else {}
    return PAGE + "?" + urlencode({**query, **web.done_query(caller, done)})


class RefusedError(Exception):
    """A service's refusal kept whole (its field too) out of `web.change`, whose unit of work
    it rolls back: the form is shown again with the message beside the field."""

    def __init__(self, exc: OperatorError) -> None:
        super().__init__(str(exc))
        self.error = exc
        self.message = str(exc)
        self.field = exc.field
        self.status = web.refused(exc).status  # 409 exists, 404 missing, 422 otherwise


def refusing(work: Callable[[Any], T]) -> Callable[[Any], T]:
    """`work`, its `OperatorError` raised as `RefusedError`."""

    def run(session: Any) -> T:
        try:
            return work(session)
        except OperatorError as exc:
            raise RefusedError(exc) from exc

    return run


def _field_errors(exc: ProblemError, default: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for error in exc.errors:
        key = (error.field or default).split(".")[0].split("[")[0]
        out.setdefault(key, error.message)
    return out or {default: exc.detail}


@router.get(PAGE)
async def partners_page(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    return await _page(request, caller, web.sponsor_of(request.query_params.get("sponsor")))


@router.post(PAGE + "/clients")
async def create_client(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    fields = await web.form(request)
    sponsor = web.sponsor_of(web.one(fields, "back", required=False))
    name = web.one(fields, "name", required=False)
    chosen = [code.strip() for code in fields.get("sponsors", []) if code.strip()]
    values = {"name": name, "sponsors": chosen}
    try:
        body = validate_body(
            CreatePartnerRequest,
            {"sponsors": chosen, "name": name or None},
            context={},
            rules=CREATE_RULES,
            codes={},
        )
        made, out = await admin_partners.create(
            request, list(body.sponsors), body.name, web.actor(request, caller)
        )
    except ProblemError as exc:
        errors = _field_errors(exc, "sponsors")
        return await _page(request, caller, sponsor, errors=errors, values=values, status=400)
    return web.render(
        request,
        "partners_secret.html",
        {"client": out, "secret": made.client_secret, "rotated_until": None, "sponsor": sponsor},
        caller=caller,
        status=201,
    )


def _client_id(raw: str) -> str:
    if not 1 <= len(raw) <= 64:
        raise PageError(404, "Not found", f"No partner client {raw[:64]}.", "NOT_FOUND")
    return raw


@router.post(PAGE + "/clients/{client_id}/rotate")
async def rotate_client(request: Request, client_id: str) -> Response:
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    client_id = _client_id(client_id)
    fields = await web.form(request)
    sponsor = web.sponsor_of(web.one(fields, "back", required=False))
    rotated = await admin_partners.rotate(request, client_id, web.actor(request, caller), None)
    row = await web.read(request, lambda s: clients.client(s, client_id))
    assert row is not None
    ctx = request.app.state.ctx
    out = admin_partners.partner_json(row, clock.utc_now(), ctx.settings.program_time_zone)
    until = clock.program_timestamp(rotated.previous_secret_until, ctx.settings.program_time_zone)
    return web.render(
        request,
        "partners_secret.html",
        {
            "client": out,
            "secret": rotated.client_secret,
            "rotated_until": until,
            "sponsor": sponsor,
        },
        caller=caller,
    )


@router.post(PAGE + "/clients/{client_id}/revoke")
async def revoke_client(request: Request, client_id: str) -> Response:
    """First post: a confirm page naming the client. With `confirm=1`: revoked."""
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    client_id = _client_id(client_id)
    fields = await web.form(request)
    sponsor = web.sponsor_of(web.one(fields, "back", required=False))
    reason = web.one(fields, "reason", required=False) or None
    if reason is not None and len(reason) > limits.partner_client_name_chars_max:
        raise PageError(
            400,
            "Invalid form",
            f"The reason may be at most {limits.partner_client_name_chars_max} characters.",
            "FIELD_INVALID",
        )
    if web.one(fields, "confirm", required=False) != "1":
        row = await web.read(request, lambda s: clients.client(s, client_id))
        if row is None:
            raise PageError(404, "Not found", f"No partner client {client_id}.", "NOT_FOUND")
        ctx = request.app.state.ctx
        out = admin_partners.partner_json(row, clock.utc_now(), ctx.settings.program_time_zone)
        return web.render(
            request,
            "partners_revoke.html",
            {"client": out, "sponsor": sponsor, "reason": reason or ""},
            caller=caller,
        )
    out = await admin_partners.revoke(request, client_id, web.actor(request, caller), reason)
    label = f"{out['name']} ({client_id})" if out["name"] else client_id
    return web.redirect(_back(caller, sponsor, f"Partner client {label} revoked."))


@router.post(PAGE + "/sponsors")
async def add_sponsor(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    fields = await web.form(request)
    code = web.one(fields, "code", required=False)
    name = web.one(fields, "name", required=False)
    values = {"sponsor_code": code, "sponsor_name": name}
    try:
        body = validate_body(
            catalogue.NewSponsor,
            {"code": code, "name": name},
            context={},
            rules=SPONSOR_RULES,
            codes={},
        )
    except ProblemError as exc:
        errors = {f"sponsor_{k}": v for k, v in _field_errors(exc, "code").items()}
        return await _page(request, caller, None, errors=errors, values=values, status=400)
    actor, now = web.actor(request, caller), clock.utc_now()
    try:
        await web.change(
            request, refusing(lambda s: catalogue.add_sponsor(s, actor, now, body.code, body.name))
        )
    except RefusedError as exc:
        field = "sponsor_name" if exc.field == "name" else "sponsor_code"
        return await _page(
            request, caller, None, errors={field: exc.message}, values=values, status=exc.status
        )
    return web.redirect(_back(caller, body.code, f"Sponsor {body.code} added."))


@router.post(PAGE + "/sponsors/{code}/locations")
async def add_location(request: Request, code: str) -> Response:
    caller = await web.signed_in(request, OperatorRole.ADMIN)
    sponsor = web.sponsor_of(code)
    assert sponsor is not None
    fields = await web.form(request)
    location = web.one(fields, "location", required=False)
    values = {"location": location}
    if not location:
        return await _page(
            request,
            caller,
            sponsor,
            errors={"location": "Enter the location's code."},
            values=values,
            status=400,
        )
    actor, now = web.actor(request, caller), clock.utc_now()
    try:
        await web.change(
            request, refusing(lambda s: catalogue.add_location(s, actor, now, sponsor, location))
        )
    except RefusedError as exc:
        if exc.status == 404:  # the sponsor is gone
            raise PageError(404, "Not found", exc.message, "NOT_FOUND") from None
        return await _page(
            request,
            caller,
            sponsor,
            errors={"location": exc.message},
            values=values,
            status=exc.status,
        )
    return web.redirect(_back(caller, sponsor, f"Location {location} added to {sponsor}."))
