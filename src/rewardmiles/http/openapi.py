"""The OpenAPI document: the framework's, with every error as a problem+json answer.

Routes declare their error statuses with `problem_responses`; `document` adds what every route
may answer (header limits, database faults, and the rate limit of an authenticated call), drops
FastAPI's default 422 body (bad input here is a 400 problem), and lists the partner request
models, whose routes read their bodies themselves (`http.bodies`) and so declare them by
reference only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from rewardmiles import limits
from rewardmiles.errors import PROBLEM_CODES
from rewardmiles.http.responses import PROBLEM_JSON


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can return (the admin API's
    own codes left out: see `admin_problem_responses`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        codes = [
            spec.code for spec in PROBLEM_CODES.values() if spec.status == status and not spec.admin
        ]
        out[status] = _problem_entry(codes)
    return out


def admin_problem_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries of an admin route: the codes it can answer, by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(PROBLEM_CODES[code].status, []).append(code)
    return {status: _problem_entry(found) for status, found in sorted(by_status.items())}


def _problem_entry(codes: Iterable[str]) -> dict[str, Any]:
    return {
        "description": "Problem: " + ", ".join(f"`{c}`" for c in sorted(codes)),
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(PROBLEM_CODES)},
        "errors": {
            "type": "array",
            "maxItems": limits.problem_errors_max,
            "items": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "field": {"type": "string", "examples": ["issuances[0].milesAmount"]},
                    "message": {"type": "string"},
                },
            },
        },
        "errorsOmitted": {
            "type": "integer",
            "minimum": 1,
            "description": f"Present when more than {limits.problem_errors_max} errors were "
            "found: how many more there are beyond those listed in `errors`.",
        },
        "requestId": {"type": "string"},
    },
}


def _is_default_422(operation: dict[str, Any]) -> bool:
    content = operation.get("responses", {}).get("422", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return bool(ref.endswith("/HTTPValidationError"))


def document(app: FastAPI, request_models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """`app`'s OpenAPI document (built once, then kept in `app.openapi_schema`), with the schemas
    of `request_models` among its components."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's default 422 body never leaves this app (bad input is a 400 problem): drop it.
    for operations in schema["paths"].values():
        for operation in operations.values():
            if _is_default_422(operation):
                del operation["responses"]["422"]
    # Every request may meet the header limits (431) and a database fault (500/503); every
    # authenticated partner call a rate limit (429).
    for operations in schema["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            # The partner API's authenticated calls are rate limited; the admin API's are not.
            limited = "401" in responses and "admin" not in operation.get("tags", ())
            extra = (429, 431, 500, 503) if limited else (431, 500, 503)
            for status, entry in problem_responses(*extra).items():
                responses.setdefault(str(status), entry)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    _, request_schemas = models_json_schema(
        [(model, "validation") for model in request_models],
        ref_template="#/components/schemas/{model}",
    )
    components.update(request_schemas.get("$defs", {}))
    components["Problem"] = PROBLEM_SCHEMA
    app.openapi_schema = schema
    return schema
