"""The SQL rewardmiles sends for one request of each measured kind, captured in process.

Runs `create_app()` in process (settings from the environment, embedded settlement worker off so
only the request's statements are seen), warms the paths up (the reference-data cache the
one-statement path needs; psycopg prepares a statement after 5 executions), then records the
statements of one POST/EVENT, one REVERSE/EVENT of it, one replay of the POST/EVENT, and one more
POST/EVENT with the one-statement path off (what every POST/EVENT ran before it, and what it
falls back to: the unit of work bench/pgbench_issue.sql mirrors).

Two ways to the database are watched: the unit of work (SQLAlchemy engine events, on the
synchronous pool's connections) and the one-statement path (`app.state.ctx.statements`, the
`StatementPool` of asynchronous psycopg connections in autocommit, which SQLAlchemy does not see:
its `connection()` is wrapped, and what runs `execute` on the connection it yields is recorded).
Every statement is marked with its `path` ("unit of work" or "one statement").

Prints JSON: per request, the statements in order and the round trips to the database, counted
on the wire: libpq's protocol trace of every connection the request used (either pool), one
round trip per switch from client messages to server messages (so psycopg's pipelined
executemany or an explicit pipeline count as one).

    REWARDMILES_DATABASE_URL=... python -m bench.capture_sql CLIENT_ID SECRET SPONSOR COLLECTOR
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ISSUE_PATH = "/checkout/issuance/post/event"
REVERSE_PATH = "/checkout/issuance/reverse/event"
WARM_UP_REQUESTS = 8
UNIT_OF_WORK = "unit of work"
ONE_STATEMENT = "one statement"
# The last request captured: a POST/EVENT with the one-statement path off.
GENERAL_POST_EVENT = "POST/EVENT, one-statement path off"
GENERAL_REVERSE_EVENT = "REVERSE/EVENT, one-statement path off"


def _compact(statement: str) -> str:
    return re.sub(r"\s+", " ", statement).strip()


def round_trips(trace: Path) -> int:
    """Client-to-server turns in a libpq trace: each run of F (frontend) messages followed by
    B (backend) messages is one wait for the server."""
    turns, last = 0, ""
    for line in trace.read_text(errors="replace").splitlines():
        direction = line[:1]
        if direction == "B" and last == "F":
            turns += 1
        if direction in ("F", "B"):
            last = direction
    return turns


def _trace(pgconn: Any, path: Path) -> Any:
    """Start libpq's protocol trace of `pgconn` into `path`; returns the open file."""
    from psycopg import pq

    handle = open(path, "wb")  # noqa: SIM115
    pgconn.trace(handle.fileno())
    pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
    return handle


class _RecordedConnection:
    """The connection the statement pool yields, with its `execute` calls recorded (everything
    else is the connection's own)."""

    def __init__(self, conn: Any, on_execute: Callable[[str], None]) -> None:
        self._conn = conn
        self._on_execute = on_execute

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query.decode() if isinstance(query, bytes) else query
        self._on_execute(text if isinstance(text, str) else repr(query))
        return await self._conn.execute(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def capture(client_id: str, secret: str, sponsor: str, collector: str) -> dict[str, Any]:
    os.environ["REWARDMILES_EMBEDDED_WORKER"] = "false"
    from sqlalchemy import event
    from starlette.testclient import TestClient

    from rewardmiles.app import create_app
    from rewardmiles.ledger.batched import POST_BATCH_SENT

    post_batch = _compact(POST_BATCH_SENT.decode())

    app = create_app()
    moment = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def body(txid: str, original: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "clientTransactionId": txid,
            "collectorNumber": collector,
            "sponsorCode": sponsor,
            "transactionDateTime": moment,
            "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 5}],
        }
        if original is not None:
            payload["originalClientTransactionId"] = original
        return json.dumps(payload).encode()

    with TestClient(app) as http:
        ctx = app.state.ctx
        engine = ctx.db.engine
        pool = ctx.statements  # None: the one-statement path is off (setting or SQLite)

        @contextlib.contextmanager
        def general_path() -> Iterator[None]:
            """The one-statement path off for a request, as `one_statement_issue=false` has it."""
            saved, ctx.issue_writer = ctx.issue_writer, None
            try:
                yield
            finally:
                ctx.issue_writer = saved

        token = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            },
        ).json()["access_token"]

        def post(path: str, content: bytes, key: str) -> tuple[int, dict[str, str]]:
            response = http.post(
                path,
                content=content,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": key,
                },
            )
            return response.status_code, dict(response.headers)

        for _ in range(WARM_UP_REQUESTS):
            warm = f"capture-warm-{uuid.uuid4().hex}"
            post(ISSUE_PATH, body(warm), warm)
            post(REVERSE_PATH, body("r" + warm, warm), "r" + warm)
            post(ISSUE_PATH, body(warm), warm)
            with general_path():
                post(ISSUE_PATH, body("g" + warm), "g" + warm)
                post(REVERSE_PATH, body("rg" + warm, "g" + warm), "rg" + warm)

        def on_begin(conn: Any) -> None:
            with lock:
                events.append({"sql": "BEGIN", "path": UNIT_OF_WORK})

        def on_commit(conn: Any) -> None:
            with lock:
                events.append({"sql": "COMMIT", "path": UNIT_OF_WORK})

        def on_rollback(conn: Any) -> None:
            with lock:
                events.append({"sql": "ROLLBACK", "path": UNIT_OF_WORK})

        def on_execute(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            with lock:
                events.append(
                    {
                        "sql": _compact(statement),
                        "executemany": len(parameters) if many else None,
                        "path": UNIT_OF_WORK,
                    }
                )

        def on_statement(statement: str) -> None:
            sql = _compact(statement)
            entry: dict[str, Any] = {"sql": sql, "executemany": None, "path": ONE_STATEMENT}
            if sql == post_batch:
                entry["name"] = "POST_BATCH"
            with lock:
                events.append(entry)

        trace_dir = Path(tempfile.mkdtemp(prefix="rmbench-trace-"))
        traced: list[tuple[Any, Any]] = []

        def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
            pgconn = getattr(dbapi_conn, "pgconn", None)
            if pgconn is None:  # not psycopg: no wire trace
                return
            handle = _trace(pgconn, trace_dir / f"{len(traced):03d}-{UNIT_OF_WORK}.trace")
            traced.append((pgconn, handle))

        def on_checkin(dbapi_conn: Any, record: Any) -> None:
            pgconn = getattr(dbapi_conn, "pgconn", None)
            for traced_conn, handle in traced:
                if traced_conn is pgconn and not handle.closed:
                    pgconn.untrace()
                    handle.close()

        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "commit", on_commit)
        event.listen(engine, "rollback", on_rollback)
        event.listen(engine, "before_cursor_execute", on_execute)

        if pool is not None:
            pool_connection = pool.connection

            @contextlib.asynccontextmanager
            async def traced_connection() -> AsyncIterator[Any]:
                async with pool_connection() as conn:
                    pgconn = conn.pgconn
                    name = f"{len(traced):03d}-{ONE_STATEMENT}.trace"
                    handle = _trace(pgconn, trace_dir / name)
                    traced.append((pgconn, handle))
                    try:
                        yield _RecordedConnection(conn, on_statement)
                    finally:
                        pgconn.untrace()
                        handle.close()

            pool.connection = traced_connection

        def record(name: str, path: str, content: bytes, key: str) -> dict[str, Any]:
            events.clear()
            for file in trace_dir.glob("*.trace"):
                file.unlink()
            traced.clear()
            status, headers = post(path, content, key)
            statements = list(events)
            by_path: dict[str, int] = {}
            for file in sorted(trace_dir.glob("*.trace")):
                kind = file.stem.split("-", 1)[1]
                by_path[kind] = by_path.get(kind, 0) + round_trips(file)
            wire = len(list(trace_dir.glob("*.trace")))
            paths = [p for p in (ONE_STATEMENT, UNIT_OF_WORK) if p in by_path]
            return {
                "request": name,
                "status": status,
                "replayed": headers.get("idempotent-replayed") == "true",
                "paths": paths,
                "statements": statements,
                "executes": sum(
                    1 for s in statements if s["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")
                ),
                "round_trips": sum(by_path.values()) if wire else None,
                "round_trips_by_path": by_path,
                "connections": wire,
                "round_trips_if_unpipelined": len(statements),
            }

        txid = f"capture-{uuid.uuid4().hex}"
        general = f"capture-general-{uuid.uuid4().hex}"
        try:
            requests = [
                record("POST/EVENT", ISSUE_PATH, body(txid), txid),
                record("REVERSE/EVENT", REVERSE_PATH, body("r" + txid, txid), "r" + txid),
                record("POST/EVENT replay", ISSUE_PATH, body(txid), txid),
            ]
            with general_path():
                requests.append(
                    record(GENERAL_POST_EVENT, ISSUE_PATH, body(general), general),
                )
                requests.append(
                    record(
                        GENERAL_REVERSE_EVENT,
                        REVERSE_PATH,
                        body("r" + general, general),
                        "r" + general,
                    ),
                )
        finally:
            shutil.rmtree(trace_dir, ignore_errors=True)
    return {
        "dialect": engine.dialect.name,
        "one_statement_path": pool is not None,
        "requests": requests,
    }


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit("usage: python -m bench.capture_sql CLIENT_ID SECRET SPONSOR COLLECTOR")
    sys.stdout.write(json.dumps(capture(*sys.argv[1:5])) + "\n")


if __name__ == "__main__":
    main()
