"""Webhook delivery, beside the settlement loop: a receiver that is slow, or gone, delays no one.

The dispatcher runs in its own thread with its own event loop. It claims due deliveries from the
outbox (`service.lease_due`, in a short transaction of its own: rows locked by another claimer
skipped) as long as it has a free slot — at most `webhook_concurrency` deliveries in flight — and
gives each one a deadline for the whole of it (`webhook_deadline_seconds`: resolve, connect,
send, the status line and headers of the answer). An attempt cut at its deadline is a failed
attempt like any other, retried with backoff; each result is recorded in a transaction of its
own (`service.record_attempt`). The lease outlasts the deadline, so no delivery is in flight
twice. The answer's body is never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

import httpx

from rewardmiles import clock, limits, logs, secretbox
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.metrics import WEBHOOK_FAILURES
from rewardmiles.webhooks import service, targets

log = logs.get_logger("rewardmiles.webhooks")

T = TypeVar("T")


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        poll_seconds: float = 1.0,
        now: Callable[[], datetime] = clock.utc_now,
    ) -> None:
        self._db = db
        self._settings = settings
        self._poll_seconds = poll_seconds
        self._now = now
        self._lease = service.lease_for(settings)
        self._slots = settings.webhook_concurrency
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal: asyncio.Event | None = None
        # The dispatcher's database work (claims, records) runs on one thread of its own: one
        # connection, however many deliveries are in flight.
        self._db_thread: ThreadPoolExecutor | None = None
        self._box: secretbox.SecretBox | None = None  # built at the first delivery

    def _claim(self, count: int) -> list[service.DueDelivery]:
        """Lease up to `count` due deliveries (on the database thread), committed before any is
        delivered; their secrets are still sealed: each is opened by its own delivery, so one
        that does not open fails alone."""
        now = self._now()
        with self._db.unit_of_work() as session:
            return service.lease_due(session, now, self._lease, count)

    def _record(self, due: service.DueDelivery, error: str | None, now: datetime) -> None:
        """Record one attempt's result (on the database thread), in a unit of work of its own."""
        with self._db.unit_of_work() as session:
            service.record_attempt(session, self._settings, due, error, now)

    def _opened(self, due: service.DueDelivery) -> service.DueDelivery:
        if self._box is None:
            self._box = secretbox.for_settings(self._settings)
        return service.opened(due, self._box)

    # ----------------------------------------------------------------------- control

    def start_thread(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._with_db_thread(self._serve())),
            name="webhooks",
            daemon=True,
        )
        self._thread.start()

    def wake(self) -> None:
        """Look for due deliveries now (thread-safe): an event was just written."""
        loop, signal = self._loop, self._signal
        if loop is None or signal is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has ended
            loop.call_soon_threadsafe(signal.set)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliveries still in flight are dropped; their leases expire and they go again."""
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> tuple[int, int]:
        """Deliver what is due now and wait for it: (delivered, failed attempts)."""
        return asyncio.run(self._with_db_thread(self._pass()))

    # ----------------------------------------------------------------------- loops

    async def _with_db_thread(self, work: Coroutine[None, None, T]) -> T:
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="webhooks-db")
        try:
            return await work
        finally:
            self._db_thread.shutdown(wait=True)

    async def _in_db_thread(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, call, *args)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: we connect to what we checked
            timeout=httpx.Timeout(self._settings.webhook_timeout_seconds),
            # A connection per delivery: none is reused for a name it was not checked for.
            limits=httpx.Limits(max_connections=self._slots, max_keepalive_connections=0),
        )

    async def _pass(self) -> tuple[int, int]:
        delivered = failed = 0
        async with self._client() as client:
            while delivered + failed < limits.webhook_deliveries_per_pass_max:
                due = await self._in_db_thread(self._claim, self._slots)
                outcomes = await asyncio.gather(*(self._deliver(client, d) for d in due))
                delivered += sum(1 for ok in outcomes if ok)
                failed += sum(1 for ok in outcomes if not ok)
                if len(due) < self._slots:
                    break
        return delivered, failed

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._signal = signal = asyncio.Event()
        in_flight: set[asyncio.Task[bool]] = set()
        failures = 0
        log.info("webhook_dispatcher_started", concurrency=self._slots)
        async with self._client() as client:
            while not self._stopping.is_set():
                signal.clear()
                free = self._slots - len(in_flight)
                if free > 0:
                    try:
                        due = await self._in_db_thread(self._claim, free)
                        failures = 0
                    except Exception as exc:  # keep going through a database outage
                        failures += 1
                        delay = min(
                            limits.worker_error_backoff_seconds_max,
                            self._poll_seconds * 2**failures,
                        )
                        log.error(
                            "webhook_claim_failed",
                            error=type(exc).__name__,
                            detail=str(exc),
                            retry_in_s=delay,
                        )
                        await self._wait(delay)
                        continue
                    for item in due:
                        task = asyncio.create_task(self._deliver(client, item))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        task.add_done_callback(lambda _task: signal.set())
                    if len(due) == free:
                        continue  # perhaps more are due: claim again once a slot is free
                await self._wait(self._poll_seconds)
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _wait(self, seconds: float) -> None:
        assert self._signal is not None
        if self._stopping.is_set():
            return
        try:
            async with asyncio.timeout(seconds):
                await self._signal.wait()
        except TimeoutError:
            pass

    # ----------------------------------------------------------------------- one delivery

    async def _deliver(self, client: httpx.AsyncClient, due: service.DueDelivery) -> bool:
        deadline = self._settings.webhook_deadline_seconds
        try:
            async with asyncio.timeout(deadline):
                error = await self._post(client, due)
        except TimeoutError:
            error = f"cut at the delivery deadline ({deadline:g} s)"
        except Exception as exc:  # a failed attempt like any other, never an endless re-lease
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            WEBHOOK_FAILURES.inc()
            log.info("webhook_attempt_failed", delivery=due.id, error=error)
        try:
            await self._in_db_thread(self._record, due, error, self._now())
        except Exception as exc:  # the lease expires and the delivery goes again
            log.error("webhook_record_failed", delivery=due.id, error=type(exc).__name__)
        return error is None

    async def _post(self, client: httpx.AsyncClient, due: service.DueDelivery) -> str | None:
        try:
            due = self._opened(due)
        except secretbox.SecretKeyError as exc:  # a failed attempt of this delivery only
            return f"the webhook's secret does not decrypt under the configured key: {exc}"
        allow_private = self._settings.webhook_allow_private_targets
        try:
            pinned = await asyncio.to_thread(targets.pin, due.url, allow_private=allow_private)
        except targets.TargetError as exc:
            return f"refused: {exc}"
        body = due.payload_json.encode()
        headers = {**service.signed_headers(due, body), **pinned.headers}
        try:
            async with client.stream(
                "POST", pinned.url, content=body, headers=headers, extensions=pinned.extensions
            ) as response:
                status = response.status_code  # the body is not read
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"
