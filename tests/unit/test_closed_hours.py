"""`support.today.ClosedHours`: what it keeps, for how long, how many, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rewardmiles.support.today import ClosedHours, HourFigures

T0 = datetime(2026, 11, 20, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _hour(i: int) -> tuple[datetime, datetime]:
    return T0 + i * HOUR, T0 + (i + 1) * HOUR


def test_an_hour_is_closed_once_over_for_the_settling_time() -> None:
    memo = ClosedHours(settled=timedelta(minutes=5), keep=HOUR, size=10)
    stop = _hour(0)[1]
    assert not memo.is_closed(stop, stop)
    assert not memo.is_closed(stop, stop + timedelta(minutes=5) - timedelta(microseconds=1))
    assert memo.is_closed(stop, stop + timedelta(minutes=5))
    with pytest.raises(ValueError, match="still open"):
        memo.put(_hour(0), HourFigures(1), stop + timedelta(minutes=4))
    assert len(memo) == 0


def test_kept_for_keep_then_forgotten() -> None:
    memo = ClosedHours(settled=timedelta(0), keep=timedelta(minutes=15), size=10)
    read_at = _hour(3)[1]
    memo.put(_hour(0), HourFigures(7, 2, (1, 0, 3, 0)), read_at)
    assert memo.get(_hour(0), read_at + timedelta(minutes=15) - timedelta(microseconds=1)) == (
        HourFigures(7, 2, (1, 0, 3, 0))
    )
    assert memo.get(_hour(1), read_at) is None
    assert memo.get(_hour(0), read_at + timedelta(minutes=15)) is None
    assert len(memo) == 0


def test_at_most_size_hours_the_least_recently_used_dropped() -> None:
    memo = ClosedHours(settled=timedelta(0), keep=HOUR, size=3)
    now = _hour(10)[1]
    for i in range(3):
        memo.put(_hour(i), HourFigures(i), now)
    assert memo.get(_hour(0), now) == HourFigures(0)  # used: hour 1 is now the oldest used
    memo.put(_hour(3), HourFigures(3), now)
    assert len(memo) == 3
    assert memo.get(_hour(1), now) is None
    assert [memo.get(_hour(i), now) for i in (0, 2, 3)] == [
        HourFigures(0),
        HourFigures(2),
        HourFigures(3),
    ]
