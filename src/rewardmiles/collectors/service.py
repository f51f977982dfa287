"""Operator actions on collectors. Balances are never written here: a new account opens at 0,
and only the ledger's postings move it (`ledger.post`, and the one-statement issue path in
`issuance/repository.py`, which writes the same rows)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.collectors import repository
from rewardmiles.db.engine import bulk_insert_ignoring_conflicts
from rewardmiles.db.models import Collector
from rewardmiles.errors import OperatorError
from rewardmiles.operators.service import Actor, audit
from rewardmiles.vocabulary import CollectorStatus

COLLECTOR_NUMBER = re.compile(limits.collector_number_pattern)
STATUSES = tuple(CollectorStatus)
IMPORT_BATCH_ROWS = 10_000
IMPORT_COLUMNS = ("number", "status", "balance_miles", "created_at", "updated_at")
COLLECTORS = cast(Table, Collector.__table__)


class CollectorError(OperatorError):
    pass


@dataclass(frozen=True, slots=True)
class CollectorView:
    number: str
    status: str
    balance_miles: int


def _check(number: str, status: str) -> None:
    if not COLLECTOR_NUMBER.match(number):
        raise CollectorError(f"collector number {number!r} must be exactly 11 digits")
    if status not in STATUSES:
        raise CollectorError(f"status {status!r} must be one of {', '.join(STATUSES)}")


def add_collector(session: Session, number: str, status: str, now: datetime) -> CollectorView:
    _check(number, status)
    if session.get(Collector, number) is not None:
        raise CollectorError(f"collector {number} already exists")
    session.add(
        Collector(number=number, status=status, balance_miles=0, created_at=now, updated_at=now)
    )
    return CollectorView(number, status, 0)


def set_status(session: Session, number: str, status: str, now: datetime) -> str:
    """Change a collector's status under its row lock; return the previous status."""
    _check(number, status)
    row = session.get(Collector, number, with_for_update=True)
    if row is None:
        raise CollectorError(f"collector {number} not found")
    before = row.status
    row.status = status
    row.updated_at = now
    return before


def change_status(
    session: Session, number: str, status: str, note: str | None, actor: Actor, now: datetime
) -> str:
    """`set_status`, audited (`collector.set_status`, the note kept with it); return the
    previous status."""
    before = set_status(session, number, status, now)
    audit(
        session,
        actor,
        "collector.set_status",
        "collector",
        number,
        now,
        before={"status": before},
        after={"status": status},
        note=note,
    )
    return before


def get_collector(session: Session, number: str) -> CollectorView | None:
    row = session.get(Collector, number)
    return CollectorView(row.number, row.status, row.balance_miles) if row else None


@dataclass(frozen=True, slots=True)
class CollectorOverview:
    """What the support desk sees first of a collector."""

    number: str
    status: str
    balance_miles: int
    pending_lines: int
    first_activity_at: datetime | None
    last_activity_at: datetime | None


def overview(session: Session, number: str) -> CollectorOverview | None:
    """The collector's status, balance, pending lines and first and last activity; None for a
    number no collector has."""
    row = session.get(Collector, number)
    if row is None:
        return None
    seen = repository.activity(session, number)
    return CollectorOverview(
        row.number, row.status, row.balance_miles, seen.pending_lines, seen.first_at, seen.last_at
    )


@dataclass
class ImportReport:
    rows_read: int = 0
    rows_valid: int = 0
    inserted: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    @property
    def already_enrolled(self) -> int:
        return self.rows_valid - self.inserted


def _rows(stream: IO[str], report: ImportReport) -> Iterator[tuple[str, str]]:
    for line_no, record in enumerate(csv.reader(stream), start=1):
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        number = record[0].strip()
        if line_no == 1 and number.lower() in ("collectornumber", "collector_number", "number"):
            continue
        report.rows_read += 1
        status = (
            record[1].strip().upper()
            if len(record) > 1 and record[1].strip()
            else CollectorStatus.ACTIVE
        )
        try:
            if len(record) > 2:
                raise CollectorError("expected collectorNumber[,status]")
            _check(number, status)
        except CollectorError as exc:
            report.error_count += 1
            if len(report.errors) < limits.collector_import_errors_kept_max:
                report.errors.append(f"line {line_no}: {exc}")
            continue
        report.rows_valid += 1
        yield number, status


def import_batches(stream: IO[str], report: ImportReport) -> Iterator[list[tuple[str, str]]]:
    """The valid rows of a `collectorNumber[,status]` CSV, streamed in batches of at most
    `IMPORT_BATCH_ROWS`; `report` counts the rows read and keeps the invalid ones as it goes.

    The caller enrols each batch in a unit of work of its own (`enrol_batch`), so memory stays
    flat and an interrupted import can simply be run again: collectors already enrolled are left
    unchanged (and counted).
    """
    batch: list[tuple[str, str]] = []
    for row in _rows(stream, report):
        batch.append(row)
        if len(batch) >= IMPORT_BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def enrol_batch(
    session: Session, batch: list[tuple[str, str]], now: datetime, report: ImportReport
) -> None:
    """Enrol one batch of `import_batches`, skipping collectors already enrolled."""
    rows = [(number, status, 0, now, now) for number, status in batch]
    report.inserted += bulk_insert_ignoring_conflicts(session, COLLECTORS, IMPORT_COLUMNS, rows)
