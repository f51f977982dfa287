"""A collector's ledger history under a long past: `GET /admin/v1/collectors/{n}/ledger`, page 1
and page 200, on a collector with 100,000 ledger entries (half partner lines, half operator
adjustments). The history pages by keyset, so both must answer alike: p99 ≤ 20 ms each.

    .venv/bin/python -m bench.run.history                 # SQLite, a database of its own
    .venv/bin/python -m bench.run.history --database-url postgresql://…/db  # an empty database

The seed is bench data written in bulk (one transaction, executemany), not through the service:
the balance is set to the sum of the collector's entries, and the database ends with
`rewardmiles ledger verify` like every benchmark database. The harness runs it as the `history`
rows after the other rewardmiles rows (`history_rows`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, update

from bench.run.config import SCRATCH, BenchError, log
from bench.run.databases import verify_ledger
from bench.run.measurement import Measurement
from bench.run.processes import serving
from rewardmiles.db import migrate
from rewardmiles.db.engine import Database
from rewardmiles.db.models import (
    Adjustment,
    Collector,
    IssuanceLine,
    LedgerEntry,
    Sponsor,
    Transaction,
)
from rewardmiles.operators import service as operators
from rewardmiles.vocabulary import (
    AccountKind,
    AdjustmentReason,
    CollectorStatus,
    Direction,
    Endpoint,
    LineStatus,
    OperatorRole,
    ProgramAccount,
    TransactionStatus,
)

ENTRIES = 100_000
PAGE = 50
FAR_PAGE = 200
P99_MS_MAX = 20.0
NUMBER = "79000000001"
SPONSOR_CODE = "HIST"
CHUNK = 5_000


def seed(url: str, entries: int = ENTRIES) -> str:
    """Migrate the database at `url`, give the collector `NUMBER` `entries` ledger entries and
    return a viewer's admin token."""
    db = Database.from_url(url)
    try:
        migrate.upgrade(db.engine)
        start = time.monotonic()
        base = datetime.now(UTC) - timedelta(days=400)
        with db.unit_of_work() as session:
            session.execute(
                insert(Sponsor).values(code=SPONSOR_CODE, name="History bench", created_at=base)
            )
            session.execute(
                insert(Collector).values(
                    number=NUMBER,
                    status=CollectorStatus.ACTIVE,
                    balance_miles=0,
                    created_at=base,
                    updated_at=base,
                )
            )
        balance = 0
        for first in range(0, entries, CHUNK):
            txns: list[dict[str, Any]] = []
            lines: list[dict[str, Any]] = []
            adjustments: list[dict[str, Any]] = []
            rows: list[dict[str, Any]] = []
            for i in range(first, min(first + CHUNK, entries)):
                at = base + timedelta(seconds=300 * i)
                ident = str(uuid.UUID(int=i + 1))
                if i % 2 == 0:  # a partner's credit of 10 to 59 miles
                    miles = 10 + i % 50
                    txns.append(_transaction(ident, i, at))
                    lines.append(_line(ident, miles, at))
                    pair = ((AccountKind.SPONSOR, SPONSOR_CODE, -miles),)
                    source = {"transaction_id": ident, "line_no": 1, "adjustment_id": None}
                else:  # an operator's debit of 1 to 7 miles
                    miles = -(1 + i % 7)
                    adjustments.append(_adjustment(ident, miles, balance + miles, at))
                    pair = ((AccountKind.PROGRAM, ProgramAccount.ADJUSTMENTS, -miles),)
                    source = {"transaction_id": None, "line_no": None, "adjustment_id": ident}
                balance += miles
                for kind, code, amount in ((AccountKind.COLLECTOR, NUMBER, miles), *pair):
                    rows.append(
                        {
                            **source,
                            "account_kind": kind,
                            "account_code": code,
                            "amount_miles": amount,
                            "posted_at": at,
                        }
                    )
            with db.unit_of_work() as session:
                if txns:
                    session.execute(insert(Transaction), txns)
                    session.execute(insert(IssuanceLine), lines)
                if adjustments:
                    session.execute(insert(Adjustment), adjustments)
                session.execute(insert(LedgerEntry), rows)
        with db.unit_of_work() as session:
            session.execute(
                update(Collector).where(Collector.number == NUMBER).values(balance_miles=balance)
            )
            made = operators.create_token(
                session,
                f"history-{uuid.uuid4().hex[:6]}",
                OperatorRole.VIEWER,
                1,
                datetime.now(UTC),
                operators.Actor("bench"),
            )
        log(f"history: seeded {entries:,} entries in {time.monotonic() - start:.1f} s")
        return made.token
    finally:
        db.dispose()


def _transaction(ident: str, i: int, at: datetime) -> dict[str, Any]:
    return {
        "id": ident,
        "client_id": "bench",
        "sponsor_code": SPONSOR_CODE,
        "endpoint": Endpoint.POST_EVENT,
        "partner_transaction_id": f"h{i}",
        "collector_number": NUMBER,
        "original_transaction_id": None,
        "status": TransactionStatus.POSTED,
        "http_status": 200,
        "error_code": None,
        "fingerprint": "0" * 64,
        "partner_datetime": at,
        "processed_at": at,
        "request_json": "{}",
        "response_json": "{}",
        "calculation_json": None,
    }


def _line(ident: str, miles: int, at: datetime) -> dict[str, Any]:
    return {
        "transaction_id": ident,
        "line_no": 1,
        "direction": Direction.CREDIT,
        "offer_code": "STANDARD",
        "location_code": None,
        "miles": miles,
        "status": LineStatus.POSTED,
        "pending_reason": None,
        "error_code": None,
        "settled_at": at,
    }


def _adjustment(ident: str, miles: int, after: int, at: datetime) -> dict[str, Any]:
    return {
        "id": ident,
        "collector_number": NUMBER,
        "miles": miles,
        "reason": AdjustmentReason.CORRECTION,
        "note": "bench",
        "operator": "bench",
        "idempotency_key": ident,
        "fingerprint": "0" * 64,
        "balance_after": after,
        "created_at": at,
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(port: int, bearer: str, requests: int, target: str) -> list[Measurement]:
    """Page 1 and page `FAR_PAGE` (its cursor found by walking), `requests` times each, one at
    a time on one connection, alternating; a row for each."""
    path = f"/admin/v1/collectors/{NUMBER}/ledger"
    headers = {"Authorization": f"Bearer {bearer}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
        cursor: str | None = None
        for _ in range(FAR_PAGE - 1):
            page = http.get(path, params={"limit": PAGE, **({"cursor": cursor} if cursor else {})})
            if page.status_code != 200:
                raise BenchError(f"history: {page.status_code} {page.text[:300]}")
            cursor = page.json()["nextCursor"]
        assert cursor is not None
        wanted: dict[str, tuple[str, dict[str, Any]]] = {
            "page 1": (path, {"limit": PAGE}),
            f"page {FAR_PAGE}": (path, {"limit": PAGE, "cursor": cursor}),
            # The admin API's own cost (credential lookup, threads, answer): the floor.
            "reference /admin/v1/me": ("/admin/v1/me", {}),
        }
        for where, params in wanted.values():  # warm up
            for _ in range(20):
                http.get(where, params=params)
        times: dict[str, list[float]] = {name: [] for name in wanted}
        failures = dict.fromkeys(wanted, 0)
        first_items: dict[str, Any] = {}
        for _ in range(requests):
            for name, (where, params) in wanted.items():
                began = time.perf_counter()
                response = http.get(where, params=params)
                times[name].append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    failures[name] += 1
                elif where == path:
                    first_items[name] = response.json()["items"][0]
    rows = []
    for name, samples in times.items():
        p99 = _percentile(samples, 0.99)
        reference = name.startswith("reference")
        slug = "me" if reference else name.replace(" ", "")
        m = Measurement(
            id=f"{'pg' if target == 'PostgreSQL' else 'sqlite'}-history-{slug}",
            kind="rewardmiles",
            title="(h) reference: GET /admin/v1/me (authentication only)"
            if reference
            else f"(h) GET a collector's ledger history, {name} of 50 (100k entries)",
            target=target,
            processes=1,
            concurrency=1,
            tool="httpx",
            rps=round(len(samples) / (sum(samples) / 1000), 1),
            p50_ms=round(statistics.median(samples), 2),
            p99_ms=round(p99, 2),
            max_ms=round(max(samples), 2),
            non_2xx=failures[name],
            requests=len(samples),
            detail={"first_entry": first_items.get(name), "p99_ms_max": P99_MS_MAX},
        )
        if p99 > P99_MS_MAX and not reference:
            m.notes.append(f"p99 {p99:.1f} ms is above the {P99_MS_MAX:.0f} ms this row promises")
        rows.append(m)
        log(f"history {target} {name}: p50 {m.p50_ms} ms  p99 {m.p99_ms} ms  max {m.max_ms} ms")
    return rows


def run(url: str, target: str, requests: int, entries: int = ENTRIES) -> list[Measurement]:
    bearer = seed(url, entries)
    with serving(f"history-{target.lower()}", url, 1) as server:
        rows = measure(server.port, bearer, requests, target)
    verify_ledger(url, f"{target} history")
    return rows


def history_rows(h: Any) -> None:
    """The harness's (h) rows: SQLite on a file of its own; PostgreSQL on an empty copy."""
    requests = 200 if h.args.quick else 1000
    if h.args.sqlite:
        path = SCRATCH / f"history-{h.run_id}.db"
        for m in run(f"sqlite:///{path}", "SQLite", requests):
            h.record(m)
        h.verified("sqlite_history", "ok")
    if h.args.postgres and h.pg is not None:
        url = h.pg.url(h.pg.create("history"))
        for m in run(url, "PostgreSQL", requests):
            h.record(m)
        h.verified("pg_history", "ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    parser.add_argument("--requests", type=int, default=500, help="GETs of each page")
    parser.add_argument("--entries", type=int, default=ENTRIES)
    args = parser.parse_args(argv)
    SCRATCH.mkdir(exist_ok=True)
    url = args.database_url
    if url is None:
        path = SCRATCH / f"history-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
    target = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
    rows = run(url, target, args.requests, args.entries)
    failed = [m for m in rows if m.notes or m.non_2xx]
    for m in rows:
        sys.stdout.write(
            f"| {m.title} | {m.target} | {m.requests} | {m.p50_ms} | {m.p99_ms} | {m.max_ms} |\n"
        )
    if url.startswith("sqlite:///") and args.database_url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
