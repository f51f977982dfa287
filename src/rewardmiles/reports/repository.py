"""Queries of the reports: the audit report's transactions and lines, the reconciliation file's
ledger entries, and partner-log batches (the batch, the transactions a log names or leaves out,
the outcomes recorded). No rules here: audit.py, reconciliation.py and batches.py decide.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import BindParameter, Select, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from rewardmiles.db.engine import PerDialect, bulk_insert, pairs_among, pairs_params
from rewardmiles.db.models import Batch, BatchRecord, IssuanceLine, LedgerEntry, Transaction
from rewardmiles.vocabulary import AccountKind, BatchStatus, LineStatus, TransactionStatus

# Transaction ids per `IN (...)` of the audit report's lines query.
AUDIT_LINES_PER_QUERY = 500

# --------------------------------------------------------------------------- audit report


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: str
    endpoint: str
    partner_transaction_id: str
    collector_number: str | None
    status: str
    http_status: int
    error_code: str | None
    processed_at: datetime
    request_json: str


@dataclass(frozen=True, slots=True)
class AuditLine:
    transaction_id: str
    line_no: int
    direction: str
    offer_code: str
    location_code: str | None
    miles: int
    status: str
    error_code: str | None


def audit_rows(
    session: Session,
    sponsor_code: str,
    day_start: datetime,
    day_end: datetime,
    limit: int | None = None,
) -> list[AuditRow]:
    """The sponsor's transactions processed in [day_start, day_end), oldest first (the first
    `limit` of them, when a limit is given)."""
    stmt = (
        select(
            Transaction.id,
            Transaction.endpoint,
            Transaction.partner_transaction_id,
            Transaction.collector_number,
            Transaction.status,
            Transaction.http_status,
            Transaction.error_code,
            Transaction.processed_at,
            Transaction.request_json,
        )
        .where(
            Transaction.sponsor_code == sponsor_code,
            Transaction.processed_at >= day_start,
            Transaction.processed_at < day_end,
        )
        .order_by(Transaction.processed_at, Transaction.id)
    )
    rows = session.execute(stmt if limit is None else stmt.limit(limit))
    return [AuditRow(*row) for row in rows]


def audit_lines(session: Session, transaction_ids: Sequence[str]) -> Iterator[AuditLine]:
    """The lines of `transaction_ids`, by transaction and line number, streamed one query per
    `AUDIT_LINES_PER_QUERY` ids."""
    for start in range(0, len(transaction_ids), AUDIT_LINES_PER_QUERY):
        chunk = transaction_ids[start : start + AUDIT_LINES_PER_QUERY]
        rows = session.execute(
            select(
                IssuanceLine.transaction_id,
                IssuanceLine.line_no,
                IssuanceLine.direction,
                IssuanceLine.offer_code,
                IssuanceLine.location_code,
                IssuanceLine.miles,
                IssuanceLine.status,
                IssuanceLine.error_code,
            )
            .where(IssuanceLine.transaction_id.in_(chunk))
            .order_by(IssuanceLine.transaction_id, IssuanceLine.line_no)
        )
        for row in rows:
            yield AuditLine(*row)


# --------------------------------------------------------------------------- reconciliation file


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    posted_at: datetime
    transaction_id: str
    line_no: int
    amount_miles: int
    account_code: str
    endpoint: str
    partner_transaction_id: str
    offer_code: str
    location_code: str | None


def reconciliation_rows(
    session: Session, sponsor_code: str, day_start: datetime, day_end: datetime
) -> list[ReconciliationRow]:
    """The collector side of the ledger entries of the sponsor's transactions posted in
    [day_start, day_end), in posting order, with their transaction and line."""
    rows = session.execute(
        select(
            LedgerEntry.posted_at,
            LedgerEntry.transaction_id,
            LedgerEntry.line_no,
            LedgerEntry.amount_miles,
            LedgerEntry.account_code,
            Transaction.endpoint,
            Transaction.partner_transaction_id,
            IssuanceLine.offer_code,
            IssuanceLine.location_code,
        )
        .join(Transaction, Transaction.id == LedgerEntry.transaction_id)
        .join(
            IssuanceLine,
            (IssuanceLine.transaction_id == LedgerEntry.transaction_id)
            & (IssuanceLine.line_no == LedgerEntry.line_no),
        )
        .where(
            LedgerEntry.account_kind == AccountKind.COLLECTOR,
            Transaction.sponsor_code == sponsor_code,
            LedgerEntry.posted_at >= day_start,
            LedgerEntry.posted_at < day_end,
        )
        .order_by(LedgerEntry.posted_at, LedgerEntry.id)
    )
    # Joined to their line, so never an adjustment's entry (whose line columns are NULL).
    return [ReconciliationRow(*row) for row in rows]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- partner-log batches


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    sponsor_code: str
    source: str
    issue_missing: bool
    status: str
    error: str | None
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None


AcceptedMiles = tuple[str, int]  # a transaction's id and its miles


@dataclass(frozen=True, slots=True)
class UnnamedTransaction:
    id: str
    endpoint: str
    partner_transaction_id: str
    collector_number: str | None
    miles: int


def add_batch(
    session: Session,
    batch_id: str,
    sponsor_code: str,
    source: str,
    issue_missing: bool,
    created_at: datetime,
) -> None:
    """A new batch, processing."""
    session.add(
        Batch(
            id=batch_id,
            sponsor_code=sponsor_code,
            source=source,
            issue_missing=issue_missing,
            status=BatchStatus.PROCESSING,
            counts_json="{}",
            error=None,
            created_at=created_at,
            finished_at=None,
        )
    )


def batch(session: Session, batch_id: str) -> BatchRow | None:
    row = session.get(Batch, batch_id)
    return None if row is None else _batch_row(row)


def _batch_row(row: Batch) -> BatchRow:
    return BatchRow(
        id=row.id,
        sponsor_code=row.sponsor_code,
        source=row.source,
        issue_missing=row.issue_missing,
        status=row.status,
        error=row.error,
        counts=json.loads(row.counts_json or "{}"),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def recent_batches(session: Session, sponsor_code: str | None, limit: int) -> list[BatchRow]:
    """The latest `limit` batches (of the sponsor, when one is given), newest first."""
    stmt = select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)
    if sponsor_code is not None:
        stmt = stmt.where(Batch.sponsor_code == sponsor_code)
    return [_batch_row(row) for row in session.scalars(stmt)]


def batch_sponsor(session: Session, batch_id: str) -> str | None:
    return session.execute(
        select(Batch.sponsor_code).where(Batch.id == batch_id)
    ).scalar_one_or_none()


def finish_batch(
    session: Session,
    batch_id: str,
    *,
    status: BatchStatus,
    counts: Mapping[str, int],
    finished_at: datetime,
    error: str | None = None,
) -> None:
    """The batch's final status and counts (and its error, when one is given)."""
    values: dict[str, Any] = {"status": status}
    if error is not None:
        values["error"] = error
    values["counts_json"] = json.dumps(dict(counts))
    values["finished_at"] = finished_at
    session.execute(update(Batch).where(Batch.id == batch_id).values(**values))


class OutcomeRow(NamedTuple):
    """A `batch_records` row, its columns in the table's order (checked at import)."""

    batch_id: str
    seq: int
    line_no: int | None
    outcome: str  # vocabulary.BatchOutcome
    error_code: str | None
    detail: str | None
    endpoint: str | None
    partner_transaction_id: str | None
    collector_number: str | None
    log_miles: int | None
    program_miles: int | None
    transaction_id: str | None


_BATCH_RECORDS = cast(Table, BatchRecord.__table__)
if OutcomeRow._fields != tuple(_BATCH_RECORDS.columns.keys()):
    raise RuntimeError("OutcomeRow no longer has batch_records' columns in their order")


def add_batch_records(session: Session, rows: Sequence[OutcomeRow]) -> None:
    """Outcome rows, written in bulk (`bulk_insert`: COPY on PostgreSQL)."""
    bulk_insert(session, _BATCH_RECORDS, OutcomeRow._fields, rows)


def _accepted_with_miles(sponsor_code: str | BindParameter[str], *columns: Any) -> Select[Any]:
    """`columns` of the sponsor's accepted transactions, then their miles (lines not rejected);
    the caller narrows and groups by `columns`."""
    return (
        select(*columns, func.coalesce(func.sum(IssuanceLine.miles), 0))
        .outerjoin(
            IssuanceLine,
            and_(
                IssuanceLine.transaction_id == Transaction.id,
                IssuanceLine.status != LineStatus.REJECTED,
            ),
        )
        .where(
            Transaction.sponsor_code == sponsor_code,
            Transaction.status != TransactionStatus.REJECTED,
        )
    )


_KEY_AND_ID = (Transaction.endpoint, Transaction.partner_transaction_id, Transaction.id)
_ACCEPTED_AMONG = PerDialect(
    lambda dialect: (
        _accepted_with_miles(bindparam("sponsor_code"), *_KEY_AND_ID)
        .where(pairs_among(dialect, Transaction.endpoint, Transaction.partner_transaction_id))
        .group_by(*_KEY_AND_ID)
    )
)


def accepted_miles(
    session: Session, sponsor_code: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], AcceptedMiles]:
    """The sponsor's accepted transactions among `keys` (endpoint, partner transaction id), with
    their miles (lines not rejected). One statement built once (a log's import asks this of every
    thousand records): run on the session's connection, its rows fetched at once."""
    connection = session.connection()
    params = pairs_params(connection, keys)
    params["sponsor_code"] = sponsor_code
    rows = connection.execute(_ACCEPTED_AMONG.of(connection), params).all()
    wanted = set(keys)
    return {
        (e, p): (t, int(m))
        for e, p, t, m in rows
        if (e, p) in wanted  # `pairs_among` may name more
    }


def transactions_missing_in_log(
    session: Session,
    batch_id: str,
    sponsor_code: str,
    endpoints: Sequence[str],
    windows: Sequence[tuple[datetime, datetime]],
) -> list[UnnamedTransaction]:
    """The sponsor's accepted transactions of `endpoints` whose partner date and time falls in
    one of `windows` ([start, end)) and that no record of the batch named, with their miles
    (lines not rejected), by partner date and time."""
    seen = select(BatchRecord.transaction_id).where(
        BatchRecord.batch_id == batch_id, BatchRecord.transaction_id.is_not(None)
    )
    columns = (
        Transaction.id,
        Transaction.endpoint,
        Transaction.partner_transaction_id,
        Transaction.collector_number,
    )
    rows = session.execute(
        _accepted_with_miles(sponsor_code, *columns)
        .where(
            Transaction.endpoint.in_(endpoints),
            or_(
                *[
                    and_(Transaction.partner_datetime >= s, Transaction.partner_datetime < e)
                    for s, e in windows
                ]
            ),
            Transaction.id.not_in(seen),
        )
        .group_by(*columns)
        .order_by(Transaction.partner_datetime)
    )
    return [UnnamedTransaction(t, e, p, c, int(m)) for t, e, p, c, m in rows]


def batch_records(
    session: Session,
    batch_id: str,
    *,
    outcome: str | None = None,
    other_than: str | None = None,
    offset: int,
    limit: int,
) -> list[OutcomeRow]:
    """A page of the batch's records in order: those of `outcome`, or else those of any outcome
    but `other_than`."""
    stmt = select(*_BATCH_RECORDS.columns).where(BatchRecord.batch_id == batch_id)
    if outcome is not None:
        stmt = stmt.where(BatchRecord.outcome == outcome)
    elif other_than is not None:
        stmt = stmt.where(BatchRecord.outcome != other_than)
    rows = session.execute(stmt.order_by(BatchRecord.seq).offset(offset).limit(limit))
    return [OutcomeRow(*row) for row in rows]
