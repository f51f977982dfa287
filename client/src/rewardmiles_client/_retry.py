"""When to retry, and how long to wait: exponential backoff with full jitter."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from rewardmiles_client._errors import parse_retry_after, problem_code

#: Statuses a retry can fix. 409 only for IDEMPOTENCY_KEY_IN_USE (a request with the key is
#: still executing); 422 (key reused with another body) and every other 4xx are final.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that prove the request did no work, for calls without an Idempotency-Key.
UNPROCESSED_STATUSES = frozenset({429, 503})

#: Network failures a retry can fix (timeouts, refused/reset connections, broken responses).
RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
#: Network failures that prove the request never reached the server.
UNSENT_EXCEPTIONS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)


def sleep(seconds: float) -> None:
    """Indirection so tests can monkeypatch `rewardmiles_client._retry.sleep`."""
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_cap: float = 8.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt + 1` (full jitter, at least Retry-After)."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        jittered = random.uniform(0, ceiling)
        if retry_after is not None:
            return max(retry_after, jittered)
        return jittered

    def retry_status(self, response: httpx.Response, *, repeatable: bool) -> bool:
        status = response.status_code
        if not repeatable:
            return status in UNPROCESSED_STATUSES
        if status == 409:
            return problem_code(response) in (None, "IDEMPOTENCY_KEY_IN_USE")
        return status in RETRYABLE_STATUSES

    def retry_exception(self, exc: Exception, *, repeatable: bool) -> bool:
        kinds = RETRYABLE_EXCEPTIONS if repeatable else UNSENT_EXCEPTIONS
        return isinstance(exc, kinds)

    def wait_for(self, attempt: int, response: httpx.Response | None) -> float:
        return self.delay(attempt, parse_retry_after(response) if response is not None else None)
