"""A Transaction Day at a glance (the console's Today page): miles issued and reversed per hour,
partner requests per hour by outcome, the day's top refusal codes, the pending lines, failing
webhook deliveries and the latest failed partner requests.

Every query (`support.repository`) reads one day's range through an index and aggregates in SQL,
so the answer costs
the day's rows, never the table's: ledger entries by `ix_ledger_entries_posted` (0012),
transactions by `ix_transactions_processed`, failed requests by `ix_request_failures_at`,
deliveries by `ix_webhook_deliveries_created` and the partial indexes of pending lines and due
deliveries. Hours are the program time zone's (a day on which the clocks change has 23 or 25),
their bounds computed here; each hour is a range of the index.

Where the numbers come from: requests answered 200 or 202 are the day's transactions (accepted:
posted, or pending review); requests answered 4xx or 5xx are the failed partner requests the
failure recorder keeps (`support.recorder`, `/checkout/` and `/oauth/`, kept
`REWARDMILES_REQUEST_FAILURE_RETENTION_DAYS`). Requests per HTTP status are not stored as such:
successful token requests and reads are counted nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles import clock
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


def day_glance(session: Session, day: date, zone_name: str, *, full_numbers: bool) -> DayGlance:
    """The day's figures; a collector number in a failure's detail is masked unless
    `full_numbers`."""
    start, end, hours = hour_starts(day, zone_name)
    size = len(hours)

    # Miles: the collectors' side of the ledger entries of partner lines posted this day (a
    # pending line counts in the hour it settles; adjustments are not partner traffic).
    issued, reversed_ = [0] * size, [0] * size
    for hour, credit, debit in repository.partner_miles_per_hour(session, end, hours):
        issued[hour] += credit
        reversed_[hour] += debit

    # Requests answered 200 or 202: the day's accepted transactions; 4xx or 5xx: the failed
    # requests recorded.
    requests: dict[str, list[int]] = {outcome: [0] * size for outcome in OUTCOMES}
    for hour, status, count in repository.answers_per_hour(session, end, hours, (200, 202)):
        requests[str(status)][hour] += count
    for hour, is_5xx, count in repository.failures_per_hour(session, end, hours):
        requests["5xx" if is_5xx else "4xx"][hour] += count

    pending_lines, oldest_pending_at = settlement_repository.pending_summary(session)
    retrying, given_up = repository.failing_deliveries(session, start, end)
    return DayGlance(
        day=day,
        zone=zone_name,
        start=start,
        end=end,
        hours=hours,
        issued=tuple(issued),
        reversed=tuple(reversed_),
        requests={k: tuple(v) for k, v in requests.items()},
        top_codes=tuple(repository.failure_codes(session, start, end, TOP_CODES)),
        pending_lines=pending_lines,
        oldest_pending_at=oldest_pending_at,
        deliveries_retrying=retrying,
        deliveries_failed=given_up,
        partner_errors=tuple(
            r
            if full_numbers or r.detail is None
            else replace(r, detail=mask_collector_numbers(r.detail))
            for r in repository.latest_failures(session, start, end, LAST_ERRORS)
        ),
    )
