"""The answers every layer shares: JSON and problem+json bodies, and the headers on every answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from rewardmiles.errors import ProblemError, problem_from_error

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# The console's pages post forms to the service: under `no-referrer` a browser sends such a post
# with `Origin: null`, which the console's cross-site check must refuse; `same-origin` names the
# origin to the service itself and still tells no other site where the operator was.
CONSOLE_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)
# Partner responses carry collector data and tokens: never cached by an intermediary.
NO_STORE = ((b"cache-control", b"no-store"),)


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    media = PROBLEM_JSON if status >= 400 else JSON
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers=headers)


def problem_response(error: ProblemError, request_id: str) -> Response:
    return json_response(error.status, problem_from_error(error, request_id), error.headers)
