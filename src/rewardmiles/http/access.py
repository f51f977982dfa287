"""Who may call: the bearer token's client, its rate budget, and the sponsors it may act for."""

from __future__ import annotations

from fastapi import Request

from rewardmiles import ratelimit
from rewardmiles.auth.tokens import BEARER_CHALLENGE, ExternalToken, Principal
from rewardmiles.clock import utc_now
from rewardmiles.errors import ProblemError
from rewardmiles.http.threads import run_sync
from rewardmiles.metrics import RATE_LIMITED


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


async def partner_principal(request: Request) -> Principal:
    """The verified bearer token's client (401 otherwise), noted for the access log. A token of
    an external identity provider not verified before is verified in a database thread (it may
    fetch the provider's keys and read its client's sponsors), once: then it is cached."""
    ctx = request.app.state.ctx
    token, now = bearer_token(request), utc_now()
    try:
        principal: Principal = ctx.tokens.verify(token, now)
    except ExternalToken:
        principal = await run_sync(ctx.limiter, ctx.tokens.verify_external, token, now)
    request.scope["state"]["client_id"] = principal.client_id
    return principal


async def authorize(request: Request) -> Principal:
    """`partner_principal`, then the client's rate budget (429 with Retry-After when spent)."""
    principal = await partner_principal(request)
    ctx = request.app.state.ctx
    if ctx.api_budget is not None:
        try:
            await enforce_rate_limit(request, ctx.api_budget, "api:" + principal.client_id)
        except ProblemError:
            RATE_LIMITED.inc()
            raise
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
