"""The console's own routes: sign-in and sign-out pages, its static assets, and how its refusals
are shown (HTML pages for `/console`, the problem+json answers everywhere else)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from rewardmiles import clock
from rewardmiles.console import (
    audit,
    collectors,
    offers,
    partners,
    pending,
    reports,
    today,
    transactions,
    web,
)
from rewardmiles.console.web import PREFIX, PageError, SignInNeededError
from rewardmiles.errors import ProblemError
from rewardmiles.http import handlers
from rewardmiles.http.threads import run_sync
from rewardmiles.operators import service
from rewardmiles.operators.access import (
    check_origin,
    clear_session_cookie,
    judge_session_cookie,
    session_cookie,
    set_session_cookie,
)
from rewardmiles.operators.routes import start_signed_in_session
from rewardmiles.operators.service import SessionPolicy

router = APIRouter(include_in_schema=False)


class Assets(StaticFiles):
    """The console's JavaScript, CSS and images: shipped in the package, never from a CDN;
    cached for an hour (the pages name them with the version)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


@router.get(PREFIX)
async def index() -> Response:
    return web.redirect(PREFIX + "/today")


@router.get(web.SIGN_IN_PATH)
async def sign_in_page(request: Request) -> Response:
    return _sign_in_form(request, status=200)


def _sign_in_form(
    request: Request, *, status: int, error: str | None = None, email: str = ""
) -> Response:
    expired = request.query_params.get("expired") == "1" and error is None
    return web.render(
        request,
        "sign_in.html",
        {
            "error": error,
            "notice": "Your session has ended; sign in again." if expired else None,
            "email": email,
            "next": web.safe_next(request.query_params.get("next")),
        },
        caller=None,
        status=status,
    )


@router.post(web.SIGN_IN_PATH)
async def sign_in(request: Request) -> Response:
    try:
        check_origin(request)
    except ProblemError as exc:
        raise PageError(403, "Form refused", exc.detail, "CSRF_REJECTED") from None
    fields = await web.form(request)
    email = web.one(fields, "email", required=False)
    password = fields.get("password", [""])[0]
    if not email or not password:
        return _sign_in_form(
            request, status=400, error="Enter your e-mail and password.", email=email
        )
    try:
        started, lifetime = await start_signed_in_session(request, email, password)
    except ProblemError as exc:
        return _sign_in_form(request, status=exc.spec.status, error=exc.detail, email=email)
    response = web.redirect(web.safe_next(web.one(fields, "next", required=False)))
    set_session_cookie(response, request, started.cookie_value, lifetime)
    return response


@router.post(PREFIX + "/sign-out")
async def sign_out(request: Request) -> Response:
    """Ends the session (with the form's CSRF token) and clears the cookie."""
    ctx = request.app.state.ctx
    cookie = session_cookie(request)
    if cookie is not None:
        policy = SessionPolicy.of(ctx.settings)
        judge = partial(judge_session_cookie, touch=False)
        verdict = await run_sync(ctx.limiter, judge, ctx.db, cookie, clock.utc_now(), policy)
        if verdict.caller is not None:
            await web.check_form_csrf(request, verdict.caller)
            record_id = verdict.record_id
            assert record_id is not None

            def end() -> None:
                with ctx.db.unit_of_work() as session:
                    service.end_session(session, record_id)

            await run_sync(ctx.limiter, end)
    response = web.redirect(web.SIGN_IN_PATH)
    clear_session_cookie(response, request)
    return response


def install(app: FastAPI) -> None:
    """The console's routes and assets on `app`, and its refusals as pages."""
    app.include_router(router)
    app.include_router(today.router)
    app.include_router(collectors.router)
    app.include_router(transactions.router)
    app.include_router(pending.router)
    app.include_router(partners.router)
    app.include_router(offers.router)
    app.include_router(reports.router)
    app.include_router(audit.router)
    app.mount(PREFIX + "/static", Assets(directory=web.STATIC_DIR), name="console-static")

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return web.error_page(request, exc)

    async def sign_in_needed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeededError)
        return web.sign_in_redirect(request, exc)

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        if web.is_console(request):
            return web.error_page(
                request, PageError(exc.spec.status, exc.spec.title, exc.detail, exc.code)
            )
        return await handlers.handle_problem(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if web.is_console(request):
            title = "Not found" if exc.status_code == 404 else "Refused"
            detail = (
                f"No console page at {request.url.path}."
                if exc.status_code == 404
                else str(exc.detail)
            )
            return web.error_page(request, PageError(exc.status_code, title, detail))
        return await handlers.handle_http_exception(request, exc)

    app.add_exception_handler(PageError, page_error)
    app.add_exception_handler(SignInNeededError, sign_in_needed)
    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
