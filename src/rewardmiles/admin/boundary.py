"""What every `/admin/v1` route does around its one service call: who acts (for the audit log),
the unit of work or read-only session in a database thread, the services' refusals as problems,
the body read and validated, path and query values checked after authentication.

A refusal (`errors.OperatorError`, the CLI's words) becomes: `AlreadyExistsError` 409
`ALREADY_EXISTS`, `MissingError` 404 `NOT_FOUND`, any other 422 `OPERATOR_ACTION_REFUSED`, with
the member at fault in `field`. Nothing of a refused change stays: the unit of work rolls back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from rewardmiles.errors import AlreadyExistsError, MissingError, OperatorError, ProblemError
from rewardmiles.http.bodies import read_json_object
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.threads import run_sync
from rewardmiles.http.validation import validate_body
from rewardmiles.operators.service import Actor, Caller

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

BODY_BYTES_MAX = 64 * 1024  # an offer's rule is the largest body of the admin API
BODY_PROBLEMS = (
    "VALIDATION_FAILED",
    "MALFORMED_JSON",
    "FIELD_REQUIRED",
    "FIELD_INVALID",
    "FIELD_UNKNOWN",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
)
REFUSALS = ("ALREADY_EXISTS", "NOT_FOUND", "OPERATOR_ACTION_REFUSED")
ID_PATTERN = r"^[0-9a-f-]{1,36}$"  # the ids the service makes (uuid4, with or without dashes)


class Body(BaseModel):
    """An admin request body: strict types, no member it does not name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def actor(request: Request, caller: Caller) -> Actor:
    """The audit log's name of the caller, with the request's id."""
    return Actor(caller.actor, request_id_of(request) or None)


def checked(value: str, pattern: str, field: str) -> str:
    """A path or query value of the shape `pattern`, checked after the caller is authenticated
    (a caller without credentials learns nothing from a malformed path)."""
    if not re.fullmatch(pattern, value):
        raise ProblemError("FIELD_INVALID", f"{field} does not have the shape of one.", field=field)
    return value


def refused(exc: OperatorError) -> ProblemError:
    if isinstance(exc, AlreadyExistsError):
        return ProblemError("ALREADY_EXISTS", str(exc), field=exc.field)
    if isinstance(exc, MissingError):
        return ProblemError("NOT_FOUND", str(exc))
    return ProblemError("OPERATOR_ACTION_REFUSED", str(exc), field=exc.field)


async def read(request: Request, work: Callable[[Session], T]) -> T:
    """`work` on a read-only session, in a database thread."""
    ctx = request.app.state.ctx

    def run() -> T:
        with ctx.db.reader() as session:
            return work(session)

    try:
        return await run_sync(ctx.limiter, run)
    except OperatorError as exc:
        raise refused(exc) from None


async def change(request: Request, work: Callable[[Session], T]) -> T:
    """`work` in one unit of work, in a database thread: all of it, or nothing after a refusal."""
    ctx = request.app.state.ctx

    def run() -> T:
        with ctx.db.unit_of_work() as session:
            return work(session)

    try:
        return await run_sync(ctx.limiter, run)
    except OperatorError as exc:
        raise refused(exc) from None


async def body(request: Request, model: type[M], rules: dict[str, str]) -> M:
    """The JSON body (at most `BODY_BYTES_MAX`) validated as `model`: 400 problems per field."""
    obj = await read_json_object(request, BODY_BYTES_MAX)
    return validate_body(model, obj, context={}, rules=rules, codes={})
