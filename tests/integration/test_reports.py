"""Reports per Transaction Day: DST boundaries, the audit report, the reconciliation file against
the ledger, and the file format's parser."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import LedgerEntry
from rewardmiles.ledger.verify import verify
from rewardmiles.reports import audit, reconciliation
from rewardmiles.settlement.worker import settle_pending
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call

TORONTO = "America/Toronto"
SPRING_FORWARD = date(2026, 3, 8)  # 23 hours long
FALL_BACK = date(2026, 11, 1)  # 25 hours long


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session)
    database.dispose()
    assert report.ok, report.problems


def _local(day: date, hour: int, minute: int) -> datetime:
    return datetime(
        day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(TORONTO)
    ).astimezone(UTC)


def _at(
    moment: datetime, sponsor: str, collector: str, miles: int, **extra: object
) -> dict[str, object]:
    return data.event_body(
        sponsor, collector, miles=miles, transactionDateTime=data.iso(moment), **extra
    )


@pytest.mark.parametrize(
    ("day", "hours"), [(SPRING_FORWARD, 23), (FALL_BACK, 25), (date(2026, 6, 1), 24)]
)
def test_transaction_days_follow_daylight_saving(day: date, hours: int) -> None:
    start, end = clock.transaction_day_bounds(day, TORONTO)
    assert end - start == timedelta(hours=hours)
    assert start.astimezone(ZoneInfo(TORONTO)).hour == 0


@pytest.mark.parametrize("day", [SPRING_FORWARD, FALL_BACK])
def test_a_transaction_at_23_30_local_lands_on_its_own_day(own_db: Database, day: date) -> None:
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    late = _local(day, 23, 30)
    early_next = _local(day + timedelta(days=1), 0, 15)
    first = call(own_db, settings, _at(late, sponsor, collector, 7), now=late)
    second = call(own_db, settings, _at(early_next, sponsor, collector, 9), now=early_next)

    with own_db.reader() as session:
        on_day = audit.audit_report(session, sponsor, day, TORONTO)
        next_day = audit.audit_report(session, sponsor, day + timedelta(days=1), TORONTO)
        recon = reconciliation.build(session, sponsor, day, TORONTO, clock.utc_now())

    assert [t["transactionId"] for t in on_day.transactions] == [first.transaction_id]
    assert [t["transactionId"] for t in next_day.transactions] == [second.transaction_id]
    assert on_day.transactions[0]["processedAt"].startswith(f"{day.isoformat()}T23:30:00")
    assert [d.miles for d in recon.details] == [7]


def test_reconciliation_totals_equal_the_ledger_after_a_mixed_day(own_db: Database) -> None:
    settings = Settings()
    day = date(2026, 11, 20)
    sponsor = data.new_sponsor(own_db)
    active = [data.new_collector(own_db) for _ in range(3)]
    unknown = data.unknown_collector()

    def at(hour: int, minute: int = 0) -> datetime:
        return _local(day, hour, minute)

    originals = []
    for i, collector in enumerate(active):
        body = _at(at(9, i), sponsor, collector, 40 + i)
        originals.append(body)
        call(own_db, settings, body, now=at(9, i))
    for i, collector in enumerate(active):  # partial reversals, two of them
        for step in range(2):
            moment = at(12, i * 2 + step)
            body = _at(
                moment,
                sponsor,
                collector,
                5,
                originalClientTransactionId=originals[i]["clientTransactionId"],
            )
            call(own_db, settings, body, reverse=True, now=moment)
    call(
        own_db,
        settings,
        _at(at(13), sponsor, data.new_collector(own_db), 11),
        reverse=True,
        now=at(13),
    )
    pending = call(own_db, settings, _at(at(14), sponsor, unknown, 30), now=at(14))
    assert pending.status == 202
    rejected = call(
        own_db, settings, _at(at(15), sponsor, data.new_collector(own_db, "CLOSED"), 5), now=at(15)
    )
    assert rejected.status == 400
    with own_db.unit_of_work() as session:
        collectors.add_collector(session, unknown, "ACTIVE", at(16))
    settle_pending(own_db, settings, at(16, 30))  # the pending line posts on this day
    call(own_db, settings, _at(at(23, 59), sponsor, active[0], 2), now=at(23, 59))
    call(
        own_db,
        settings,
        _at(_local(day + timedelta(days=1), 0, 1), sponsor, active[0], 100),
        now=_local(day + timedelta(days=1), 0, 1),
    )

    start, end = clock.transaction_day_bounds(day, TORONTO)
    with own_db.reader() as session:
        recon = reconciliation.build(session, sponsor, day, TORONTO, clock.utc_now())
        sponsor_count, sponsor_sum = session.execute(
            select(func.count(), func.coalesce(func.sum(LedgerEntry.amount_miles), 0)).where(
                LedgerEntry.account_kind == "sponsor",
                LedgerEntry.account_code == sponsor,
                LedgerEntry.posted_at >= start,
                LedgerEntry.posted_at < end,
            )
        ).one()
        report = audit.audit_report(session, sponsor, day, TORONTO)

    text = reconciliation.render(recon)
    parsed = reconciliation.parse(text)
    trailer_1, trailer_2 = text.strip().split("\n")[-2:]
    assert parsed.details == recon.details
    assert len(recon.details) == sponsor_count == 3 + 6 + 1 + 1 + 1
    assert recon.total_miles == -sponsor_sum == (40 + 41 + 42) - 30 - 11 + 30 + 2
    assert trailer_1 == f"T1%%{sponsor_count}%%{-sponsor_sum}"
    assert trailer_2 == f"T2%%{40 + 41 + 42 + 30 + 2}%%{30 + 11}"
    statuses = [t["status"] for t in report.transactions]
    assert statuses.count("rejected") == 1
    assert (
        next(t for t in report.transactions if t["status"] == "rejected")["errorCode"]
        == "COLLECTOR_CLOSED"
    )
    assert len(report.transactions) == 3 + 6 + 1 + 1 + 1 + 1


def test_partner_ids_with_percent_signs_round_trip(own_db: Database) -> None:
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    now = clock.utc_now()
    call(
        own_db, settings, _at(now, sponsor, collector, 3, clientTransactionId="a%%b%c%25"), now=now
    )
    with own_db.reader() as session:
        recon = reconciliation.build(
            session, sponsor, clock.transaction_day_of(now, TORONTO), TORONTO, now
        )
    text = reconciliation.render(recon)
    assert "a%25%25b%25c%2525" in text
    assert reconciliation.parse(text).details[0].partner_transaction_id == "a%%b%c%25"


def test_audit_masks_collectors_in_both_formats_when_asked(own_db: Database) -> None:
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    now = clock.utc_now()
    call(own_db, settings, _at(now, sponsor, collector, 3), now=now)
    with own_db.reader() as session:
        report = audit.audit_report(
            session, sponsor, clock.transaction_day_of(now, TORONTO), TORONTO
        )
    stars = f"{collector[:3]}*****{collector[-3:]}"
    masked = report.as_csv(mask_collectors=True)
    assert collector not in masked
    assert stars in masked
    assert masked.startswith(f"# audit report; sponsor {sponsor}; transaction day")
    assert collector in report.as_csv()
    assert report.as_json(mask_collectors=True)["transactions"][0]["collectorNumber"] == stars
    assert report.as_json()["transactions"][0]["collectorNumber"] == collector
    assert report.transactions[0]["collectorNumber"] == collector  # masking copies


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x.test","y")', '\'=HYPERLINK("http://x.test","y")'),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-5", "-5"),
        ("+3", "+3"),
        ("12.50", "12.50"),
        ("-", "'-"),
        ("evt-1=2", "evt-1=2"),
        (-5, -5),
        (None, None),
    ],
)
def test_spreadsheet_safe_neutralises_formula_text_and_keeps_numbers(
    cell: object, written: object
) -> None:
    assert audit.spreadsheet_safe(cell) == written


GOOD = (
    "H1%%RMRECON%%1%%f%%2026-11-25T00:00:00.000-05:00\n"
    "H2%%KENY%%2026-11-25%%America/Toronto%%a%%b\n"
    "D%%1%%t%%x%%POST%%p%%80085102028%%0%%STANDARD%%%%8\n"
    "D%%2%%t%%y%%REVERSE%%q%%80085102028%%0%%STANDARD%%0037%%-3\n"
    "T1%%2%%5\n"
    "T2%%8%%3\n"
)


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (GOOD.replace("T1%%2%%5", "T1%%2%%6"), "T1 total"),
        (GOOD.replace("T1%%2%%5", "T1%%3%%5"), "T1 count"),
        (GOOD.replace("T2%%8%%3", "T2%%8%%4"), "T2 debit"),
        (GOOD.replace("D%%2%%", "D%%3%%"), "sequence"),
        (GOOD.replace("H2%%", "H3%%"), "header type"),
        (GOOD.replace("%%0037%%", "%%0037%%x%%"), "field count"),
        (GOOD.replace("KENY", "KÉNY"), "not ASCII"),
        (GOOD.replace("RMRECON", "OTHER"), "format"),
        ("H1%%RMRECON%%1%%f%%x\nT1%%0%%0\n", "too short"),
    ],
)
def test_parser_refuses_broken_files(broken: str, reason: str) -> None:
    assert reconciliation.parse(GOOD).total_miles == 5
    with pytest.raises(reconciliation.ReconciliationFormatError):
        reconciliation.parse(broken)
