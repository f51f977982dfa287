"""The SQL rewardmiles sends for one request of each measured kind, captured in process.

Runs `create_app()` in process (settings from the environment, embedded settlement worker off so
only the request's statements are seen), warms the path up (psycopg prepares a statement after 5
executions), then records SQLAlchemy's engine events for one POST/EVENT, one REVERSE/EVENT of it
and one replay of the POST/EVENT. Prints JSON: per request, the statements in order and the
round trips to the database, counted on the wire: libpq's protocol trace of the connection the
request used, one round trip per switch from client messages to server messages (so psycopg's
pipelined executemany or an explicit pipeline count as one).

    REWARDMILES_DATABASE_URL=... python -m bench.capture_sql CLIENT_ID SECRET SPONSOR COLLECTOR
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ISSUE_PATH = "/checkout/issuance/post/event"
REVERSE_PATH = "/checkout/issuance/reverse/event"
WARM_UP_REQUESTS = 8


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


def capture(client_id: str, secret: str, sponsor: str, collector: str) -> dict[str, Any]:
    os.environ["REWARDMILES_EMBEDDED_WORKER"] = "false"
    from sqlalchemy import event
    from starlette.testclient import TestClient

    from rewardmiles.app import create_app

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
        engine = app.state.ctx.db.engine
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

        def on_begin(conn: Any) -> None:
            with lock:
                events.append({"sql": "BEGIN"})

        def on_commit(conn: Any) -> None:
            with lock:
                events.append({"sql": "COMMIT"})

        def on_rollback(conn: Any) -> None:
            with lock:
                events.append({"sql": "ROLLBACK"})

        def on_execute(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            with lock:
                events.append(
                    {"sql": _compact(statement), "executemany": len(parameters) if many else None}
                )

        trace_dir = Path(tempfile.mkdtemp(prefix="rmbench-trace-"))
        traced: list[tuple[Any, Any]] = []

        def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
            pgconn = getattr(dbapi_conn, "pgconn", None)
            if pgconn is None:  # not psycopg: no wire trace
                return
            from psycopg import pq

            handle = open(trace_dir / f"{len(traced)}.trace", "wb")  # noqa: SIM115
            pgconn.trace(handle.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
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

        def record(name: str, path: str, content: bytes, key: str) -> dict[str, Any]:
            events.clear()
            for file in trace_dir.glob("*.trace"):
                file.unlink()
            traced.clear()
            status, headers = post(path, content, key)
            statements = list(events)
            wire = [round_trips(file) for file in sorted(trace_dir.glob("*.trace"))]
            return {
                "request": name,
                "status": status,
                "replayed": headers.get("idempotent-replayed") == "true",
                "statements": statements,
                "executes": sum(
                    1 for s in statements if s["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")
                ),
                "round_trips": sum(wire) if wire else None,
                "connections": len(wire),
                "round_trips_if_unpipelined": len(statements),
            }

        txid = f"capture-{uuid.uuid4().hex}"
        try:
            requests = [
                record("POST/EVENT", ISSUE_PATH, body(txid), txid),
                record("REVERSE/EVENT", REVERSE_PATH, body("r" + txid, txid), "r" + txid),
                record("POST/EVENT replay", ISSUE_PATH, body(txid), txid),
            ]
        finally:
            shutil.rmtree(trace_dir, ignore_errors=True)
    return {"dialect": engine.dialect.name, "requests": requests}


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit("usage: python -m bench.capture_sql CLIENT_ID SECRET SPONSOR COLLECTOR")
    sys.stdout.write(json.dumps(capture(*sys.argv[1:5])) + "\n")


if __name__ == "__main__":
    main()
