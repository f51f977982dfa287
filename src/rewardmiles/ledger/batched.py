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

Reversals: a call that takes back miles of an original (`BatchedCall.original`) joins the same
batches. A batch with one in it is one transaction sent at once
(`StatementPool.run_in_transaction`): its collectors and the originals it names are locked first, then `REVERSE_BATCH` — `POST_BATCH`
with the original's bounds checked — runs with a snapshot taken after those locks, so it counts
every reversal of those originals committed by any path.
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
from rewardmiles.db.recordsets import insert_from_recordset, numbered_placeholders, recordset
from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency.service import StoredOutcome
from rewardmiles.ledger.service import Posting, entry_rows, invariant, present
from rewardmiles.vocabulary import CollectorStatus, Direction, LineStatus

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
_ACTIVE = f"'{CollectorStatus.ACTIVE}'"
_NOT_REJECTED = f"<> '{LineStatus.REJECTED}'"

# The head of both statements: the calls, each key's lock and stored outcome, and the calls that
# may be applied as far as their key and the reference data's version go (`candidate`).
_CALLS_HEAD = """
WITH call AS MATERIALIZED (
    SELECT * FROM json_to_recordset(%(calls)s::json) AS c(
        i integer, lock bigint, client_id text, key text, version bigint, collector text,
        delta bigint, now timestamptz{reversal_columns})
), claim AS MATERIALIZED (
    SELECT c.i, c.lock IS NULL OR {try_lock} AS locked FROM call AS c
), stored AS MATERIALIZED (
    SELECT c.i, {stored_outcome}
      FROM call AS c
      JOIN {key_of}
), {candidate} AS MATERIALIZED (
    SELECT c.* FROM call AS c JOIN claim USING (i)
     WHERE claim.locked
       AND c.version = ({reference_version})
       AND c.i NOT IN (SELECT i FROM stored)
)"""

# The tail of both statements: the balances moved by the calls of `ready` whose collector is
# locked and ACTIVE, their rows inserted, and what became of each call.
_CALLS_TAIL = f""", moved AS (
    UPDATE collectors AS c
       SET balance_miles = c.balance_miles + m.delta, updated_at = m.now
      FROM (SELECT collector, sum(delta) AS delta, max(now) AS now
              FROM {{ready}} GROUP BY collector) AS m
     WHERE c.number = m.collector{{moved_where}}
    RETURNING c.number
), applied AS MATERIALIZED (
    SELECT {{ready}}.i FROM {{ready}} JOIN moved ON moved.number = {{ready}}.collector
), txn AS (
    {{insert_transactions}}
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


# What the head takes the same in both statements. The statements are put together right here, at
# import, not in functions: nothing of them runs per call.
_HEAD_PARTS = {
    "try_lock": _TRY_LOCK,
    "stored_outcome": keys.STORED_OUTCOME,
    "key_of": keys.KEY_OF.format(client_id="c.client_id", key="c.key"),
    "reference_version": keys.REFERENCE_VERSION,
}


# Built once, at import, from the tables' column names; every value is a bound parameter. The
# calls and their rows travel as JSON documents (one parameter each, every row tagged with its
# call's index `i`), read back with the columns' own types.
#
# POST_BATCH: calls that only credit (issues), in autocommit. A collector's row is locked by the
# statement itself; its balance is only ever added to.
_POST_LOCKED = f""", locked AS MATERIALIZED (
    SELECT number FROM collectors
     WHERE number IN (SELECT collector FROM ready) AND status = {_ACTIVE}
     ORDER BY number
       FOR UPDATE
)"""  # noqa: S608
POST_BATCH = (
    _CALLS_HEAD.format(**_HEAD_PARTS, candidate="ready", reversal_columns="")
    + _POST_LOCKED
    + _CALLS_TAIL.format(
        ready="ready",
        moved_where=" AND c.number IN (SELECT number FROM locked)",
        insert_transactions=_INSERT_TRANSACTIONS,
    )
)

# REVERSE_BATCH: calls among which some take back miles of an original (a reversal: `original`
# is its partner id, `origins` the endpoints it may name, preferred first; `floor` the least
# balance it may leave, NULL where a balance may go below zero). Run after `LOCK_COLLECTORS` and
# `LOCK_ORIGINALS` in the same transaction (`apply_batch`), so that its snapshot, taken after
# those locks, sees every reversal committed of each original.
#
# A reversal is applied only where the unit of work would post its every line now: its original
# is found (the preferred endpoint first, as `checks.locked_original` finds it) and was for the
# same collector; no other reversal of the batch names that original; for each offer, what it
# takes back and what earlier reversals took fit in what the original issued and no line of
# that offer is pending on the original (`rules.check_reversal_bounds`, `ORIGINAL_PENDING`);
# and where there is a floor, the collector's locked balance less every reversal of the batch
# for it stays at or above it (`rules.check_balance`: the batch's credits are not counted).
# The unit of work answers every other case.
_REVERSE_CHECKED = f""", named AS MATERIALIZED (
    SELECT c.i, c.sponsor, e.endpoint, c.original, c.collector, e.preference
      FROM candidate AS c, unnest(c.origins) WITH ORDINALITY AS e(endpoint, preference)
), origin AS MATERIALIZED (
    SELECT DISTINCT ON (n.i) n.i, t.id, t.collector_number = n.collector AS same_collector
      FROM named AS n
      JOIN transactions AS t
        ON t.sponsor_code = n.sponsor AND t.endpoint = n.endpoint
       AND t.partner_transaction_id = n.original AND t.status {_NOT_REJECTED}
     ORDER BY n.i, n.preference
), asked AS MATERIALIZED (
    SELECT l.i, l.offer_code, sum(l.miles) AS miles
      FROM {recordset(_L, "l", ["offer_code", "miles"], "lines")}
     WHERE l.i IN (SELECT i FROM origin)
     GROUP BY l.i, l.offer_code
), issued AS MATERIALIZED (
    SELECT o.i, l.offer_code, sum(l.miles) AS miles,
           bool_or(l.status = '{LineStatus.PENDING}') AS waiting
      FROM origin AS o JOIN issuance_lines AS l ON l.transaction_id = o.id
     WHERE l.direction = '{Direction.CREDIT}' AND l.status {_NOT_REJECTED}
     GROUP BY o.i, l.offer_code
), taken AS MATERIALIZED (
    SELECT o.i, l.offer_code, sum(l.miles) AS miles
      FROM origin AS o
      JOIN transactions AS r ON r.original_transaction_id = o.id
      JOIN issuance_lines AS l ON l.transaction_id = r.id
     WHERE l.status {_NOT_REJECTED}
     GROUP BY o.i, l.offer_code
), reversible AS MATERIALIZED (
    SELECT o.i FROM origin AS o
     WHERE o.same_collector
       AND o.i = (SELECT min(x.i) FROM origin AS x WHERE x.id = o.id)
       AND NOT EXISTS (
           SELECT 1 FROM asked AS a
             LEFT JOIN issued AS s ON s.i = a.i AND s.offer_code = a.offer_code
             LEFT JOIN taken AS k ON k.i = a.i AND k.offer_code = a.offer_code
            WHERE a.i = o.i
              AND (s.waiting IS NOT FALSE OR a.miles > s.miles - coalesce(k.miles, 0)))
), ready AS MATERIALIZED (
    SELECT c.* FROM candidate AS c
     WHERE c.original IS NULL OR c.i IN (SELECT i FROM reversible)
), locked AS MATERIALIZED (
    SELECT number, balance_miles FROM collectors
     WHERE number IN (SELECT collector FROM ready) AND status = {_ACTIVE}
     ORDER BY number
       FOR UPDATE
), fits AS MATERIALIZED (
    SELECT r.* FROM ready AS r JOIN locked ON locked.number = r.collector
     WHERE r.floor IS NULL
        OR locked.balance_miles + (SELECT sum(x.delta) FROM ready AS x
                                    WHERE x.collector = r.collector AND x.floor IS NOT NULL)
           >= r.floor
)"""  # noqa: S608
REVERSE_BATCH = (
    _CALLS_HEAD.format(
        **_HEAD_PARTS,
        candidate="candidate",
        reversal_columns=", sponsor text, original text, origins text[], floor bigint",
    )
    + _REVERSE_CHECKED
    + _CALLS_TAIL.format(
        ready="fits",
        moved_where="",
        insert_transactions=insert_from_recordset(
            _T,
            "t",
            _T.columns.keys(),
            "transactions",
            _APPLIED,
            computed={"original_transaction_id": "coalesce(t.original_transaction_id, o.id)"},
            join="LEFT JOIN origin AS o ON o.i = t.i",
        ),
    )
)

# The locks `REVERSE_BATCH` runs after, in its transaction: the calls' collectors, then the
# originals their reversals name, each in one order — collectors before originals, as the unit of
# work takes them, so that two writers wait for each other rather than deadlock. Every path that
# writes a reversal holds its original's row lock when it reads what the original's reversals
# took (a reversal whose collector was not enrolled holds no collector's lock: it is its
# original's that orders it), so the statement after these locks reads all those committed.
LOCK_COLLECTORS = """
SELECT number FROM collectors
 WHERE number IN (SELECT c.collector FROM json_to_recordset(%(calls)s::json) AS c(collector text))
 ORDER BY number
   FOR UPDATE
"""
LOCK_ORIGINALS = f"""
WITH named AS MATERIALIZED (
    SELECT c.sponsor, e.endpoint, c.original
      FROM json_to_recordset(%(calls)s::json) AS c(sponsor text, original text, origins text[]),
           unnest(c.origins) AS e(endpoint)
)
SELECT t.id FROM named AS n
  JOIN transactions AS t
    ON t.sponsor_code = n.sponsor AND t.endpoint = n.endpoint
   AND t.partner_transaction_id = n.original
 WHERE t.status {_NOT_REJECTED}
 ORDER BY t.id
   FOR UPDATE OF t
"""  # noqa: S608

# The parameters of `POST_BATCH` and `REVERSE_BATCH`, in the order `batch_params` gives them,
# and what is sent.
POST_BATCH_PARAMETERS = ("calls", "transactions", "lines", "entries", "keys")
POST_BATCH_SENT = numbered_placeholders(POST_BATCH, POST_BATCH_PARAMETERS)
REVERSE_BATCH_SENT = numbered_placeholders(REVERSE_BATCH, POST_BATCH_PARAMETERS)
_LOCKS_SENT = tuple(
    numbered_placeholders(lock, ("calls",)) for lock in (LOCK_COLLECTORS, LOCK_ORIGINALS)
)


@dataclass(frozen=True, slots=True)
class Original:
    """What a reversal names: its original's sponsor and partner id, and the endpoints it may
    have been sent to, preferred first (`issuance.calls.RULES`)."""

    sponsor_code: str
    partner_transaction_id: str
    endpoints: tuple[str, ...]


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
    # A reversal: the original it takes back miles of (its transaction row's
    # `original_transaction_id` is the one found), and the least balance it may leave (None:
    # any). Its postings are debits.
    original: Original | None = None
    balance_floor: int | None = None


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
        if call.original is not None:
            call_rows[-1].update(
                sponsor=call.original.sponsor_code,
                original=call.original.partner_transaction_id,
                origins=call.original.endpoints,
                floor=call.balance_floor,
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
    """Run `POST_BATCH` for `calls` in one statement — or, when one of them is a reversal,
    `REVERSE_BATCH` after its locks, in one transaction sent at once: what became of each, in
    order; None if the statement wrote nothing at all (`StatementPool.run`: a unique index — a
    duplicate transaction id, or a key stored since it was read —, a deadlock's victim — a unit
    of work of another call with the same transaction id —, a row lock held past
    `lock_timeout`)."""
    params = batch_params(calls)
    if any(call.original is not None for call in calls):
        rows = await pool.run_in_transaction(
            [*((lock, params[:1]) for lock in _LOCKS_SENT), (REVERSE_BATCH_SENT, params)]
        )
    else:
        rows = await pool.run(POST_BATCH_SENT, params)
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
