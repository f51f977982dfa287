"""A log's Transaction Days, found by comparing each record with the bounds of the day of the
one before: always the day a time zone conversion gives, through clock changes too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rewardmiles import clock
from rewardmiles.reports.batches import _Days


@pytest.mark.parametrize(
    ("zone", "year"),
    [
        ("America/Toronto", 2026),
        ("Europe/London", 2026),
        ("America/Santiago", 2026),  # clocks change at midnight: a day starts at 01:00
        ("Australia/Lord_Howe", 2026),  # a half-hour change
        ("Pacific/Apia", 2011),  # 30 December 2011 never happened there
        ("Asia/Kathmandu", 2026),
    ],
)
def test_each_day_is_the_one_a_conversion_gives(zone: str, year: int) -> None:
    days = _Days(zone)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    expected = set()
    # Every 20 minutes of a year, in order, each under an offset of its own as logs write them.
    offsets = [timezone(timedelta(hours=h)) for h in (-5, 0, 9)]
    for i in range(365 * 72):
        at = (moment + timedelta(minutes=20 * i)).astimezone(offsets[i % 3])
        days.add(at)
        expected.add(clock.transaction_day_of(at, zone))
    assert days.seen == expected


def test_a_log_out_of_order_finds_each_day_it_names() -> None:
    days = _Days("America/Toronto")
    moments = [
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC),  # 02:30 local does not exist: 03:30 EDT
        datetime(2026, 3, 1, 4, 59, tzinfo=UTC),  # 23:59 on 28 February
        datetime(2026, 3, 8, 4, 59, tzinfo=UTC),  # 23:59 on 7 March
        datetime(2026, 3, 8, 5, 0, tzinfo=UTC),  # 00:00 on 8 March
    ]
    for at in moments:
        days.add(at)
    assert days.seen == {clock.transaction_day_of(at, "America/Toronto") for at in moments}
    assert len(days.seen) == 3
