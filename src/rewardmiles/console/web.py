"""What every console page does around its work: who is signed in (the admin API's session
cookie; a page without one sends the browser to the sign-in page), the CSRF token of every form
and htmx request, the role an action needs, rendering with the console's security headers, and
refusals shown as pages.

Templates are Jinja2 with autoescaping on for every file: a value is text wherever it lands (a
sponsor named `<script>…` shows as those characters). Pages carry a Content-Security-Policy
without inline scripts or styles, `frame-ancestors 'none'`, and `Cache-Control: no-store` (they
show personal data); the static assets are cached.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Request
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rewardmiles import __version__, clock, limits
from rewardmiles.admin import boundary
from rewardmiles.errors import OperatorError, ProblemError
from rewardmiles.http.bodies import read_body
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.threads import run_sync
from rewardmiles.operators import credentials
from rewardmiles.operators.access import check_origin, judge_session_cookie, session_cookie
from rewardmiles.operators.service import Caller, SessionPolicy
from rewardmiles.sponsors import repository as sponsors_repository
from rewardmiles.vocabulary import OperatorRole

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/console"
SIGN_IN_PATH = PREFIX + "/sign-in"
FORM_BYTES_MAX = 256 * 1024  # a bulk review of 500 lines is the largest form
FORM = "application/x-www-form-urlencoded"
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
}

# (X-Frame-Options, X-Content-Type-Options and Referrer-Policy: every answer's, the middleware's.)

# The pages in the navigation, in order: (path, label, least role that sees it).
NAVIGATION: tuple[tuple[str, str, OperatorRole], ...] = (
    (PREFIX + "/today", "Today", OperatorRole.VIEWER),
    (PREFIX + "/collectors", "Collector", OperatorRole.VIEWER),
    (PREFIX + "/transactions", "Transaction", OperatorRole.VIEWER),
    (PREFIX + "/pending", "Pending review", OperatorRole.VIEWER),
    (PREFIX + "/partners", "Partners", OperatorRole.VIEWER),
    (PREFIX + "/offers", "Offers", OperatorRole.VIEWER),
    (PREFIX + "/reports", "Reports", OperatorRole.VIEWER),
    (PREFIX + "/audit-log", "Audit log", OperatorRole.VIEWER),
)


def age_text(seconds: int) -> str:
    """How long something has waited, to its two largest units: `2 d 3 h`, `5 h 12 min`,
    `4 min`, `under a minute` (a clock a little behind counts as none)."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else "under a minute"


def _miles(value: int) -> str:
    return f"{value:,}"


def _when(value: datetime | None, zone: str | None = None) -> str:
    if value is None:
        return ""
    moment = value.astimezone(clock.zone(zone)) if zone else value
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


templates = Environment(
    loader=PackageLoader("rewardmiles.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["miles"] = _miles
templates.filters["when"] = _when
templates.filters["urlpart"] = lambda value: quote(str(value), safe="")
templates.globals["version"] = __version__
templates.globals["limits"] = limits  # the fields' maxlength: the server's own limits


# --------------------------------------------------------------------------- refusals


class PageError(Exception):
    """A page or action refused: shown as the error page with `status`. `code` is the error
    catalogue's where one applies."""

    def __init__(self, status: int, title: str, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code


class SignInNeededError(Exception):
    """No live session: the browser goes to the sign-in page (and back afterwards)."""

    def __init__(self, back_to: str, expired: bool) -> None:
        super().__init__(back_to)
        self.back_to = back_to
        self.expired = expired


def is_console(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# --------------------------------------------------------------------------- who is signed in


async def signed_in(request: Request, role: OperatorRole = OperatorRole.VIEWER) -> Caller:
    """The operator of the session cookie (admin tokens are for the API, not the console), with at
    least `role`; for an unsafe method, the form's (or htmx's header) CSRF token and the
    `Origin`. No session: `SignInNeededError`. Below `role`: 403."""
    ctx = request.app.state.ctx
    cookie = session_cookie(request)
    back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or is_htmx(request):
        back_to = request.headers.get("hx-current-url", PREFIX + "/today")
    if cookie is None:
        raise SignInNeededError(back_to, expired=False)
    policy = SessionPolicy.of(ctx.settings)
    verdict = await run_sync(
        ctx.limiter, judge_session_cookie, ctx.db, cookie, clock.utc_now(), policy
    )
    if verdict.caller is None:
        raise SignInNeededError(back_to, expired=verdict.expired)
    caller = verdict.caller
    request.scope["state"]["client_id"] = caller.log_name
    request.scope["rewardmiles.caller"] = caller  # for an error page's navigation
    if request.method != "GET":
        await check_form_csrf(request, caller)
    if not caller.may(role):
        raise PageError(
            403,
            "Not allowed",
            f"This needs the role {role.value}; you are {caller.role.value}.",
            "ADMIN_FORBIDDEN",
        )
    return caller


async def check_form_csrf(request: Request, caller: Caller) -> None:
    sent = request.headers.get("x-csrf-token")
    if sent is None and _is_form(request):
        sent = (await form(request)).get(CSRF_FIELD, [None])[0]
    expected = caller.csrf_token
    if not sent or expected is None or not credentials.same_secret(sent, expected):
        raise PageError(
            403,
            "Form refused",
            "The form did not carry this session's token (a page from another site, or one "
            "opened before you signed in again). Reload the page and try again.",
            "CSRF_REJECTED",
        )
    try:
        check_origin(request)
    except ProblemError as exc:
        raise PageError(403, "Form refused", exc.detail, "CSRF_REJECTED") from None


actor = boundary.actor  # the audit log's name of the caller, with the request's id


# --------------------------------------------------------------------------- forms


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower() == FORM


async def form(request: Request) -> dict[str, list[str]]:
    """The request's url-encoded form (read once, kept on the request): every field's values."""
    cached = request.scope.get("rewardmiles.form")
    if cached is not None:
        return dict(cached)
    if not _is_form(request):
        raise PageError(
            415, "Unsupported form", f"Send the form as {FORM}.", "UNSUPPORTED_MEDIA_TYPE"
        )
    try:
        raw = await read_body(request, FORM_BYTES_MAX, f"The form exceeds {FORM_BYTES_MAX} bytes.")
        fields = parse_qs(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=2000
        )
    except ProblemError as exc:
        raise PageError(413, "Form too large", exc.detail, exc.code) from None
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "Unreadable form", "The form is not UTF-8 url-encoded.") from None
    request.scope["rewardmiles.form"] = fields
    return dict(fields)


def one(fields: Mapping[str, list[str]], name: str, *, required: bool = True) -> str:
    """A form field's single value, stripped; 400 when required and missing or empty, or sent
    twice."""
    values = fields.get(name, [])
    if len(values) > 1:
        raise PageError(400, "Invalid form", f"The field {name} was sent more than once.")
    value = values[0].strip() if values else ""
    if required and not value:
        raise PageError(400, "Invalid form", f"The field {name} is required.", "FIELD_REQUIRED")
    return value


def day_of(raw: str | None, field: str) -> date | None:
    """A day sent in a query or form (`clock.parse_transaction_day`: YYYY-MM-DD exactly, with
    bounds in UTC); None when none is sent; a 400 page naming `field` otherwise."""
    if not raw:
        return None
    try:
        return clock.parse_transaction_day(raw)
    except ValueError as exc:
        raise PageError(400, "Invalid day", f"{field} {exc}", "FIELD_INVALID") from None


def sponsor_of(raw: str | None, *, required: bool = False) -> str | None:
    """A `sponsor` sent in a query or form: a sponsor code, or None when none is sent; a 400
    page for anything else, and for none when `required`."""
    if not raw:
        if required:
            raise PageError(400, "Sponsor needed", "Choose a sponsor.", "FIELD_REQUIRED")
        return None
    if not re.fullmatch(limits.sponsor_code_pattern, raw):
        raise PageError(400, "Invalid sponsor", "sponsor must be a sponsor code.", "FIELD_INVALID")
    return raw


def known_sponsor(session: Session, code: str) -> None:
    """A 404 page unless sponsor `code` exists (in a read's or a change's database work)."""
    if sponsors_repository.sponsor(session, code) is None:
        raise PageError(404, "No such sponsor", f"No sponsor {code}.", "NOT_FOUND")


# --------------------------------------------------------------------------- database work


# `work` on a read-only session, or in one unit of work (all of it or nothing), in a database
# thread: the admin API's own. A service's refusal is the admin API's problem (404, 409, 422 with
# its field), which the console shows as an error page (`routes.install`).
read = boundary.read
change = boundary.change


def refused(exc: OperatorError) -> PageError:
    """A service's refusal as the error page the admin API's problem would be."""
    problem = boundary.refused(exc)
    return PageError(problem.spec.status, problem.spec.title, problem.detail, problem.code)


# --------------------------------------------------------------------------- rendering


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    caller: Caller | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """`template` with the page's context, the caller and the navigation it may see."""
    ctx = request.app.state.ctx
    full = {
        "caller": caller,
        "csrf": caller.csrf_token if caller is not None else "",
        "navigation": [
            (path, label)
            for path, label, role in NAVIGATION
            if caller is not None and caller.may(role)
        ],
        "current": request.url.path,
        "zone": str(ctx.settings.program_time_zone),
        "request_id": request_id_of(request),
        "done": _done_of(request, caller),
        **context,
    }
    html = templates.get_template(template).render(full)
    return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def done_query(caller: Caller, done: str) -> dict[str, str]:
    """The query that shows `done` (what an action did) on the page it sends the browser to,
    signed for the caller's session: a page shows the message only under its signature, so a
    link from elsewhere cannot put words in the console's status line."""
    return {"done": done, "done_sig": _done_signature(caller, done)}


def _done_of(request: Request, caller: Caller | None) -> str | None:
    done = request.query_params.get("done")
    signature = request.query_params.get("done_sig")
    if caller is None or caller.csrf_token is None or not done or not signature:
        return None  # only a session signs: an empty key would sign for anyone
    return done if hmac.compare_digest(signature, _done_signature(caller, done)) else None


def _done_signature(caller: Caller, done: str) -> str:
    key = (caller.csrf_token or "").encode()  # empty only for a caller `_done_of` refuses
    return hmac.new(key, b"console-done\0" + done.encode(), hashlib.sha256).hexdigest()[:32]


def redirect(location: str) -> Response:
    """After a form's action: the page to show (303, so a reload does not post again)."""
    return RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)


def error_page(request: Request, exc: PageError) -> Response:
    """The refusal as a page, with the navigation of the operator it refused (if signed in)."""
    caller = request.scope.get("rewardmiles.caller")
    return render(
        request,
        "error.html",
        {"title": exc.title, "detail": exc.detail, "code": exc.code, "status": exc.status},
        caller=caller if isinstance(caller, Caller) else None,
        status=exc.status,
    )


def sign_in_redirect(request: Request, exc: SignInNeededError) -> Response:
    target = (
        SIGN_IN_PATH
        + "?next="
        + quote(exc.back_to, safe="/")
        + ("&expired=1" if exc.expired else "")
    )
    if is_htmx(request):  # htmx follows this header with a full page load
        return Response(status_code=204, headers={**PAGE_HEADERS, "HX-Redirect": target})
    return redirect(target)


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a console path on this host, never elsewhere."""
    if raw and raw.startswith(PREFIX + "/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return PREFIX + "/today"
