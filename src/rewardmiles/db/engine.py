"""Engines per dialect. Every dialect difference of the service lives in this package."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast
from urllib.parse import parse_qsl, urlencode

import psycopg
from psycopg import sql as pgsql
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.pq.abc import PGconn
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    and_,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.sql import Executable, Insert
from sqlalchemy.sql.schema import Table

SQLITE_BUSY_TIMEOUT_MS = 30_000
IDLE = TransactionStatus.IDLE
INERROR = TransactionStatus.INERROR
# Units of work `Database.run_in_unit_of_work` runs for one piece of work: a unique-index race lost
# to a concurrent unit of work is run again, and then finds the winner's rows.
INTEGRITY_ATTEMPTS = 3

R = TypeVar("R")
P = ParamSpec("P")


class DatabaseUrlError(ValueError):
    pass


def normalize_url(raw: str) -> URL:
    """Accept the plain URLs operators write; choosing the driver is ours.

    `sqlite:///PATH` → pysqlite; `postgresql://USER@HOST:PORT/DB` (or `postgres://`) → psycopg 3.
    A PostgreSQL URL may name several servers, which libpq tries in turn (with
    `target_session_attrs=read-write`, until it finds the primary), in any of libpq's and
    SQLAlchemy's spellings: `postgresql://USER@HOST1:PORT1,HOST2:PORT2/DB?…`,
    `?host=HOST1:PORT1&host=HOST2:PORT2` or `?host=HOST1,HOST2&port=PORT1,PORT2`. The first
    spelling, which SQLAlchemy cannot read, is rewritten as the last. A URL that is none of these
    is a `DatabaseUrlError` naming it, password masked.
    """
    spelled = _servers_in_query(raw)  # a malformed list of servers is an error of its own
    try:
        url = make_url(spelled)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise DatabaseUrlError(f"not a database URL: {shown_url(raw)}") from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if url.get_driver_name() not in ("pysqlite", ""):
            return url.set(drivername="sqlite")
        return url
    raise DatabaseUrlError(
        f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )


# A URL as libpq writes several servers: `postgresql://[USER[:PASSWORD]@]SERVER,SERVER…[/DB][?…]`,
# its user part read as SQLAlchemy reads it (a user without `:` or `/`, a password without `@`).
_SERVER_LIST = re.compile(
    r"^(?P<scheme>postgres(?:ql)?(?:\+\w+)?://)(?P<userinfo>[^:/]*(?::[^@]*)?@)?"
    r"(?P<servers>[^@/?#]*,[^@/?#]*)(?P<path>/[^?#]*)?(?:\?(?P<query>.*))?$",
    re.S,
)
# One server of the list: a name or an IPv4 address, or an IPv6 address in brackets; then
# perhaps `:PORT` (empty: libpq's default).
_SERVER = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[0-9]*))?")
# The password as SQLAlchemy and libpq read it: after the user's `:`, up to the first `@`.
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/]*:)[^@]*@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&#]*")


def _servers_in_query(raw: str) -> str:
    """`raw` with libpq's list of servers in the host part moved to the query, as
    `host=HOST1,HOST2&port=PORT1,PORT2` (a port not given is empty there: libpq's default; no
    port given at all, no `port`). Any other URL is returned as it is."""
    match = _SERVER_LIST.match(raw)
    if match is None:
        return raw
    query = match["query"] or ""
    if any(name in ("host", "port") for name, _ in parse_qsl(query, keep_blank_values=True)):
        raise DatabaseUrlError(
            f"{shown_url(raw)}: name the servers in the host part or in the query's host and "
            "port, not in both"
        )
    hosts: list[str] = []
    ports: list[str] = []
    for server in match["servers"].split(","):
        part = _SERVER.fullmatch(server)
        if part is None:
            raise DatabaseUrlError(
                f"{shown_url(raw)}: {server!r} is not a server (HOST, HOST:PORT or [IPv6]:PORT)"
            )
        hosts.append(part["ipv6"] or part["name"])
        ports.append(part["port"] or "")
    servers = {"host": ",".join(hosts), **({"port": ",".join(ports)} if any(ports) else {})}
    rest = "&".join(filter(None, [urlencode(servers, safe=":,%"), query]))
    return f"{match['scheme']}{match['userinfo'] or ''}{match['path'] or '/'}?{rest}"


def shown_url(raw: str) -> str:
    """`raw` as written, for messages and the start-up line, with its password (in the user part,
    or a `password` parameter of the query) masked as `***`."""
    return _PASSWORD_PARAMETER.sub(r"\g<1>***", _USERINFO_PASSWORD.sub(r"\g<1>***@", raw))


PG_CONNECT_TIMEOUT_SECONDS = 5

# read_only_sql_transaction: the server refuses writes. After a failover a connection can be left
# on a server that is now a standby (or fenced off read only): every write it sends is refused so,
# until it is replaced by one to the new primary.
READ_ONLY_SQLSTATE = "25006"


def refused_as_read_only(error: BaseException | None) -> bool:
    """`error` (the driver's, or SQLAlchemy's around it) is the server refusing a write because
    it takes none: SQLSTATE 25006."""
    if isinstance(error, DBAPIError):
        error = error.orig
    return isinstance(error, psycopg.Error) and error.sqlstate == READ_ONLY_SQLSTATE


def is_outage(error: BaseException) -> bool:
    """`error` says the database could not serve the request now, not that the request or the
    code is wrong: no connection (lost, refused, none free in time), a statement timeout, or a
    server that takes no writes (`refused_as_read_only`). A retry may succeed; nothing of a
    refused statement was written."""
    if isinstance(error, OperationalError | InterfaceError | SQLAlchemyTimeoutError):
        return True
    return isinstance(error, DBAPIError) and (
        error.connection_invalidated or refused_as_read_only(error)
    )


def build_engine(raw_url: str, *, pool_size: int = 10, statement_timeout_ms: int = 0) -> Engine:
    """SQLite (see `_sqlite_engine`) or PostgreSQL with a bounded pool.

    A pooled connection that the server has closed (a restart, a failover, an ended session, a
    proxy's reset) is replaced at checkout, before a request uses it: `closed_by_server` reads
    what the server sent it while it sat idle, without a round trip — about 2 µs a checkout,
    where a pre-ping (`SELECT 1` at every checkout) measured about 100 µs on loopback, and costs
    a network round trip on every request elsewhere. A connection lost without a word (a host
    that died, a network cut) is found only by the request that uses it, which fails with 503;
    SQLAlchemy then discards every connection of the pool opened before the failure, so the
    retry gets a fresh one. A pre-ping would not find such a connection sooner: it would wait on
    it as long.
    """
    url = normalize_url(raw_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args = _pg_connect_args(statement_timeout_ms)
    try:
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            pool_timeout=PG_CONNECT_TIMEOUT_SECONDS,
            connect_args=connect_args,
        )
    except ArgumentError as exc:  # servers in the query that do not pair with their ports
        raise DatabaseUrlError(f"{shown_url(raw_url)}: {exc}") from exc

    @event.listens_for(engine, "checkout")
    def _replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if closed_by_server(dbapi_connection.pgconn):
            raise DisconnectionError("closed by the server while in the pool")  # reconnects

    @event.listens_for(engine, "handle_error")
    def _read_only_is_lost(context: ExceptionContext) -> None:
        # A server that takes no writes is handled as a lost connection: SQLAlchemy discards
        # this connection and every pooled one opened before it, so the next request connects
        # afresh (and, with target_session_attrs=read-write, only to a server that takes writes).
        if refused_as_read_only(context.original_exception):
            context.is_disconnect = True

    return engine


_REFUSES_WRITES = text(
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"
)


def refuses_writes(engine: Engine) -> bool:
    """The server `engine`'s pool reaches takes no writes now (PostgreSQL: a standby, or read
    only by setting: what a failover leaves a connection to the old primary on). Then the pool is
    emptied, so its next connection is opened afresh (with `target_session_attrs=read-write`, to a
    server that takes writes): a probe that keeps asking finds the promoted primary without any
    write having to fail first. SQLite: never."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        refused = bool(conn.execute(_REFUSES_WRITES).scalar_one())
        if refused:
            conn.invalidate()
    if refused:
        engine.dispose()
    return refused


def closed_by_server(pgconn: PGconn) -> bool:
    """The server has closed this idle connection, as far as what it sent says: libpq reads
    whatever has arrived (usually nothing: one read that would block) and then again, to find the
    end of the stream after a server's last message (its "terminating connection" error). No
    round trip; a connection whose server vanished without a word is not found here."""
    try:
        pgconn.consume_input()
        pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return pgconn.status != ConnStatus.OK


def libpq_conninfo(engine: Engine) -> str:
    """The libpq connection string of a PostgreSQL `engine`'s URL, as its dialect passes the URL
    to psycopg: several servers as `host=HOST1,HOST2 port=PORT1,PORT2`, whichever way the URL
    named them (a URL written back as text would leave libpq reading `HOST:PORT` as a name)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # the dialect's type adapters, not a connection parameter
    return psycopg.conninfo.make_conninfo("", **params)


def _pg_connect_args(statement_timeout_ms: int) -> dict[str, Any]:
    connect_args: dict[str, Any] = {
        "application_name": "rewardmiles",
        "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
    }
    if statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return connect_args


SQLITE_FILE_MODE = 0o600


def _create_private_file(database: str | None) -> None:
    """Create a new SQLite database file readable by its owner only; SQLite gives the -wal and
    -shm files it makes beside it the same mode. An existing file is left as it is."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE)
    except (FileExistsError, FileNotFoundError):
        return  # an existing database, or a missing folder (SQLite's own error names it)
    os.close(fd)


def _sqlite_engine(url: URL) -> Engine:
    _create_private_file(url.database)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE below is what runs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Write lock up front: a deferred transaction that later writes can fail with
        # SQLITE_BUSY instead of waiting; IMMEDIATE queues behind the current writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """Engine + session factory + the unit of work: the only place that commits, apart from the
    autocommit statements of `StatementPool`."""

    def __init__(self, engine: Engine, *, statement_timeout_ms: int = 0) -> None:
        self.engine = engine
        self.statement_timeout_ms = statement_timeout_ms
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        # One writer at a time (SQLite): callers size their concurrency by this, not by dialect.
        self.single_writer = self.is_sqlite
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        # SQLite has one writer; queue threads here instead of spinning in busy_timeout.
        self._sqlite_writer = threading.Lock() if self.is_sqlite else None

    @classmethod
    def from_url(
        cls, raw_url: str, *, pool_size: int = 10, statement_timeout_ms: int = 0
    ) -> Database:
        return cls(
            build_engine(raw_url, pool_size=pool_size, statement_timeout_ms=statement_timeout_ms),
            statement_timeout_ms=statement_timeout_ms,
        )

    def statement_pool(self, size: int) -> StatementPool | None:
        """A pool for statements run on the event loop (PostgreSQL; None on SQLite)."""
        if self.is_sqlite:
            return None
        return StatementPool(
            libpq_conninfo(self.engine), size, _pg_connect_args(self.statement_timeout_ms)
        )

    def _writer_guard(self) -> AbstractContextManager[Any]:
        return self._sqlite_writer if self._sqlite_writer is not None else nullcontext()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One database transaction: committed when the block ends, rolled back if it raises."""
        with self._writer_guard(), self._sessions() as session, session.begin():
            yield session

    def run_in_unit_of_work(
        self,
        work: Callable[Concatenate[Session, int, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`work(session, attempt, *args, **kwargs)` in a unit of work, `attempt` counting from 1.

        An `IntegrityError` (two units of work inserting the same unique key at once: the loser
        fails) rolls the unit back and runs `work` again in a new one, which sees the winner's
        rows; the last of `INTEGRITY_ATTEMPTS` lets it through. A write refused by a server that
        takes none (`refused_as_read_only`: nothing was written) runs the same attempt once more,
        on a new connection, the refusal having dropped the pool: a connection opened while the
        database took no writes can stay read only once it takes them again, and must not cost
        the call. Refused again, it goes out: an outage. Any other exception ends it."""
        for attempt in range(1, INTEGRITY_ATTEMPTS):
            try:
                return self._run_attempt(work, attempt, *args, **kwargs)
            except IntegrityError:
                pass
        return self._run_attempt(work, INTEGRITY_ATTEMPTS, *args, **kwargs)

    def _run_attempt(
        self,
        work: Callable[Concatenate[Session, int, P], R],
        attempt: int,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        try:
            with self.unit_of_work() as session:
                return work(session, attempt, *args, **kwargs)
        except DBAPIError as exc:
            if not refused_as_read_only(exc):
                raise
        with self.unit_of_work() as session:  # nothing was written: the refusal rolled it back
            return work(session, attempt, *args, **kwargs)

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only transaction (always rolled back)."""
        with self._writer_guard(), self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def statement_reader(self) -> Iterator[Session]:
        """A session for reads that each stand alone: every statement sees what was committed
        when it started. PostgreSQL runs them in autocommit, without the BEGIN and ROLLBACK round
        trips of `reader` around them (for many small reads, each a query and nothing else)."""
        with self.reader() as session:
            if not self.is_sqlite:
                session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session

    @contextmanager
    def snapshot_reader(self) -> Iterator[Session]:
        """A read-only transaction that sees one snapshot of the whole database, however long it
        reads while others write: PostgreSQL runs it at REPEATABLE READ, read only; SQLite's
        reader holds the only writer's lock already, so nothing commits while it reads."""
        with self.reader() as session:
            if not self.is_sqlite:
                session.connection(
                    execution_options={
                        "isolation_level": "REPEATABLE READ",
                        "postgresql_readonly": True,
                    }
                )
            yield session

    def serialize(self, session: Session, namespace: str, key: str) -> None:
        """Hold (namespace, key) until `session`'s transaction ends, so that units of work doing
        the same thing run one after the other: a transaction-scoped advisory lock on
        PostgreSQL; nothing on SQLite, whose single writer already runs them one at a time."""
        if not self.single_writer:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock_id(namespace, key)}
            )

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def dispose(self) -> None:
        self.engine.dispose()


def lock_id(namespace: str, key: str) -> int:
    """The 64-bit advisory lock number of a (namespace, key) pair."""
    digest = hashlib.blake2b(f"{namespace}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def try_xact_lock_sql(dialect: str, lock: str) -> str:
    """SQL that takes the transaction-scoped advisory lock `lock` (an SQL expression) without
    waiting, true if it was taken. SQLite has one writer, whose BEGIN IMMEDIATE already holds
    what such a lock would: always true there."""
    return f"pg_try_advisory_xact_lock({lock})" if dialect == "postgresql" else "1"


T = TypeVar("T")
DIALECTS = ("postgresql", "sqlite")


class PerDialect(Generic[T]):
    """A statement built once per dialect by `build(dialect)`, at import; `of(connection)` gives
    the connection's. For the statements whose text differs by dialect (`try_xact_lock_sql`)."""

    def __init__(self, build: Callable[[str], T]) -> None:
        self._built = {dialect: build(dialect) for dialect in DIALECTS}

    def of(self, connection: Connection) -> T:
        return self._built[connection.dialect.name]


def insert_ignoring_conflicts(session: Session, table: Table) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING for the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def insert_or_update(
    session: Session, table: Table, keys: Sequence[str], update: dict[str, Any]
) -> Insert:
    """INSERT … ON CONFLICT (`keys`) DO UPDATE SET `update` for the session's dialect (both
    dialects read the existing row's columns as the table's, e.g. `table.c.count + 1`)."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_update(index_elements=keys, set_=update)
    return sqlite_insert(table).on_conflict_do_update(index_elements=keys, set_=update)


def bulk_insert_ignoring_conflicts(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> int:
    """Insert many rows, skipping those whose key exists; return how many were inserted.

    PostgreSQL: COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING
    (its row count is exact, and COPY avoids building huge statements). SQLite: executemany of
    INSERT … ON CONFLICT DO NOTHING, whose summed row count is exact.
    """
    if not rows:
        return 0
    if session.get_bind().dialect.name != "postgresql":
        stmt = sqlite_insert(table).on_conflict_do_nothing()
        result = session.connection().execute(
            stmt, [dict(zip(columns, row, strict=True)) for row in rows]
        )
        return int(result.rowcount)
    cols = pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
    target = pgsql.Identifier(table.name)
    staging = pgsql.Identifier(f"_bulk_{table.name}")
    dbapi = cast(psycopg.Connection[Any], session.connection().connection.dbapi_connection)
    with dbapi.cursor() as cursor:
        cursor.execute(
            pgsql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(staging, target)
        )
        _copy_rows(cursor, staging, cols, rows)
        cursor.execute(
            pgsql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                target, cols, cols, staging
            )
        )
        return int(cursor.rowcount)


def bulk_insert(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    """Insert many rows (a conflict fails the unit of work). PostgreSQL: COPY straight into the
    table, one stream instead of a statement per row. SQLite: executemany (in process)."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.connection().execute(
            table.insert(), [dict(zip(columns, row, strict=True)) for row in rows]
        )
        return
    dbapi = cast(psycopg.Connection[Any], session.connection().connection.dbapi_connection)
    with dbapi.cursor() as cursor:
        _copy_rows(
            cursor,
            pgsql.Identifier(table.name),
            pgsql.SQL(", ").join(map(pgsql.Identifier, columns)),
            rows,
        )


_AMONG = ("among_first", "among_second", "among_pairs")  # one `pairs_among` a statement
_AMONG_SEPARATOR = "\x1f"  # ASCII's unit separator: in no id, code or name the service stores


def pairs_among(
    dialect: str,
    first: ColumnElement[Any] | InstrumentedAttribute[Any],
    second: ColumnElement[Any] | InstrumentedAttribute[Any],
) -> ColumnElement[bool]:
    """A condition that (`first`, `second`) is one of the pairs given as `pairs_params`, for a
    statement built once per dialect. PostgreSQL: each column `= ANY` of an array of its values
    — two parameters, not a thousand pairs to convert, send and plan, and each column through its
    index — which also admits the pairs made of one pair's first and another's second: the
    caller keeps the exact pairs. Each array is sent as one text, its values joined by a
    separator and split by `string_to_array`: a list would be converted value by value in
    Python. SQLite: the pairs themselves, `(first, second) IN (…)`."""
    if dialect != "postgresql":
        return tuple_(first, second).in_(bindparam(_AMONG[2], expanding=True))
    return and_(
        first == any_(func.string_to_array(bindparam(_AMONG[0], type_=String), _AMONG_SEPARATOR)),
        second == any_(func.string_to_array(bindparam(_AMONG[1], type_=String), _AMONG_SEPARATOR)),
    )


def pairs_params(connection: Connection, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of `pairs_among` for `pairs` on `connection`, the pairs' values not empty
    (ValueError for one that holds the separator PostgreSQL's are joined by)."""
    if connection.dialect.name != "postgresql":
        return {_AMONG[2]: list(pairs)}
    firsts = {a for a, _ in pairs}
    seconds = {b for _, b in pairs}
    first_text = _AMONG_SEPARATOR.join(firsts)
    second_text = _AMONG_SEPARATOR.join(seconds)
    if first_text.count(_AMONG_SEPARATOR) != max(len(firsts) - 1, 0) or second_text.count(
        _AMONG_SEPARATOR
    ) != max(len(seconds) - 1, 0):
        raise ValueError("a value holds the separator of pairs_among")
    return {_AMONG[0]: first_text, _AMONG[1]: second_text}


def _copy_rows(
    cursor: psycopg.Cursor[Any],
    target: pgsql.Composable,
    cols: pgsql.Composable,
    rows: Sequence[Sequence[object]],
) -> None:
    with cursor.copy(pgsql.SQL("COPY {} ({}) FROM STDIN").format(target, cols)) as copy:
        for row in rows:
            copy.write_row(row)


# --------------------------------------------------------------------------- batched writes

_WRITE_QUEUE = "rewardmiles.write_queue"  # session.info key


@contextmanager
def batched_writes(session: Session) -> Iterator[None]:
    """Hold back this block's `write` calls and send them together when it ends without error.

    PostgreSQL runs them in one pipeline: one round trip for all of them instead of one each.
    SQLite (in process, no round trips) runs them one after the other. The block's reads still
    run at once, so a write may only be queued when nothing read later in the block depends on
    it; and a write whose result is needed (RETURNING) must not be queued.
    """
    queue: list[tuple[Executable, Any]] = []
    session.info[_WRITE_QUEUE] = queue
    try:
        yield
    finally:
        session.info.pop(_WRITE_QUEUE, None)
    _flush(session, queue)


def write(session: Session, statement: Executable, params: Any) -> None:
    """Execute a DML statement now, or at the end of the enclosing `batched_writes` block."""
    queue: list[tuple[Executable, Any]] | None = session.info.get(_WRITE_QUEUE)
    if queue is None:
        session.connection().execute(statement, params)
    else:
        queue.append((statement, params))


def queued_writes(session: Session) -> int:
    return len(session.info.get(_WRITE_QUEUE, ()))


def _flush(session: Session, queue: list[tuple[Executable, Any]]) -> None:
    if not queue:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql" or len(queue) == 1:
        for statement, params in queue:
            conn.execute(statement, params)
        return
    driver = cast(psycopg.Connection[Any], conn.connection.driver_connection)
    try:
        with driver.pipeline():
            for statement, params in queue:
                conn.execute(statement, params)
    except psycopg.Error as exc:
        # Errors of pipelined statements surface here, outside SQLAlchemy: wrap them as it would
        # (IntegrityError, OperationalError, …) so callers handle them the same way, and drop a
        # connection to a server that takes no writes as its `handle_error` would.
        lost = refused_as_read_only(exc)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            None, None, exc, psycopg.Error, connection_invalidated=lost
        ) from exc


# --------------------------------------------------------------------------- statements on the loop

# The statement pool runs few statements, many times: each is prepared on first use and keeps
# one generic plan. That plan is made once per connection, perhaps on a new database whose
# statistics say every table is empty; so the planner is steered to index lookups and nested
# loops, which stay right however large the tables grow (each statement touches a few rows by
# key), never to a scan or a hash of a whole table. A statement that waits for a row lock longer
# than STATEMENT_LOCK_TIMEOUT_MS gives up, writing nothing (its caller then takes the unit of
# work, which waits as long as the statement timeout allows). JIT compilation is off: the
# planner's estimate for the batched issue statement grows with the tables (a few hundred
# thousand lines, never analyzed, were enough) until it passes `jit_above_cost`, and from then
# on each run compiled ~150 functions first, 250 ms for work of a millisecond.
STATEMENT_LOCK_TIMEOUT_MS = 250
STATEMENT_POOL_OPTIONS = " ".join(
    f"-c {setting}"
    for setting in (
        f"lock_timeout={STATEMENT_LOCK_TIMEOUT_MS}",
        "plan_cache_mode=force_generic_plan",
        "enable_seqscan=off",
        "enable_hashjoin=off",
        "enable_mergejoin=off",
        "enable_bitmapscan=off",
        "jit=off",
    )
)


# What makes PostgreSQL refuse a statement whole, so that it wrote nothing, where another path
# can still answer the call (`StatementPool.run`).
_REFUSED = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
)


class StatementPool:
    """Asynchronous PostgreSQL connections in autocommit, for single statements run on the event
    loop (each statement its own transaction: one round trip, commit included). At most `size`
    connections, opened on demand and kept. An idle one the server has closed is replaced before
    use (`closed_by_server`, as the synchronous pool's checkout does). A connection left broken or
    inside a transaction is closed, not reused; a broken one closes the idle ones too (lost
    without a word from the server, they would not be found closed), and so does one refused a
    write by a server that takes none (`refused_as_read_only`). Waiting longer than the pool
    timeout for one, or failing to connect, is a SQLAlchemy `TimeoutError`/`OperationalError`,
    answered 503 like the synchronous pool's."""

    def __init__(self, conninfo: str, size: int, connect_args: dict[str, Any]) -> None:
        self._conninfo = conninfo
        self._connect_args = connect_args
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        try:
            async with asyncio.timeout(PG_CONNECT_TIMEOUT_SECONDS):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise SQLAlchemyTimeoutError("no database connection free in time") from exc
        conn: psycopg.AsyncConnection[Any] | None = None
        read_only = False
        try:
            conn = await self._take()
            yield conn
        except psycopg.Error as exc:
            read_only = refused_as_read_only(exc)
            raise
        finally:
            if conn is not None:
                if conn.broken or read_only:
                    # Lost (a restart, a failover, a network cut), or on a server that takes no
                    # writes (a failover's old primary): the idle ones, opened before it, are most
                    # likely so too. Open fresh ones rather than fail on each.
                    await self.close()
                if read_only or conn.closed or conn.broken or conn.info.transaction_status != IDLE:
                    await conn.close()
                else:
                    self._idle.append(conn)
            self._slots.release()

    async def run(self, statement: bytes, params: Sequence[object]) -> list[Any] | None:
        """Run one statement (its own transaction) and fetch its rows. None when PostgreSQL
        refused it whole, so that it wrote nothing: a unique index, chosen as a deadlock's victim,
        or a row lock held past STATEMENT_LOCK_TIMEOUT_MS — the caller then takes another path.
        Any other error is SQLAlchemy's `DBAPIError`, answered as the synchronous pool's are."""
        try:
            async with self.connection() as conn:
                cursor = await conn.execute(statement, params)
                return await cursor.fetchall()
        except _REFUSED:
            return None
        except psycopg.Error as exc:
            raise DBAPIError.instance(statement.decode(), params, exc, psycopg.Error) from exc

    async def run_in_transaction(
        self, statements: Sequence[tuple[bytes, Sequence[object]]]
    ) -> list[Any] | None:
        """Run `statements` in one transaction, sent at once (a pipeline: BEGIN, each
        statement, COMMIT, one sync), and fetch the last one's rows. Each statement takes
        its own snapshot (READ COMMITTED): it sees what committed while the ones before it waited
        for their locks. None and errors as `run`: any refusal rolls the whole transaction
        back."""
        *locks, (statement, params) = statements
        try:
            async with self.connection() as conn:
                try:
                    async with conn.pipeline() as pipeline:
                        await conn.execute(b"BEGIN")
                        for lock, lock_params in locks:
                            await conn.execute(lock, lock_params)
                        cursor = await conn.execute(statement, params)
                        await conn.execute(b"COMMIT")
                        await pipeline.sync()  # everything sent; one wait for every result
                        return await cursor.fetchall()
                except psycopg.Error:
                    if conn.info.transaction_status == INERROR:  # keep the connection
                        await conn.execute(b"ROLLBACK")
                    raise
        except _REFUSED:
            return None
        except psycopg.Error as exc:
            raise DBAPIError.instance(statement.decode(), params, exc, psycopg.Error) from exc

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        """An idle connection the server has not closed (`closed_by_server`: those are closed
        here, never used), or a new one."""
        while self._idle:
            conn = self._idle.pop()
            if not closed_by_server(conn.pgconn):
                return conn
            await conn.close()
        return await self._connect()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        args = dict(self._connect_args)  # prepared on first use, see STATEMENT_POOL_OPTIONS
        args["options"] = " ".join(filter(None, [args.get("options"), STATEMENT_POOL_OPTIONS]))
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                prepare_threshold=0,
                cursor_factory=psycopg.AsyncRawCursor,  # placeholders are PostgreSQL's: $1, $2, …
                **args,
            )
        except psycopg.Error as exc:
            raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc
        return conn

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
