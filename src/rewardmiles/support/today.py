"""A Transaction Day at a glance (the console's Today page): miles issued and reversed per hour,
partner requests per hour by outcome, the day's top refusal codes, the pending lines, failing
webhook deliveries and the latest failed partner requests.

Every query (`support.repository`) reads one day's range through an index and aggregates in SQL,
so the answer costs
the day's rows, never the table's: ledger entries by `ix_ledger_entries_posted` (0012),
transactions by `ix_transactions_processed`, failed requests by `ix_request_failures_at`,
deliveries by `ix_webhook_deliveries_created` and the partial indexes of pending lines, pending
transactions and due deliveries. Hours are the program time zone's (a day on which the clocks
change has 23 or 25), their bounds computed here; each hour is a range of the index.

An hour that is over stays so: its figures are kept by the process (`ClosedHours`) once it has
been over `limits.today_hour_settled_seconds`, so the page reads only the hours still open (the
current one) and the hours it has not seen; an earlier day is read once, then shown from memory.

Where the numbers come from: requests answered 200 or 202 are the day's transactions (accepted:
posted, or pending review); requests answered 4xx or 5xx are the failed partner requests the
failure recorder keeps (`support.recorder`, `/checkout/` and `/oauth/`, kept
`REWARDMILES_REQUEST_FAILURE_RETENTION_DAYS`). Requests per HTTP status are not stored as such:
successful token requests and reads are counted nowhere.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles import clock, limits
from rewardmiles.logs import mask_collector_numbers
from rewardmiles.settlement import repository as settlement_repository
from rewardmiles.support import repository
from rewardmiles.support.repository import FailureRow

OUTCOMES = ("200", "202", "4xx", "5xx")
TOP_CODES = 10
LAST_ERRORS = 20


@dataclass(frozen=True, slots=True)
class DayGlance:
    day: date
    zone: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    hours: tuple[datetime, ...]  # each hour's start, UTC
    issued: tuple[int, ...]  # miles credited to collectors by partner lines, per hour
    reversed: tuple[int, ...]  # miles debited from collectors by partner lines, per hour
    requests: dict[str, tuple[int, ...]]  # OUTCOMES -> per hour
    top_codes: tuple[tuple[str, int], ...]  # refused requests' codes, most frequent first
    pending_lines: int  # now, whatever the day
    oldest_pending_at: datetime | None
    deliveries_retrying: int  # now: pending deliveries whose last attempt failed
    deliveries_failed: int  # created this day and given up
    partner_errors: tuple[FailureRow, ...]  # the day's latest, newest first

    def hour_labels(self) -> list[str]:
        """`14:00`, or `01:00 EDT` / `01:00 EST` on the day an hour repeats."""
        tz = clock.zone(self.zone)
        local = [h.astimezone(tz) for h in self.hours]
        plain = [m.strftime("%H:00") for m in local]
        return [
            f"{p} {m.strftime('%Z')}" if plain.count(p) > 1 else p
            for p, m in zip(plain, local, strict=True)
        ]

    def totals(self) -> dict[str, int]:
        return {
            "issued": sum(self.issued),
            "reversed": sum(self.reversed),
            **{outcome: sum(counts) for outcome, counts in self.requests.items()},
        }

    def chart_data(self) -> dict[str, Any]:
        """What the page's chart draws: hour starts (Unix seconds) and the series."""
        return {
            "day": self.day.isoformat(),
            "zone": self.zone,
            "hours": [int(h.timestamp()) for h in self.hours],
            "labels": self.hour_labels(),
            "issued": list(self.issued),
            "reversed": list(self.reversed),
            "requests": {k: list(v) for k, v in self.requests.items()},
        }


def hour_starts(day: date, zone_name: str) -> tuple[datetime, datetime, tuple[datetime, ...]]:
    """The day's [start, end) in UTC and the start of each of its hours (23, 24 or 25)."""
    start, end = clock.transaction_day_bounds(day, zone_name)
    count = int((end - start).total_seconds() // 3600)
    return start, end, tuple(start + timedelta(hours=i) for i in range(count))


@dataclass(frozen=True, slots=True)
class HourFigures:
    """One hour's: miles issued and reversed, and requests per outcome (`OUTCOMES` order)."""

    issued: int = 0
    reversed: int = 0
    requests: tuple[int, ...] = (0,) * len(OUTCOMES)


class ClosedHours:
    """The figures of hours that are over, kept by one process (thread-safe).

    An hour's rows are stamped with the time they were written (`posted_at`, `processed_at`, a
    failure's `at`), so once the hour has been over `settled` (longer than any writer takes to
    commit) nothing more arrives in it. Kept `keep`, so that what removes rows later (the purge of
    old failed requests) shows within it; at most `size` hours, the least recently used dropped.
    """

    def __init__(
        self,
        *,
        settled: timedelta = timedelta(seconds=limits.today_hour_settled_seconds),
        keep: timedelta = timedelta(seconds=limits.today_closed_hour_keep_seconds),
        size: int = limits.today_closed_hours_max,
    ) -> None:
        self._settled = settled
        self._keep = keep
        self._size = size
        self._lock = threading.Lock()
        self._hours: OrderedDict[tuple[datetime, datetime], tuple[datetime, HourFigures]] = (
            OrderedDict()
        )

    def is_closed(self, stop: datetime, now: datetime) -> bool:
        return stop <= now - self._settled

    def get(self, hour: tuple[datetime, datetime], now: datetime) -> HourFigures | None:
        with self._lock:
            kept = self._hours.get(hour)
            if kept is None:
                return None
            if now - kept[0] >= self._keep:
                del self._hours[hour]
                return None
            self._hours.move_to_end(hour)
            return kept[1]

    def put(self, hour: tuple[datetime, datetime], figures: HourFigures, now: datetime) -> None:
        """Keep a closed hour's figures (`is_closed`), read at `now`."""
        if not self.is_closed(hour[1], now):
            raise ValueError(f"the hour ending {hour[1].isoformat()} is still open at {now}")
        with self._lock:
            self._hours[hour] = (now, figures)
            self._hours.move_to_end(hour)
            while len(self._hours) > self._size:
                self._hours.popitem(last=False)

    def __len__(self) -> int:
        return len(self._hours)


def hour_figures(session: Session, ranges: list[tuple[datetime, datetime]]) -> list[HourFigures]:
    """Each range's figures, read: the collectors' side of the ledger entries of partner lines
    posted in it (a pending line counts in the hour it settles; adjustments are not partner
    traffic), the transactions answered 200 or 202 (accepted: posted, or pending review) and the
    failed requests recorded (4xx or 5xx)."""
    issued, reversed_ = [0] * len(ranges), [0] * len(ranges)
    for at, credit, debit in repository.partner_miles_per_hour(session, ranges):
        issued[at] += credit
        reversed_[at] += debit
    requests = [[0] * len(OUTCOMES) for _ in ranges]
    for at, status, count in repository.answers_per_hour(session, ranges):
        requests[at][OUTCOMES.index(str(status))] += count
    for at, is_5xx, count in repository.failures_per_hour(session, ranges):
        requests[at][OUTCOMES.index("5xx" if is_5xx else "4xx")] += count
    return [HourFigures(issued[i], reversed_[i], tuple(requests[i])) for i in range(len(ranges))]


def day_glance(
    session: Session,
    day: date,
    zone_name: str,
    *,
    full_numbers: bool,
    now: datetime,
    closed: ClosedHours | None = None,
) -> DayGlance:
    """The day's figures as of `now`; a collector number in a failure's detail is masked unless
    `full_numbers`. The hours `closed` knows are not read again, and those read that are closed
    are kept in it."""
    start, end, hours = hour_starts(day, zone_name)
    # The latest failures first: each read sees what has committed by then, and rows are only
    # added, so every failure the list shows is counted in the figures read after it.
    latest = repository.latest_failures(session, start, end, LAST_ERRORS)
    top_codes = tuple(repository.failure_codes(session, start, end, TOP_CODES))
    ranges = list(zip(hours, [*hours[1:], end], strict=True))
    figures: list[HourFigures | None] = [
        closed.get(r, now) if closed is not None else None for r in ranges
    ]
    unread = [i for i, f in enumerate(figures) if f is None]
    for i, read in zip(unread, hour_figures(session, [ranges[i] for i in unread]), strict=True):
        figures[i] = read
        if closed is not None and closed.is_closed(ranges[i][1], now):
            closed.put(ranges[i], read, now)
    known = [f for f in figures if f is not None]

    pending_lines, oldest_pending_at = settlement_repository.pending_summary(session)
    retrying, given_up = repository.failing_deliveries(session, start, end)
    return DayGlance(
        day=day,
        zone=zone_name,
        start=start,
        end=end,
        hours=hours,
        issued=tuple(f.issued for f in known),
        reversed=tuple(f.reversed for f in known),
        requests={
            outcome: tuple(f.requests[o] for f in known) for o, outcome in enumerate(OUTCOMES)
        },
        top_codes=top_codes,
        pending_lines=pending_lines,
        oldest_pending_at=oldest_pending_at,
        deliveries_retrying=retrying,
        deliveries_failed=given_up,
        partner_errors=tuple(
            r
            if full_numbers or r.detail is None
            else replace(r, detail=mask_collector_numbers(r.detail))
            for r in latest
        ),
    )
