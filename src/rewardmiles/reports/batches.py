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
from operator import itemgetter
from typing import IO, Any, BinaryIO, ClassVar, NamedTuple, cast

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
OPTIONAL = (
    "issuanceOfferCode",
    "locationCode",
    "originalPartnerTransactionId",
    "basketPreTaxAmount",
    "basketPostTaxAmount",
)
# A record as read: the value of each of `COLUMNS` in that order (text for CSV, any JSON value),
# None where the record has none. Other fields are never read, so they are not kept.
COLUMNS = REQUIRED + OPTIONAL
Values = tuple[Any, ...]


class BatchError(OperatorError):
    pass


@dataclass
class BatchReport:
    batch_id: str
    records: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    written: int = 0  # outcome rows so far: the last one's `seq`


class LogRecord(NamedTuple):
    line_no: int
    endpoint: Endpoint
    partner_transaction_id: str
    collector_number: str
    moment: datetime
    miles: int
    values: Values  # as read
    key: tuple[str, str]  # what it is looked up by: the endpoint's value, the partner id

    @property
    def raw(self) -> dict[str, str]:
        """The record's fields that have a value, as text (read only to issue a missing one)."""
        return {
            name: str(v)
            for name, v in zip(COLUMNS, self.values, strict=True)
            if v not in (None, "")
        }


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


Item = tuple[int, Values | None, str | None, str | None]


def _records(stream: IO[bytes], kind: str, line_bytes_max: int) -> Iterator[Item]:
    """(line number, values or None, error code, error detail) per record."""
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
            yield lines.line_no, tuple(map(value.get, COLUMNS)), None, None
        else:
            yield lines.line_no, None, "MALFORMED_JSON", "not a JSON object"


def _csv_records(lines: _Lines) -> Iterator[Item]:
    """CSV with a header row, read as `csv.DictReader` would (extra values dropped, missing ones
    None; of two columns of one name, the later), each record as its `COLUMNS` values; a record
    that is too long or not UTF-8 is one refused record, and reading goes on."""
    reader = csv.reader(lines)
    width = 0
    pick: Callable[[list[Any]], Values] | None = None
    while True:
        lines.record_bytes = 0
        try:
            row: list[Any] = next(reader)
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
        if pick is None:
            # Each column's position; an absent one reads the None put after the record's values.
            width = len(row)
            at = {name: i for i, name in enumerate(row)}
            pick = itemgetter(*(at.get(name, width) for name in COLUMNS))
            continue
        if len(row) < width:
            row += [None] * (width - len(row))
        row.append(None)
        yield lines.line_no, pick(row), None, None


_INTEGER = re.compile(r"-?[0-9]+")
_ENDPOINT_VALUES = {endpoint: endpoint.value for endpoint in Endpoint}  # no enum lookup a record


def _parse(line_no: int, values: Values) -> LogRecord:
    kind, partner, number, when, amount = values[:5]  # REQUIRED's order
    if None in values[:5] or "" in values[:5]:
        missing = [name for name, v in zip(REQUIRED, values, strict=False) if v in (None, "")]
        raise _InvalidRecordError("FIELD_REQUIRED", f"missing {', '.join(missing)}")
    endpoint = LOG_TYPES.get(str(kind).strip().upper())
    if endpoint is None:
        raise _InvalidRecordError(
            "FIELD_INVALID", f"transactionType must be one of {', '.join(LOG_TYPES)}"
        )
    number = str(number).strip()
    if not (len(number) == 11 and number.isascii() and number.isdigit()):
        raise _InvalidRecordError("COLLECTOR_NUMBER_INVALID", "collectorNumber must be 11 digits")
    amount = str(amount).strip()
    if _INTEGER.fullmatch(amount) is None:  # not "1_000", "+5" or "５"
        raise _InvalidRecordError("MILES_AMOUNT_INVALID", "milesAmount must be an integer")
    miles = int(amount)
    if miles < 1:
        raise _InvalidRecordError("MILES_AMOUNT_INVALID", "milesAmount must be at least 1")
    try:
        moment = clock.parse_partner_datetime(str(when).strip())
    except ValueError as exc:
        raise _InvalidRecordError("FIELD_INVALID", f"transactionDateTime {DATETIME_RULE}") from exc
    partner = str(partner).strip()
    # Printable ASCII but the space: "!" … "~".
    if not (
        1 <= len(partner) <= 64
        and partner.isascii()
        and partner.isprintable()
        and " " not in partner
    ):
        raise _InvalidRecordError(
            "FIELD_INVALID", "partnerTransactionId must be 1–64 printable ASCII characters"
        )
    key = (_ENDPOINT_VALUES[endpoint], partner)
    return LogRecord(line_no, endpoint, partner, number, moment, miles, values, key)


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
    """Match (and optionally issue) every record of `stream`; then list what the log lacks.

    A chunk's records are looked up in a thread of their own while the next chunk is read (the
    query waits on the database, which frees the interpreter) — unless missing records are
    issued: a chunk is then looked up after the one before it has issued its own, so a record
    named twice is found the second time and never issued twice."""
    with db.reader() as session:
        batch = repository.batch(session, batch_id)
        if batch is None:
            raise BatchError(f"no batch {batch_id}")
        sponsor_code, issue_missing = batch.sponsor_code, batch.issue_missing
    report = BatchReport(batch_id)
    days = _Days(settings.program_time_zone)
    chunk: list[Item] = []
    writer = _OutcomeWriter(db, batch_id)
    lookups = ThreadPoolExecutor(1, thread_name_prefix="batch-lookups")
    ahead: _Chunk | None = None  # read and being looked up

    def step(chunk: list[Item]) -> None:
        """Read `chunk` and start its lookup; then finish the chunk before it."""
        nonlocal ahead
        entries, records = _read_chunk(chunk, days)
        report.records += len(chunk)
        found = (
            None
            if issue_missing or not records
            else lookups.submit(_program_miles, db, sponsor_code, records)
        )
        if ahead is not None:
            finish(ahead)
        ahead = _Chunk(entries, records, found)

    def finish(done: _Chunk) -> None:
        if done.found is not None:
            found = done.found.result()
        else:
            found = _program_miles(db, sponsor_code, done.records)
        writer.write(
            _outcomes(db, settings, sponsor_code, issue_missing, client_id, report, done, found)
        )
        if on_chunk is not None:
            on_chunk(report)

    try:
        try:
            for item in _records(stream, kind, settings.batch_line_bytes_max):
                chunk.append(item)
                if len(chunk) >= CHUNK_RECORDS:
                    step(chunk)
                    chunk = []
            step(chunk)
            if ahead is not None:
                finish(ahead)
        finally:
            lookups.shutdown(wait=True, cancel_futures=True)
            writer.close()  # every outcome written (or the first failure raised) before going on
        _record_missing_in_log(db, settings, batch_id, sponsor_code, days.seen, report)
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


class _Refused(NamedTuple):
    """A record refused as read: its outcome is `INVALID` under the catalogue `code`."""

    line_no: int
    code: str
    detail: str


class _Chunk(NamedTuple):
    entries: list[LogRecord | _Refused]  # in the log's order
    records: list[LogRecord]  # the valid ones
    found: Future[dict[tuple[str, str], repository.AcceptedMiles]] | None  # the lookup under way


class _Days:
    """The Transaction Days the records fall on. A log is mostly in time order, so a record is
    first compared with the bounds of the day of the one before; only another day costs a time
    zone conversion."""

    def __init__(self, zone_name: str) -> None:
        self.zone_name = zone_name
        self.seen: set[date] = set()
        self._start: datetime | None = None
        self._end: datetime | None = None

    def add(self, moment: datetime) -> None:
        if self._start is not None and self._end is not None and self._start <= moment < self._end:
            return
        day = clock.transaction_day_of(moment, self.zone_name)
        self.seen.add(day)
        self._start, self._end = clock.transaction_day_bounds(day, self.zone_name)


def _read_chunk(
    chunk: list[Item], days: _Days
) -> tuple[list[LogRecord | _Refused], list[LogRecord]]:
    """Each item parsed, or refused with the reason; and the parsed ones apart."""
    entries: list[LogRecord | _Refused] = []
    records: list[LogRecord] = []
    for line_no, values, code, error in chunk:
        if values is None:
            entries.append(_Refused(line_no, code or "FIELD_INVALID", error or "unreadable record"))
            continue
        try:
            record = _parse(line_no, values)
        except _InvalidRecordError as exc:
            entries.append(_Refused(line_no, exc.code, str(exc)))
            continue
        entries.append(record)
        records.append(record)
        days.add(record.moment)
    return entries, records


def _outcomes(
    db: Database,
    settings: Settings,
    sponsor_code: str,
    issue_missing: bool,
    client_id: str,
    report: BatchReport,
    chunk: _Chunk,
    found: dict[tuple[str, str], repository.AcceptedMiles],
) -> list[OutcomeRow]:
    """The chunk's outcome rows in the log's order: matched against `found` (and, with
    `issue_missing`, the missing ones issued)."""
    rows: list[OutcomeRow] = []
    for entry in chunk.entries:
        if isinstance(entry, _Refused):
            rows.append(
                _row(
                    report,
                    entry.line_no,
                    BatchOutcome.INVALID,
                    error_code=entry.code,
                    detail=entry.detail,
                )
            )
            continue
        hit = found.get(entry.key)
        if hit is not None:
            transaction_id, program_miles = hit
            outcome = (
                BatchOutcome.MATCHED
                if program_miles == entry.miles
                else BatchOutcome.AMOUNT_MISMATCH
            )
            rows.append(
                _row(
                    report,
                    entry.line_no,
                    outcome,
                    record=entry,
                    program_miles=program_miles,
                    transaction_id=transaction_id,
                )
            )
        elif issue_missing:
            rows.append(_issue(db, settings, sponsor_code, client_id, report, entry))
        else:
            rows.append(_row(report, entry.line_no, BatchOutcome.MISSING_IN_PROGRAM, record=entry))
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
        record.key[0] if record else None,
        record.partner_transaction_id if record else None,
        record.collector_number if record else None,
        record.miles if record else None,
        program_miles,
        transaction_id,
    )


def _program_miles(
    db: Database, sponsor_code: str, records: list[LogRecord]
) -> dict[tuple[str, str], repository.AcceptedMiles]:
    """Accepted transactions named by `records`, with their miles (lines not rejected)."""
    if not records:
        return {}
    keys = list({r.key for r in records})
    with db.statement_reader() as session:
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
