"""Partner transaction logs: matched against the real-time records, discrepancies reported, and
(on request) records never seen in real time issued through the normal write path.

A log is CSV (with a header row) or JSON lines, one record per partner transaction:

    transactionType, partnerTransactionId, collectorNumber, transactionDateTime, milesAmount
    [, issuanceOfferCode, locationCode, originalPartnerTransactionId,
       basketPreTaxAmount, basketPostTaxAmount]

It is read as a stream, in chunks: memory does not grow with the file. Lines end with LF, CR LF
or a lone CR. A line (or a CSV record over quoted line breaks) longer than
`Settings.batch_line_bytes_max` is never held whole: it is one refused record
(`PAYLOAD_TOO_LARGE`) and reading goes on with the next line. Each chunk costs one
query to find the real-time transactions it names. Bad records are reported with their line number
and a catalogue code and never stop the rest of the file. Issuing a missing record uses the record's
own partner id, so importing the same file again finds it and issues nothing twice.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any, BinaryIO, ClassVar, cast

from pydantic import ValidationError
from sqlalchemy.orm import Session

from rewardmiles import clock, limits
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.errors import OperatorError
from rewardmiles.http.partner_json import DuplicateMemberError, canonical_json, loads_partner_json
from rewardmiles.idempotency.service import fingerprint
from rewardmiles.issuance import service as issuance
from rewardmiles.issuance.calls import WIRE_NAMES, PartnerCall
from rewardmiles.issuance.schemas import (
    DATETIME_RULE,
    FIELD_CODES,
    FIELD_RULES,
    PostBasketRequest,
    PostEventRequest,
    ReverseBasketRequest,
    ReverseEventRequest,
    basket_command,
    event_command,
)
from rewardmiles.reports import repository
from rewardmiles.reports.repository import OutcomeRow
from rewardmiles.vocabulary import BatchOutcome, BatchStatus, Endpoint

CHUNK_RECORDS = 1000
WRITE_ROWS = 10_000  # outcome rows written (and committed) together
LOG_TYPES = {
    "POST/EVENT": Endpoint.POST_EVENT,
    "REVERSE/EVENT": Endpoint.REVERSE_EVENT,
    "POST": Endpoint.POST,
    "REVERSE": Endpoint.REVERSE,
}
REQUIRED = (
    "transactionType",
    "partnerTransactionId",
    "collectorNumber",
    "transactionDateTime",
    "milesAmount",
)


class BatchError(OperatorError):
    pass


@dataclass
class BatchReport:
    batch_id: str
    records: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    written: int = 0  # outcome rows so far: the last one's `seq`


@dataclass(frozen=True, slots=True)
class LogRecord:
    line_no: int
    endpoint: Endpoint
    partner_transaction_id: str
    collector_number: str
    moment: datetime
    miles: int
    fields: dict[str, Any]  # as read

    @property
    def raw(self) -> dict[str, str]:
        """The record's fields that have a value, as text (read only to issue a missing one)."""
        return {k: str(v) for k, v in self.fields.items() if v not in (None, "")}


class _RefusedLineError(ValueError):
    """A line (or CSV record) refused whole, under the catalogue `code`; reading goes on."""

    code: ClassVar[str]


class _RecordTooLongError(_RefusedLineError):
    """A physical line, or a CSV record over quoted line breaks, longer than the limit."""

    code = "PAYLOAD_TOO_LARGE"


class _UndecodableLineError(_RefusedLineError):
    code = "FIELD_INVALID"


class _Lines:
    """The physical lines of a log, ended by LF, CR LF or a lone CR (old Mac spreadsheets), each
    read with a bounded `readline`: a line longer than `limit` characters is read through to its
    line ending in pieces of `limit` and dropped, so it never sits in memory whole (one of at most
    `limit` characters but more bytes, UTF-8 encoded, is refused too). It surfaces as
    `_RecordTooLongError` from `__next__`; iteration then goes on with the next line.
    Bytes that are not UTF-8 make their line an `_UndecodableLineError`, and reading goes on too.
    For CSV, `record_bytes` bounds a record that spans lines through quoted line breaks the same
    way. Lines keep their line ending (as `open(newline="")` does, which the csv module needs)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._text = io.TextIOWrapper(
            cast(BinaryIO, stream), encoding="utf-8", errors="surrogateescape", newline=""
        )
        self._limit = limit
        self.line_no = 0
        self.record_bytes = 0
        self._first = True
        self._cr_pending = False  # the last piece dropped ended with CR: an LF next is its own

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        text = self._text.readline(self._limit + 1)
        if self._cr_pending:
            self._cr_pending = False
            if text == "\n":  # CR LF split between two pieces of a dropped line
                text = self._text.readline(self._limit + 1)
        if not text:
            raise StopIteration
        self.line_no += 1
        if len(text) > self._limit:
            piece = text
            while piece and not piece.endswith(("\n", "\r")):
                piece = self._text.readline(self._limit)
            self._cr_pending = piece.endswith("\r")
            raise _RecordTooLongError(f"line longer than {self._limit} bytes")
        size = len(text)
        if not text.isascii():
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:  # a byte that was not UTF-8, kept as a surrogate
                at = len(text[: exc.start].encode("utf-8", "surrogateescape")) + 1
                raise _UndecodableLineError(f"not UTF-8 text (byte {at})") from None
            if size > self._limit:
                raise _RecordTooLongError(f"line longer than {self._limit} bytes")
        if self._first:
            self._first = False
            text = text.removeprefix("\ufeff")
        self.record_bytes += size
        if self.record_bytes > self._limit:
            raise _RecordTooLongError(
                f"record longer than {self._limit} bytes (quoted line breaks included)"
            )
        return text

    def release(self) -> None:
        """Give the binary stream back open (the wrapper would close it when collected)."""
        if not self._text.closed:
            self._text.detach()


Item = tuple[int, dict[str, Any] | None, str | None, str | None]


def _records(stream: IO[bytes], kind: str, line_bytes_max: int) -> Iterator[Item]:
    """(line number, fields or None, error code, error detail) per record."""
    lines = _Lines(stream, line_bytes_max)
    try:
        yield from _csv_records(lines) if kind == "csv" else _json_records(lines)
    finally:
        lines.release()


def _json_records(lines: _Lines) -> Iterator[Item]:
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except _RefusedLineError as exc:
            yield lines.line_no, None, exc.code, str(exc)
            continue
        lines.record_bytes = 0
        if not line.strip():
            continue
        try:
            value = loads_partner_json(line)  # the API's rules: no member named twice
        except DuplicateMemberError as exc:
            yield lines.line_no, None, "MALFORMED_JSON", str(exc)
            continue
        except (ValueError, RecursionError) as exc:
            yield lines.line_no, None, "MALFORMED_JSON", f"not JSON: {exc}"
            continue
        if isinstance(value, dict):
            yield lines.line_no, value, None, None
        else:
            yield lines.line_no, None, "MALFORMED_JSON", "not a JSON object"


def _csv_records(lines: _Lines) -> Iterator[Item]:
    """CSV with a header row: as `csv.DictReader` (extra values dropped, missing ones None), but
    a record that is too long or not UTF-8 is one refused record, and reading goes on."""
    reader = csv.reader(lines)
    header: list[str] | None = None
    while True:
        lines.record_bytes = 0
        try:
            row = next(reader)
        except StopIteration:
            return
        except _RefusedLineError as exc:
            yield lines.line_no, None, exc.code, str(exc)
            continue
        except csv.Error as exc:
            yield lines.line_no, None, "FIELD_INVALID", f"not CSV: {exc}"
            continue
        if not row:
            continue
        if header is None:
            header = row
            continue
        fields: dict[str, Any] = dict.fromkeys(header)
        fields.update(zip(header, row, strict=False))
        yield lines.line_no, fields, None, None


_INTEGER = re.compile(r"-?[0-9]+")


def _parse(line_no: int, fields: dict[str, Any]) -> LogRecord:
    missing = [name for name in REQUIRED if fields.get(name) in (None, "")]
    if missing:
        raise _InvalidRecordError("FIELD_REQUIRED", f"missing {', '.join(missing)}")
    kind = str(fields["transactionType"]).strip().upper()
    if kind not in LOG_TYPES:
        raise _InvalidRecordError(
            "FIELD_INVALID", f"transactionType must be one of {', '.join(LOG_TYPES)}"
        )
    number = str(fields["collectorNumber"]).strip()
    if not (len(number) == 11 and number.isascii() and number.isdigit()):
        raise _InvalidRecordError("COLLECTOR_NUMBER_INVALID", "collectorNumber must be 11 digits")
    amount = str(fields["milesAmount"]).strip()
    if _INTEGER.fullmatch(amount) is None:  # not "1_000", "+5" or "５"
        raise _InvalidRecordError("MILES_AMOUNT_INVALID", "milesAmount must be an integer")
    miles = int(amount)
    if miles < 1:
        raise _InvalidRecordError("MILES_AMOUNT_INVALID", "milesAmount must be at least 1")
    try:
        moment = clock.parse_partner_datetime(str(fields["transactionDateTime"]).strip())
    except ValueError as exc:
        raise _InvalidRecordError("FIELD_INVALID", f"transactionDateTime {DATETIME_RULE}") from exc
    partner_id = str(fields["partnerTransactionId"]).strip()
    # Printable ASCII but the space: "!" … "~".
    if not (
        1 <= len(partner_id) <= 64
        and partner_id.isascii()
        and partner_id.isprintable()
        and " " not in partner_id
    ):
        raise _InvalidRecordError(
            "FIELD_INVALID", "partnerTransactionId must be 1–64 printable ASCII characters"
        )
    return LogRecord(line_no, LOG_TYPES[kind], partner_id, number, moment, miles, fields)


class _InvalidRecordError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def start_batch(
    session: Session, sponsor_code: str, source: str, issue_missing: bool, now: datetime
) -> str:
    """A new batch, processing; its id. Written when `session`'s unit of work commits."""
    batch_id = str(uuid.uuid4())
    repository.add_batch(session, batch_id, sponsor_code, source[:255], issue_missing, now)
    return batch_id


def run_batch(
    db: Database,
    settings: Settings,
    batch_id: str,
    stream: IO[bytes],
    kind: str,
    *,
    client_id: str,
    on_chunk: Callable[[BatchReport], None] | None = None,
) -> BatchReport:
    """Match (and optionally issue) every record of `stream`; then list what the log lacks."""
    with db.reader() as session:
        batch = repository.batch(session, batch_id)
        if batch is None:
            raise BatchError(f"no batch {batch_id}")
        sponsor_code, issue_missing = batch.sponsor_code, batch.issue_missing
    report = BatchReport(batch_id)
    days: set[date] = set()
    chunk: list[Item] = []
    writer = _OutcomeWriter(db, batch_id)
    try:
        try:
            for item in _records(stream, kind, settings.batch_line_bytes_max):
                chunk.append(item)
                if len(chunk) >= CHUNK_RECORDS:
                    writer.write(
                        _process_chunk(
                            db,
                            settings,
                            sponsor_code,
                            issue_missing,
                            client_id,
                            report,
                            chunk,
                            days,
                        )
                    )
                    chunk = []
                    if on_chunk is not None:
                        on_chunk(report)
            writer.write(
                _process_chunk(
                    db, settings, sponsor_code, issue_missing, client_id, report, chunk, days
                )
            )
        finally:
            writer.close()  # every outcome written (or the first failure raised) before going on
        _record_missing_in_log(db, settings, batch_id, sponsor_code, days, report)
    except Exception as exc:
        with db.unit_of_work() as session:
            repository.finish_batch(
                session,
                batch_id,
                status=BatchStatus.FAILED,
                error=f"{type(exc).__name__}: {exc}"[:500],
                counts=report.counts,
                finished_at=clock.utc_now(),
            )
        raise
    with db.unit_of_work() as session:
        repository.finish_batch(
            session,
            batch_id,
            status=BatchStatus.DONE,
            counts=report.counts,
            finished_at=clock.utc_now(),
        )
    if on_chunk is not None:
        on_chunk(report)
    return report


def _process_chunk(
    db: Database,
    settings: Settings,
    sponsor_code: str,
    issue_missing: bool,
    client_id: str,
    report: BatchReport,
    chunk: list[Item],
    days: set[date],
) -> list[OutcomeRow]:
    """The chunk's outcome rows, matched (and, with
    `issue_missing`, the missing ones issued)."""
    rows: list[OutcomeRow] = []
    if not chunk:
        return rows
    parsed: list[LogRecord] = []
    for line_no, fields, code, error in chunk:
        report.records += 1
        try:
            if fields is None:
                raise _InvalidRecordError(code or "FIELD_INVALID", error or "unreadable record")
            record = _parse(line_no, fields)
        except _InvalidRecordError as exc:
            rows.append(
                _row(report, line_no, BatchOutcome.INVALID, error_code=exc.code, detail=str(exc))
            )
            continue
        parsed.append(record)
        days.add(clock.transaction_day_of(record.moment, settings.program_time_zone))

    with db.reader() as session:
        found = _program_miles(session, sponsor_code, parsed)
    for record in parsed:
        key = (record.endpoint.value, record.partner_transaction_id)
        if key in found:
            transaction_id, program_miles = found[key]
            outcome = (
                BatchOutcome.MATCHED
                if program_miles == record.miles
                else BatchOutcome.AMOUNT_MISMATCH
            )
            rows.append(
                _row(
                    report,
                    record.line_no,
                    outcome,
                    record=record,
                    program_miles=program_miles,
                    transaction_id=transaction_id,
                )
            )
        elif issue_missing:
            rows.append(_issue(db, settings, sponsor_code, client_id, report, record))
        else:
            rows.append(
                _row(report, record.line_no, BatchOutcome.MISSING_IN_PROGRAM, record=record)
            )
    return rows


class _OutcomeWriter:
    """Writes the outcome rows in a thread of its own, `WRITE_ROWS` at a time (one COPY and one
    commit: a commit per chunk of `CHUNK_RECORDS` cost a third more), while the next chunks are
    read and matched: the database's time and the parsing overlap (a COPY waits on the database,
    which frees the interpreter). At most one group is being written and one gathered, so memory
    stays that of two groups. A failed write is raised by the next `write` or by `close`; nothing
    after it is written."""

    def __init__(self, db: Database, batch_id: str) -> None:
        self._db = db
        self._batch_id = batch_id
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="batch-outcomes")
        self._pending: Future[None] | None = None
        self._gathered: list[OutcomeRow] = []

    def write(self, rows: list[OutcomeRow]) -> None:
        self._gathered += rows
        if len(self._gathered) >= WRITE_ROWS:
            self._send()

    def close(self) -> None:
        try:
            self._send()
            self._wait()
        finally:
            self._thread.shutdown(wait=True)

    def _send(self) -> None:
        self._wait()
        rows, self._gathered = self._gathered, []
        if rows:
            self._pending = self._thread.submit(self._write, rows)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write(self, rows: list[OutcomeRow]) -> None:
        with self._db.unit_of_work() as session:
            repository.add_batch_records(session, rows)


def _row(
    report: BatchReport,
    line_no: int | None,
    outcome: BatchOutcome,
    *,
    record: LogRecord | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    program_miles: int | None = None,
    transaction_id: str | None = None,
) -> OutcomeRow:
    report.counts[outcome] += 1
    report.written += 1
    return OutcomeRow(
        report.batch_id,
        report.written,
        line_no,
        outcome,
        error_code,
        detail[: limits.batch_detail_chars_max] if detail else None,
        record.endpoint.value if record else None,
        record.partner_transaction_id if record else None,
        record.collector_number if record else None,
        record.miles if record else None,
        program_miles,
        transaction_id,
    )


def _program_miles(
    session: Session, sponsor_code: str, records: list[LogRecord]
) -> dict[tuple[str, str], repository.AcceptedMiles]:
    """Accepted transactions named by `records`, with their miles (lines not rejected)."""
    if not records:
        return {}
    keys = list({(r.endpoint.value, r.partner_transaction_id) for r in records})
    return repository.accepted_miles(session, sponsor_code, keys)


def _issue(
    db: Database,
    settings: Settings,
    sponsor_code: str,
    client_id: str,
    report: BatchReport,
    record: LogRecord,
) -> OutcomeRow:
    """Issue a record never seen in real time, through the partner write path."""
    body = _request_body(sponsor_code, record)
    if body is None:
        return _row(
            report,
            record.line_no,
            BatchOutcome.ISSUE_REJECTED,
            record=record,
            error_code="FIELD_REQUIRED",
            detail="basketPreTaxAmount and basketPostTaxAmount are needed to issue a basket",
        )
    model: Any = {
        Endpoint.POST_EVENT: PostEventRequest,
        Endpoint.REVERSE_EVENT: ReverseEventRequest,
        Endpoint.POST: PostBasketRequest,
        Endpoint.REVERSE: ReverseBasketRequest,
    }[record.endpoint]
    try:
        request = model.model_validate(
            body, context={"miles_per_line_max": settings.miles_per_line_max}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][-1]) if first["loc"] else ""
        code = FIELD_CODES.get(name, "FIELD_INVALID")
        return _row(
            report,
            record.line_no,
            BatchOutcome.ISSUE_REJECTED,
            record=record,
            error_code=code,
            detail=f"{name}: {FIELD_RULES.get(name, first['msg'])}",
        )
    command = (
        event_command(request)
        if record.endpoint in (Endpoint.POST_EVENT, Endpoint.REVERSE_EVENT)
        else basket_command(request, sponsor_code)
    )
    canonical = canonical_json(body)
    call = PartnerCall(
        endpoint=record.endpoint,
        client_id=client_id,
        command=command,
        request_json=canonical.decode(),
        # The content fingerprint of a batch-issued record: the same record again is a replay.
        fingerprint=issuance_fingerprint(record.endpoint, canonical),
        idempotency_key=None,
        request_id="batch-" + secrets.token_hex(6),
    )
    # In units of work of its own, as a partner's call (without a key: none to hold in flight).
    # Rule failures come back as a 400.
    outcome = db.run_in_unit_of_work(issuance.execute, settings, call)
    if outcome.status >= 400:
        return _row(
            report,
            record.line_no,
            BatchOutcome.ISSUE_REJECTED,
            record=record,
            error_code=str(outcome.body.get("code")),
            detail=str(outcome.body.get("detail")),
        )
    return _row(
        report,
        record.line_no,
        BatchOutcome.ISSUED,
        record=record,
        program_miles=record.miles,
        transaction_id=outcome.transaction_id,
    )


def issuance_fingerprint(endpoint: Endpoint, canonical: bytes) -> str:
    return fingerprint("BATCH", endpoint.value, canonical)


def _request_body(sponsor_code: str, record: LogRecord) -> dict[str, Any] | None:
    raw = record.raw
    line: dict[str, Any] = {
        "issuanceOfferCode": raw.get("issuanceOfferCode", "STANDARD"),
        "milesAmount": record.miles,
    }
    if raw.get("locationCode"):
        line["locationCode"] = raw["locationCode"]
    original = raw.get("originalPartnerTransactionId")
    moment = raw["transactionDateTime"].strip()
    if record.endpoint in (Endpoint.POST_EVENT, Endpoint.REVERSE_EVENT):
        body: dict[str, Any] = {
            "clientTransactionId": record.partner_transaction_id,
            "collectorNumber": record.collector_number,
            "sponsorCode": sponsor_code,
            "transactionDateTime": moment,
            "issuances": [line],
        }
        if original and record.endpoint is Endpoint.REVERSE_EVENT:
            body["originalClientTransactionId"] = original
        return body
    try:
        pre = Decimal(raw["basketPreTaxAmount"])
        post = Decimal(raw["basketPostTaxAmount"])
    except (KeyError, InvalidOperation):
        return None
    body = {
        "checkoutTransactionId": record.partner_transaction_id,
        "collectorNumber": record.collector_number,
        "sponsorCode": sponsor_code,
        "checkoutDateTime": moment,
        "basketPreTaxAmount": pre,
        "basketPostTaxAmount": post,
        "issuances": [line],
    }
    if original and record.endpoint is Endpoint.REVERSE:
        body["originalCheckoutTransactionId"] = original
    return body


def _record_missing_in_log(
    db: Database,
    settings: Settings,
    batch_id: str,
    sponsor_code: str,
    days: set[date],
    report: BatchReport,
) -> None:
    """Accepted partner-calculated transactions of the log's days that no record named."""
    if not days:
        return
    windows = [
        clock.transaction_day_bounds(day, settings.program_time_zone) for day in sorted(days)
    ]
    endpoints = [e.value for e in LOG_TYPES.values()]
    with db.reader() as session:
        rows = repository.transactions_missing_in_log(
            session, batch_id, sponsor_code, endpoints, windows
        )
    out: list[OutcomeRow] = []
    for row in rows:
        report.counts[BatchOutcome.MISSING_IN_LOG] += 1
        report.written += 1
        out.append(
            OutcomeRow(
                batch_id,
                report.written,
                None,
                BatchOutcome.MISSING_IN_LOG,
                None,
                None,
                row.endpoint,
                row.partner_transaction_id,
                row.collector_number,
                None,
                row.miles,
                row.id,
            )
        )
    for start in range(0, len(out), WRITE_ROWS):
        with db.unit_of_work() as session:
            repository.add_batch_records(session, out[start : start + WRITE_ROWS])


# --------------------------------------------------------------------------- reading results


def batch_view(
    session: Session,
    batch_id: str,
    *,
    offset: int = 0,
    limit: int = 1000,
    outcome: str | None = None,
) -> dict[str, Any] | None:
    batch = repository.batch(session, batch_id)
    if batch is None:
        return None
    records = repository.batch_records(
        session,
        batch_id,
        outcome=outcome or None,
        other_than=None if outcome else BatchOutcome.MATCHED,  # matched records only when asked for
        offset=offset,
        limit=limit,
    )
    return {
        "batchId": batch.id,
        "sponsorCode": batch.sponsor_code,
        "source": batch.source,
        "issueMissing": batch.issue_missing,
        "status": batch.status,
        "error": batch.error,
        "counts": batch.counts,
        "createdAt": batch.created_at.isoformat(),
        "finishedAt": batch.finished_at.isoformat() if batch.finished_at else None,
        "records": [
            {
                "lineNo": r.line_no,
                "outcome": r.outcome,
                "errorCode": r.error_code,
                "detail": r.detail,
                "transactionType": WIRE_NAMES.get(r.endpoint or "", r.endpoint),
                "partnerTransactionId": r.partner_transaction_id,
                "collectorNumber": r.collector_number,
                "logMiles": r.log_miles,
                "programMiles": r.program_miles,
                "transactionId": r.transaction_id,
            }
            for r in records
        ],
        "offset": offset,
        "limit": limit,
    }


def batch_sponsor(session: Session, batch_id: str) -> str | None:
    return repository.batch_sponsor(session, batch_id)


def detect_kind(name: str, first_bytes: bytes) -> str:
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    return "jsonl" if first_bytes.lstrip().startswith(b"{") else "csv"
