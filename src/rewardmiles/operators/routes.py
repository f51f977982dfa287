"""Operators' sign-in and sign-out (`/admin/session`) and who the caller is (`/admin/v1/me`).

Sign-in, in order: the body; the lockout of the account and address, read before any password
is checked (429 then, right password or not); the password, in a CPU thread and outside any
transaction, at the same cost for an unknown e-mail; a failure counted (401); on success a new
session, whose cookie value is shown once, in `Set-Cookie`, and stored only hashed. The checks
of one source address run one at a time in a process, so guesses sent together are judged like
guesses sent in turn.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.responses import Response

from rewardmiles import clock, limits, logs
from rewardmiles.db.engine import Database
from rewardmiles.errors import ProblemError
from rewardmiles.http.bodies import read_json_object
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.http.validation import validate_body
from rewardmiles.metrics import SIGN_INS_REJECTED
from rewardmiles.operators import service
from rewardmiles.operators.access import (
    auth_problems,
    check_csrf,
    check_origin,
    clear_session_cookie,
    judge_session_cookie,
    require,
    session_cookie,
    set_session_cookie,
    source_address,
)
from rewardmiles.operators.repository import StoredOperator
from rewardmiles.operators.service import (
    NewSession,
    SessionPolicy,
    SignInCheck,
    SignInPolicy,
)
from rewardmiles.vocabulary import OperatorRole

router = APIRouter(tags=["admin"])
log = logs.get_logger("rewardmiles.admin")


class SignInRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=limits.operator_email_chars_max),
    ]
    password: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=limits.operator_password_chars_max),
    ]


SIGN_IN_RULES = {
    "email": f"must be a string of 1 to {limits.operator_email_chars_max} characters",
    "password": f"must be a string of 1 to {limits.operator_password_chars_max} characters",
}


class OperatorOut(BaseModel):
    email: str
    displayName: str  # noqa: N815
    role: OperatorRole


class SessionStarted(BaseModel):
    csrfToken: str  # noqa: N815
    operator: OperatorOut


class TokenOut(BaseModel):
    id: str
    name: str
    role: OperatorRole
    expiresAt: datetime  # noqa: N815


class Me(BaseModel):
    """The caller: an operator by their session (with the session's CSRF token, for a console
    page loaded afresh), or an admin token."""

    via: Literal["session", "token"]
    role: OperatorRole
    operator: OperatorOut | None = None
    token: TokenOut | None = None
    csrfToken: str | None = None  # noqa: N815


def _throttled(seconds: int) -> ProblemError:
    return ProblemError(
        "SIGN_IN_THROTTLED",
        f"Too many failed sign-ins for this account or from this address; retry after {seconds} s.",
        headers={"Retry-After": str(seconds)},
    )


def _check(
    db: Database, email: str, address: str, now: datetime, policy: SignInPolicy
) -> SignInCheck:
    with db.reader() as session:
        return service.sign_in_check(session, email, address, now, policy)


def _fail(db: Database, email: str, address: str, now: datetime, policy: SignInPolicy) -> None:
    with db.unit_of_work() as session:
        service.record_failed_sign_in(session, email, address, now, policy)


def _start(
    db: Database,
    operator: StoredOperator,
    address: str,
    now: datetime,
    policy: SessionPolicy,
    replaces: str | None,
    rehash: str | None,
) -> NewSession | None:
    with db.unit_of_work() as session:
        return service.start_session(
            session, operator, address, now, policy, replaces=replaces, rehash=rehash
        )


@router.post(
    "/admin/session",
    summary="Sign an operator in: a session cookie and its CSRF token",
    description="Answers the session's CSRF token and sets the session cookie "
    "(`__Host-rewardmiles-admin`; `rewardmiles-admin` over plain HTTP on loopback): HttpOnly, "
    "SameSite=Strict, Path=/, Secure. Every sign-in starts a new session. Unsafe methods with "
    "the cookie send the token back as `X-CSRF-Token`.",
    response_model=SessionStarted,
    responses=admin_problem_responses(
        "VALIDATION_FAILED",
        "MALFORMED_JSON",
        "FIELD_REQUIRED",
        "FIELD_INVALID",
        "FIELD_UNKNOWN",
        "SIGN_IN_FAILED",
        "CSRF_REJECTED",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "SIGN_IN_THROTTLED",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SignInRequest"}}
            },
        }
    },
)
async def sign_in(request: Request) -> Response:
    # A cross-site page cannot sign a browser in under another account: it cannot send JSON
    # without the service's consent (CORS), and a browser names its origin.
    check_origin(request)
    obj = await read_json_object(request, limits.sign_in_body_bytes_max)
    body = validate_body(SignInRequest, obj, context={}, rules=SIGN_IN_RULES, codes={})
    started, lifetime = await start_signed_in_session(request, body.email, body.password)
    response = json_response(
        200, {"csrfToken": started.csrf_token, "operator": _operator(started.operator)}
    )
    set_session_cookie(response, request, started.cookie_value, lifetime)
    return response


async def start_signed_in_session(
    request: Request, email: str, password: str
) -> tuple[NewSession, int]:
    """The one sign-in of the admin API and the console: the lockouts, the password, a failure
    counted or a new session (replacing the browser's current one). Answers the session and its
    cookie's lifetime in seconds; refuses with `SIGN_IN_THROTTLED` or `SIGN_IN_FAILED`."""
    ctx = request.app.state.ctx
    address = source_address(request)
    policy = SignInPolicy.of(ctx.settings)
    async with ctx.secret_checks.hold("admin-sign-in:" + address):
        now = clock.utc_now()
        check = await run_sync(ctx.limiter, _check, ctx.db, email, address, now, policy)
        if check.retry_after_seconds:
            SIGN_INS_REJECTED.labels("operator", "throttled").inc()
            log.info("admin_sign_in", outcome="throttled", address=address)
            raise _throttled(check.retry_after_seconds)
        matched, rehash = await run_sync(
            ctx.cpu_limiter, service.check_password, check, password, policy.cost
        )
        if not matched or check.operator is None:
            await run_sync(ctx.limiter, _fail, ctx.db, email, address, now, policy)
            SIGN_INS_REJECTED.labels("operator", "credentials").inc()
            log.info(
                "admin_sign_in",
                outcome="failed",
                address=address,
                operator_id=check.operator.id if check.operator else None,
            )
            raise ProblemError(
                "SIGN_IN_FAILED", "Unknown e-mail, wrong password or disabled operator."
            )
    sessions = SessionPolicy.of(ctx.settings)
    started = await run_sync(
        ctx.limiter,
        _start,
        ctx.db,
        check.operator,
        address,
        now,
        sessions,
        session_cookie(request),
        rehash,
    )
    if started is None:
        raise ProblemError("SIGN_IN_FAILED", "Unknown e-mail, wrong password or disabled operator.")
    log.info("admin_sign_in", outcome="ok", address=address, operator_id=started.operator.id)
    request.scope["state"]["client_id"] = f"operator:{started.operator.id}"
    return started, int(sessions.absolute.total_seconds())


def _operator(view: service.OperatorView) -> dict[str, Any]:
    return {"email": view.email, "displayName": view.display_name, "role": view.role.value}


def _end(db: Database, session_id: str) -> None:
    with db.unit_of_work() as session:
        service.end_session(session, session_id)


@router.delete(
    "/admin/session",
    status_code=204,
    summary="Sign out: the session ends and its cookie is cleared",
    description="Needs the session's `X-CSRF-Token` when the cookie names a live session. "
    "Without a cookie, or with one whose session has ended, nothing is left to end: 204 too.",
    responses=admin_problem_responses("CSRF_REJECTED"),
)
async def sign_out(request: Request) -> Response:
    ctx = request.app.state.ctx
    cookie = session_cookie(request)
    if cookie is not None:
        policy = SessionPolicy.of(ctx.settings)
        judge = partial(judge_session_cookie, touch=False)  # an end needs no last use written
        verdict = await run_sync(ctx.limiter, judge, ctx.db, cookie, clock.utc_now(), policy)
        if verdict.caller is not None:
            request.scope["state"]["client_id"] = verdict.caller.log_name
            check_csrf(request, verdict.caller)
            assert verdict.record_id is not None
            await run_sync(ctx.limiter, _end, ctx.db, verdict.record_id)
    response = Response(status_code=204)
    clear_session_cookie(response, request)
    return response


@router.get(
    "/admin/v1/me",
    summary="Who the caller is: the signed-in operator (and the session's CSRF token), or the "
    "admin token",
    response_model=Me,
    responses=admin_problem_responses(*auth_problems(OperatorRole.VIEWER)),
)
async def me(request: Request) -> Response:
    caller = await require(request, OperatorRole.VIEWER)
    body: dict[str, Any] = {"via": caller.via, "role": caller.role.value}
    if caller.token is not None:
        token = caller.token
        body["token"] = {
            "id": token.id,
            "name": token.name,
            "role": token.role.value,
            "expiresAt": token.expires_at.isoformat().replace("+00:00", "Z"),
        }
    else:
        body["operator"] = {
            "email": caller.email,
            "displayName": caller.display_name,
            "role": caller.role.value,
        }
        body["csrfToken"] = caller.csrf_token
    return json_response(200, body)
