"""A Transaction Day's figures (`support.today.day_glance`) on a database of their own: each hour's
miles, answers and failed requests; an hour that is over read once and kept (`ClosedHours`), the
open hour read every time; the pending lines and the oldest one's age."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from rewardmiles import limits
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.settlement import repository as settlement_repository
from rewardmiles.support import repository
from rewardmiles.support.repository import FailureRow
from rewardmiles.support.today import ClosedHours, DayGlance, day_glance
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call

ZONE = "America/Toronto"
DAY = date(2026, 11, 20)
SETTLED = timedelta(seconds=limits.today_hour_settled_seconds)
KEEP = timedelta(seconds=limits.today_closed_hour_keep_seconds)


def at(hour: int, minute: int = 0) -> datetime:
    """`DAY` at hour:minute in the program time zone, in UTC."""
    return datetime.combine(DAY, time(hour, minute), tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


@pytest.fixture(scope="module")
def db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def accounts(db: Database) -> tuple[str, str]:
    return data.new_sponsor(db), data.new_collector(db)


def _issue(db: Database, accounts: tuple[str, str], miles: int, moment: datetime) -> str:
    sponsor, collector = accounts
    body = data.event_body(
        sponsor, collector, miles=miles, transactionDateTime=data.iso(moment - timedelta(seconds=5))
    )
    outcome = call(db, Settings(), body, now=moment)
    assert outcome.status == 200, outcome.body
    return str(outcome.body["transactionId"])


def _refused(db: Database, moment: datetime, status: int = 400) -> None:
    with db.unit_of_work() as session:
        repository.insert_failures(
            session,
            [
                FailureRow(
                    request_id=f"r-{moment.timestamp()}-{status}",
                    at=moment,
                    client_id="c",
                    method="POST",
                    path="/checkout/issuance/post/event",
                    status=status,
                    code="FIELD_INVALID" if status < 500 else "INTERNAL_ERROR",
                    detail=None,
                    field=None,
                )
            ],
        )


def _glance(db: Database, now: datetime, closed: ClosedHours | None) -> DayGlance:
    with db.reader() as session:
        return day_glance(session, DAY, ZONE, full_numbers=True, now=now, closed=closed)


def _hour(glance: DayGlance, hour: int) -> tuple[int, int, int, int, int]:
    return (
        glance.issued[hour],
        glance.requests["200"][hour],
        glance.requests["202"][hour],
        glance.requests["4xx"][hour],
        glance.requests["5xx"][hour],
    )


def test_an_hour_that_is_over_is_read_once_the_open_hour_every_time(
    db: Database, accounts: tuple[str, str]
) -> None:
    _issue(db, accounts, 7, at(9, 10))
    _refused(db, at(9, 20))
    _refused(db, at(9, 21), status=503)
    closed = ClosedHours()
    now = at(11, 10)

    first = _glance(db, now, closed)
    assert len(first.hours) == 24
    assert _hour(first, 9) == (7, 1, 0, 1, 1)
    assert all(_hour(first, h) == (0, 0, 0, 0, 0) for h in range(24) if h != 9)
    # Hours 00:00..10:00 have been over for SETTLED (10:00-11:00 since 11:00, 10 minutes ago).
    assert len(closed) == 11

    # A row stamped inside a kept hour (which no writer does once the hour has settled) is not
    # read again while the hour is kept; it is once the hour has been kept KEEP.
    _issue(db, accounts, 8, at(9, 30))
    assert _hour(_glance(db, now + KEEP - timedelta(seconds=1), closed), 9) == (7, 1, 0, 1, 1)
    assert _hour(_glance(db, now + KEEP, closed), 9) == (15, 2, 0, 1, 1)
    # Without the memo every hour is read.
    assert _hour(_glance(db, now, None), 9) == (15, 2, 0, 1, 1)

    # The open hour (11:00-12:00) is read every time, and so is one not over for SETTLED yet.
    _issue(db, accounts, 5, at(11, 12))
    assert _hour(_glance(db, at(11, 15), closed), 11) == (5, 1, 0, 0, 0)
    _issue(db, accounts, 6, at(11, 16))
    _refused(db, at(11, 17))
    assert _hour(_glance(db, at(11, 20), closed), 11) == (11, 2, 0, 1, 0)
    late = at(12) + SETTLED - timedelta(seconds=1)
    assert _hour(_glance(db, late, closed), 11) == (11, 2, 0, 1, 0)
    _issue(db, accounts, 1, at(11, 59))
    assert _hour(_glance(db, late, closed), 11) == (12, 3, 0, 1, 0)
    # Over for SETTLED: read once more and kept from then on.
    kept = _glance(db, at(12) + SETTLED, closed)
    assert _hour(kept, 11) == (12, 3, 0, 1, 0)
    assert kept.totals()["issued"] == 27


def test_the_pending_lines_and_the_oldest_ones_transaction(
    db: Database, accounts: tuple[str, str]
) -> None:
    sponsor = data.new_sponsor(db, review_threshold_miles=100)
    collector = data.new_collector(db)
    with db.reader() as session:
        before, _ = settlement_repository.pending_summary(session)
    older, newer = at(13, 5), at(13, 40)
    for miles, moment in ((150, newer), (120, older), (20, at(13, 50))):
        body = data.event_body(
            sponsor,
            collector,
            miles=miles,
            transactionDateTime=data.iso(moment - timedelta(seconds=5)),
        )
        outcome = call(db, Settings(), body, now=moment)
        assert outcome.status == (202 if miles > 100 else 200), outcome.body
    with db.reader() as session:
        count, oldest = settlement_repository.pending_summary(session)
    assert count == before + 2
    assert oldest == older
    glance = _glance(db, at(14), None)
    assert glance.pending_lines == count
    assert glance.oldest_pending_at == older
    assert glance.requests["202"][13] == 2
