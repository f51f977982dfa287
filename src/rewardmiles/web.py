"""HTTP plumbing shared by every router: request ids, problem+json, JSON bodies, bearer auth.

Routes stay thin: they `authorize`, read the body with `read_validated_body` (limits, strict
JSON, the route's model), hand the result to one service function (run with `run_sync` in the
worker thread pool, since storage is synchronous) and answer with `json_response`; errors become
problem+json in the `handle_*` exception handlers. `DirectRoutes` is the fast lane that skips
FastAPI's router for the partner write paths.
"""

from __future__ import annotations

import inspect
import json
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardmiles import ids, limits, logs, ratelimit
from rewardmiles.auth.tokens import BEARER_CHALLENGE, Principal
from rewardmiles.clock import utc_now
from rewardmiles.errors import (
    CATALOGUE,
    FieldError,
    FieldRuleError,
    ProblemError,
    problem,
    problem_from_error,
)

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
# The access-log status of a request whose client went away before its answer (nginx's code): no
# answer is sent, and it is no server error.
CLIENT_CLOSED_REQUEST = 499
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# Partner responses carry collector data and tokens: never cached by an intermediary.
NO_STORE = ((b"cache-control", b"no-store"),)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

log = logs.get_logger("rewardmiles.http")


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "")


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    media = PROBLEM_JSON if status >= 400 else JSON
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers=headers)


def problem_response(error: ProblemError, request_id: str) -> Response:
    return json_response(error.status, problem_from_error(error, request_id), error.headers)


class RequestContextMiddleware:
    """Request id in and out, one access-log line per request, and the last-resort 500.

    A client that closes the connection before its body has arrived (`ClientDisconnect` while
    the body is read) is logged as status 499 and answered with nothing: there is no one left to
    answer, and it is not a failure of the service."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = incoming if incoming and _REQUEST_ID_OK.match(incoming) else ids.uuid4_hex()
        scope.setdefault("state", {})["request_id"] = request_id
        headers = scope.get("headers", ())
        if len(headers) > limits.request_headers_max or (
            sum(len(name) + len(value) for name, value in headers) > limits.request_header_bytes_max
        ):
            # The HTTP parser has no limit of its own: refuse before any work is done.
            refusal = json_response(
                431,
                problem(
                    "HEADERS_TOO_LARGE",
                    f"Send at most {limits.request_headers_max} headers and "
                    f"{limits.request_header_bytes_max} bytes of header names and values.",
                    request_id,
                ),
            )
            app: ASGIApp = refusal
        else:
            app = self.app
        partner_data = str(scope.get("path", "")).startswith(("/checkout/", "/oauth/"))
        started = time.perf_counter()
        status_holder = {"status": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["sent"] = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    *SECURITY_HEADERS,
                    *(NO_STORE if partner_data else ()),
                ]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        except ClientDisconnect:
            status_holder["status"] = CLIENT_CLOSED_REQUEST
        except Exception as exc:
            log.error(
                "request_failed",
                request_id=request_id,
                method=scope.get("method"),
                path=scope.get("path"),
                error=type(exc).__name__,
                trace="".join(traceback.format_exception(exc)),
            )
            if status_holder["sent"]:
                raise
            response = json_response(
                500,
                problem(
                    "INTERNAL_ERROR", "The request failed and stored nothing; retry it.", request_id
                ),
            )
            await response(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                request_id=request_id,
                method=scope.get("method"),
                path=scope.get("path"),
                status=status_holder["status"],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client_id=scope["state"].get("client_id"),
            )


Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """The partner calls (`POST` to an exact path of `routes`) go straight to their endpoint
    function, inside `RequestContextMiddleware`, past the framework's error, routing and
    dependency layers: at checkout rates those cost more than the endpoint's own work. The same
    functions stay registered as framework routes (OpenAPI, tests of the routing), every other
    request takes the full stack, and errors are answered by the application's own exception
    handlers, so the answers are the same either way."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, Endpoint],
        handlers: Mapping[Any, Callable[[Request, Any], Any]],
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.handlers = {k: v for k, v in handlers.items() if isinstance(k, type)}
        self.direct = RequestContextMiddleware(self._run)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.routes:
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.routes[scope["path"]](request)
        except Exception as exc:
            handler = next(
                (self.handlers[t] for t in type(exc).__mro__ if t in self.handlers), None
            )
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key == wanted:
            return str(value.decode("latin-1"))
    return None


# --------------------------------------------------------------------------- error handlers


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
    detail = exc.detail if isinstance(exc.detail, str) else CATALOGUE[code].title
    if exc.status_code == 404 and detail == "Not Found":  # the router's own: say what to check
        detail = (
            f"No resource at {request.url.path}. Paths are matched exactly (no trailing slash, "
            "nothing redirects); /openapi.json lists them."
        )
    body = problem(code, detail, request_id_of(request))
    body["status"] = exc.status_code
    return json_response(exc.status_code, body, exc.headers)


async def handle_database_error(request: Request, exc: Exception) -> Response:
    """The database failed under the request (lost connection, restart, statement timeout, pool
    exhausted). A request that failed while committing may or may not be stored, so the answer
    is 503 and never a guess: a retry with the same Idempotency-Key settles it either way.
    Anything else from the driver (an integrity error would be a bug) stays a logged 500."""
    request_id = request_id_of(request)
    transient = isinstance(exc, OperationalError | InterfaceError | SQLAlchemyTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
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
    errors = _distinct_field_errors(_field_error(err, skip_prefix=1) for err in exc.errors())
    return problem_response(_validation_problem(errors), request_id_of(request))


# --------------------------------------------------------------------------- bodies


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def _field_error(
    err: Mapping[str, Any],
    *,
    skip_prefix: int = 0,
    rules: Mapping[str, str] | None = None,
    codes: Mapping[str, str] | None = None,
) -> FieldError:
    loc = tuple(err.get("loc", ()))[skip_prefix:]
    if "[key]" in loc:  # an invalid object key: the path is the object itself
        loc = loc[: max(loc.index("[key]") - 1, 0)]
    # Pydantic appends the union member's type name to the location; keep the field path only.
    loc = tuple(
        p for p in loc if not (isinstance(p, str) and p in ("str", "int", "function-plain"))
    )
    field = _field_path(loc) or None
    names = [p for p in reversed(loc) if isinstance(p, str)]
    name = next((p for p in names if p in (rules or {})), names[0] if names else "")
    kind = err.get("type", "")
    violation = err.get("ctx", {}).get("error")
    if isinstance(violation, FieldRuleError):
        path = ".".join(p for p in (field, violation.field) if p)
        return FieldError(violation.code, path or None, violation.message)
    if kind == "missing":
        return FieldError("FIELD_REQUIRED", field, "is required")
    if kind == "extra_forbidden":  # whatever its value, null included
        return FieldError("FIELD_UNKNOWN", field, "is not a field of this request")
    if err.get("input", object()) is None:
        if loc and isinstance(loc[-1], int):  # a null inside an array
            return FieldError("FIELD_INVALID", field, "must not be null")
        return FieldError("FIELD_REQUIRED", field, "is required and must not be null")
    code = (codes or {}).get(name, "FIELD_INVALID")
    ctx_error = err.get("ctx", {}).get("error")
    message = (rules or {}).get(name) or str(err.get("msg", "is invalid"))
    if ctx_error is not None and str(ctx_error).startswith("must be at most"):
        message = str(ctx_error)
    return FieldError(code, field, message)


def _distinct_field_errors(field_errors: Iterable[FieldError]) -> list[FieldError]:
    """Each (code, field) once, in the order met: one pass, a set of what was seen."""
    seen: set[tuple[str, str | None]] = set()
    distinct: list[FieldError] = []
    for error in field_errors:
        key = (error.code, error.field)
        if key not in seen:
            seen.add(key)
            distinct.append(error)
    return distinct


def _validation_problem(errors: list[FieldError]) -> ProblemError:
    """The problem of a body with `errors`: the first `limits.problem_errors_max` are listed, the
    rest counted (`errorsOmitted`, and in `detail`)."""
    codes = {e.code for e in errors}
    code = errors[0].code if len(codes) == 1 else "VALIDATION_FAILED"
    noun = "field is" if len(errors) == 1 else "fields are"
    detail = f"{len(errors)} {noun} invalid."
    listed = limits.problem_errors_max
    if len(errors) <= listed:
        return ProblemError(code, detail, errors=errors)
    omitted = len(errors) - listed
    return ProblemError(
        code,
        f"{detail[:-1]}; the first {listed} are listed, {omitted} more are omitted.",
        errors=errors[:listed],
        extra={"errorsOmitted": omitted},
    )


async def read_body(request: Request, max_bytes: int, too_large: str) -> bytes:
    """The body, at most `max_bytes` of it: 413 `PAYLOAD_TOO_LARGE` (detail `too_large`) at once
    for a larger declared Content-Length, and as soon as a streamed body passes the limit;
    nothing past the limit is read or kept."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ProblemError("PAYLOAD_TOO_LARGE", too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ProblemError("PAYLOAD_TOO_LARGE", too_large)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != JSON and not (media.startswith("application/") and media.endswith("+json")):
        raise ProblemError(
            "UNSUPPORTED_MEDIA_TYPE", "Send the body as Content-Type: application/json."
        )


_BODY_TOO_LARGE = f"The body exceeds {limits.request_body_bytes_max} bytes."


async def read_validated_body(
    request: Request,
    model: type[M],
    *,
    context: Mapping[str, Any],
    rules: Mapping[str, str],
    codes: Mapping[str, str],
) -> tuple[M, bytes]:
    """Read a partner body (≤ limit, JSON), validate it as `model`: (model, canonical bytes).

    A body up to `limits.inline_body_bytes_max` is parsed and validated right here (a few tens
    of microseconds); a larger one, whose parse and validation may take far longer, in a worker
    thread of the CPU limiter, so the event loop keeps serving everyone else meanwhile."""
    _require_json(request)
    raw = await read_body(request, limits.request_body_bytes_max, _BODY_TOO_LARGE)
    if len(raw) <= limits.inline_body_bytes_max:
        return _parse_and_validate(raw, model, context, rules, codes)
    return await anyio.to_thread.run_sync(
        _parse_and_validate,
        raw,
        model,
        context,
        rules,
        codes,
        limiter=request.app.state.ctx.cpu_limiter,
    )


def _parse_and_validate(
    raw: bytes,
    model: type[M],
    context: Mapping[str, Any],
    rules: Mapping[str, str],
    codes: Mapping[str, str],
) -> tuple[M, bytes]:
    obj, canonical = json_object_of(raw)
    return validate_body(model, obj, context=context, rules=rules, codes=codes), canonical


def json_object_of(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """`parse_json_object`, with the object's canonical bytes."""
    obj = parse_json_object(raw)
    try:
        return obj, canonical_json(obj)
    except UnicodeEncodeError as exc:  # "\ud800" parses, but names no character
        raise ProblemError(
            "MALFORMED_JSON",
            "The body is not valid JSON text: it holds an unpaired surrogate escape "
            "(\\ud800–\\udfff), which is not a Unicode character.",
        ) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class DuplicateMemberError(ValueError):
    """A JSON object names the same member twice (SPEC §6, amended 2026-11-30)."""

    def __init__(self, name: str, field: str | None = None) -> None:
        where = f" (at {field})" if field else ""
        super().__init__(
            f'member "{name}" appears more than once in one object{where}; send each member once'
        )
        self.name = name
        self.field = field


def _first_repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return name
        seen.add(name)
    raise AssertionError("no member is repeated")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateMemberError(_first_repeated(pairs))
    return obj


class _Repeats(dict[str, Any]):
    """An object that named a member twice, with the first such name (error path only)."""

    repeated = ""


def _marking_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeats(obj)
    marked.repeated = _first_repeated(pairs)
    return marked


def _first_repeat(raw: bytes | str) -> DuplicateMemberError:
    """The first duplicated member in document order, with its path (`issuances[1].milesAmount`).
    Parsed again, only once the fast parse has failed on a duplicate."""
    root = json.loads(raw, parse_float=Decimal, object_pairs_hook=_marking_repeats)
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Repeats):
                name = value.repeated
                return DuplicateMemberError(name, f"{path}.{name}" if path else name)
            stack.extend(
                (v, f"{path}.{k}" if path else k) for k, v in reversed(list(value.items()))
            )
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    raise AssertionError("no duplicated member found on the second parse")


def loads_partner_json(raw: bytes | str) -> Any:
    """Any JSON value a partner sends (a body, a line of a transaction log): numbers with a
    fraction or exponent become `Decimal` (never float), integers keep every digit, NaN and
    Infinity are refused, and so is an object naming a member twice, at any depth (one value
    must never be logged while another is acted on). ValueError (a `json.JSONDecodeError`, a
    `DuplicateMemberError` with the member's path, ...) or RecursionError otherwise."""
    try:
        return json.loads(
            raw,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except DuplicateMemberError:
        raise _first_repeat(raw) from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`loads_partner_json`, which must give an object; 400 `MALFORMED_JSON` otherwise."""
    try:
        obj = loads_partner_json(raw)
    except DuplicateMemberError as exc:
        raise ProblemError(
            "MALFORMED_JSON",
            f"The body is not valid JSON for this API: {exc}.",
            errors=[FieldError("MALFORMED_JSON", exc.field, "appears more than once")],
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ProblemError("MALFORMED_JSON", f"The body is not valid JSON: {reason}.") from exc
    if not isinstance(obj, dict):
        raise ProblemError("MALFORMED_JSON", "The body must be a JSON object.")
    return obj


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, numbers exactly as sent: what request fingerprints hash."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def validate_body(
    model: type[M],
    obj: dict[str, Any],
    *,
    context: Mapping[str, Any],
    rules: Mapping[str, str],
    codes: Mapping[str, str],
) -> M:
    try:
        return model.model_validate(obj, context=dict(context))
    except ValidationError as exc:
        errors = _distinct_field_errors(
            _field_error(err, rules=rules, codes=codes) for err in exc.errors(include_url=False)
        )
        raise _validation_problem(errors) from None


# --------------------------------------------------------------------------- auth


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ProblemError(
            "TOKEN_MISSING", "Send Authorization: Bearer <token>.", headers=BEARER_CHALLENGE
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(
            "TOKEN_INVALID",
            "The Authorization header must be 'Bearer <token>'.",
            headers=BEARER_CHALLENGE,
        )
    return token.strip()


def partner_principal(request: Request) -> Principal:
    """The verified bearer token's client (401 otherwise), noted for the access log."""
    principal: Principal = request.app.state.ctx.tokens.verify(bearer_token(request), utc_now())
    request.scope["state"]["client_id"] = principal.client_id
    return principal


async def authorize(request: Request) -> Principal:
    """`partner_principal`, then the client's rate budget (429 with Retry-After when spent)."""
    principal = partner_principal(request)
    ctx = request.app.state.ctx
    if ctx.api_budget is not None:
        await enforce_rate_limit(request, ctx.api_budget, "api:" + principal.client_id)
    return principal


async def enforce_rate_limit(
    request: Request,
    budget: ratelimit.Budget,
    key: str,
    *,
    charge: bool = True,
    detail: str = "Too many requests from this client; retry after {} s.",
) -> None:
    """429 when the budget of `key` is spent (`detail` with the seconds to wait); spends one
    request of it unless `charge` is off."""
    limiter = request.app.state.ctx.rate_limiter
    decision = await (limiter.hit(budget, key) if charge else limiter.peek(budget, key))
    if not decision.allowed:
        raise rate_limited(decision.retry_after_seconds, detail)


def rate_limited(seconds: int, detail: str) -> ProblemError:
    return ProblemError(
        "RATE_LIMITED", detail.format(seconds), headers={"Retry-After": str(seconds)}
    )


def sponsor_for(principal: Principal, sent: str | None) -> str:
    """`sponsorCode` may be left out when the client acts for exactly one sponsor."""
    if sent is None:
        if len(principal.sponsor_codes) != 1:
            raise ProblemError(
                "FIELD_REQUIRED",
                "sponsorCode is required: this client may act for several sponsors.",
                field="sponsorCode",
            )
        (sent,) = principal.sponsor_codes
    require_sponsor(principal, sent)
    return sent


def require_sponsor(principal: Principal, sponsor_code: str) -> None:
    if not principal.may_act_for(sponsor_code):
        raise ProblemError(
            "SPONSOR_NOT_ALLOWED",
            f"This client may not act for sponsor {sponsor_code}.",
            field="sponsorCode",
        )


# --------------------------------------------------------------------------- threads


async def run_sync(limiter: anyio.CapacityLimiter, fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


# --------------------------------------------------------------------------- OpenAPI


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can return."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        codes = sorted(spec.code for spec in CATALOGUE.values() if spec.status == status)
        out[status] = {
            "description": "Problem: " + ", ".join(f"`{c}`" for c in codes),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
