"""The clock module's edges, on a machine whose local time zone is not UTC.

The service must never depend on the host's time zone: `astimezone()` without UTC would give the
same instants on a UTC host and different ones (or none) elsewhere, so these tests pin the process
to America/Toronto while they run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest

from rewardmiles import clock, limits
from rewardmiles.clock import (
    freeze_for_tests,
    parse_partner_datetime,
    transaction_day_bounds,
    utc_now,
)


@contextmanager
def host_zone(name: str) -> Iterator[None]:
    """The process's local time zone is `name` inside the block, then what it was."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.fixture
def host_in_toronto() -> Iterator[None]:
    with host_zone("America/Toronto"):
        yield


def test_longest_date_time_is_accepted_and_one_more_character_is_not() -> None:
    longest = "2026-11-30T04:10:41.123456789+14:00"
    assert len(longest) == limits.rfc3339_chars_max
    assert parse_partner_datetime(longest) == datetime(2026, 11, 29, 14, 10, 41, 123456, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"^must be an RFC 3339 date-time string$"):
        parse_partner_datetime(longest + "0")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (20261130, "must be an RFC 3339 date-time string"),
        ("2026-11-30 04:10:41Z", "must be an RFC 3339 date-time"),
        ("0001-01-01T00:00:00+01:00", "must lie within years 1–9999 in UTC"),
    ],
)
def test_refusals_say_why(value: object, message: str) -> None:
    """The messages reach operators (REWARDMILES_TEST_CLOCK's check) word for word."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_partner_datetime(value)


@pytest.mark.usefixtures("host_in_toronto")
def test_year_range_is_judged_in_utc_not_in_the_hosts_zone() -> None:
    # 9999-12-31 20:59:59 in Toronto, but year 10000 in UTC.
    with pytest.raises(ValueError, match=r"^must lie within years 1–9999 in UTC$"):
        parse_partner_datetime("9999-12-31T23:59:59-01:00")
    assert parse_partner_datetime("9999-12-31T23:59:59Z").year == 9999


def test_last_instant_of_year_9999_in_utc_is_accepted_on_a_host_ahead_of_utc() -> None:
    # Already year 10000 on the host's wall clock (UTC+14), still 9999 in UTC.
    with host_zone("Pacific/Kiritimati"):
        moment = parse_partner_datetime("9999-12-31T23:59:59Z")
    assert moment == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.usefixtures("host_in_toronto")
def test_frozen_clock_stands_in_utc() -> None:
    moment = datetime.fromisoformat("2026-11-30T21:30:00-05:00")
    freeze_for_tests(moment)
    try:
        now = utc_now()
        assert now == moment
        assert now.utcoffset() == timedelta(0)
        assert now.tzinfo is UTC
    finally:
        freeze_for_tests(None)
    assert clock.utc_now().tzinfo is UTC


@pytest.mark.usefixtures("host_in_toronto")
def test_transaction_day_bounds_are_utc_instants() -> None:
    start, end = transaction_day_bounds(date(2026, 11, 30), "America/Toronto")
    assert (start, end) == (
        datetime(2026, 11, 30, 5, tzinfo=UTC),
        datetime(2026, 12, 1, 5, tzinfo=UTC),
    )
    assert start.tzinfo is UTC
    assert end.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "20260101",  # date.fromisoformat reads these three
        "2026-W01-1",
        "2026-001",
        "2026-1-01",
        " 2026-01-01",
        "2026-01-01 ",
        "2026-02-30",
        "2026-13-01",
        "2026-00-10",
        "",
    ],
)
def test_a_transaction_day_is_yyyy_mm_dd_exactly(text: str) -> None:
    with pytest.raises(ValueError, match=r"^must be a day, YYYY-MM-DD\.$"):
        clock.parse_transaction_day(text)


def test_a_transaction_day_is_one_whose_bounds_exist() -> None:
    assert clock.parse_transaction_day("2026-02-28") == date(2026, 2, 28)
    assert clock.parse_transaction_day("0001-01-02") == limits.report_day_min
    assert clock.parse_transaction_day("9999-12-30") == limits.report_day_max
    for text in ("0001-01-01", "9999-12-31"):
        with pytest.raises(ValueError, match=r"^must lie between 0001-01-02 and 9999-12-30\.$"):
            clock.parse_transaction_day(text)
