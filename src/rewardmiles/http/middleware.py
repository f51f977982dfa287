"""The request context every request runs in, on the direct lane and through the framework alike:
its request id, the header limits, one access-log line and the request's metrics, and the
last-resort 500."""

from __future__ import annotations

import re
import time
import traceback

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardmiles import ids, limits, logs
from rewardmiles.clock import utc_now
from rewardmiles.errors import problem
from rewardmiles.http.responses import (
    CONSOLE_SECURITY_HEADERS,
    NO_STORE,
    SECURITY_HEADERS,
    json_response,
)
from rewardmiles.metrics import observe_request

# The access-log status of a request whose client went away before its answer (nginx's code): no
# answer is sent, and it is no server error.
CLIENT_CLOSED_REQUEST = 499
REQUEST_ID_HEADER = "x-request-id"
# The partner API: its failed calls are recorded for the support desk (`support.recorder`).
PARTNER_PREFIXES = ("/checkout/", "/oauth/")
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

log = logs.get_logger("rewardmiles.http")


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "")


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
        # Partner and admin answers carry collector data, tokens and sessions: never cached.
        path = str(scope.get("path", ""))
        private_data = path.startswith(("/checkout/", "/oauth/", "/admin/"))
        security = CONSOLE_SECURITY_HEADERS if path.startswith("/console") else SECURITY_HEADERS
        started = time.perf_counter()
        status_holder = {"status": 500, "sent": False}
        failed_body: list[bytes] | None = None  # a failed partner call's answer, for the recorder

        async def send_with_id(message: Message) -> None:
            nonlocal failed_body
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["sent"] = True
                if message["status"] >= 400 and str(scope.get("path", "")).startswith(
                    PARTNER_PREFIXES
                ):
                    failed_body = []
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    *security,
                    *(NO_STORE if private_data else ()),
                ]
            elif failed_body is not None:
                failed_body.append(message.get("body", b""))
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
            if failed_body is not None:
                _record_failure(scope, request_id, status_holder["status"], failed_body)
            elapsed = time.perf_counter() - started
            log.info(
                "request",
                request_id=request_id,
                method=scope.get("method"),
                path=scope.get("path"),
                status=status_holder["status"],
                duration_ms=round(elapsed * 1000, 2),
                client_id=scope["state"].get("client_id"),
            )
            observe_request(scope, status_holder["status"], elapsed)


def _record_failure(scope: Scope, request_id: str, status: int, body: list[bytes]) -> None:
    """Hand a failed partner call to the application's failure recorder (`support.recorder`):
    one append to its queue, after the answer is sent."""
    recorder = getattr(getattr(scope.get("app"), "state", None), "failures", None)
    if recorder is not None:
        recorder.offer(
            (
                utc_now(),
                request_id,
                scope["state"].get("client_id"),
                str(scope.get("method", "")),
                str(scope.get("path", "")),
                status,
                b"".join(body),
            )
        )


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key == wanted:
            return str(value.decode("latin-1"))
    return None
