"""The operator console under a big past: every console page, signed in as an admin, on a
database with 1,000,000 partner transactions (30 days of them, about 33,000 on the current
Transaction Day, some pending, some failed requests) and the history collector's 100,000 ledger
entries (`bench.run.history`). Each page must answer in p95 ≤ 200 ms.

    .venv/bin/python -m bench.run.console                 # SQLite, a database of its own
    .venv/bin/python -m bench.run.console --database-url postgresql://…/db  # an empty database

The seed is bench data written in bulk (executemany in chunks), not through the service; each
collector's balance is set to the sum of its entries and the run ends with `rewardmiles ledger
verify`. Latency is measured at the client on loopback, one request at a time: an upper bound of
the server's time. The harness runs it as the (i) rows after the history rows, and the (j) rows
(`bench.run.batch_import.past_rows`) on the same database.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select, text, update

from bench.run import history
from bench.run.config import SCRATCH, BenchError, log
from bench.run.databases import verify_ledger
from bench.run.measurement import Measurement
from bench.run.processes import serving
from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import (
    Collector,
    IssuanceLine,
    LedgerEntry,
    RequestFailure,
    Sponsor,
    Transaction,
)
from rewardmiles.operators import passwords
from rewardmiles.operators import service as operators
from rewardmiles.vocabulary import (
    AccountKind,
    CollectorStatus,
    Direction,
    Endpoint,
    LineStatus,
    OperatorRole,
    PendingReason,
    TransactionStatus,
)

TRANSACTIONS = 1_000_000
COLLECTORS = 100_000
DAYS = 30
PENDING_EVERY = 200  # one line in 200 is held for an operator's review (5,000)
FAILURES = 2_000
SPONSOR_CODE = "CONS"
CHUNK = 10_000
P95_MS_MAX = 200.0
EMAIL = "bench-admin@bench.example"
PASSWORD = "bench-admin-password"

# The pages, with what they need filled in, and their answer: (slug, path, status). The search
# box finds one transaction and sends the browser to it (303); its page is the next row.
PAGES = (
    ("today", "/console/today", 200),
    ("today-earlier", "/console/today?day={yesterday}", 200),
    ("collector", "/console/collectors/{number}", 200),
    ("transaction-search", "/console/transactions?q={transaction}", 303),
    ("transaction", "/console/transactions/{transaction}", 200),
    ("pending", "/console/pending", 200),
    ("partners", "/console/partners", 200),
    ("offers", "/console/offers?sponsor={sponsor}", 200),
    ("reports", "/console/reports?day={yesterday}", 200),
    ("audit-log", "/console/audit-log", 200),
)


def _number(i: int) -> str:
    return f"78{i:09d}"


def seed(url: str, transactions: int = TRANSACTIONS) -> dict[str, str]:
    """The history collector (100k entries), then `transactions` partner transactions over
    `COLLECTORS` collectors and the last `DAYS` days, failed requests today, and an admin.
    Answers the values the pages' paths need."""
    history.seed(url)
    db = Database.from_url(url)
    try:
        start = time.monotonic()
        now = clock.utc_now()
        with db.unit_of_work() as session:
            session.execute(
                insert(Sponsor).values(code=SPONSOR_CODE, name="Console bench", created_at=now)
            )
            session.execute(
                insert(Collector),
                [
                    {
                        "number": _number(c),
                        "status": CollectorStatus.ACTIVE,
                        "balance_miles": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for c in range(COLLECTORS)
                ],
            )
        balances = [0] * COLLECTORS
        step = timedelta(days=DAYS) / transactions
        last_id = ""
        for first in range(0, transactions, CHUNK):
            txns: list[dict[str, Any]] = []
            lines: list[dict[str, Any]] = []
            entries: list[dict[str, Any]] = []
            for i in range(first, min(first + CHUNK, transactions)):
                at = now - step * (transactions - i)
                ident = str(uuid.UUID(int=(1 << 64) + i))
                c = i % COLLECTORS
                number = _number(c)
                miles = 5 + i % 40
                pending = i % PENDING_EVERY == 0
                txns.append(_transaction(ident, i, number, at, pending))
                lines.append(_line(ident, miles, at, pending))
                if not pending:
                    balances[c] += miles
                    for kind, code, amount in (
                        (AccountKind.COLLECTOR, number, miles),
                        (AccountKind.SPONSOR, SPONSOR_CODE, -miles),
                    ):
                        entries.append(
                            {
                                "transaction_id": ident,
                                "line_no": 1,
                                "adjustment_id": None,
                                "account_kind": kind,
                                "account_code": code,
                                "amount_miles": amount,
                                "posted_at": at,
                            }
                        )
                last_id = ident
            with db.unit_of_work() as session:
                session.execute(insert(Transaction), txns)
                session.execute(insert(IssuanceLine), lines)
                session.execute(insert(LedgerEntry), entries)
            if (first // CHUNK) % 20 == 0:
                log(f"console: {first + len(txns):,} of {transactions:,} transactions")
        with db.unit_of_work() as session:
            for first in range(0, COLLECTORS, CHUNK):
                session.execute(  # the ORM's bulk UPDATE by primary key
                    update(Collector),
                    [
                        {"number": _number(c), "balance_miles": balances[c]}
                        for c in range(first, min(first + CHUNK, COLLECTORS))
                    ],
                )
            session.execute(
                insert(RequestFailure),
                [
                    {
                        "request_id": uuid.uuid4().hex,
                        "at": now - timedelta(seconds=7 * f),
                        "client_id": "bench",
                        "method": "POST",
                        "path": "/checkout/issuance/post/event",
                        "status": 400,
                        "code": "FIELD_INVALID",
                        "detail": "bench",
                        "field": "collectorNumber",
                    }
                    for f in range(FAILURES)
                ],
            )
            cost = passwords.HashCost.of(Settings.from_env())
            operators.add_operator(
                session,
                EMAIL,
                OperatorRole.ADMIN,
                passwords.hash_password(PASSWORD, cost),
                now,
                operators.Actor("bench"),
            )
            assert session.execute(select(Transaction.id).where(Transaction.id == last_id)).one()
        if db.engine.dialect.name == "postgresql":
            # The bulk-written tables' statistics, as a database in service has them
            # (autovacuum). SQLite keeps none unless ANALYZE is run, and the service never runs it.
            with db.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        log(f"console: seeded {transactions:,} transactions in {time.monotonic() - start:.1f} s")
        zone = str(Settings.from_env().program_time_zone)
        today = clock.transaction_day_of(now, zone)
        return {
            "yesterday": (today - timedelta(days=1)).isoformat(),
            "number": history.NUMBER,
            "transaction": last_id,
            "sponsor": SPONSOR_CODE,
            "now": now.isoformat(),  # the seed's instant: its transactions lie in the 30 days before
        }
    finally:
        db.dispose()


def _transaction(ident: str, i: int, number: str, at: datetime, pending: bool) -> dict[str, Any]:
    return {
        "id": ident,
        "client_id": "bench",
        "sponsor_code": SPONSOR_CODE,
        "endpoint": Endpoint.POST_EVENT,
        "partner_transaction_id": f"c{i}",
        "collector_number": number,
        "original_transaction_id": None,
        "status": TransactionStatus.PENDING if pending else TransactionStatus.POSTED,
        "http_status": 202 if pending else 200,
        "error_code": None,
        "fingerprint": "0" * 64,
        "partner_datetime": at,
        "processed_at": at,
        "request_json": "{}",
        "response_json": "{}",
        "calculation_json": None,
    }


def _line(ident: str, miles: int, at: datetime, pending: bool) -> dict[str, Any]:
    return {
        "transaction_id": ident,
        "line_no": 1,
        "direction": Direction.CREDIT,
        "offer_code": "STANDARD",
        "location_code": None,
        "miles": miles,
        "status": LineStatus.PENDING if pending else LineStatus.POSTED,
        "pending_reason": PendingReason.REVIEW if pending else None,
        "error_code": None,
        "settled_at": None if pending else at,
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    port: int, values: dict[str, str], requests: int, target: str, transactions: int
) -> list[Measurement]:
    """Every page `requests` times, one at a time on one connection, in turn; a row each."""
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60, follow_redirects=False) as http:
        signed = http.post(
            "/console/sign-in",
            data={"email": EMAIL, "password": PASSWORD},
            headers={"Origin": base},
        )
        if signed.status_code != 303:
            raise BenchError(f"console: sign-in answered {signed.status_code}")
        pages = [(slug, path.format(**values), status) for slug, path, status in PAGES]
        for _, path, _ in pages:  # warm up
            for _ in range(5):
                http.get(path)
        times: dict[str, list[float]] = {slug: [] for slug, _, _ in pages}
        failures = dict.fromkeys(times, 0)
        for _ in range(requests):
            for slug, path, status in pages:
                began = time.perf_counter()
                response = http.get(path)
                times[slug].append((time.perf_counter() - began) * 1000)
                if response.status_code != status:
                    failures[slug] += 1
    rows = []
    for slug, path, status in pages:
        samples = times[slug]
        p95 = _percentile(samples, 0.95)
        m = Measurement(
            id=f"{'pg' if target == 'PostgreSQL' else 'sqlite'}-console-{slug}",
            kind="rewardmiles",
            title=f"(i) console page {slug} ({transactions:,} transactions)",
            target=target,
            processes=1,
            concurrency=1,
            tool="httpx",
            rps=round(len(samples) / (sum(samples) / 1000), 1),
            p50_ms=round(statistics.median(samples), 2),
            p99_ms=round(_percentile(samples, 0.99), 2),
            max_ms=round(max(samples), 2),
            non_2xx=failures[slug],
            requests=len(samples),
            detail={"path": path, "p95_ms": round(p95, 2), "p95_ms_max": P95_MS_MAX},
        )
        if p95 > P95_MS_MAX:
            m.notes.append(f"p95 {p95:.1f} ms is above the {P95_MS_MAX:.0f} ms this row promises")
        if failures[slug]:
            m.notes.append(f"{failures[slug]} answers were not {status}")
        rows.append(m)
        log(
            f"console {target} {slug}: p50 {m.p50_ms} ms  p95 {p95:.1f} ms  p99 {m.p99_ms} ms  "
            f"max {m.max_ms} ms"
        )
    return rows


def run(
    url: str, target: str, requests: int, transactions: int = TRANSACTIONS
) -> tuple[list[Measurement], dict[str, str]]:
    """The (i) rows on `url`, an empty database seeded first; and the seed's values."""
    values = seed(url, transactions)
    with serving(f"console-{target.lower()}", url, 1) as server:
        rows = measure(server.port, values, requests, target, transactions)
    verify_ledger(url, f"{target} console")
    return rows, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    parser.add_argument("--requests", type=int, default=100, help="GETs of each page")
    parser.add_argument("--transactions", type=int, default=TRANSACTIONS)
    args = parser.parse_args(argv)
    SCRATCH.mkdir(exist_ok=True)
    url = args.database_url
    if url is None:
        path = SCRATCH / f"console-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
    target = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
    rows, _ = run(url, target, args.requests, args.transactions)
    failed = [m for m in rows if m.notes or m.non_2xx]
    for m in rows:
        sys.stdout.write(
            f"| {m.title} | {m.target} | {m.requests} | {m.p50_ms} | {m.detail['p95_ms']} | "
            f"{m.p99_ms} | {m.max_ms} |\n"
        )
    if url.startswith("sqlite:///") and args.database_url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
