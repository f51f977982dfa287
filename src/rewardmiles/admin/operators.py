"""`/admin/v1/operators` and `/admin/v1/admin-tokens`: the support desk's own accounts and the
admin API's tokens, managed over the API as with `rewardmiles operator …`. Any role lists; only
an admin adds, disables, enables, changes roles, resets passwords and creates or revokes tokens.
A generated password and a token are shown once, in the answer that made them. Every change is
audited by the operators service (with the request id). The last active admin can be neither
disabled nor demoted."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import Field, StringConstraints
from sqlalchemy.orm import Session
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin import boundary
from rewardmiles.admin.boundary import BODY_PROBLEMS, ID_PATTERN, REFUSALS, Body, change, checked
from rewardmiles.http import pages
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.operators import passwords
from rewardmiles.operators import service as operators
from rewardmiles.operators.access import auth_problems, auth_problems_unsafe, require
from rewardmiles.operators.service import NewToken, OperatorView, TokenView
from rewardmiles.vocabulary import OperatorRole, OperatorStatus

router = APIRouter(prefix="/admin/v1", tags=["admin"])

READ = auth_problems(OperatorRole.VIEWER)
CHANGE = auth_problems_unsafe(OperatorRole.ADMIN)
OperatorId = Annotated[
    str, Path(description="The operator's id.", json_schema_extra={"pattern": ID_PATTERN})
]
TokenId = Annotated[
    str, Path(description="The admin token's id.", json_schema_extra={"pattern": ID_PATTERN})
]
Password = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=limits.operator_password_chars_min,
        max_length=limits.operator_password_chars_max,
    ),
]
PASSWORD_RULE = (
    f"a string of {limits.operator_password_chars_min} to "
    f"{limits.operator_password_chars_max} characters"
)


def _at(moment: datetime | None, request: Request) -> str | None:
    zone = request.app.state.ctx.settings.program_time_zone
    return None if moment is None else clock.program_timestamp(moment, zone)


def _operator(view: OperatorView, request: Request) -> dict[str, Any]:
    return {
        "id": view.id,
        "email": view.email,
        "displayName": view.display_name,
        "role": view.role,
        "status": view.status,
        "createdAt": _at(view.created_at, request),
        "lastSignInAt": _at(view.last_sign_in_at, request),
    }


def _token(view: TokenView, request: Request, now: datetime) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "role": view.role,
        "state": view.state(now),
        "createdBy": view.created_by,
        "createdAt": _at(view.created_at, request),
        "expiresAt": _at(view.expires_at, request),
        "revokedAt": _at(view.revoked_at, request),
        "lastUsedAt": _at(view.last_used_at, request),
    }


async def _password_hash(request: Request, chosen: str | None) -> tuple[str, str | None]:
    """The hash of the password to set, and the password when it was generated (shown once).
    argon2id runs in a CPU thread, before the unit of work."""
    password = chosen if chosen is not None else passwords.generate_password()
    try:
        passwords.check_new_password(password)
    except passwords.PasswordError as exc:
        raise boundary.refused(passwords.PasswordError(str(exc), field="password")) from None
    ctx = request.app.state.ctx
    cost = passwords.HashCost.of(ctx.settings)
    hashed = await run_sync(ctx.cpu_limiter, passwords.hash_password, password, cost)
    return hashed, None if chosen is not None else password


# --------------------------------------------------------------------------- operators


class NewOperator(Body):
    email: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=limits.operator_email_chars_max),
    ]
    role: OperatorRole = Field(strict=False)  # its value, as text
    displayName: (  # noqa: N815
        Annotated[
            str,
            StringConstraints(
                strict=True, min_length=1, max_length=limits.operator_display_name_chars_max
            ),
        ]
        | None
    ) = None
    password: Password | None = None  # absent: a one-time password is generated and answered


class RoleChange(Body):
    role: OperatorRole = Field(strict=False)  # its value, as text


class PasswordReset(Body):
    password: Password | None = None


OPERATOR_RULES = {
    "email": f"an e-mail address of at most {limits.operator_email_chars_max} characters",
    "role": "viewer, agent or admin",
    "displayName": f"1 to {limits.operator_display_name_chars_max} characters",
    "password": PASSWORD_RULE,
}


@router.get(
    "/operators",
    summary="Operators of the support desk, by id (never a password or its hash)",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS),
)
async def operator_list(
    request: Request,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    after = pages.decode(cursor, 1)
    rows = await boundary.read(
        request, lambda s: operators.operator_page(s, after[0] if after else None, limit + 1)
    )
    return json_response(
        200, pages.page(rows, limit, lambda r: [r.id], lambda r: _operator(r, request))
    )


@router.post(
    "/operators",
    status_code=201,
    summary="Add an operator; without `password`, a one-time password is answered, once",
    responses=admin_problem_responses(*CHANGE, *BODY_PROBLEMS, *REFUSALS),
)
async def operator_add(request: Request) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    body = await boundary.body(request, NewOperator, OPERATOR_RULES)
    password_hash, generated = await _password_hash(request, body.password)
    actor, now = boundary.actor(request, caller), clock.utc_now()
    view = await change(
        request,
        lambda s: operators.add_operator(
            s, body.email, body.role, password_hash, now, actor, display_name=body.displayName
        ),
    )
    out = _operator(view, request)
    if generated is not None:
        out["oneTimePassword"] = generated
    return json_response(201, out)


def _by_id(session: Session, operator_id: str) -> str:
    return operators.operator_email(session, operator_id)


async def _set_status(request: Request, operator_id: str, status: OperatorStatus) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    checked(operator_id, ID_PATTERN, "operatorId")
    actor, now = boundary.actor(request, caller), clock.utc_now()

    def work(session: Session) -> tuple[OperatorView, int]:
        email = _by_id(session, operator_id)
        changed = operators.set_status(session, email, status, now, actor)
        if changed is None:  # already so: nothing to audit
            return next(v for v in operators.list_operators(session) if v.id == operator_id), 0
        return changed

    view, ended = await change(request, work)
    return json_response(200, {**_operator(view, request), "sessionsEnded": ended})


@router.post(
    "/operators/{operatorId}/disable",
    summary="Disable an operator: no more sign-ins, and every session of theirs ends at once",
    responses=admin_problem_responses(*CHANGE, "FIELD_INVALID", *REFUSALS),
)
async def operator_disable(request: Request, operatorId: OperatorId) -> Response:  # noqa: N803
    return await _set_status(request, operatorId, OperatorStatus.DISABLED)


@router.post(
    "/operators/{operatorId}/enable",
    summary="Allow a disabled operator to sign in again",
    responses=admin_problem_responses(*CHANGE, "FIELD_INVALID", *REFUSALS),
)
async def operator_enable(request: Request, operatorId: OperatorId) -> Response:  # noqa: N803
    return await _set_status(request, operatorId, OperatorStatus.ACTIVE)


@router.post(
    "/operators/{operatorId}/role",
    summary="Change an operator's role (from their next request on, in open sessions too)",
    responses=admin_problem_responses(*CHANGE, *BODY_PROBLEMS, *REFUSALS),
)
async def operator_role(request: Request, operatorId: OperatorId) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    checked(operatorId, ID_PATTERN, "operatorId")
    body = await boundary.body(request, RoleChange, {"role": OPERATOR_RULES["role"]})
    actor, now = boundary.actor(request, caller), clock.utc_now()
    _, view = await change(
        request,
        lambda s: operators.set_role(s, _by_id(s, operatorId), body.role, now, actor),
    )
    return json_response(200, _operator(view, request))


@router.post(
    "/operators/{operatorId}/reset-password",
    summary="Give an operator a new password (answered once when generated); their sessions end",
    responses=admin_problem_responses(*CHANGE, *BODY_PROBLEMS, *REFUSALS),
)
async def operator_reset_password(request: Request, operatorId: OperatorId) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    checked(operatorId, ID_PATTERN, "operatorId")
    body = await boundary.body(request, PasswordReset, {"password": PASSWORD_RULE})
    password_hash, generated = await _password_hash(request, body.password)
    actor, now = boundary.actor(request, caller), clock.utc_now()
    view, ended = await change(
        request,
        lambda s: operators.reset_password(s, _by_id(s, operatorId), password_hash, now, actor),
    )
    out = {**_operator(view, request), "sessionsEnded": ended}
    if generated is not None:
        out["oneTimePassword"] = generated
    return json_response(200, out)


# --------------------------------------------------------------------------- admin tokens


class NewAdminToken(Body):
    name: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=limits.admin_token_name_chars_max),
    ]
    role: OperatorRole = Field(strict=False)  # its value, as text
    expiresDays: int = 90  # noqa: N815


@router.get(
    "/admin-tokens",
    summary="Admin API tokens, by id (never the token itself)",
    responses=admin_problem_responses(*READ, *pages.PAGE_PROBLEMS),
)
async def token_list(
    request: Request,
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    after = pages.decode(cursor, 1)
    now = clock.utc_now()
    rows = await boundary.read(
        request, lambda s: operators.token_page(s, after[0] if after else None, limit + 1)
    )
    return json_response(
        200, pages.page(rows, limit, lambda r: [r.id], lambda r: _token(r, request, now))
    )


@router.post(
    "/admin-tokens",
    status_code=201,
    summary="Create an admin API token: the token is in this answer only",
    responses=admin_problem_responses(*CHANGE, *BODY_PROBLEMS, *REFUSALS),
)
async def token_create(request: Request) -> Response:
    caller = await require(request, OperatorRole.ADMIN)
    body = await boundary.body(
        request,
        NewAdminToken,
        {
            "name": f"1 to {limits.admin_token_name_chars_max} letters, digits, '.', '_' or '-'",
            "role": OPERATOR_RULES["role"],
            "expiresDays": f"an integer of days, 1 to {limits.admin_token_expires_days_max}",
        },
    )
    actor, now = boundary.actor(request, caller), clock.utc_now()
    made: NewToken = await change(
        request,
        lambda s: operators.create_token(s, body.name, body.role, body.expiresDays, now, actor),
    )
    return json_response(201, {**_token(made.view, request, now), "token": made.token})


@router.post(
    "/admin-tokens/{tokenId}/revoke",
    summary="Revoke an admin API token: refused from its next request on",
    responses=admin_problem_responses(*CHANGE, "FIELD_INVALID", *REFUSALS),
)
async def token_revoke(request: Request, tokenId: TokenId) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.ADMIN)
    checked(tokenId, ID_PATTERN, "tokenId")
    actor, now = boundary.actor(request, caller), clock.utc_now()
    view = await change(request, lambda s: operators.revoke_token(s, tokenId, now, actor))
    return json_response(200, _token(dataclasses.replace(view, revoked_at=now), request, now))
