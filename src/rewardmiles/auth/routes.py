"""`POST /oauth/token` (client credentials, form or HTTP Basic) and `/.well-known/jwks.json`."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.auth import service
from rewardmiles.auth.repository import StoredClient
from rewardmiles.auth.tokens import IssuedToken
from rewardmiles.errors import ProblemError
from rewardmiles.http.access import enforce_rate_limit, rate_limited
from rewardmiles.http.bodies import read_body
from rewardmiles.http.openapi import problem_responses
from rewardmiles.http.partner_json import parse_json_object
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.metrics import SIGN_INS_REJECTED

router = APIRouter(tags=["auth"])

CLIENT_CREDENTIALS = "client_credentials"
FORM = "application/x-www-form-urlencoded"


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


def _oauth_error(code: str, oauth_code: str, detail: str, *, basic: bool = False) -> ProblemError:
    # RFC 6749 §5.2 fields ride along as extension members, so OAuth client libraries understand.
    headers = {"WWW-Authenticate": 'Basic realm="rewardmiles"'} if basic else None
    return ProblemError(
        code, detail, headers=headers, extra={"error": oauth_code, "error_description": detail}
    )


async def _token_fields(request: Request) -> dict[str, str]:
    raw = await read_body(
        request,
        limits.token_body_bytes_max,
        f"The token request exceeds {limits.token_body_bytes_max} bytes.",
    )
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == FORM:
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if media == "application/json":
        # The partner bodies' rules (a member named twice is refused, whatever its depth).
        obj = parse_json_object(raw)
        return {k: v for k, v in obj.items() if isinstance(v, str)}
    raise ProblemError(
        "UNSUPPORTED_MEDIA_TYPE", f"Send the token request as {FORM} (or application/json)."
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _oauth_error(
            "INVALID_CLIENT", "invalid_client", "Malformed Basic credentials.", basic=True
        ) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _oauth_error(
            "INVALID_CLIENT", "invalid_client", "Malformed Basic credentials.", basic=True
        )
    return client_id, secret


@router.post(
    "/oauth/token",
    response_model=TokenResponse,
    summary="Exchange client credentials for a bearer token",
    responses=problem_responses(400, 401, 413, 415, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": [CLIENT_CREDENTIALS]},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(request: Request) -> Response:
    fields = await _token_fields(request)
    grant = fields.get("grant_type")
    if grant != CLIENT_CREDENTIALS:
        raise _oauth_error(
            "UNSUPPORTED_GRANT_TYPE",
            "unsupported_grant_type",
            "grant_type must be client_credentials.",
        )
    basic = _basic_credentials(request)
    client_id, secret = basic or (fields.get("client_id", ""), fields.get("client_secret", ""))
    if not client_id or not secret:
        raise _oauth_error(
            "INVALID_CLIENT",
            "invalid_client",
            "Client credentials are required.",
            basic=basic is not None,
        )
    ctx = request.app.state.ctx
    request.scope["state"]["client_id"] = client_id
    sign_ins = "token:" + client_id
    if ctx.token_budget is not None:
        # Only the right secret spends this budget, so only its holder can exhaust it: when it
        # is spent, refuse before the deliberately slow secret check.
        await enforce_rate_limit(request, ctx.token_budget, sign_ins, charge=False)

    def load_client() -> StoredClient | None:
        with ctx.db.reader() as session:
            return service.load_client(session, client_id)

    def check_secret(stored: StoredClient | None) -> list[str] | None:
        return service.check_secret(
            stored, secret, secret_hash_cost=ctx.settings.secret_hash_cost, now=clock.utc_now()
        )

    # The client is read in a database thread; the deliberately slow hash runs in a CPU thread
    # (`cpu_limiter`), so sign-ins never hold the database's threads (on SQLite its only one).
    # The secret is checked at the same cost whatever the outcome (an unknown client_id is
    # checked against a dummy hash of the configured cost): a right one always passes (a guesser
    # cannot lock its client out), a wrong one is charged to the failure budgets.
    address = _failure_key_of_address(request)
    async with ctx.secret_checks.hold(address):
        if ctx.token_failure_budget is not None:
            # An address that spent its failure budget tests no more secrets, right or wrong,
            # until it recovers: that is what slows a guesser. Its checks run one at a time, so
            # guesses sent together are judged like guesses sent in turn. A client_id's failure
            # budget never refuses before the check (anyone could spend it), so the client's own
            # addresses still pass.
            await enforce_rate_limit(
                request,
                ctx.token_failure_budget,
                address,
                charge=False,
                detail="Too many failed sign-ins from this address: no secret is checked from "
                "it for {} s.",
            )
        stored = await run_sync(ctx.limiter, load_client)
        sponsors = await run_sync(ctx.cpu_limiter, check_secret, stored)
        if sponsors is None:
            await _charge_failure(request, client_id)
    if sponsors is None:
        SIGN_INS_REJECTED.labels("oauth_token", "credentials").inc()
        raise _oauth_error(
            "INVALID_CLIENT",
            "invalid_client",
            "Unknown client or wrong secret.",
            basic=basic is not None,
        )
    if ctx.token_budget is not None:
        await enforce_rate_limit(request, ctx.token_budget, sign_ins)
    # Signing may refresh the signing keys from the database: a database thread.
    issued_at = clock.utc_now()
    issued: IssuedToken = await run_sync(
        ctx.limiter, ctx.tokens.issue, client_id, sponsors, issued_at
    )
    ctx.clients.note_issued(client_id, issued_at)  # written by its next pass, not here
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    return json_response(
        200, body, {"Pragma": "no-cache"}
    )  # Cache-Control: no-store is added for /oauth


async def _charge_failure(request: Request, client_id: str) -> None:
    """A failed sign-in spends the failure budget of its `client_id` and of its source address;
    once either is spent, wrong secrets get 429 (with `Retry-After`) instead of 401."""
    ctx = request.app.state.ctx
    budget = ctx.token_failure_budget
    if budget is None:
        return
    refused = [
        decision
        for key in ("token-fail:client:" + client_id, _failure_key_of_address(request))
        if not (decision := await ctx.rate_limiter.hit(budget, key)).allowed
    ]
    if refused:
        raise rate_limited(
            max(d.retry_after_seconds for d in refused),
            "Too many failed sign-ins for this client_id or from this address; retry after {} s.",
        )


def _failure_key_of_address(request: Request) -> str:
    return "token-fail:addr:" + (request.client.host if request.client else "unknown")


@router.get("/.well-known/jwks.json", summary="Public keys that verify bearer tokens")
async def jwks(request: Request) -> Response:
    return json_response(200, request.app.state.ctx.keys.jwks(), {"Cache-Control": "max-age=300"})
