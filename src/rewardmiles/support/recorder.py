"""The failure recorder: every partner request (`/checkout/`, `/oauth/`) answered 4xx or 5xx is
kept, by the request id its problem document carries, for the support desk
(`GET /admin/v1/requests/{requestId}`).

Nothing of it runs in the request's time but `offer`: `http.middleware` hands it the answer's
status and raw body after the answer is sent, and it appends one tuple to a deque. A thread of its
own drains the deque every `limits.request_failures_flush_seconds`, reads the problem documents
and inserts them in batches of at most `limits.request_failures_batch_max`, each batch in a unit
of work of its own. A successful call never comes here; a failing one never waits on the database.

The queue holds at most `limits.request_failures_queue_max` failures: when it is full (the
database is down, or a flood of failures), a new failure is dropped, counted, and the count is
logged (`request_failures_dropped`) by the thread; a request is never blocked. A batch the
database refuses is dropped the same way (logged with its size). Failures still queued when the
process stops are written by `stop`.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime
from typing import Any

import orjson

from rewardmiles import limits, logs
from rewardmiles.db.engine import Database
from rewardmiles.support.repository import FailureRow, insert_failures

log = logs.get_logger("rewardmiles.support")

# (at, request id, client id, method, path, status, body)
Offered = tuple[datetime, str, "str | None", str, str, int, bytes]


class FailureRecorder:
    def __init__(
        self,
        *,
        capacity: int = limits.request_failures_queue_max,
        batch_max: int = limits.request_failures_batch_max,
        flush_seconds: float = limits.request_failures_flush_seconds,
    ) -> None:
        self._queue: deque[Offered] = deque()
        self._capacity = capacity
        self._batch_max = batch_max
        self._flush_seconds = flush_seconds
        self.dropped = 0  # since start: the queue was full
        self._dropped_logged = 0
        self._db: Database | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the request's side

    def offer(self, item: Offered) -> None:
        """Queue one failure; never blocks (a full queue drops it and counts the drop)."""
        if len(self._queue) < self._capacity:
            self._queue.append(item)
        else:
            self.dropped += 1

    # ------------------------------------------------------------------ the thread

    def start(self, db: Database) -> None:
        self._db = db
        self._thread = threading.Thread(target=self._run, name="failure-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, then write what is still queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()

    def flush(self) -> int:
        """Write everything queued now, in batches; how many were written."""
        written = 0
        while self._queue and self._db is not None:
            batch: list[FailureRow] = []
            while self._queue and len(batch) < self._batch_max:
                batch.append(row_of(self._queue.popleft()))
            try:
                with self._db.unit_of_work() as session:
                    insert_failures(session, batch)
                written += len(batch)
            except Exception as exc:  # the database is down: drop the batch, keep going
                log.error("request_failures_lost", count=len(batch), error=type(exc).__name__)
                break
        if self.dropped != self._dropped_logged:
            log.warning(
                "request_failures_dropped",
                count=self.dropped - self._dropped_logged,
                total=self.dropped,
                queue_max=self._capacity,
            )
            self._dropped_logged = self.dropped
        return written


def row_of(item: Offered) -> FailureRow:
    """The stored row of a queued failure: its problem document's code, detail and field (the
    first error's), each cut to its column."""
    at, request_id, client_id, method, path, status, body = item
    code = detail = field = None
    try:
        problem: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        problem = None
    if isinstance(problem, dict):
        code = _text(problem.get("code"), 40)
        detail = _text(problem.get("detail"), limits.request_failure_detail_chars_max)
        errors = problem.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            field = _text(errors[0].get("field"), 200)
    return FailureRow(
        request_id[:64],
        at,
        None if client_id is None else client_id[:64],
        method[:10],
        path[:200],
        status,
        code,
        detail,
        field,
    )


def _text(value: object, chars: int) -> str | None:
    return value[:chars] if isinstance(value, str) else None
