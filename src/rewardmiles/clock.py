"""Time, in one place: UTC internally, the program time zone at the edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


def utc_now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=8)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def program_timestamp(moment: datetime, zone_name: str) -> str:
    """`2021-11-11T12:54:31.780-05:00`: program time zone, its offset, milliseconds."""
    return moment.astimezone(zone(zone_name)).isoformat(timespec="milliseconds")


def transaction_day_bounds(day: date, zone_name: str) -> tuple[datetime, datetime]:
    """[start, end) of a Transaction Day (00:00–24:00 local, DST-aware), in UTC. A day on which
    the clocks change is 23 or 25 hours long."""
    tz = zone(zone_name)
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def transaction_day_of(moment: datetime, zone_name: str) -> date:
    return moment.astimezone(zone(zone_name)).date()
