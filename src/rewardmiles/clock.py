"""Time, in one place: UTC internally, the program time zone at the edges."""

from __future__ import annotations

from datetime import UTC, datetime
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
