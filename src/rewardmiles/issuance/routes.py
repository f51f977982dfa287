"""The partner event endpoints. Thin: authenticate, parse, call one service function, respond."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import service
from rewardmiles.issuance.schemas import (
    FIELD_CODES,
    FIELD_RULES,
    EventRequestBase,
    EventResponse,
    PostEventRequest,
    ReverseEventRequest,
)
from rewardmiles.web import (
    bearer_token,
    json_response,
    problem_responses,
    read_json_object,
    request_id_of,
    require_sponsor,
    run_sync,
    validate_body,
)

router = APIRouter(prefix="/checkout/issuance", tags=["issuance"])

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1–255 printable ASCII characters (a V4 UUID is a good choice); scoped to the "
    "client. A retry with the same key and body returns the stored result with "
    "`Idempotent-Replayed: true` and has no new effect.",
    "schema": {"type": "string", "maxLength": 255},
}

WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EventResponse, "description": "Every line posted."},
    202: {"model": EventResponse, "description": "At least one line is PENDING."},
    **problem_responses(400, 401, 403, 409, 413, 415, 422, 500),
}


def _request_body(model: type[EventRequestBase]) -> dict[str, Any]:
    return {
        "parameters": [IDEMPOTENCY_HEADER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
    }


async def _handle(
    request: Request, endpoint: service.Endpoint, model: type[EventRequestBase]
) -> Response:
    ctx = request.app.state.ctx
    principal = ctx.tokens.verify(bearer_token(request), clock.utc_now())
    request.scope["state"]["client_id"] = principal.client_id
    key = idempotency.parse_key(request.headers.get("idempotency-key"))
    obj, canonical = await read_json_object(request)
    body = validate_body(
        model,
        obj,
        context={"miles_per_line_max": ctx.settings.miles_per_line_max},
        rules=FIELD_RULES,
        codes=FIELD_CODES,
    )
    require_sponsor(principal, body.sponsor_code)
    call = service.PartnerCall(
        endpoint=endpoint,
        client_id=principal.client_id,
        body=body,
        request_json=canonical.decode(),
        fingerprint=idempotency.fingerprint(request.method, request.url.path, canonical),
        idempotency_key=key,
        request_id=request_id_of(request),
    )
    outcome = await run_sync(ctx.limiter, service.execute, ctx.db, ctx.settings, ctx.registry, call)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return json_response(outcome.status, outcome.body, headers)


@router.post(
    "/post/event",
    summary="POST/EVENT: issue partner-calculated miles for a non-purchase event",
    responses=WRITE_RESPONSES,
    openapi_extra=_request_body(PostEventRequest),
)
async def post_event(request: Request) -> Response:
    return await _handle(request, service.Endpoint.POST_EVENT, PostEventRequest)


@router.post(
    "/reverse/event",
    summary="REVERSE/EVENT: reverse partner-calculated miles (correction or reversal of an event)",
    responses=WRITE_RESPONSES,
    openapi_extra=_request_body(ReverseEventRequest),
)
async def reverse_event(request: Request) -> Response:
    return await _handle(request, service.Endpoint.REVERSE_EVENT, ReverseEventRequest)
