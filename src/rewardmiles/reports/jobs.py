"""The bounded queue of partner-log uploads: a few matched at once, a few more waiting, the rest
refused up front (503 `BATCH_QUEUE_FULL` with `Retry-After`) before their body is read.

A place is taken when an upload starts (after its token and media type are checked, before the
first byte of its body is read) and given back when its batch has finished, or when the upload
fails. So at most `workers + queue_max` logs are on disk at once, at most `workers` are being
matched, and each running batch holds at most one chunk of records in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from rewardmiles import logs

log = logs.get_logger("rewardmiles.batches")


class BatchJobs:
    def __init__(self, workers: int, queue_max: int) -> None:
        self.workers = workers
        self.queue_max = queue_max
        self._places = threading.BoundedSemaphore(workers + queue_max)
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def reserve(self) -> bool:
        """Take a place without waiting; False when every place is taken."""
        return self._places.acquire(blocking=False)

    def release(self) -> None:
        self._places.release()

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on a batch thread once one is free; its place is given back when it ends."""
        with self._lock:
            if not self._threads:  # started on first use: most processes never see a log
                for number in range(self.workers):
                    thread = threading.Thread(
                        target=self._work, name=f"batch-{number}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
        self._jobs.put(job)

    def close(self) -> None:
        """Idle batch threads end; a running batch finishes first (its thread is a daemon)."""
        with self._lock:
            for _ in self._threads:
                self._jobs.put(None)
            self._threads = []

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception as exc:  # the job records its own failure; never kill the thread
                log.error("batch_job_failed", error=type(exc).__name__, detail=str(exc))
            finally:
                self.release()
