"""Request bodies: read within a size limit, JSON media type, then a partner body parsed and
validated as its model (on the event loop when small, in a CPU worker thread when large)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
from fastapi import Request

from rewardmiles import limits
from rewardmiles.errors import ProblemError
from rewardmiles.http.partner_json import json_object_of, parse_json_object
from rewardmiles.http.responses import JSON
from rewardmiles.http.validation import M, validate_body


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


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """A small JSON body (the admin API's): `Content-Type` JSON (415), at most `max_bytes`
    (413), one JSON object read by the partner bodies' rules (400 `MALFORMED_JSON`)."""
    _require_json(request)
    raw = await read_body(request, max_bytes, f"The body exceeds {max_bytes} bytes.")
    return parse_json_object(raw)


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
