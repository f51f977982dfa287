"""The settlement loop: `rewardmiles worker`, or a thread inside `rewardmiles serve`.

A pass (`settle_pending`) opens the transactions settlement runs in: one to read the collectors to
visit, then short ones per collector. Webhook events are delivered beside it, by the dispatcher's
own thread (`webhooks.dispatch`), so a slow receiver never holds up settlement."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from rewardmiles import clock, limits, logs
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.idempotency import repository as keys
from rewardmiles.metrics import SETTLEMENT_LAST_PASS
from rewardmiles.operators import service as operators
from rewardmiles.operators.service import SessionPolicy, SignInPolicy
from rewardmiles.settlement import repository, service
from rewardmiles.settlement.service import SettleReport
from rewardmiles.support import repository as failures
from rewardmiles.webhooks.dispatch import Dispatcher

log = logs.get_logger("rewardmiles.settlement")

QUEUE_DEPTH_LOG_SECONDS = 60.0
PURGE_INTERVAL_SECONDS = 3600.0


def settle_pending(db: Database, settings: Settings, now: datetime) -> SettleReport:
    """One pass over the collectors with settleable lines; returns what it did. The collectors are
    read in a transaction of their own; each is then settled in units of work of at most
    `limits.settlement_lines_per_transaction_max` lines, as many as its backlog needs."""
    with db.reader() as session:
        collectors = service.candidates(session, settings, now)
    report = SettleReport()
    for number in collectors:
        more = True
        while more:
            with db.unit_of_work() as session:
                settled, more = service.settle_collector(session, settings, number, now)
            report.add(settled)
    return report


class Worker:
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
        self._stop = threading.Event()
        self.dispatcher = Dispatcher(db, settings, poll_seconds=poll_seconds, now=now)
        self._thread: threading.Thread | None = None

    def settle_once(self) -> SettleReport:
        """Settle what can be settled; the dispatcher is told of the events this wrote."""
        report = settle_pending(self._db, self._settings, self._now())
        if report.settled:
            log.info(
                "settled",
                posted=report.posted,
                rejected=dict(report.rejected),
                still_pending=report.still_pending,
            )
            self.dispatcher.wake()
        return report

    def run_once(self) -> SettleReport:
        """Settle what can be settled, then deliver the webhook events that are due."""
        report = self.settle_once()
        delivered, failed = self.dispatcher.run_once()
        if delivered or failed:
            log.info("webhooks", delivered=delivered, failed_attempts=failed)
        report.webhooks_delivered = delivered
        report.webhook_failures = failed
        return report

    def run_forever(self) -> None:
        """Settle until `stop()`; a pass that settled something is followed at once by the next."""
        failures = 0
        last_depth_log = 0.0
        last_purge = 0.0
        log.info("worker_started", poll_seconds=self._poll_seconds)
        self.dispatcher.start_thread()
        while not self._stop.is_set():
            try:
                report = self.settle_once()
                SETTLEMENT_LAST_PASS.set(time.time())
                failures = 0
            except Exception as exc:  # keep settling after a database outage
                failures += 1
                delay = min(
                    limits.worker_error_backoff_seconds_max, self._poll_seconds * 2**failures
                )
                log.error(
                    "settlement_failed", error=type(exc).__name__, detail=str(exc), retry_in_s=delay
                )
                self._stop.wait(delay)
                continue
            if time.monotonic() - last_purge >= PURGE_INTERVAL_SECONDS:
                last_purge = time.monotonic()
                self.purge()
            if time.monotonic() - last_depth_log >= QUEUE_DEPTH_LOG_SECONDS:
                last_depth_log = time.monotonic()
                with self._db.reader() as session:
                    log.info("pending_queue", depth=repository.count_pending(session))
            if not report.settled:
                self._stop.wait(self._poll_seconds)
        self.dispatcher.stop()

    def purge(self) -> None:
        """The hourly purges, each on its own: one that fails (the database away, say) is logged
        and tried again an hour later, and neither stops the others nor the settling."""
        for step in (
            self.purge_idempotency_keys,
            self.purge_request_failures,
            self.purge_operator_sessions,
        ):
            try:
                step()
            except Exception as exc:
                log.error("purge_failed", step=step.__name__, error=type(exc).__name__)

    def purge_idempotency_keys(self) -> int:
        """Drop keys older than the retention window (SPEC §4); their transactions stay."""
        with self._db.unit_of_work() as session:
            purged = keys.purge_expired(
                session, self._now(), self._settings.idempotency_retention_days
            )
        if purged:
            log.info("idempotency_keys_purged", count=purged)
        return purged

    def purge_request_failures(self) -> int:
        """Drop failed partner requests older than `request_failure_retention_days`, in units of
        work of at most `limits.request_failures_purge_batch` rows each."""
        before = self._now() - timedelta(days=self._settings.request_failure_retention_days)
        purged = 0
        while True:
            with self._db.unit_of_work() as session:
                count = failures.purge_failures(
                    session, before, limits.request_failures_purge_batch
                )
            purged += count
            if count < limits.request_failures_purge_batch:
                break
        if purged:
            log.info("request_failures_purged", count=purged)
        return purged

    def purge_operator_sessions(self) -> int:
        """Drop operators' sessions ended by the timeouts and forgotten sign-in failures."""
        settings = self._settings
        with self._db.unit_of_work() as session:
            ended = operators.purge_ended(
                session, self._now(), SessionPolicy.of(settings), SignInPolicy.of(settings)
            )
        if ended:
            log.info("operator_sessions_purged", count=ended)
        return ended

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="settlement", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
