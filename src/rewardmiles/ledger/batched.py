"""Posting by group commit (PostgreSQL): `post_batched`, the other strategy of `ledger.post`.

A call whose every line posts at once (the common case at a checkout) is written by one
statement in autocommit, `POST_BATCH`: one round trip, commit included, instead of six. Its
caller has already checked every rule that depends on reference data (against the cache of the
version the call names) and on the request; the statement applies a call only if what the caller
could not check still holds — the key's lock is free and the key unused, the reference data is
still that version, the collector exists and is ACTIVE — and writes nothing for it otherwise. A
duplicate partner transaction id fails the statement on its unique index, writing nothing. The
caller then runs the general unit of work, which answers every case.

The statement writes the rows the unit of work writes for the same call: the transaction and its
lines as the caller built them, the entry pairs of `service.entry_rows` for its `Posting`s, the
balance moved by their sum, the idempotency key. It claims the key as `idempotency.claim` does,
from the same SQL definitions (`idempotency.repository`).

Group commit: the calls that arrive while a statement is running are written together by the
next one (`GroupCommit`), one commit — one WAL flush — for all of them. Each call is still
applied or not on its own conditions, its collector's row is locked before any insert (in
collector-number order, so two batches cannot deadlock), two calls of one batch for one collector
move its balance by their sum, and every call is answered only after the commit that made it
durable. A batch that writes nothing because of one call — a unique index, a deadlock with a unit
of work, a row lock held past the pool's lock timeout — is run again call by call, so only that
call goes to the unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from rewardmiles.db.engine import StatementPool, try_xact_lock_sql
from rewardmiles.db.models import Base, IdempotencyKey, IssuanceLine, LedgerEntry, Transaction
from rewardmiles.db.recordsets import insert_from_recordset, numbered_placeholders
from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency.service import StoredOutcome
from rewardmiles.ledger.service import Posting, entry_rows, invariant, present
from rewardmiles.vocabulary import CollectorStatus

_T, _L, _E, _K = (
    Base.metadata.tables[model.__tablename__]
    for model in (Transaction, IssuanceLine, LedgerEntry, IdempotencyKey)
)
_APPLIED = "SELECT i FROM applied"


# What the calls applied insert: every column of each table (but the entries' generated id, and
# their `adjustment_id`, which a partner's line never has: NULL by default, and the statement
# stays the one bench/pgbench_issue_one_statement.sql mirrors).
_INSERT_TRANSACTIONS = insert_from_recordset(_T, "t", _T.columns.keys(), "transactions", _APPLIED)
_INSERT_LINES = insert_from_recordset(_L, "l", _L.columns.keys(), "lines", _APPLIED)
_INSERT_ENTRIES = insert_from_recordset(
    _E,
    "e",
    [c.name for c in _E.columns if c.name not in ("id", "adjustment_id")],
    "entries",
    _APPLIED,
)
_INSERT_KEYS = insert_from_recordset(_K, "k", _K.columns.keys(), "keys", _APPLIED)
_TRY_LOCK = try_xact_lock_sql("postgresql", "c.lock")

# Built once, at import, from the tables' column names; every value is a bound parameter. The
# calls and their rows travel as JSON documents (one parameter each, every row tagged with its
# call's index `i`), read back with the columns' own types.
POST_BATCH = f"""
WITH call AS MATERIALIZED (
    SELECT * FROM json_to_recordset(%(calls)s::json) AS c(
        i integer, lock bigint, client_id text, key text, version bigint, collector text,
        delta bigint, now timestamptz)
), claim AS MATERIALIZED (
    SELECT c.i, c.lock IS NULL OR {_TRY_LOCK} AS locked FROM call AS c
), stored AS MATERIALIZED (
    SELECT c.i, {keys.STORED_OUTCOME}
      FROM call AS c
      JOIN {keys.KEY_OF.format(client_id="c.client_id", key="c.key")}
), ready AS MATERIALIZED (
    SELECT c.* FROM call AS c JOIN claim USING (i)
     WHERE claim.locked
       AND c.version = ({keys.REFERENCE_VERSION})
       AND c.i NOT IN (SELECT i FROM stored)
), locked AS MATERIALIZED (
    SELECT number FROM collectors
     WHERE number IN (SELECT collector FROM ready) AND status = '{CollectorStatus.ACTIVE}'
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
    {_INSERT_TRANSACTIONS}
), line AS (
    {_INSERT_LINES}
), entry AS (
    {_INSERT_ENTRIES}
), kept AS (
    {_INSERT_KEYS}
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

# The parameters of `POST_BATCH`, in the order `batch_params` gives them, and what is sent.
POST_BATCH_PARAMETERS = ("calls", "transactions", "lines", "entries", "keys")
POST_BATCH_SENT = numbered_placeholders(POST_BATCH, POST_BATCH_PARAMETERS)


@dataclass(frozen=True, slots=True)
class BatchedCall:
    """One call for `POST_BATCH`: its conditions, its postings and the rows written with them."""

    reference_version: int
    client_id: str
    key: str | None
    lock: int | None  # the key's advisory lock (`idempotency.lock_number`)
    collector_number: str
    postings: Sequence[Posting]
    now: datetime
    transaction: Mapping[str, object]
    lines: Sequence[Mapping[str, object]]
    key_row: Mapping[str, object] | None


def batch_params(calls: Sequence[BatchedCall]) -> list[str]:
    """The parameters of `POST_BATCH` for these calls, in this order: one JSON document each, in
    `POST_BATCH_PARAMETERS` order. The entry pairs and balance change of each call are
    `entry_rows`'s, as `post` writes them."""
    call_rows: list[dict[str, object]] = []
    transactions: list[dict[str, object]] = []
    lines: list[dict[str, object]] = []
    entries: list[dict[str, object]] = []
    key_rows: list[dict[str, object]] = []
    for i, call in enumerate(calls):
        call_entries, delta = entry_rows(call.collector_number, call.postings, posted_at=call.now)
        call_rows.append(
            {
                "i": i,
                "lock": call.lock,
                "client_id": call.client_id,
                "key": call.key,
                "version": call.reference_version,
                "collector": call.collector_number,
                "delta": delta,
                "now": call.now,
            }
        )
        transactions.append({"i": i, **call.transaction})
        lines.extend({"i": i, **line} for line in call.lines)
        entries.extend({"i": i, **entry} for entry in call_entries)
        if call.key_row is not None:
            key_rows.append({"i": i, **call.key_row})
    return [
        orjson.dumps(value).decode()
        for value in (call_rows, transactions, lines, entries, key_rows)
    ]


@dataclass(frozen=True, slots=True)
class BatchedOutcome:
    written: bool = False  # the call was written and committed; read for its truth only
    stored: StoredOutcome | None = None  # else: the key's stored outcome, if its lock was free
    # and its transaction as it stands now: the stored response and the lines' (direction,
    # status, error code) in line order
    current: tuple[str, list[tuple[str, str, str | None]]] | None = None


# The two outcomes that carry nothing else, shared (the dataclass is frozen): a call written,
# and one not written with no stored key to replay — the caller then runs the unit of work.
WRITTEN = BatchedOutcome(written=True)
NOT_WRITTEN = BatchedOutcome()


def _outcome(row: Sequence[Any]) -> BatchedOutcome:
    _i, written, fingerprint, transaction_id, status, response_json, current, states = row
    if written:
        return WRITTEN
    if fingerprint is None:  # no key stored, or its lock held: nothing to replay
        return NOT_WRITTEN
    stored = StoredOutcome(fingerprint, transaction_id, status, orjson.loads(response_json))
    if current is None:
        return BatchedOutcome(stored=stored)
    lines = [(direction, state, error) for direction, state, error in states or ()]
    return BatchedOutcome(stored=stored, current=(current, lines))


async def apply_batch(
    pool: StatementPool, calls: Sequence[BatchedCall]
) -> list[BatchedOutcome] | None:
    """Run `POST_BATCH` for `calls` in one statement: what became of each, in order; None if
    the statement wrote nothing at all (`StatementPool.run`: a unique index — a duplicate
    transaction id, or a key stored since it was read —, a deadlock's victim — a unit of work of
    another call with the same transaction id —, a row lock held past `lock_timeout`)."""
    rows = await pool.run(POST_BATCH_SENT, batch_params(calls))
    if rows is None:
        return None
    invariant(len(rows) == len(calls))  # one row per call, in order
    return [_outcome(row) for row in rows]


# A caller whose request was cancelled while its batch was in flight has no one to answer: its
# future is done already, and setting it raises InvalidStateError.
_UNLESS_CANCELLED = contextlib.suppress(asyncio.InvalidStateError)


class GroupCommit:
    """Group commit of batched postings, per process. `post_batched` joins the batch being
    gathered; a batch goes out as soon as fewer than `in_flight_max` statements of this writer
    are running, so a lone call waits for nothing, and calls arriving while they run share the
    next one. Each caller gets its own call's outcome once its batch has committed, or the
    batch's database error. A batch that wrote nothing because of one of its calls (see
    `apply_batch`) is run again call by call, so that call alone is left to the unit of work; a
    batch that waits on a row lock longer than the pool's `lock_timeout` is one of those, so a
    collector held elsewhere delays the calls batched with it by that much at most (and by as
    much again for each of them, re-run one by one).

    One statement in flight by default: on a busy machine, fewer and larger batches leave more
    CPU for requests (measured 1,030–1,190 calls/s against 940–990 with two, docs/benchmarks.md).
    A statement that has run longer than `stalled_after` — a batch commits in milliseconds; one
    waiting on a row lock takes up to the lock timeout — does not hold back the calls that
    arrive meanwhile: when every statement in flight has stalled, a new call starts another one,
    up to `in_flight_cap` at once. `clock` measures that: monotonic seconds (the tests drive
    it). `on_batch` is told the number of calls of each statement sent (the metrics' batch-size
    histogram)."""

    def __init__(
        self,
        pool: StatementPool,
        *,
        batch_max: int = 32,
        in_flight_max: int = 1,
        in_flight_cap: int = 4,
        stalled_after: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        on_batch: Callable[[int], object] = lambda size: None,
    ) -> None:
        self.pool = pool
        self._on_batch = on_batch
        self.batch_max = batch_max
        self.in_flight_max = in_flight_max
        self.in_flight_cap = max(in_flight_cap, in_flight_max)
        self.stalled_after = stalled_after
        self._clock = clock
        self._waiting: list[tuple[BatchedCall, asyncio.Future[BatchedOutcome]]] = []
        # The drains running, each sending batches in turn, and when each started its current one.
        self._drains: dict[asyncio.Task[None], float] = {}

    async def post_batched(self, call: BatchedCall) -> BatchedOutcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchedOutcome] = loop.create_future()
        self._waiting.append((call, future))
        now = self._clock()
        if len(self._drains) < self.in_flight_max or (
            len(self._drains) < self.in_flight_cap
            and all(now - since > self.stalled_after for since in self._drains.values())
        ):
            self._drains[loop.create_task(self._drain())] = now
        return await future

    async def _drain(self) -> None:
        task = present(asyncio.current_task())  # `post_batched` starts it as a task
        try:
            while self._waiting:
                batch = self._waiting[: self.batch_max]
                del self._waiting[: self.batch_max]
                self._drains[task] = self._clock()
                await self._run(batch)
        finally:
            # Left the set in the same step that found nothing waiting: a call that arrives
            # later starts a drain of its own (a done-callback would run too late for that).
            # `post_batched` put the task there before it could start: it is there to remove.
            del self._drains[task]

    async def _run(self, batch: list[tuple[BatchedCall, asyncio.Future[BatchedOutcome]]]) -> None:
        try:
            self._on_batch(len(batch))
            outcomes = await apply_batch(self.pool, [call for call, _ in batch])
            if outcomes is None and len(batch) > 1:  # find the call the index refused
                singles = [await self._single(call) for call, _ in batch]
                outcomes = [o[0] if o else NOT_WRITTEN for o in singles]
        except Exception as exc:  # every caller of the batch gets the database's error
            for _, future in batch:
                with _UNLESS_CANCELLED:
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes or [NOT_WRITTEN] * len(batch), strict=True):
            with _UNLESS_CANCELLED:
                future.set_result(outcome)

    async def _single(self, call: BatchedCall) -> list[BatchedOutcome] | None:
        self._on_batch(1)
        return await apply_batch(self.pool, [call])
