"""`/admin/v1/partners`: partners' API clients. Any role lists them; only an admin creates one
(its secret shown once, in the 201 answer), rotates its secret (the old one keeps signing in for
`REWARDMILES_PARTNER_SECRET_GRACE_SECONDS`) or revokes it (final: its secrets stop at once, its
tokens are refused by every API process within seconds, `auth.revocation`). Each change is
audited with the request id; no secret is ever in the audit log, the logs or the list."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.auth import service
from rewardmiles.auth.repository import ClientRow
from rewardmiles.auth.service import (
    ClientRevokedError,
    NewClient,
    NewSecret,
    RotatedClient,
    UnknownClientError,
    UnknownSponsorError,
)
from rewardmiles.errors import ProblemError
from rewardmiles.http import pages
from rewardmiles.http.bodies import read_body, read_json_object
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.http.validation import validate_body
from rewardmiles.operators.access import auth_problems, auth_problems_unsafe, require
from rewardmiles.operators.service import Actor
from rewardmiles.vocabulary import OperatorRole, PartnerClientStatus

router = APIRouter(prefix="/admin/v1", tags=["admin"])

BODY_BYTES_MAX = 16 * 1024
SponsorCode = Annotated[str, StringConstraints(strict=True, pattern=limits.sponsor_code_pattern)]
Text = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=limits.partner_client_name_chars_max),
]


class CreatePartnerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sponsors: list[SponsorCode] = Field(min_length=1, max_length=limits.partner_client_sponsors_max)
    name: Text | None = None


class ChangeRequest(BaseModel):
    """The optional body of rotate and revoke: why, for the audit log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Text | None = None


CREATE_RULES = {
    "sponsors": f"must be 1 to {limits.partner_client_sponsors_max} sponsor codes",
    "name": f"must be a string of 1 to {limits.partner_client_name_chars_max} characters",
}
CHANGE_RULES = {
    "reason": f"must be a string of 1 to {limits.partner_client_name_chars_max} characters",
}


class PartnerOut(BaseModel):
    clientId: str  # noqa: N815
    name: str | None
    sponsors: list[str]
    status: PartnerClientStatus
    createdAt: str  # noqa: N815
    lastTokenIssuedAt: str | None  # noqa: N815
    rotatedAt: str | None  # noqa: N815
    revokedAt: str | None  # noqa: N815
    previousSecretInGrace: bool  # noqa: N815
    previousSecretValidUntil: str | None  # noqa: N815


class PartnerPage(BaseModel):
    items: list[PartnerOut]
    nextCursor: str | None  # noqa: N815


class CreatedPartner(PartnerOut):
    clientSecret: str  # noqa: N815  shown once, here


class RotatedPartner(BaseModel):
    clientId: str  # noqa: N815
    clientSecret: str  # noqa: N815  shown once, here
    previousSecretValidUntil: str  # noqa: N815


def _at(moment: datetime | None, zone: str) -> str | None:
    return None if moment is None else clock.program_timestamp(moment, zone)


def partner_json(row: ClientRow, now: datetime, zone: str) -> dict[str, Any]:
    grace = service.previous_secret_in_grace(row, now)
    return {
        "clientId": row.client_id,
        "name": row.name,
        "sponsors": row.sponsor_codes,
        "status": service.status_of(row),
        "createdAt": _at(row.created_at, zone),
        "lastTokenIssuedAt": _at(row.last_token_at, zone),
        "rotatedAt": _at(row.rotated_at, zone),
        "revokedAt": _at(row.revoked_at, zone),
        "previousSecretInGrace": grace,
        "previousSecretValidUntil": _at(row.previous_secret_until, zone) if grace else None,
    }


@router.get(
    "/partners",
    summary="Partner API clients, a page at a time (never their secrets)",
    description="Ordered by client id. Any role.",
    response_model=PartnerPage,
    responses=admin_problem_responses(*auth_problems(OperatorRole.VIEWER), *pages.PAGE_PROBLEMS),
)
async def list_partners(
    request: Request,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    after = pages.decode(cursor, 1)
    ctx = request.app.state.ctx

    def read() -> list[ClientRow]:
        with ctx.db.reader() as session:
            return service.list_clients(session, after[0] if after else None, limit + 1)

    rows = await run_sync(ctx.limiter, read)
    now = clock.utc_now()
    zone = ctx.settings.program_time_zone
    return json_response(
        200,
        pages.page(rows, limit, lambda r: [r.client_id], lambda r: partner_json(r, now, zone)),
    )


def _actor(request: Request, caller_name: str) -> Actor:
    return Actor(caller_name, request_id_of(request) or None)


@router.post(
    "/partners",
    status_code=201,
    summary="Create a partner API client; its secret is in this answer only",
    description="Admin role. The secret is stored only as a slow hash and cannot be shown again.",
    response_model=CreatedPartner,
    responses=admin_problem_responses(
        *auth_problems_unsafe(OperatorRole.ADMIN),
        "VALIDATION_FAILED",
        "FIELD_REQUIRED",
        "FIELD_INVALID",
        "FIELD_UNKNOWN",
        "MALFORMED_JSON",
        "UNSUPPORTED_MEDIA_TYPE",
        "PAYLOAD_TOO_LARGE",
    ),
)
async def create_partner(request: Request) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    obj = await read_json_object(request, BODY_BYTES_MAX)
    body = validate_body(CreatePartnerRequest, obj, context={}, rules=CREATE_RULES, codes={})
    made, out = await create(request, list(body.sponsors), body.name, _actor(request, caller.actor))
    return json_response(201, {**out, "clientSecret": made.client_secret})


async def create(
    request: Request, sponsors: list[str], name: str | None, actor: Actor
) -> tuple[NewClient, dict[str, Any]]:
    """A new client (its secret in the `NewClient`, never again) and its state as listed; an
    unknown sponsor is 400 `FIELD_INVALID`. The admin API's and the console's."""
    ctx = request.app.state.ctx
    secret = await run_sync(ctx.cpu_limiter, _new_secret, ctx.settings.secret_hash_cost)
    now = clock.utc_now()

    def write() -> tuple[NewClient, ClientRow | None]:
        with ctx.db.unit_of_work() as session:
            made = service.create_client(
                session,
                sponsors,
                now,
                secret_hash_cost=ctx.settings.secret_hash_cost,
                name=name,
                secret=secret,
                actor=actor,
            )
            return made, service.client(session, made.client_id)

    try:
        made, row = await run_sync(ctx.limiter, write)
    except UnknownSponsorError as exc:
        raise ProblemError("FIELD_INVALID", str(exc), field="sponsors") from exc
    assert row is not None
    return made, partner_json(row, now, ctx.settings.program_time_zone)


def _new_secret(cost: int) -> NewSecret:
    return service.new_secret(secret_hash_cost=cost)


async def _change_body(request: Request) -> ChangeRequest:
    """The optional body of a change: none at all, or `{"reason": …}`."""
    if not request.headers.get("content-type"):
        too_large = f"The body exceeds {BODY_BYTES_MAX} bytes."
        if await read_body(request, BODY_BYTES_MAX, too_large):
            raise ProblemError(
                "UNSUPPORTED_MEDIA_TYPE", "Send the body as Content-Type: application/json."
            )
        return ChangeRequest()
    obj = await read_json_object(request, BODY_BYTES_MAX)
    return validate_body(ChangeRequest, obj, context={}, rules=CHANGE_RULES, codes={})


CLIENT_ID = Path(description="The partner client's id (`rmc_…`).", max_length=64)
CHANGE_PROBLEMS = (
    *auth_problems_unsafe(OperatorRole.ADMIN),
    "NOT_FOUND",
    "FIELD_INVALID",
    "FIELD_UNKNOWN",
    "MALFORMED_JSON",
    "UNSUPPORTED_MEDIA_TYPE",
)


@router.post(
    "/partners/{clientId}/rotate",
    summary="Give a partner client a new secret; the old one keeps working for a grace period",
    description="Admin role. The new secret is in this answer only. The old secret still signs "
    "in at `/oauth/token` until `previousSecretValidUntil` (REWARDMILES_PARTNER_SECRET_GRACE_"
    "SECONDS, 24 h by default), then stops; tokens already issued stay valid until they expire. "
    'Optional body: `{"reason": …}`, kept in the audit log.',
    response_model=RotatedPartner,
    responses=admin_problem_responses(*CHANGE_PROBLEMS, "PARTNER_CLIENT_REVOKED"),
)
async def rotate_partner(request: Request, clientId: str = CLIENT_ID) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    body = await _change_body(request)
    rotated = await rotate(request, clientId, _actor(request, caller.actor), body.reason)
    ctx = request.app.state.ctx
    until = clock.program_timestamp(rotated.previous_secret_until, ctx.settings.program_time_zone)
    return json_response(
        200,
        {
            "clientId": rotated.client_id,
            "clientSecret": rotated.client_secret,
            "previousSecretValidUntil": until,
        },
    )


async def rotate(
    request: Request, client_id: str, actor: Actor, reason: str | None
) -> RotatedClient:
    """A new secret for the client; the old one signs in until the grace ends. 404 for an
    unknown client, 409 `PARTNER_CLIENT_REVOKED` for a revoked one."""
    ctx = request.app.state.ctx
    secret = await run_sync(ctx.cpu_limiter, _new_secret, ctx.settings.secret_hash_cost)
    now = clock.utc_now()
    grace = timedelta(seconds=ctx.settings.partner_secret_grace_seconds)

    def write() -> RotatedClient:
        with ctx.db.unit_of_work() as session:
            return service.rotate_client(
                session, client_id, secret, now, grace, actor, reason=reason
            )

    try:
        return await run_sync(ctx.limiter, write)
    except UnknownClientError as exc:
        raise ProblemError("NOT_FOUND", f"No partner client {client_id}.") from exc
    except ClientRevokedError as exc:
        raise ProblemError(
            "PARTNER_CLIENT_REVOKED",
            f"Partner client {client_id} is revoked: create a new client instead.",
        ) from exc


@router.post(
    "/partners/{clientId}/revoke",
    summary="Revoke a partner client: its secrets and tokens stop working everywhere",
    description="Admin role. Final. Its secrets stop signing in at `/oauth/token` at once; its "
    "tokens already issued are refused (401 `TOKEN_REVOKED`) by every API process within "
    "seconds (REWARDMILES_REVOCATION_REFRESH_SECONDS, 2 s by default, plus one read). Revoking "
    'a revoked client answers it as it is. Optional body: `{"reason": …}`, kept in the audit log.',
    response_model=PartnerOut,
    responses=admin_problem_responses(*CHANGE_PROBLEMS),
)
async def revoke_partner(request: Request, clientId: str = CLIENT_ID) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    body = await _change_body(request)
    return json_response(
        200, await revoke(request, clientId, _actor(request, caller.actor), body.reason)
    )


async def revoke(
    request: Request, client_id: str, actor: Actor, reason: str | None
) -> dict[str, Any]:
    """Revoke the client (final) and refuse its tokens in this process at once; its state as
    listed. 404 for an unknown client."""
    ctx = request.app.state.ctx
    now = clock.utc_now()

    def write() -> ClientRow:
        with ctx.db.unit_of_work() as session:
            return service.revoke_client(session, client_id, now, actor, reason=reason)

    try:
        row = await run_sync(ctx.limiter, write)
    except UnknownClientError as exc:
        raise ProblemError("NOT_FOUND", f"No partner client {client_id}.") from exc
    ctx.clients.revoked_here(row.client_id)  # this process refuses its tokens from now on
    return partner_json(row, now, ctx.settings.program_time_zone)
