"""The audit report: every request of a sponsor received on a Transaction Day that reached the
business rules — accepted (posted or pending), rejected (with its catalogue code), recorded — with
its lines. Requests refused before processing (malformed bodies, authentication) are not stored
and so not listed; the access log has them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from sqlalchemy.orm import Session

from rewardmiles import clock
from rewardmiles.issuance.calls import WIRE_NAMES, wire_status
from rewardmiles.logs import mask_collector_numbers
from rewardmiles.reports import repository
from rewardmiles.vocabulary import IssuanceStatus, TransactionStatus

CSV_COLUMNS = (
    "processedAt",
    "transactionId",
    "transactionType",
    "partnerTransactionId",
    "collectorNumber",
    "httpStatus",
    "transactionStatus",
    "errorCode",
    "lineNo",
    "issuanceOfferCode",
    "locationCode",
    "milesAmount",
    "lineStatus",
    "lineErrorCode",
)


@dataclass(frozen=True, slots=True)
class AuditReport:
    sponsor_code: str
    day: date
    time_zone: str
    transactions: list[dict[str, Any]]

    def as_json(self, *, mask_collectors: bool = False) -> dict[str, Any]:
        transactions = self.transactions
        if mask_collectors:
            transactions = [
                {**t, "collectorNumber": _masked(t["collectorNumber"])} for t in transactions
            ]
        return {
            "sponsorCode": self.sponsor_code,
            "transactionDay": self.day.isoformat(),
            "timeZone": self.time_zone,
            "transactions": transactions,
        }

    def as_csv(self, *, mask_collectors: bool = False) -> str:
        """One row per line; every cell a spreadsheet would run as a formula is neutralised
        (`spreadsheet_safe`)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        buffer.write(
            f"# audit report; sponsor {self.sponsor_code}; transaction day {self.day}; "
            f"time zone {self.time_zone}\n"
        )
        writer.writerow(CSV_COLUMNS)
        for txn in self.transactions:
            collector = txn["collectorNumber"] or ""
            if mask_collectors:
                collector = _masked(collector)
            head = [
                txn["processedAt"],
                txn["transactionId"],
                txn["transactionType"],
                txn["partnerTransactionId"],
                collector,
                txn["httpStatus"],
                txn["status"],
                txn["errorCode"] or "",
            ]
            for line in txn["issuances"] or [None]:
                if line is None:
                    row = [*head, "", "", "", "", "", ""]
                else:
                    row = [
                        *head,
                        line["lineNo"],
                        line["issuanceOfferCode"],
                        line.get("locationCode") or "",
                        line["milesAmount"],
                        line["status"] or "",
                        line.get("errorCode") or "",
                    ]
                writer.writerow([spreadsheet_safe(cell) for cell in row])
        return buffer.getvalue()


# A cell starting with one of these is run as a formula by spreadsheets (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def spreadsheet_safe(cell: object) -> object:
    """`cell` for a CSV meant for spreadsheets: text starting with `=`, `+`, `-`, `@`, a tab or
    a carriage return gets a leading `'`, so it shows as text instead of running; a plain number
    (`-5`, `+3`, `12.50`) is left as it is, being a number to the spreadsheet too. Anything else
    is unchanged. Every CSV the service writes passes its cells through here."""
    if (
        isinstance(cell, str)
        and cell.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(cell)
    ):
        return "'" + cell
    return cell


def _masked(number: str | None) -> str | None:
    return None if number is None else mask_collector_numbers(number)


def audit_report(
    session: Session, sponsor_code: str, day: date, zone_name: str, limit: int | None = None
) -> AuditReport:
    """The report of the sponsor's day: every transaction, or the first `limit` (a page that
    shows part of it)."""
    start, end = clock.transaction_day_bounds(day, zone_name)
    rows = repository.audit_rows(session, sponsor_code, start, end, limit)
    lines_by_txn: dict[str, list[dict[str, Any]]] = {}
    ids = [r.id for r in rows if r.status != TransactionStatus.REJECTED]
    for line in repository.audit_lines(session, ids):
        lines_by_txn.setdefault(line.transaction_id, []).append(
            {
                "lineNo": line.line_no,
                "issuanceOfferCode": line.offer_code,
                "locationCode": line.location_code,
                "milesAmount": line.miles,
                "status": wire_status(line.direction, line.status),
                "errorCode": line.error_code,
            }
        )
    transactions = []
    for r in rows:
        lines = lines_by_txn.get(r.id, [])
        if r.status == TransactionStatus.REJECTED:
            lines = _requested_lines(r.request_json)
        transactions.append(
            {
                "processedAt": clock.program_timestamp(r.processed_at, zone_name),
                "transactionId": r.id,
                "transactionType": WIRE_NAMES.get(r.endpoint, r.endpoint),
                "partnerTransactionId": r.partner_transaction_id,
                "collectorNumber": r.collector_number,
                "httpStatus": r.http_status,
                "status": r.status,
                "errorCode": r.error_code,
                "issuances": lines,
            }
        )
    return AuditReport(sponsor_code, day, zone_name, transactions)


def _requested_lines(request_json: str) -> list[dict[str, Any]]:
    """A rejected request's lines as the partner sent them (nothing was issued)."""
    request = orjson.loads(request_json)
    return [
        {
            "lineNo": i,
            "issuanceOfferCode": line.get("issuanceOfferCode"),
            "locationCode": line.get("locationCode"),
            "milesAmount": line.get("milesAmount"),
            "status": IssuanceStatus.REJECTED,
            "errorCode": None,
        }
        for i, line in enumerate(request.get("issuances") or [])
        if isinstance(line, dict)
    ]
