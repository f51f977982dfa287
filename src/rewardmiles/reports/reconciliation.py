"""The reconciliation file: one per sponsor and Transaction Day; layout in docs/reconciliation.md.

Plain ASCII, fields separated by `%%`, records by a newline: two header records, one detail record
per line posted to the ledger that day (a pending line appears on the day it settles), two trailer
records whose counts and signed totals must equal the detail records. The parser beside the writer
reads the same format back and checks it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from rewardmiles import clock
from rewardmiles.issuance.calls import WIRE_NAMES
from rewardmiles.reports import repository

SEPARATOR = "%%"
FORMAT_NAME = "RMRECON"
FORMAT_VERSION = "1"


class ReconciliationFormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Detail:
    sequence: int
    posted_at: str
    transaction_id: str
    transaction_type: str
    partner_transaction_id: str
    collector_number: str
    line_no: int
    offer_code: str
    location_code: str
    miles: int  # signed, from the collector's side: + issued, - reversed


@dataclass(frozen=True, slots=True)
class ReconciliationFile:
    file_id: str
    created_at: str
    sponsor_code: str
    day: date
    time_zone: str
    window_start: str
    window_end: str
    details: tuple[Detail, ...]

    @property
    def total_miles(self) -> int:
        return sum(d.miles for d in self.details)

    @property
    def credit_miles(self) -> int:
        return sum(d.miles for d in self.details if d.miles > 0)

    @property
    def debit_miles(self) -> int:
        return -sum(d.miles for d in self.details if d.miles < 0)


def _escape(value: str) -> str:
    """`%` becomes `%25`, so `%%` never occurs inside a field."""
    return value.replace("%", "%25")


def _unescape(value: str) -> str:
    return value.replace("%25", "%")


def build(
    session: Session, sponsor_code: str, day: date, zone_name: str, now: datetime
) -> ReconciliationFile:
    start, end = clock.transaction_day_bounds(day, zone_name)
    rows = repository.reconciliation_rows(session, sponsor_code, start, end)
    details = tuple(
        Detail(
            sequence=i,
            posted_at=clock.program_timestamp(r.posted_at, zone_name),
            transaction_id=r.transaction_id,
            transaction_type=WIRE_NAMES.get(r.endpoint, r.endpoint),
            partner_transaction_id=r.partner_transaction_id,
            collector_number=r.account_code,
            line_no=r.line_no,
            offer_code=r.offer_code,
            location_code=r.location_code or "",
            miles=r.amount_miles,
        )
        for i, r in enumerate(rows, start=1)
    )
    return ReconciliationFile(
        file_id=str(uuid.uuid4()),
        created_at=clock.program_timestamp(now, zone_name),
        sponsor_code=sponsor_code,
        day=day,
        time_zone=zone_name,
        window_start=clock.program_timestamp(start, zone_name),
        window_end=clock.program_timestamp(end, zone_name),
        details=details,
    )


def render(recon: ReconciliationFile) -> str:
    def record(*fields: object) -> str:
        return SEPARATOR.join(_escape(str(f)) for f in fields)

    lines = [
        record("H1", FORMAT_NAME, FORMAT_VERSION, recon.file_id, recon.created_at),
        record(
            "H2",
            recon.sponsor_code,
            recon.day.isoformat(),
            recon.time_zone,
            recon.window_start,
            recon.window_end,
        ),
    ]
    lines += [
        record(
            "D",
            d.sequence,
            d.posted_at,
            d.transaction_id,
            d.transaction_type,
            d.partner_transaction_id,
            d.collector_number,
            d.line_no,
            d.offer_code,
            d.location_code,
            d.miles,
        )
        for d in recon.details
    ]
    lines.append(record("T1", len(recon.details), recon.total_miles))
    lines.append(record("T2", recon.credit_miles, recon.debit_miles))
    text = "\n".join(lines) + "\n"
    text.encode("ascii")  # every field is ASCII by construction; fail loudly if not
    return text


def parse(text: str) -> ReconciliationFile:
    """Read a file written by `render`; check its structure and that its trailers add up."""
    try:
        text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ReconciliationFormatError("the file is not ASCII") from exc
    records = [line.split(SEPARATOR) for line in text.split("\n") if line]
    if len(records) < 4:
        raise ReconciliationFormatError("a file has 2 header and 2 trailer records at least")
    h1, h2, *body, t1, t2 = ([_unescape(f) for f in r] for r in records)
    _expect(h1, "H1", 5)
    _expect(h2, "H2", 6)
    _expect(t1, "T1", 3)
    _expect(t2, "T2", 3)
    if h1[1] != FORMAT_NAME or h1[2] != FORMAT_VERSION:
        raise ReconciliationFormatError(f"unknown format {h1[1]} {h1[2]}")
    details = []
    for index, fields in enumerate(body, start=1):
        _expect(fields, "D", 11)
        try:
            details.append(
                Detail(
                    int(fields[1]),
                    fields[2],
                    fields[3],
                    fields[4],
                    fields[5],
                    fields[6],
                    int(fields[7]),
                    fields[8],
                    fields[9],
                    int(fields[10]),
                )
            )
        except ValueError as exc:
            raise ReconciliationFormatError(f"detail record {index}: {exc}") from exc
        if details[-1].sequence != index:
            raise ReconciliationFormatError(
                f"detail record {index} has sequence {details[-1].sequence}"
            )
    recon = ReconciliationFile(
        h1[3], h1[4], h2[1], date.fromisoformat(h2[2]), h2[3], h2[4], h2[5], tuple(details)
    )
    if int(t1[1]) != len(details) or int(t1[2]) != recon.total_miles:
        raise ReconciliationFormatError("trailer T1 does not match the detail records")
    if int(t2[1]) != recon.credit_miles or int(t2[2]) != recon.debit_miles:
        raise ReconciliationFormatError("trailer T2 does not match the detail records")
    return recon


def _expect(fields: list[str], kind: str, count: int) -> None:
    if not fields or fields[0] != kind:
        raise ReconciliationFormatError(f"expected a {kind} record, found {fields[:1]}")
    if len(fields) != count:
        raise ReconciliationFormatError(f"a {kind} record has {count} fields, found {len(fields)}")
