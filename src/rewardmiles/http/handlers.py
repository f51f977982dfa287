"""Exceptions as problem+json answers: the application's exception handlers, which answer for the
framework's routes and the direct lane alike."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from rewardmiles import logs
from rewardmiles.db.engine import is_outage
from rewardmiles.errors import PROBLEM_CODES, ProblemError, problem
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.responses import json_response, problem_response
from rewardmiles.http.validation import distinct_field_errors, field_error, validation_problem

log = logs.get_logger("rewardmiles.http")


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, handle_problem)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, handle_request_validation)
    app.add_exception_handler(DBAPIError, handle_database_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, handle_database_error)


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc, request_id_of(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        413: "PAYLOAD_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
    }.get(exc.status_code)
    if code is None:
        code = "INTERNAL_ERROR" if exc.status_code >= 500 else "FIELD_INVALID"
    detail = exc.detail if isinstance(exc.detail, str) else PROBLEM_CODES[code].title
    if exc.status_code == 404 and detail == "Not Found":  # the router's own: say what to check
        detail = (
            f"No resource at {request.url.path}. Paths are matched exactly (no trailing slash, "
            "nothing redirects); /openapi.json lists them."
        )
    body = problem(code, detail, request_id_of(request))
    body["status"] = exc.status_code
    return json_response(exc.status_code, body, exc.headers)


async def handle_database_error(request: Request, exc: Exception) -> Response:
    """The database failed under the request (lost connection, restart, failover, a server that
    takes no writes, statement timeout, pool exhausted: `is_outage`). A request that failed while
    committing may or may not be stored, so the answer is 503 and never a guess: a retry with the
    same Idempotency-Key settles it either way. Anything else from the driver (an integrity error
    would be a bug) stays a logged 500."""
    request_id = request_id_of(request)
    transient = is_outage(exc)
    log.error(
        "database_error",
        request_id=request_id,
        path=request.url.path,
        error=type(exc).__name__,
        driver_error=type(getattr(exc, "orig", None)).__name__,
        transient=transient,
    )
    if not transient:
        raise exc
    body = problem(
        "SERVICE_UNAVAILABLE",
        "The database did not complete the request. Retry with the same Idempotency-Key: it "
        "is then applied exactly once, whether or not this attempt was stored.",
        request_id,
    )
    return json_response(503, body, {"Retry-After": "1"})


async def handle_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = distinct_field_errors(field_error(err, skip_prefix=1) for err in exc.errors())
    return problem_response(validation_problem(errors), request_id_of(request))
