"""The error catalogue (`PROBLEM_CODES`) and the one exception type that carries one of its entries.

Every non-2xx response is an RFC 9457 problem document built from an `ErrorSpec` of this
catalogue. Codes are stable: partners and the audit report key on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    status: int
    title: str
    retryable: bool
    meaning: str
    # Answered by the admin API (`/admin`) only: left out of the partner routes' OpenAPI answers.
    admin: bool = False


_SPECS: tuple[ErrorSpec, ...] = (
    # -- request shape (400, nothing stored) --
    ErrorSpec(
        "VALIDATION_FAILED",
        400,
        "Invalid request",
        False,
        "Several fields are invalid; `errors[]` lists each with its own code.",
    ),
    ErrorSpec(
        "MALFORMED_JSON",
        400,
        "Body is not valid JSON",
        False,
        "The body could not be parsed as a JSON object, or an object in it names the same member "
        "twice (at any depth; `field` gives its path).",
    ),
    ErrorSpec(
        "FIELD_REQUIRED",
        400,
        "Required field missing",
        False,
        "A required field is absent or null.",
    ),
    ErrorSpec(
        "FIELD_INVALID",
        400,
        "Field invalid",
        False,
        "A field has the wrong type, length, format or range (a date-time that is not RFC 3339 "
        "exactly, with seconds and Z or ±hh:mm from -12:00 to +14:00, included).",
    ),
    ErrorSpec(
        "FIELD_UNKNOWN",
        400,
        "Unknown field",
        False,
        "The body carries a field this endpoint does not define (whatever its value, null "
        "included).",
    ),
    ErrorSpec(
        "COLLECTOR_NUMBER_INVALID",
        400,
        "Collector number invalid",
        False,
        "`collectorNumber` is not exactly 11 digits.",
    ),
    ErrorSpec(
        "MILES_AMOUNT_INVALID",
        400,
        "Miles amount invalid",
        False,
        "`milesAmount` is not a JSON integer between 1 and the per-line maximum.",
    ),
    ErrorSpec(
        "IDEMPOTENCY_KEY_INVALID",
        400,
        "Idempotency-Key invalid",
        False,
        "The Idempotency-Key header is empty, too long or not printable ASCII.",
    ),
    ErrorSpec(
        "BASKET_AMOUNTS_INCONSISTENT",
        400,
        "Basket amounts inconsistent",
        False,
        "Pre-tax plus taxes differ from post-tax, or items do not add up to the pre-tax amount "
        "(tolerance 0.01).",
    ),
    # -- business rules (400, recorded as a rejected transaction) --
    ErrorSpec(
        "SPONSOR_UNKNOWN", 400, "Sponsor unknown", False, "No sponsor has this `sponsorCode`."
    ),
    ErrorSpec(
        "SPONSOR_INACTIVE", 400, "Sponsor inactive", False, "The sponsor exists but is not active."
    ),
    ErrorSpec(
        "OFFER_UNKNOWN",
        400,
        "Offer unknown",
        False,
        "The sponsor has no offer with this `issuanceOfferCode`.",
    ),
    ErrorSpec(
        "OFFER_INACTIVE",
        400,
        "Offer inactive",
        False,
        "The offer is disabled or not valid on the transaction date.",
    ),
    ErrorSpec(
        "LOCATION_UNKNOWN",
        400,
        "Location unknown",
        False,
        "The sponsor registers locations and `locationCode` is not one of them.",
    ),
    ErrorSpec(
        "DATE_OUT_OF_RANGE",
        400,
        "Date out of range",
        False,
        "The transaction date is more than 5 minutes in the future or older than the "
        "backdate window (default 30 days).",
    ),
    ErrorSpec(
        "COLLECTOR_NOT_FOUND",
        400,
        "Collector not found",
        False,
        "The collector number is unknown and the program rejects unknown collectors.",
    ),
    ErrorSpec(
        "COLLECTOR_CLOSED", 400, "Collector closed", False, "The collector's account is closed."
    ),
    ErrorSpec(
        "RETURN_EXCEEDS_PURCHASE",
        400,
        "Return exceeds purchase",
        False,
        "The quantity returned so far plus this request exceeds the quantity bought.",
    ),
    ErrorSpec(
        "DUPLICATE_TRANSACTION",
        400,
        "Duplicate transaction",
        False,
        "This transaction id was already accepted for this sponsor and endpoint with a "
        "different body.",
    ),
    ErrorSpec(
        "ORIGINAL_NOT_FOUND",
        400,
        "Original transaction not found",
        False,
        "The original named by the reversal was not accepted for this sponsor.",
    ),
    ErrorSpec(
        "ORIGINAL_WRONG_FAMILY",
        400,
        "Original taken back by another endpoint",
        False,
        "The original named exists but was issued by the other family of endpoints: miles of an "
        "ISSUE (program-calculated) go back through RETURN, those of a POST through REVERSE or "
        "REVERSE/EVENT.",
    ),
    ErrorSpec(
        "ORIGINAL_COLLECTOR_MISMATCH",
        400,
        "Original belongs to another collector",
        False,
        "The original transaction was for a different collector.",
    ),
    ErrorSpec(
        "REVERSAL_EXCEEDS_ORIGINAL",
        400,
        "Reversal exceeds original",
        False,
        "For an offer code, the miles reversed so far plus this request exceed the miles "
        "issued on the original.",
    ),
    ErrorSpec(
        "INSUFFICIENT_BALANCE",
        400,
        "Insufficient balance",
        False,
        "The reversal (or an operator's adjustment, at `miles`) would take the balance below "
        "zero and the program forbids it (`REWARDMILES_NEGATIVE_BALANCE_POLICY=reject`).",
    ),
    ErrorSpec(
        "PENDING_EXPIRED",
        400,
        "Pending line expired",
        False,
        "A pending line could not settle within the pending window.",
    ),
    ErrorSpec(
        "REVIEW_REJECTED",
        400,
        "Rejected at review",
        False,
        "A line held for review was refused by an operator (`rewardmiles pending reject`).",
    ),
    # -- protocol --
    ErrorSpec(
        "TOKEN_MISSING", 401, "Bearer token missing", False, "No `Authorization: Bearer` header."
    ),
    ErrorSpec(
        "TOKEN_INVALID",
        401,
        "Bearer token invalid",
        False,
        "The token's signature, issuer, audience or shape is wrong.",
    ),
    ErrorSpec(
        "TOKEN_EXPIRED",
        401,
        "Bearer token expired",
        True,
        "The token has expired; request a new one.",
    ),
    ErrorSpec(
        "TOKEN_REVOKED",
        401,
        "Bearer token revoked",
        False,
        "The token's client was revoked by an operator (a leaked secret, an ended contract): "
        "its tokens are refused and its secrets no longer sign in. Ask the program for a new "
        "client.",
    ),
    ErrorSpec(
        "INVALID_CLIENT",
        401,
        "Client authentication failed",
        False,
        "Unknown client, wrong secret or disabled client at `/oauth/token`.",
    ),
    ErrorSpec(
        "UNSUPPORTED_GRANT_TYPE",
        400,
        "Unsupported grant type",
        False,
        "`/oauth/token` supports `grant_type=client_credentials` only.",
    ),
    ErrorSpec(
        "SPONSOR_NOT_ALLOWED",
        403,
        "Sponsor not allowed",
        False,
        "The token's client may not act for this sponsor.",
    ),
    # -- the admin API (/admin): operators' sessions and admin tokens --
    ErrorSpec(
        "ADMIN_UNAUTHENTICATED",
        401,
        "Admin credentials missing or invalid",
        False,
        "An `/admin` call without an admin credential, or with one that is not valid: no "
        "session cookie and no `Authorization: Bearer` admin token, an unknown, revoked or "
        "expired admin token, a session that does not exist (signed out), or a partner token "
        "(partner tokens are never accepted on `/admin`).",
        admin=True,
    ),
    ErrorSpec(
        "ADMIN_SESSION_EXPIRED",
        401,
        "Session expired",
        True,
        "The operator's session ended: idle longer than `REWARDMILES_ADMIN_SESSION_IDLE_MINUTES` "
        "(30) or older than `REWARDMILES_ADMIN_SESSION_ABSOLUTE_HOURS` (12). Sign in again.",
        admin=True,
    ),
    ErrorSpec(
        "SIGN_IN_FAILED",
        401,
        "Sign-in failed",
        False,
        "`POST /admin/session`: unknown e-mail, wrong password or disabled operator (one answer "
        "for all three).",
        admin=True,
    ),
    ErrorSpec(
        "ADMIN_FORBIDDEN",
        403,
        "Role not allowed",
        False,
        "The operator's or admin token's role does not allow this call (viewer < agent < admin).",
        admin=True,
    ),
    ErrorSpec(
        "CSRF_REJECTED",
        403,
        "Cross-site request refused",
        False,
        "A `POST`, `PUT`, `PATCH` or `DELETE` authenticated by the session cookie without the "
        "session's `X-CSRF-Token`, with another token, or with an `Origin` header naming another "
        "host than `Host`. Nothing was done.",
        admin=True,
    ),
    ErrorSpec(
        "SIGN_IN_THROTTLED",
        429,
        "Too many failed sign-ins",
        True,
        "Too many failed sign-ins for this account from this address, or from this address "
        "overall: no password is checked from it until `Retry-After` seconds have passed. "
        "Other addresses are not affected.",
        admin=True,
    ),
    ErrorSpec(
        "PARTNER_CLIENT_REVOKED",
        409,
        "Partner client revoked",
        False,
        "The partner client was revoked: its secret cannot be rotated (revocation is final; "
        "create a new client).",
        admin=True,
    ),
    ErrorSpec(
        "ALREADY_EXISTS",
        409,
        "Already exists",
        False,
        "The sponsor, location or offer to create exists already; nothing was changed. Read it, "
        "or change it with its own route.",
        admin=True,
    ),
    ErrorSpec(
        "OPERATOR_ACTION_REFUSED",
        422,
        "Refused by the catalogue's rules",
        False,
        "A well-formed admin request that the catalogue's rules refuse (the same rules and "
        "words as the CLI's): a code of the wrong shape, an invalid offer rule, validFrom after "
        "validTo, a webhook target that is not allowed, a delivery that is not failed… `detail` "
        "says which, `field` names the member at fault. Nothing was changed.",
        admin=True,
    ),
    ErrorSpec(
        "LINE_NOT_PENDING_REVIEW",
        409,
        "Line not pending review",
        False,
        "`/admin/v1/pending/…`: a line named is not found, no longer pending review (approved, "
        "settled or rejected meanwhile), or named twice in one bulk review; `field` names it "
        "(`lineId`, or `lineIds[i]`). Nothing of the review was changed.",
        admin=True,
    ),
    ErrorSpec(
        "CURSOR_INVALID",
        400,
        "Cursor invalid",
        False,
        "`cursor` is not one this list gave for this resource, or was altered (a collector's "
        "history signs its cursors). Start again from the first page.",
        admin=True,
    ),
    ErrorSpec(
        "ADJUSTMENT_COLLECTOR_INACTIVE",
        409,
        "Collector not active",
        False,
        "The collector is ON_HOLD or CLOSED: only a FRAUD or CORRECTION adjustment may move "
        "its miles. Nothing was done.",
        admin=True,
    ),
    ErrorSpec(
        "METRICS_UNAUTHORIZED",
        401,
        "Metrics token required",
        False,
        "`GET /metrics` from an address outside loopback and the configured networks needs "
        "`Authorization: Bearer` with the metrics token; none or another was sent.",
        admin=True,
    ),
    ErrorSpec(
        "METRICS_FORBIDDEN",
        403,
        "Metrics not served to this address",
        False,
        "`GET /metrics` answers loopback and the configured networks only, and no metrics "
        "token is configured that could open it from elsewhere.",
        admin=True,
    ),
    ErrorSpec("NOT_FOUND", 404, "Not found", False, "No such resource."),
    ErrorSpec(
        "METHOD_NOT_ALLOWED",
        405,
        "Method not allowed",
        False,
        "The path exists but not for this HTTP method.",
    ),
    ErrorSpec(
        "REQUEST_TIMEOUT",
        408,
        "Request timeout",
        True,
        "The request line and headers did not arrive within `REWARDMILES_HTTP_HEAD_TIMEOUT_SECONDS` "
        "(10 s by default) of their first byte; the connection is closed. Nothing was read or "
        "stored: send the request again, whole.",
    ),
    ErrorSpec(
        "IDEMPOTENCY_KEY_IN_USE",
        409,
        "Idempotency key in use",
        True,
        "A request with this key is still executing; retry after `Retry-After` seconds.",
    ),
    ErrorSpec(
        "PAYLOAD_TOO_LARGE",
        413,
        "Payload too large",
        False,
        "The body exceeds the request size limit (1 MiB; a partner log: "
        "`REWARDMILES_BATCH_UPLOAD_BYTES_MAX`, 256 MiB). In a partner log's results: a line "
        "longer than `REWARDMILES_BATCH_LINE_BYTES_MAX` (64 KiB), refused on its own.",
    ),
    ErrorSpec(
        "HEADERS_TOO_LARGE",
        431,
        "Request headers too large",
        False,
        "More than 100 headers, more than 16 KiB of header names and values, or a request "
        "line and headers over 32 KiB as sent (refused while they arrive; the connection is "
        "then closed).",
    ),
    ErrorSpec(
        "UNSUPPORTED_MEDIA_TYPE",
        415,
        "Unsupported media type",
        False,
        "Partner calls need `Content-Type: application/json`.",
    ),
    ErrorSpec(
        "IDEMPOTENCY_KEY_REUSED",
        422,
        "Idempotency key reused",
        False,
        "The key was already used with a different request (an operator's adjustment: by the "
        "same operator, for another collector, amount, reason or note).",
    ),
    ErrorSpec(
        "RATE_LIMITED",
        429,
        "Rate limited",
        True,
        "Too many requests; retry after `Retry-After` seconds.",
    ),
    ErrorSpec(
        "INTERNAL_ERROR",
        500,
        "Internal error",
        True,
        "The request failed on our side and stored nothing; retry with the same "
        "Idempotency-Key. Quote `requestId` to the support desk.",
    ),
    ErrorSpec(
        "SERVICE_UNAVAILABLE",
        503,
        "Service unavailable",
        True,
        "The database is unreachable, timed out or not migrated, or takes no writes (a "
        "failover under way), or the API process holds as many connections as it takes; retry "
        "after `Retry-After` seconds with the same Idempotency-Key.",
    ),
    ErrorSpec(
        "BATCH_QUEUE_FULL",
        503,
        "Too many partner logs",
        True,
        "Every place for partner-log uploads is taken (those being matched and those waiting); "
        "nothing was read or stored. Retry the upload after `Retry-After` seconds.",
    ),
)

PROBLEM_CODES: Mapping[str, ErrorSpec] = {spec.code: spec for spec in _SPECS}


@dataclass(frozen=True, slots=True)
class FieldError:
    code: str
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code}
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out


class ProblemError(Exception):
    """An expected failure with a catalogue code; rendered as problem+json."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if code not in PROBLEM_CODES:
            raise KeyError(f"error code {code!r} is not in the catalogue")
        super().__init__(detail)
        self.spec = PROBLEM_CODES[code]
        self.detail = detail
        self.errors: tuple[FieldError, ...] = tuple(errors) or (
            (FieldError(code, field, detail),) if field is not None else ()
        )
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def status(self) -> int:
        return self.spec.status


class FieldRuleError(ValueError):
    """Raised by a model validator for a rule that spans fields; reported with its own code at
    `field` (a path relative to the model being validated)."""

    def __init__(self, code: str, field: str, message: str) -> None:
        if code not in PROBLEM_CODES:
            raise KeyError(f"error code {code!r} is not in the catalogue")
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


class OperatorError(ValueError):
    """An operator action (CLI or admin API) refused with a message for the operator: bad code,
    bad rule, dates out of order… `field` names the input at fault when there is one (the admin
    API's problem `field`: its body's member name)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AlreadyExistsError(OperatorError):
    """The thing to create exists already (a sponsor, a location, an offer)."""


class MissingError(OperatorError):
    """The thing to act on does not exist (or is no longer active)."""


class BusinessRuleError(ProblemError):
    """A well-formed request that breaks a rule of SPEC §3: recorded as a rejected transaction."""


@dataclass(slots=True)
class ProblemBody:
    spec: ErrorSpec
    detail: str
    errors: tuple[FieldError, ...] = field(default_factory=tuple)
    request_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.spec.code),
            "title": self.spec.title,
            "status": self.spec.status,
            "detail": self.detail,
            "code": self.spec.code,
        }
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        if self.request_id is not None:
            body["requestId"] = self.request_id
        body.update(self.extra)
        return body


def problem_type(code: str) -> str:
    return f"/problems/{code}"


def problem_from_error(error: ProblemError, request_id: str | None) -> dict[str, Any]:
    return ProblemBody(error.spec, error.detail, error.errors, request_id, error.extra).as_dict()


def problem(code: str, detail: str, request_id: str | None = None) -> dict[str, Any]:
    return ProblemBody(PROBLEM_CODES[code], detail, (), request_id).as_dict()
