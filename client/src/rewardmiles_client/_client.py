"""`IssuanceClient` (sync) and `AsyncIssuanceClient`: tokens, idempotency keys, retries, errors.

Both share `_Base`, which turns each endpoint call into a `_Call` (method, path, body, headers,
whether it may be repeated). Only the send loop differs between the two.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from rewardmiles_client import _retry
from rewardmiles_client._errors import TransportError, error_from_response
from rewardmiles_client._models import (
    BasketRequest,
    EventRequest,
    IssuanceResult,
    ProgramBasketRequest,
    dumps,
)
from rewardmiles_client._retry import RetryPolicy

ISSUANCE = "/checkout/issuance"
TOKEN_PATH = "/oauth/token"
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
USER_AGENT = "rewardmiles-client/0.1.0"

AnyRequest = EventRequest | BasketRequest | ProgramBasketRequest


@dataclass(slots=True)
class _Call:
    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    auth: bool = True
    # A repeat has no second effect: idempotency key, GET, RECORD (stored by id), token.
    repeatable: bool = True


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class _Base:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be ≥ 0")
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.retry_policy = RetryPolicy(max_retries, backoff_base, backoff_cap)
        self._token: _Token | None = None

    # ------------------------------------------------------------------ token

    def _token_call(self) -> _Call:
        form = httpx.QueryParams(
            {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self._client_secret,
            }
        )
        return _Call(
            "POST",
            TOKEN_PATH,
            content=str(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=False,
        )

    def _fresh_token(self) -> str | None:
        token = self._token
        if token is None or time.monotonic() >= token.expires_at - TOKEN_REFRESH_MARGIN_SECONDS:
            return None
        return token.value

    def _store_token(self, response: httpx.Response) -> str:
        body = response.json()
        value = str(body["access_token"])
        self._token = _Token(value, time.monotonic() + float(body.get("expires_in", 300)))
        return value

    # ------------------------------------------------------------------ calls

    @staticmethod
    def _write(path: str, request: AnyRequest, key: str | None, *, keyed: bool = True) -> _Call:
        headers = {"Content-Type": "application/json"}
        if keyed:
            headers["Idempotency-Key"] = key or str(uuid.uuid4())
        return _Call("POST", f"{ISSUANCE}{path}", content=dumps(request.to_wire()), headers=headers)

    @staticmethod
    def _find_call(
        sponsor_code: str | None,
        client_transaction_id: str | None,
        checkout_transaction_id: str | None,
    ) -> _Call:
        if (client_transaction_id is None) == (checkout_transaction_id is None):
            raise ValueError("give exactly one of client_transaction_id, checkout_transaction_id")
        params: dict[str, str] = {}
        if sponsor_code is not None:
            params["sponsorCode"] = sponsor_code
        if client_transaction_id is not None:
            params["clientTransactionId"] = client_transaction_id
        if checkout_transaction_id is not None:
            params["checkoutTransactionId"] = checkout_transaction_id
        return _Call("GET", f"{ISSUANCE}/transactions", params=params)

    @staticmethod
    def _audit_call(day: date | str, sponsor_code: str | None, fmt: str) -> _Call:
        params = {"date": day.isoformat() if isinstance(day, date) else day, "format": fmt}
        if sponsor_code is not None:
            params["sponsorCode"] = sponsor_code
        return _Call("GET", f"{ISSUANCE}/reports/audit", params=params)

    @staticmethod
    def _upload_call(
        data: bytes, media_type: str, issue_missing: bool, sponsor_code: str | None
    ) -> _Call:
        params = {"issueMissing": "true" if issue_missing else "false"}
        if sponsor_code is not None:
            params["sponsorCode"] = sponsor_code
        # No Idempotency-Key on uploads: retried only when the server surely did nothing.
        return _Call(
            "POST",
            f"{ISSUANCE}/batches",
            content=data,
            headers={"Content-Type": media_type},
            params=params,
            repeatable=False,
        )

    # ------------------------------------------------------------------ outcome of one try

    def _decide(
        self, call: _Call, response: httpx.Response, attempt: int, refreshed: bool
    ) -> Literal["done", "refresh", "retry"]:
        if response.is_success:
            return "done"
        if response.status_code == 401 and call.auth and not refreshed:
            self._token = None
            return "refresh"
        if attempt < self.retry_policy.max_retries and self.retry_policy.retry_status(
            response, repeatable=call.repeatable
        ):
            return "retry"
        raise error_from_response(response)

    def _on_exception(self, call: _Call, exc: httpx.HTTPError, attempt: int) -> None:
        """Returns when the failure may be retried; raises `TransportError` otherwise."""
        retryable = self.retry_policy.retry_exception(exc, repeatable=call.repeatable)
        if not retryable or attempt >= self.retry_policy.max_retries:
            tries = attempt + 1
            raise TransportError(
                f"{call.method} {call.path} failed after {tries} tr{'y' if tries == 1 else 'ies'}:"
                f" {type(exc).__name__}: {exc}"
            ) from exc


def _json(response: httpx.Response) -> Any:
    return response.json()


class IssuanceClient(_Base):
    """Synchronous client. Thread-safe; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        timeout: float | httpx.Timeout = 10.0,
    ) -> None:
        super().__init__(
            base_url,
            client_id,
            client_secret,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
        )
        self._token_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _bearer(self) -> str:
        with self._token_lock:
            token = self._fresh_token()
            if token is None:
                token = self._store_token(self._send(self._token_call()))
            return token

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        refreshed = False
        while True:
            headers = dict(call.headers)
            if call.auth:
                headers["Authorization"] = f"Bearer {self._bearer()}"
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    content=call.content,
                    headers=headers,
                    params=call.params,
                )
            except httpx.HTTPError as exc:
                self._on_exception(call, exc, attempt)
            if response is not None:
                decision = self._decide(call, response, attempt, refreshed)
                if decision == "done":
                    return response
                if decision == "refresh":
                    refreshed = True
                    continue
            _retry.sleep(self.retry_policy.wait_for(attempt, response))
            attempt += 1

    def _issue(self, call: _Call) -> IssuanceResult:
        return IssuanceResult.from_response(self._send(call))

    # ------------------------------------------------------------------ endpoints

    def post_event(
        self, request: EventRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        """POST/EVENT: issue the lines' miles."""
        return self._issue(self._write("/post/event", request, idempotency_key))

    def reverse_event(
        self, request: EventRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        """REVERSE/EVENT: take miles back (name the original in `original_client_transaction_id`)."""
        return self._issue(self._write("/reverse/event", request, idempotency_key))

    def post(self, request: BasketRequest, *, idempotency_key: str | None = None) -> IssuanceResult:
        """POST: a partner-calculated checkout basket."""
        return self._issue(self._write("/post", request, idempotency_key))

    def reverse(
        self, request: BasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        """REVERSE: a return against a basket (`original_checkout_transaction_id`)."""
        return self._issue(self._write("/reverse", request, idempotency_key))

    def record(self, request: BasketRequest) -> IssuanceResult:
        """RECORD: store for audit, no miles move. No Idempotency-Key (the id deduplicates)."""
        return self._issue(self._write("/record", request, None, keyed=False))

    def calculate(
        self, request: ProgramBasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        """CALCULATE: what ISSUE would issue now; no miles move. The answer is stored under the
        idempotency key, so a retry replays the same preview."""
        return self._issue(self._write("/calculate", request, idempotency_key))

    def issue(
        self, request: ProgramBasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        """ISSUE: the offers calculate the miles, then they are posted."""
        return self._issue(self._write("/issue", request, idempotency_key))

    def return_items(
        self, request: ProgramBasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        """RETURN: take back the miles of returned items of an ISSUE."""
        return self._issue(self._write("/return", request, idempotency_key))

    def get_transaction(self, transaction_id: str) -> dict[str, Any]:
        """A transaction by the program's `transactionId` (lines carry `milesReversed`)."""
        result: dict[str, Any] = _json(
            self._send(_Call("GET", f"{ISSUANCE}/transactions/{transaction_id}"))
        )
        return result

    def find_transaction(
        self,
        sponsor_code: str | None = None,
        client_transaction_id: str | None = None,
        checkout_transaction_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Accepted transactions with this partner id (give exactly one of the two ids)."""
        body = _json(
            self._send(
                self._find_call(sponsor_code, client_transaction_id, checkout_transaction_id)
            )
        )
        return list(body["transactions"])

    def audit_report(
        self,
        date: date | str,
        sponsor_code: str | None = None,
        format: Literal["json", "csv"] = "json",
    ) -> dict[str, Any] | str:
        """A Transaction Day's audit report: a dict (json) or the CSV text (csv)."""
        response = self._send(self._audit_call(date, sponsor_code, format))
        if format == "csv":
            return response.text
        result: dict[str, Any] = _json(response)
        return result

    def upload_log(
        self,
        data: bytes,
        media_type: str = "text/csv",
        issue_missing: bool = False,
        sponsor_code: str | None = None,
    ) -> dict[str, Any]:
        """Upload a partner transaction log; returns `{batchId, status}` (poll `get_batch`)."""
        result: dict[str, Any] = _json(
            self._send(self._upload_call(data, media_type, issue_missing, sponsor_code))
        )
        return result

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """A batch's status, counts and discrepancies."""
        result: dict[str, Any] = _json(self._send(_Call("GET", f"{ISSUANCE}/batches/{batch_id}")))
        return result


class AsyncIssuanceClient(_Base):
    """asyncio client with the same methods as `IssuanceClient`, as coroutines."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        timeout: float | httpx.Timeout = 10.0,
    ) -> None:
        super().__init__(
            base_url,
            client_id,
            client_secret,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
        )
        self._token_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _bearer(self) -> str:
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:
            token = self._fresh_token()
            if token is None:
                token = self._store_token(await self._send(self._token_call()))
            return token

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        refreshed = False
        while True:
            headers = dict(call.headers)
            if call.auth:
                headers["Authorization"] = f"Bearer {await self._bearer()}"
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    content=call.content,
                    headers=headers,
                    params=call.params,
                )
            except httpx.HTTPError as exc:
                self._on_exception(call, exc, attempt)
            if response is not None:
                decision = self._decide(call, response, attempt, refreshed)
                if decision == "done":
                    return response
                if decision == "refresh":
                    refreshed = True
                    continue
            await _retry.async_sleep(self.retry_policy.wait_for(attempt, response))
            attempt += 1

    async def _issue(self, call: _Call) -> IssuanceResult:
        return IssuanceResult.from_response(await self._send(call))

    async def post_event(
        self, request: EventRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/post/event", request, idempotency_key))

    async def reverse_event(
        self, request: EventRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/reverse/event", request, idempotency_key))

    async def post(
        self, request: BasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/post", request, idempotency_key))

    async def reverse(
        self, request: BasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/reverse", request, idempotency_key))

    async def record(self, request: BasketRequest) -> IssuanceResult:
        return await self._issue(self._write("/record", request, None, keyed=False))

    async def calculate(
        self, request: ProgramBasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/calculate", request, idempotency_key))

    async def issue(
        self, request: ProgramBasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/issue", request, idempotency_key))

    async def return_items(
        self, request: ProgramBasketRequest, *, idempotency_key: str | None = None
    ) -> IssuanceResult:
        return await self._issue(self._write("/return", request, idempotency_key))

    async def get_transaction(self, transaction_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _json(
            await self._send(_Call("GET", f"{ISSUANCE}/transactions/{transaction_id}"))
        )
        return result

    async def find_transaction(
        self,
        sponsor_code: str | None = None,
        client_transaction_id: str | None = None,
        checkout_transaction_id: str | None = None,
    ) -> list[dict[str, Any]]:
        body = _json(
            await self._send(
                self._find_call(sponsor_code, client_transaction_id, checkout_transaction_id)
            )
        )
        return list(body["transactions"])

    async def audit_report(
        self,
        date: date | str,
        sponsor_code: str | None = None,
        format: Literal["json", "csv"] = "json",
    ) -> dict[str, Any] | str:
        response = await self._send(self._audit_call(date, sponsor_code, format))
        if format == "csv":
            return response.text
        result: dict[str, Any] = _json(response)
        return result

    async def upload_log(
        self,
        data: bytes,
        media_type: str = "text/csv",
        issue_missing: bool = False,
        sponsor_code: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = _json(
            await self._send(self._upload_call(data, media_type, issue_missing, sponsor_code))
        )
        return result

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _json(
            await self._send(_Call("GET", f"{ISSUANCE}/batches/{batch_id}"))
        )
        return result
