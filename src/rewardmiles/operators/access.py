"""Who may call the admin API (`/admin`): an admin token (`Authorization: Bearer rma_…`) or an
operator's session cookie, each checked against the database on every call; for a cookie, the
CSRF token and `Origin` of every unsafe method; then the role the route needs.

This is the HTTP boundary of the operators package: it opens the units of work its service
functions run in. The partner API never comes here, and this module never reads a partner token:
any bearer token without the admin prefix is refused before a lookup.

The cookie is `__Host-rewardmiles-admin`: HttpOnly, SameSite=Strict, Secure, `Path=/` and no
Domain, which the `__Host-` prefix makes the browser enforce (no sibling subdomain can plant one).
`Path=/` rather than `/admin` because the web console's pages (a later package) are served
outside `/admin` and need the session too. Over plain HTTP on a loopback host (development,
`make run`) a browser would drop a Secure cookie, so there the cookie is `rewardmiles-admin`,
without Secure, and only there is that name read.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from rewardmiles.clock import utc_now
from rewardmiles.db.engine import Database
from rewardmiles.errors import ProblemError
from rewardmiles.http.threads import run_sync
from rewardmiles.operators import credentials, service
from rewardmiles.operators.service import Caller, SessionPolicy, Verdict
from rewardmiles.vocabulary import OperatorRole

COOKIE_NAME = "__Host-rewardmiles-admin"
LOOPBACK_COOKIE_NAME = "rewardmiles-admin"
CSRF_HEADER = "x-csrf-token"
ADMIN_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rewardmiles-admin"'}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# --------------------------------------------------------------------------- the cookie


def on_loopback_http(request: Request) -> bool:
    """Plain HTTP to a loopback host (`localhost`, 127.0.0.0/8, ::1), as the browser sees it."""
    try:
        if request.url.scheme != "http":
            return False
        host = (request.url.hostname or "").lower()
    except ValueError:  # a Host header that is no host (`[x`)
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_name(request: Request) -> str:
    return LOOPBACK_COOKIE_NAME if on_loopback_http(request) else COOKIE_NAME


def session_cookie(request: Request) -> str | None:
    value = request.cookies.get(cookie_name(request))
    return value or None


def set_session_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        cookie_name(request),
        value,
        max_age=max_age,
        path="/",
        secure=not on_loopback_http(request),
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        cookie_name(request),
        path="/",
        secure=not on_loopback_http(request),
        httponly=True,
        samesite="strict",
    )


def source_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --------------------------------------------------------------------------- cross-site requests


def check_origin(request: Request) -> None:
    """An `Origin` header, when sent, must name the host the request was sent to (`Host`).
    Schemes are not compared: behind a proxy that ends TLS, the browser's `https` origin
    reaches the service as plain HTTP."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "").lower()
    try:
        sent = urlsplit(origin).netloc.lower() if origin != "null" else ""
    except ValueError:  # not a URL (`http://[x`)
        sent = ""
    if not sent or sent != host:
        raise ProblemError(
            "CSRF_REJECTED", f"The Origin {origin!r} is not this service's ({host or 'none'})."
        )


def check_csrf(request: Request, caller: Caller) -> None:
    """An unsafe method authenticated by the session cookie carries the session's CSRF token
    (`X-CSRF-Token`), and a matching `Origin` when it sends one."""
    sent = request.headers.get(CSRF_HEADER)
    expected = caller.csrf_token
    if not sent or expected is None or not credentials.same_secret(sent, expected):
        raise ProblemError(
            "CSRF_REJECTED",
            "Send the session's CSRF token (from POST /admin/session or GET /admin/v1/me) as "
            "X-CSRF-Token.",
        )
    check_origin(request)


# --------------------------------------------------------------------------- authentication


def _unauthenticated(detail: str) -> ProblemError:
    return ProblemError("ADMIN_UNAUTHENTICATED", detail, headers=ADMIN_CHALLENGE)


def judge_session_cookie(
    db: Database, cookie_value: str, now: datetime, policy: SessionPolicy, *, touch: bool = True
) -> Verdict:
    """The session of a cookie, judged; an ended one is deleted, a live one's last use written
    (at most once a minute)."""
    with db.reader() as session:
        stored = service.find_session(session, cookie_value)
    verdict = service.judge_session(stored, now, policy)
    if verdict.record_id is not None and (verdict.expired or (touch and verdict.touch)):
        with db.unit_of_work() as session:
            if verdict.expired:
                service.end_session(session, verdict.record_id)
            else:
                service.touch_session(session, verdict.record_id, now)
    return verdict


def _judge_token(db: Database, token: str, now: datetime) -> Verdict:
    with db.reader() as session:
        stored = service.find_token(session, token)
    verdict = service.judge_token(stored, now)
    if verdict.record_id is not None and verdict.touch:
        with db.unit_of_work() as session:
            service.touch_token(session, verdict.record_id, now)
    return verdict


async def authenticate(request: Request) -> Caller:
    """The caller of an admin route: 401 without a valid admin credential, 403 for a cookie
    without its CSRF token on an unsafe method."""
    ctx = request.app.state.ctx
    now = utc_now()
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        token = value.strip()
        if scheme.lower() != "bearer" or not credentials.is_admin_token(token):
            raise _unauthenticated(
                "The admin API takes an admin token (Authorization: Bearer rma_…, from "
                "`rewardmiles operator token create`) or an operator's session cookie; partner "
                "tokens are not accepted here."
            )
        verdict = await run_sync(ctx.limiter, _judge_token, ctx.db, token, now)
        if verdict.caller is None:
            raise _unauthenticated(
                "The admin token has expired."
                if verdict.expired
                else "Unknown or revoked admin token."
            )
        caller = verdict.caller
    else:
        cookie = session_cookie(request)
        if cookie is None:
            raise _unauthenticated(
                "Sign in (POST /admin/session) or send Authorization: Bearer <admin token>."
            )
        policy = SessionPolicy.of(ctx.settings)
        verdict = await run_sync(ctx.limiter, judge_session_cookie, ctx.db, cookie, now, policy)
        if verdict.expired:
            raise ProblemError(
                "ADMIN_SESSION_EXPIRED",
                "The session has ended; sign in again.",
                headers=ADMIN_CHALLENGE,
            )
        if verdict.caller is None:
            raise _unauthenticated("No such session (signed out?); sign in again.")
        caller = verdict.caller
        if request.method in UNSAFE_METHODS:
            check_csrf(request, caller)
    request.scope["state"]["client_id"] = caller.log_name
    return caller


async def require(request: Request, role: OperatorRole) -> Caller:
    """`authenticate`, then the role: 403 `ADMIN_FORBIDDEN` below `role`."""
    caller = await authenticate(request)
    if not caller.may(role):
        raise ProblemError(
            "ADMIN_FORBIDDEN",
            f"This needs the role {role.value}; the caller is {caller.role.value}.",
        )
    return caller


def auth_problems(role: OperatorRole) -> tuple[str, ...]:
    """The problem codes `require(request, role)` may answer (for a route's OpenAPI)."""
    codes = ("ADMIN_UNAUTHENTICATED", "ADMIN_SESSION_EXPIRED")
    return codes if role is OperatorRole.VIEWER else (*codes, "ADMIN_FORBIDDEN")


def auth_problems_unsafe(role: OperatorRole) -> tuple[str, ...]:
    """Those of an unsafe method (a cookie needs its CSRF token)."""
    return (*auth_problems(role), "CSRF_REJECTED")
