"""Time, in one place: UTC internally, the program time zone at the edges."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from rewardmiles import limits

# A partner's date-time (SPEC §6, amended 2026-11-30): RFC 3339 exactly, with an uppercase `T`,
# seconds, an optional fraction of 1–9 digits, and `Z` or `±hh:mm` from -12:00 to +14:00. The
# same text is the `pattern` of the OpenAPI schema (an ECMA regex too); whether the day exists in
# its month is left to `datetime`.
RFC3339_PATTERN = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+](?:0[0-9]|1[0-3]):[0-5][0-9]|[+]14:00|-(?:0[0-9]|1[01]):[0-5][0-9]|-12:00)$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)


def parse_partner_datetime(value: object) -> datetime:
    """A partner's date-time (`transactionDateTime`, `checkoutDateTime`, a log record's
    `transactionDateTime`) by `RFC3339_PATTERN`, as an aware datetime. Nothing else passes: no
    space or lowercase `t`/`z`, no hour-only or second offsets, no basic or week formats, no
    missing seconds. A fraction beyond microseconds is truncated (what `datetime` can hold).
    ValueError otherwise, and for an instant outside years 1–9999 in UTC."""
    if not isinstance(value, str) or len(value) > limits.rfc3339_chars_max:
        raise ValueError("must be an RFC 3339 date-time string")
    if _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 date-time")
    # The shape is RFC 3339's, a subset of what `fromisoformat` reads the same way; it checks the
    # calendar (February 30th, year 0) and truncates a fraction beyond 6 digits.
    moment = datetime.fromisoformat(value)
    if value.startswith(("0001", "9999")):
        try:
            moment.astimezone(UTC)
        except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise ValueError("must lie within years 1–9999 in UTC") from exc
    return moment


# A test setting (REWARDMILES_TEST_CLOCK, see config.py): the instant the clock stands at, or None
# for the real time. Set once per process, before any request, by `freeze_for_tests`.
_frozen: datetime | None = None


def utc_now() -> datetime:
    """The one clock: every "now" of the service comes from here."""
    return datetime.now(UTC) if _frozen is None else _frozen


def freeze_for_tests(moment: datetime | None) -> None:
    """Stand the clock still at `moment` (None: the real time again). Only the test setting
    `REWARDMILES_TEST_CLOCK` leads here, so that a test can run the whole service at a pinned
    instant, e.g. 23:59:59 America/Toronto."""
    global _frozen
    _frozen = None if moment is None else moment.astimezone(UTC)


@lru_cache(maxsize=8)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def program_timestamp(moment: datetime, zone_name: str) -> str:
    """`2021-11-11T12:54:31.780-05:00`: program time zone, its offset, milliseconds."""
    return moment.astimezone(zone(zone_name)).isoformat(timespec="milliseconds")


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_transaction_day(text: str) -> date:
    """A Transaction Day as sent by a caller: `YYYY-MM-DD` exactly (RFC 3339's full-date;
    `date.fromisoformat` alone also reads `20260101` and `2026-W01-1`), a day of its month, and
    one whose bounds exist in UTC (`limits.report_day_min` to `report_day_max`). ValueError
    otherwise, its message the rule broken, to follow the field's name ("must be a day, ...")."""
    if not _DAY.fullmatch(text):
        raise ValueError("must be a day, YYYY-MM-DD.")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError("must be a day, YYYY-MM-DD.") from None
    if not limits.report_day_min <= day <= limits.report_day_max:
        raise ValueError(f"must lie between {limits.report_day_min} and {limits.report_day_max}.")
    return day


def transaction_day_bounds(day: date, zone_name: str) -> tuple[datetime, datetime]:
    """[start, end) of a Transaction Day (00:00–24:00 local, DST-aware), in UTC. A day on which
    the clocks change is 23 or 25 hours long."""
    tz = zone(zone_name)
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def transaction_day_of(moment: datetime, zone_name: str) -> date:
    return moment.astimezone(zone(zone_name)).date()
