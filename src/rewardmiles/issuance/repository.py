"""Queries of the issuance use cases. No rules here: the service decides.

Hot-path statements are built once, at import, with bound parameters, and run on the session's
Core connection: per request, SQLAlchemy only looks up the compiled form in its cache.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from weakref import WeakKeyDictionary

import orjson
import psycopg
from sqlalchemy import (
    Column,
    Engine,
    String,
    Table,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.selectable import CompoundSelect

from rewardmiles.db.engine import StatementPool, write
from rewardmiles.db.models import (
    Base,
    Collector,
    IdempotencyKey,
    IssuanceLine,
    LedgerEntry,
    Location,
    Offer,
    Sponsor,
    Transaction,
)
from rewardmiles.idempotency.service import StoredOutcome


@dataclass(frozen=True, slots=True)
class SponsorRow:
    code: str
    active: bool
    review_threshold_miles: int | None


@dataclass(frozen=True, slots=True)
class OfferRow:
    code: str
    active: bool
    valid_from: date | None
    valid_to: date | None


@dataclass(frozen=True, slots=True)
class AcceptedTransaction:
    id: str
    endpoint: str
    sponsor_code: str
    collector_number: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class OriginalTotals:
    issued_miles: dict[str, int]  # per offer code, lines not rejected
    pending_offers: frozenset[str]  # offer codes with a line still pending
    reversed_miles: dict[str, int]  # per offer code, by earlier reversals not rejected


_GET_SPONSOR = select(Sponsor.code, Sponsor.active, Sponsor.review_threshold_miles).where(
    Sponsor.code == bindparam("code")
)
_GET_OFFERS = select(Offer.code, Offer.active, Offer.valid_from, Offer.valid_to).where(
    Offer.sponsor_code == bindparam("sponsor"), Offer.code.in_(bindparam("codes", expanding=True))
)
_GET_LOCATIONS = select(Location.code).where(
    Location.sponsor_code == bindparam("sponsor"),
    Location.code.in_(bindparam("codes", expanding=True)),
)
_ANY_LOCATION = select(Location.code).where(Location.sponsor_code == bindparam("sponsor")).limit(1)
_ACCEPTED_COLUMNS = (
    Transaction.id,
    Transaction.endpoint,
    Transaction.sponsor_code,
    Transaction.collector_number,
    Transaction.fingerprint,
)
_GET_ACCEPTED = select(*_ACCEPTED_COLUMNS).where(
    Transaction.id == bindparam("id"), Transaction.status != "rejected"
)
_FIND_ACCEPTED = select(*_ACCEPTED_COLUMNS).where(
    Transaction.sponsor_code == bindparam("sponsor"),
    Transaction.endpoint.in_(bindparam("endpoints", expanding=True)),
    Transaction.partner_transaction_id == bindparam("partner_id"),
    Transaction.status != "rejected",
)
_FIND_ACCEPTED_FOR_UPDATE = _FIND_ACCEPTED.with_for_update()
# An original's lines (offer, status, miles) and what its reversals took so far (offer, NULL,
# miles summed), in one round trip: both read after the original's row lock was taken.
_reversal = aliased(Transaction)
_ORIGINAL_TOTALS: CompoundSelect[str, str, str | None, int] = union_all(
    select(
        literal("issued").label("kind"),
        IssuanceLine.offer_code,
        IssuanceLine.status,
        IssuanceLine.miles,
    ).where(
        IssuanceLine.transaction_id == bindparam("original"),
        IssuanceLine.direction == "credit",
        IssuanceLine.status != "rejected",
    ),
    select(
        literal("reversed").label("kind"),
        IssuanceLine.offer_code,
        null().label("status"),
        func.sum(IssuanceLine.miles),
    )
    .join(_reversal, _reversal.id == IssuanceLine.transaction_id)
    .where(
        _reversal.original_transaction_id == bindparam("original"),
        IssuanceLine.status != "rejected",
    )
    .group_by(IssuanceLine.offer_code),
)
_INSERT_TRANSACTION = insert(Transaction)
_INSERT_LINES = insert(IssuanceLine)
_RESPONSE_OF = select(Transaction.response_json).where(Transaction.id == bindparam("id"))
_LINE_STATES = (
    select(IssuanceLine.direction, IssuanceLine.status, IssuanceLine.error_code)
    .where(IssuanceLine.transaction_id == bindparam("id"))
    .order_by(IssuanceLine.line_no)
)


# --------------------------------------------------------------------------- reference data
#
# Sponsors, offers and locations change rarely and are read by every request. Each process keeps
# them per database in a `ReferenceCache` tagged with the `reference_version` counter (bumped by
# triggers on every change to those tables, migration 0005). The issuance path reads the counter in
# its first statement anyway (`idempotency.claim`) and calls `use_reference_cache`; from then on
# the functions below answer from the cache for that version, loading what is missing. Rows are
# loaded after the counter is read, so they are never older than the version they are filed under.

REFERENCE = "rewardmiles.reference"  # session.info key: the cache entries of this unit of work
CACHED_CODES_MAX = 10_000  # per sponsor: unknown codes sent by a partner do not grow it beyond


@dataclass(slots=True)
class SponsorEntry:
    sponsor: SponsorRow | None
    offers: dict[str, OfferRow | None] = field(default_factory=dict)
    locations: dict[str, bool] = field(default_factory=dict)
    registers_any: bool | None = None


class ReferenceCache:
    def __init__(self) -> None:
        # (version, entries) in one tuple, so a reader never pairs one version's number with
        # another version's entries.
        self._current: tuple[int, dict[str, SponsorEntry]] = (-1, {})
        self._lock = threading.Lock()

    def entries(self, version: int) -> dict[str, SponsorEntry]:
        """The entries of `version`; a fresh uncached dict for a snapshot older than the newest
        version seen (so old and new rows never mix)."""
        current_version, current = self._current
        if version == current_version:
            return current
        with self._lock:
            if version > self._current[0]:
                self._current = (version, {})
            current_version, current = self._current
            if version == current_version:
                return current
        return {}

    def newest(self) -> tuple[int, dict[str, SponsorEntry]]:
        """The newest version seen and its entries (-1 and nothing before the first load)."""
        return self._current


_CACHES: WeakKeyDictionary[Engine, ReferenceCache] = WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def use_reference_cache(session: Session, version: int) -> None:
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    cache = _CACHES.get(engine)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(engine, ReferenceCache())
    session.info[REFERENCE] = cache.entries(version)


def newest_reference(engine: Engine) -> tuple[int, dict[str, SponsorEntry]]:
    """The newest reference-data version this process has seen on `engine`, with what it has
    cached of it: for a caller that checks the version in its own statement."""
    cache = _CACHES.get(engine)
    return (-1, {}) if cache is None else cache.newest()


def _sponsor_entry(session: Session, code: str) -> SponsorEntry | None:
    entries: dict[str, SponsorEntry] | None = session.info.get(REFERENCE)
    if entries is None:
        return None
    entry = entries.get(code)
    if entry is None:
        entry = entries[code] = SponsorEntry(_load_sponsor(session, code))
    return entry


def _load_sponsor(session: Session, code: str) -> SponsorRow | None:
    row = session.connection().execute(_GET_SPONSOR, {"code": code}).one_or_none()
    return SponsorRow(row.code, row.active, row.review_threshold_miles) if row else None


def _load_offers(session: Session, sponsor_code: str, codes: Iterable[str]) -> dict[str, OfferRow]:
    rows = session.connection().execute(
        _GET_OFFERS, {"sponsor": sponsor_code, "codes": sorted(set(codes))}
    )
    return {r.code: OfferRow(r.code, r.active, r.valid_from, r.valid_to) for r in rows}


def get_sponsor(session: Session, code: str) -> SponsorRow | None:
    entry = _sponsor_entry(session, code)
    return _load_sponsor(session, code) if entry is None else entry.sponsor


def get_offers(session: Session, sponsor_code: str, codes: Iterable[str]) -> dict[str, OfferRow]:
    entry = _sponsor_entry(session, sponsor_code)
    if entry is None:
        return _load_offers(session, sponsor_code, codes)
    wanted = set(codes)
    missing = [code for code in wanted if code not in entry.offers]
    if missing:
        loaded = _load_offers(session, sponsor_code, missing)
        if len(entry.offers) + len(missing) <= CACHED_CODES_MAX:
            entry.offers.update({code: loaded.get(code) for code in missing})
        else:
            return {
                code: row for code in wanted if (row := entry.offers.get(code) or loaded.get(code))
            }
    return {code: row for code in wanted if (row := entry.offers[code]) is not None}


def _load_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    conn = session.connection()
    known = set(
        conn.execute(
            _GET_LOCATIONS, {"sponsor": sponsor_code, "codes": sorted(set(codes))}
        ).scalars()
    )
    if known:
        return True, known
    return conn.execute(_ANY_LOCATION, {"sponsor": sponsor_code}).first() is not None, known


def registered_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    """(does the sponsor register any location, which of `codes` are registered)."""
    entry = _sponsor_entry(session, sponsor_code)
    if entry is None:
        return _load_locations(session, sponsor_code, codes)
    wanted = set(codes)
    missing = [code for code in wanted if code not in entry.locations]
    if missing:
        registers_any, known = _load_locations(session, sponsor_code, missing)
        entry.registers_any = registers_any or bool(entry.registers_any)
        if len(entry.locations) + len(missing) > CACHED_CODES_MAX:
            return entry.registers_any, {c for c in wanted if c in known or entry.locations.get(c)}
        entry.locations.update({code: code in known for code in missing})
    known = {code for code in wanted if entry.locations[code]}
    if entry.registers_any is None:
        entry.registers_any = bool(known) or (
            session.connection().execute(_ANY_LOCATION, {"sponsor": sponsor_code}).first()
            is not None
        )
    return entry.registers_any, known


def find_accepted(
    session: Session,
    sponsor_code: str,
    endpoints: Sequence[str],
    partner_transaction_id: str,
    *,
    lock: bool = False,
) -> AcceptedTransaction | None:
    """The accepted transaction with this partner id, preferring `endpoints` in the order given."""
    rows = (
        session.connection()
        .execute(
            _FIND_ACCEPTED_FOR_UPDATE if lock else _FIND_ACCEPTED,
            {
                "sponsor": sponsor_code,
                "endpoints": list(endpoints),
                "partner_id": partner_transaction_id,
            },
        )
        .all()
    )
    if not rows:
        return None
    best = min(rows, key=lambda r: endpoints.index(r.endpoint))
    return AcceptedTransaction(*best)


def find_accepted_all(
    session: Session, sponsor_code: str, endpoints: Sequence[str], partner_transaction_id: str
) -> list[AcceptedTransaction]:
    rows = session.connection().execute(
        _FIND_ACCEPTED,
        {
            "sponsor": sponsor_code,
            "endpoints": list(endpoints),
            "partner_id": partner_transaction_id,
        },
    )
    return sorted(
        (AcceptedTransaction(*row) for row in rows), key=lambda t: endpoints.index(t.endpoint)
    )


def get_accepted_by_id(session: Session, transaction_id: str) -> AcceptedTransaction | None:
    row = session.connection().execute(_GET_ACCEPTED, {"id": transaction_id}).one_or_none()
    return AcceptedTransaction(*row) if row else None


def original_totals(session: Session, original_id: str) -> OriginalTotals:
    issued: dict[str, int] = defaultdict(int)
    pending: set[str] = set()
    reversed_miles: dict[str, int] = {}
    rows = session.connection().execute(_ORIGINAL_TOTALS, {"original": original_id})
    for kind, offer_code, status, miles in rows:
        if kind == "reversed":
            reversed_miles[offer_code] = int(miles)
            continue
        issued[offer_code] += miles
        if status == "pending":
            pending.add(offer_code)
    return OriginalTotals(dict(issued), frozenset(pending), reversed_miles)


def insert_transaction(session: Session, values: dict[str, object]) -> None:
    write(session, _INSERT_TRANSACTION, values)


def insert_lines(session: Session, rows: list[dict[str, object]]) -> None:
    if rows:
        write(session, _INSERT_LINES, rows)


@dataclass(frozen=True, slots=True)
class LineState:
    direction: str
    status: str
    error_code: str | None


def get_transaction_state(session: Session, transaction_id: str) -> tuple[str, list[LineState]]:
    """(stored response JSON, the lines' current states in line order)."""
    conn = session.connection()
    response_json = conn.execute(_RESPONSE_OF, {"id": transaction_id}).scalar_one()
    lines = conn.execute(_LINE_STATES, {"id": transaction_id}).all()
    return response_json, [LineState(d, s, e) for d, s, e in lines]


_ANY_LINE_PENDING = (
    select(IssuanceLine.line_no)
    .where(IssuanceLine.transaction_id == bindparam("id"), IssuanceLine.status == "pending")
    .limit(1)
)
_SET_TRANSACTION_STATUS = (
    update(Transaction)
    .where(Transaction.id == bindparam("b_id"), Transaction.status.in_(("pending", "posted")))
    .values(status=bindparam("b_status"))
)


def refresh_transaction_status(session: Session, transaction_id: str) -> str:
    """An accepted transaction is `pending` while any line is, else `posted` (settled)."""
    conn = session.connection()
    still_pending = conn.execute(_ANY_LINE_PENDING, {"id": transaction_id}).first() is not None
    status = "pending" if still_pending else "posted"
    conn.execute(_SET_TRANSACTION_STATUS, {"b_id": transaction_id, "b_status": status})
    return status


_CALCULATION_OF = select(Transaction.calculation_json).where(Transaction.id == bindparam("id"))
_REVERSAL_CALCULATIONS = select(Transaction.calculation_json).where(
    Transaction.original_transaction_id == bindparam("original"),
    Transaction.status != "rejected",
    Transaction.calculation_json.is_not(None),
)


def get_calculation(session: Session, transaction_id: str) -> str | None:
    return (
        session.connection().execute(_CALCULATION_OF, {"id": transaction_id}).scalar_one_or_none()
    )


def calculations_of_reversals(session: Session, original_id: str) -> list[str]:
    rows = session.connection().execute(_REVERSAL_CALCULATIONS, {"original": original_id}).scalars()
    return [row for row in rows if row is not None]


def collector_status(session: Session, number: str) -> str | None:
    """Read without a lock: for the calls that move no miles (RECORD, CALCULATE)."""
    return (
        session.connection()
        .execute(select(Collector.status).where(Collector.number == number))
        .scalar_one_or_none()
    )


# --------------------------------------------------------------------------- one-statement issue
#
# PostgreSQL only. An issue whose every line posts (the common case at a checkout) is written by
# one statement in autocommit: one round trip, commit included, instead of six. The service has
# already checked every rule that depends on reference data (against the cache of the version
# the statement names) and on the request; the statement applies a call only if what it could
# not check still holds — the key's lock is free and the key unused, the reference data is still
# that version, the collector exists and is ACTIVE — and writes nothing for it otherwise. A
# duplicate partner transaction id fails the statement on its unique index, writing nothing.
# The caller then runs the general unit of work, which answers every case.
#
# Group commit: the calls that arrive while a statement is running are written together by the
# next one (`PostedIssueWriter`), one commit — one WAL flush — for all of them. Each call is
# still applied or not on its own conditions, its collector's row is locked before any insert
# (in collector-number order, so two batches cannot deadlock), two calls of one batch for one
# collector move its balance by their sum, and every call is answered only after the commit
# that made it durable. A batch that writes nothing because of one call — a unique index, a
# deadlock with a unit of work, a row lock held past the pool's lock timeout — is run again call
# by call, so only that call goes to the unit of work.


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _pg_type(column: Column[Any]) -> str:
    """The column's type for a parameter's cast; strings as `text`, so a value longer than the
    column fails on the column's own check (a cast to `varchar(n)` would cut it silently)."""
    if isinstance(column.type, String):
        return "text"
    return str(column.type.compile(dialect=_POSTGRESQL))


def _record_of(table: Table, alias: str, columns: Sequence[str]) -> str:
    """`AS alias(i integer, column type, …)`: the column definition list that reads a JSON
    document's fields as `table`'s columns (and `i`, the call the row belongs to)."""
    return f"AS {alias}(i integer, {', '.join(f'{c} {_pg_type(table.c[c])}' for c in columns)})"


def _fields(alias: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


_T, _L, _E, _K = (
    Base.metadata.tables[model.__tablename__]
    for model in (Transaction, IssuanceLine, LedgerEntry, IdempotencyKey)
)
_TRANSACTION_COLUMNS = tuple(c.name for c in _T.columns)
_LINE_COLUMNS = tuple(c.name for c in _L.columns)
_ENTRY_COLUMNS = tuple(c.name for c in _E.columns if c.name != "id")
_KEY_COLUMNS = tuple(c.name for c in _K.columns)


def _insert(table: Table, alias: str, columns: Sequence[str], param: str) -> str:
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)})\n"  # noqa: S608 - names, not values
        f"    SELECT {_fields(alias, columns)}\n"
        f"      FROM json_to_recordset(%({param})s::json) {_record_of(table, alias, columns)}\n"
        f"     WHERE {alias}.i IN (SELECT i FROM applied)"
    )


# Built once, at import, from the tables' column names; every value is a bound parameter. The
# calls and their rows travel as JSON documents (one parameter each, every row tagged with its
# call's index `i`), read back with the columns' own types.
APPLY_POSTED_ISSUE = f"""
WITH call AS MATERIALIZED (
    SELECT * FROM json_to_recordset(%(calls)s::json) AS c(
        i integer, lock bigint, client_id text, key text, version bigint, collector text,
        delta bigint, now timestamptz)
), claim AS MATERIALIZED (
    SELECT c.i, c.lock IS NULL OR pg_try_advisory_xact_lock(c.lock) AS locked FROM call AS c
), stored AS MATERIALIZED (
    SELECT c.i, k.fingerprint, k.transaction_id, k.response_status, k.response_json
      FROM call AS c
      JOIN idempotency_keys AS k ON k.client_id = c.client_id AND k.key = c.key
), ready AS MATERIALIZED (
    SELECT c.* FROM call AS c JOIN claim USING (i)
     WHERE claim.locked
       AND c.version = (SELECT version FROM reference_version WHERE id = 1)
       AND c.i NOT IN (SELECT i FROM stored)
), locked AS MATERIALIZED (
    SELECT number FROM collectors
     WHERE number IN (SELECT collector FROM ready) AND status = 'ACTIVE'
     ORDER BY number
       FOR UPDATE
), moved AS (
    UPDATE collectors AS c
       SET balance_miles = c.balance_miles + m.delta, updated_at = m.now
      FROM (SELECT collector, sum(delta) AS delta, max(now) AS now
              FROM ready GROUP BY collector) AS m
     WHERE c.number = m.collector AND c.number IN (SELECT number FROM locked)
    RETURNING c.number
), applied AS MATERIALIZED (
    SELECT ready.i FROM ready JOIN moved ON moved.number = ready.collector
), txn AS (
    {_insert(_T, "t", _TRANSACTION_COLUMNS, "transactions")}
), line AS (
    {_insert(_L, "l", _LINE_COLUMNS, "lines")}
), entry AS (
    {_insert(_E, "e", _ENTRY_COLUMNS, "entries")}
), kept AS (
    {_insert(_K, "k", _KEY_COLUMNS, "keys")}
)
SELECT c.i, (c.i IN (SELECT i FROM applied))::integer AS written,
       s.fingerprint, s.transaction_id, s.response_status, s.response_json,
       t.response_json AS transaction_response,
       (SELECT json_agg(json_build_array(l.direction, l.status, l.error_code)
                        ORDER BY l.line_no)
          FROM issuance_lines AS l WHERE l.transaction_id = s.transaction_id) AS line_states
  FROM call AS c
  JOIN claim USING (i)
  LEFT JOIN stored AS s ON s.i = c.i AND claim.locked
  LEFT JOIN transactions AS t ON t.id = s.transaction_id
 ORDER BY c.i
"""  # noqa: S608

# The parameters of `APPLY_POSTED_ISSUE`, in the order `posted_issue_params` gives them.
APPLY_POSTED_ISSUE_PARAMETERS = ("calls", "transactions", "lines", "entries", "keys")
# What is sent: the same text with PostgreSQL's own placeholders ($1 for `calls`, …), for the
# statement pool's raw cursors. psycopg converts `%(name)s` placeholders again on every call for a
# statement this long (it keeps the conversion only for short ones).
APPLY_POSTED_ISSUE_SENT = re.sub(
    r"%\((\w+)\)s",
    lambda m: f"${APPLY_POSTED_ISSUE_PARAMETERS.index(m[1]) + 1}",
    APPLY_POSTED_ISSUE,
).encode()


@dataclass(frozen=True, slots=True)
class PostedIssue:
    """One call for `APPLY_POSTED_ISSUE`: its conditions and its rows."""

    reference_version: int
    client_id: str
    key: str | None
    lock: int | None
    collector_number: str
    delta: int
    now: datetime
    transaction: Mapping[str, object]
    lines: Sequence[Mapping[str, object]]
    entries: Sequence[Mapping[str, object]]
    key_row: Mapping[str, object] | None


def posted_issue_params(issues: Sequence[PostedIssue]) -> list[str]:
    """The parameters of `APPLY_POSTED_ISSUE` for these calls, in this order: one JSON document
    each, in `APPLY_POSTED_ISSUE_PARAMETERS` order."""
    calls: list[dict[str, object]] = []
    transactions: list[dict[str, object]] = []
    lines: list[dict[str, object]] = []
    entries: list[dict[str, object]] = []
    keys: list[dict[str, object]] = []
    for i, issue in enumerate(issues):
        calls.append(
            {
                "i": i,
                "lock": issue.lock,
                "client_id": issue.client_id,
                "key": issue.key,
                "version": issue.reference_version,
                "collector": issue.collector_number,
                "delta": issue.delta,
                "now": issue.now,
            }
        )
        transactions.append({"i": i, **issue.transaction})
        lines.extend({"i": i, **line} for line in issue.lines)
        entries.extend({"i": i, **entry} for entry in issue.entries)
        if issue.key_row is not None:
            keys.append({"i": i, **issue.key_row})
    return [orjson.dumps(value).decode() for value in (calls, transactions, lines, entries, keys)]


@dataclass(frozen=True, slots=True)
class AppliedIssue:
    written: bool  # the issue was written and committed
    stored: StoredOutcome | None = None  # else: the key's stored outcome, if its lock was free
    current: tuple[str, list[LineState]] | None = None  # and its transaction as it stands now


def _applied(row: Sequence[Any]) -> AppliedIssue:
    _i, written, fingerprint, transaction_id, status, response_json, current, states = row
    if written or fingerprint is None:
        return AppliedIssue(bool(written))
    stored = StoredOutcome(fingerprint, transaction_id, status, orjson.loads(response_json))
    if current is None:
        return AppliedIssue(False, stored)
    lines = [LineState(direction, state, error) for direction, state, error in states or ()]
    return AppliedIssue(False, stored, (current, lines))


async def apply_posted_issues(
    pool: StatementPool, issues: Sequence[PostedIssue]
) -> list[AppliedIssue] | None:
    """Run `APPLY_POSTED_ISSUE` for `issues` in one statement: what became of each, in order;
    None if the statement failed on a unique index (a duplicate transaction id, or a key stored
    since it was read), was chosen as a deadlock's victim (a unit of work of another call with
    the same transaction id) or waited for a row lock longer than `lock_timeout`, and so wrote
    nothing at all."""
    params = posted_issue_params(issues)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute(APPLY_POSTED_ISSUE_SENT, params)
            rows = await cursor.fetchall()
    except (
        psycopg.errors.UniqueViolation,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.LockNotAvailable,
    ):
        return None
    except psycopg.Error as exc:
        raise DBAPIError.instance(
            APPLY_POSTED_ISSUE_SENT.decode(), params, exc, psycopg.Error
        ) from exc
    assert len(rows) == len(issues)  # the statement answers one row per call, in order
    return [_applied(row) for row in rows]


class PostedIssueWriter:
    """Group commit of one-statement issues, per process. `write` joins the batch being
    gathered; a batch goes out as soon as fewer than `in_flight_max` statements of this writer
    are running, so a lone call waits for nothing, and calls arriving while they run share the
    next one. Each caller gets its own call's outcome once its batch has committed, or the
    batch's database error. A batch that wrote nothing because of one of its calls (see
    `apply_posted_issues`) is run again call by call, so that call alone is left to the unit of
    work; a batch that waits on a row lock longer than the pool's `lock_timeout` is one of those,
    so a collector held elsewhere delays the calls batched with it by that much at most (and by
    as much again for each of them, re-run one by one).

    One statement in flight by default: on a busy machine, fewer and larger batches leave more
    CPU for requests (measured 1,030–1,190 calls/s against 940–990 with two, docs/benchmarks.md).
    A statement that has run longer than `stalled_after` — a batch commits in milliseconds; one
    waiting on a row lock takes up to the lock timeout — does not hold back the calls that
    arrive meanwhile: when every statement in flight has stalled, a new call starts another one,
    up to `in_flight_cap` at once."""

    def __init__(
        self,
        pool: StatementPool,
        *,
        batch_max: int = 32,
        in_flight_max: int = 1,
        in_flight_cap: int = 4,
        stalled_after: float = 0.05,
    ) -> None:
        self.pool = pool
        self.batch_max = batch_max
        self.in_flight_max = in_flight_max
        self.in_flight_cap = max(in_flight_cap, in_flight_max)
        self.stalled_after = stalled_after
        self._waiting: list[tuple[PostedIssue, asyncio.Future[AppliedIssue]]] = []
        # The drains running, each sending batches in turn, and when each started its current one.
        self._drains: dict[asyncio.Task[None], float] = {}

    async def write(self, issue: PostedIssue) -> AppliedIssue:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppliedIssue] = loop.create_future()
        self._waiting.append((issue, future))
        now = loop.time()
        if len(self._drains) < self.in_flight_max or (
            len(self._drains) < self.in_flight_cap
            and all(now - since > self.stalled_after for since in self._drains.values())
        ):
            self._drains[loop.create_task(self._drain())] = now
        return await future

    async def _drain(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch = self._waiting[: self.batch_max]
                del self._waiting[: self.batch_max]
                self._drains[task] = loop.time()
                await self._run(batch)
        finally:
            # Left the set in the same step that found nothing waiting: a call that arrives
            # later starts a drain of its own (a done-callback would run too late for that).
            self._drains.pop(task, None)

    async def _run(self, batch: list[tuple[PostedIssue, asyncio.Future[AppliedIssue]]]) -> None:
        try:
            outcomes = await apply_posted_issues(self.pool, [issue for issue, _ in batch])
            if outcomes is None and len(batch) > 1:  # find the call the index refused
                singles = [await apply_posted_issues(self.pool, [issue]) for issue, _ in batch]
                outcomes = [o[0] if o else AppliedIssue(False) for o in singles]
        except Exception as exc:  # every caller of the batch gets the database's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(
            batch, outcomes or [AppliedIssue(False)] * len(batch), strict=True
        ):
            if not future.done():
                future.set_result(outcome)
