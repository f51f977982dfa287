"""Exceptions raised by the client; every one derives from `RewardMilesError`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx


class RewardMilesError(Exception):
    """Base class of every error this package raises."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of a problem document's `errors[]`."""

    code: str
    field: str | None
    message: str | None


class ProblemError(RewardMilesError):
    """The service answered with an RFC 9457 problem document (a non-2xx status)."""

    def __init__(
        self,
        status: int,
        code: str | None,
        detail: str | None,
        errors: list[FieldError] | None = None,
        request_id: str | None = None,
        *,
        title: str | None = None,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = list(errors or [])
        self.request_id = request_id
        self.title = title
        self.body = dict(body or {})
        self.retry_after = retry_after
        text = f"{status} {code or 'ERROR'}: {detail or title or ''}".rstrip(": ")
        if request_id:
            text += f" (requestId={request_id})"
        super().__init__(text)


class BadRequestError(ProblemError):
    """400: malformed request or a business rule refused it (see `code`)."""


class AuthenticationError(ProblemError):
    """401: bad credentials, or the token was refused even after one refresh."""


class ForbiddenError(ProblemError):
    """403: this client may not act for the sponsor."""


class NotFoundError(ProblemError):
    """404: no such resource (or not visible to this client)."""


class ConflictError(ProblemError):
    """409 (key still in use, after retries) or 422 (key reused with a different request)."""


class ServerError(ProblemError):
    """5xx after every retry was spent."""


class TransportError(RewardMilesError):
    """The network failed on every try (connect/read errors, timeouts)."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: ConflictError,
}


def parse_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def problem_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def error_from_response(response: httpx.Response) -> ProblemError:
    """Build the typed error for a non-2xx response."""
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict):
            body = parsed
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    errors = [
        FieldError(
            code=str(item.get("code", "")),
            field=item.get("field"),
            message=item.get("message"),
        )
        for item in body.get("errors") or []
        if isinstance(item, dict)
    ]
    status = response.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ProblemError)
    detail = body.get("detail")
    if detail is None and not body:
        detail = response.text[:500] or None
    return cls(
        status,
        body.get("code") or body.get("error"),
        detail if detail is None else str(detail),
        errors,
        body.get("requestId") or response.headers.get("x-request-id"),
        title=body.get("title"),
        body=body,
        retry_after=parse_retry_after(response),
    )
