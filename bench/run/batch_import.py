"""(j) `rewardmiles batch import` of a partner log as big as the console's past: one record for
each of its transactions (`matched`: every record found in real time, its miles equal), then the
same number of records the program never saw (`missing_in_program`). Each import is the real
command in a process of its own; its wall time gives records per second, its high-water
mark its peak memory (RSS). The target: at least 20,000 records/s on PostgreSQL with RSS ≤ 300 MB.

The harness runs it on the console's database, after the (i) rows (`past_rows`), whose seed
(`bench.run.console`) the matched log mirrors record for record. Alone, on a database seeded by it:

    .venv/bin/python -m bench.run.batch_import --database-url postgresql://…/db
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.run import console
from bench.run.config import SCRATCH, BenchError, log
from bench.run.databases import verify_ledger
from bench.run.measurement import Measurement
from bench.run.processes import base_env, rewardmiles_cmd
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import LineStatus

RECORDS_PER_S_MIN = 20_000
TARGET_RECORDS = 1_000_000  # the log size the rate is promised for
RSS_MB_MAX = 300
HEADER = "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"


def write_logs(directory: Path, now: datetime, transactions: int) -> dict[str, Path]:
    """The two logs as CSV files in `directory`: `matched` names the console seed's transactions
    (same partner id, collector, miles and moment), `missing_in_program` as many unknown ones, on
    the days before the seed's (so the log lacks none of the program's transactions: the import
    writes one outcome per record in both)."""
    step = timedelta(days=console.DAYS) / transactions
    paths = {
        "matched": directory / "batch-matched.csv",
        "missing_in_program": directory / "batch-missing.csv",
    }
    with (
        paths["matched"].open("w", encoding="ascii") as matched,
        paths["missing_in_program"].open("w", encoding="ascii") as missing,
    ):
        matched.write(HEADER)
        missing.write(HEADER)
        for first in range(0, transactions, console.CHUNK):
            a: list[str] = []
            b: list[str] = []
            for i in range(first, min(first + console.CHUNK, transactions)):
                at = (now - step * (transactions - i)).isoformat(timespec="seconds")
                number = console._number(i % console.COLLECTORS)
                miles = 5 + i % 40
                a.append(f"POST/EVENT,c{i},{number},{at},{miles}\n")
                before = now - step * (transactions - i) - timedelta(days=console.DAYS + 2)
                b.append(
                    f"POST/EVENT,u{i},{number},{before.isoformat(timespec='seconds')},{miles}\n"
                )
            matched.write("".join(a))
            missing.write("".join(b))
    return paths


def import_log(url: str, path: Path) -> tuple[float, float, str]:
    """`rewardmiles batch import` of `path` (sponsor of the console seed): wall seconds, peak RSS
    in MB, and the command's summary line. The peak is the process's own high-water mark
    (`VmHWM`, which starts afresh at exec), read every 0.1 s while it runs: `wait4`'s figure would
    count the pages of the harness it was forked from."""
    began = time.monotonic()
    proc = subprocess.Popen(
        [*rewardmiles_cmd(), "batch", "import", str(path), "--sponsor", console.SPONSOR_CODE],
        env=base_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the progress bar
    )
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while True:
        try:
            out = proc.communicate(timeout=0.1)[0].decode()
            break
        except subprocess.TimeoutExpired:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, ValueError):  # it ended between the two calls
                pass
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise BenchError(f"batch import of {path.name} exited {proc.returncode}: {out[-2000:]}")
    return seconds, peak_kb / 1024, out.splitlines()[0] if out else ""


def run(url: str, target: str, now: datetime, transactions: int) -> list[Measurement]:
    """Both logs imported in turn on `url` (the console seed's database); a row each."""
    SCRATCH.mkdir(exist_ok=True)
    paths = write_logs(SCRATCH, now, transactions)
    # The console's server settles while the (i) rows run: a pending line of the seed's first day
    # can expire (rejected) by then, and its transaction's record is then an amount mismatch.
    changed = _rejected_since_seeded(url)
    rows = []
    try:
        for outcome, path in paths.items():
            seconds, rss_mb, summary = import_log(url, path)
            expected = f"{outcome} {transactions:,}"
            if outcome == "matched" and changed:
                expected = f"amount_mismatch {changed:,}, matched {transactions - changed:,}"
            rate = transactions / seconds
            m = Measurement(
                id=f"{'pg' if target == 'PostgreSQL' else 'sqlite'}-batch-{outcome}",
                kind="rewardmiles",
                title=f"(j) batch import, {transactions:,} records, every one {outcome}",
                target=target,
                processes=1,
                concurrency=1,
                tool="rewardmiles batch import",
                rps=round(rate),
                p50_ms=0.0,
                p99_ms=0.0,
                max_ms=0.0,
                requests=transactions,
                server_rss_peak_mb=round(rss_mb, 1),
                detail={
                    "seconds": round(seconds, 1),
                    "records_per_s": round(rate),
                    "records_per_s_min": RECORDS_PER_S_MIN,
                    "rss_mb_max": RSS_MB_MAX,
                    "summary": summary,
                },
            )
            if expected not in summary:
                m.notes.append(f"the import did not report {expected}: {summary}")
            # The target is a 1M-record log's: a quick run's smaller logs pay the command's
            # start (about 2 s of imports and connections) on fewer records.
            if (
                target == "PostgreSQL"
                and transactions >= TARGET_RECORDS
                and rate < RECORDS_PER_S_MIN
            ):
                m.notes.append(f"{rate:,.0f} records/s is below the {RECORDS_PER_S_MIN:,} promised")
            if rss_mb > RSS_MB_MAX:
                m.notes.append(f"peak RSS {rss_mb:.0f} MB is above the {RSS_MB_MAX} MB promised")
            log(
                f"batch import {target} {outcome}: {seconds:.1f} s, {rate:,.0f} records/s, "
                f"RSS {rss_mb:.0f} MB — {summary}"
            )
            rows.append(m)
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)
    verify_ledger(url, f"{target} batch import")
    return rows


def _rejected_since_seeded(url: str) -> int:
    """The seed's transactions with a rejected line (the seed writes none)."""
    db = Database.from_url(url)
    try:
        with db.reader() as session:
            return int(
                session.execute(
                    text(
                        "SELECT count(DISTINCT transaction_id) FROM issuance_lines"
                        " WHERE status = :rejected"
                    ),
                    {"rejected": LineStatus.REJECTED.value},
                ).scalar_one()
            )
    finally:
        db.dispose()


def past_rows(h: Any) -> None:
    """The harness's (i) and (j) rows, on one seeded database per target: SQLite on a file of its
    own; PostgreSQL on an empty database."""
    requests = 30 if h.args.quick else 200
    transactions = 100_000 if h.args.quick else console.TRANSACTIONS
    targets = []
    if h.args.sqlite:
        targets.append(("SQLite", f"sqlite:///{SCRATCH / f'console-{h.run_id}.db'}", "sqlite"))
    if h.args.postgres and h.pg is not None:
        targets.append(("PostgreSQL", h.pg.url(h.pg.create("console")), "pg"))
    for target, url, label in targets:
        rows, values = console.run(url, target, requests, transactions)
        rows += run(url, target, datetime.fromisoformat(values["now"]), transactions)
        for m in rows:
            h.record(m)
        h.verified(f"{label}_console", "ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an empty database, seeded here")
    parser.add_argument("--transactions", type=int, default=console.TRANSACTIONS)
    args = parser.parse_args(argv)
    target = "SQLite" if args.database_url.startswith("sqlite") else "PostgreSQL"
    values = console.seed(args.database_url, args.transactions)
    rows = run(args.database_url, target, datetime.fromisoformat(values["now"]), args.transactions)
    for m in rows:
        sys.stdout.write(
            f"| {m.title} | {m.target} | {m.detail['seconds']} s | {m.rps:,.0f} records/s | "
            f"{m.server_rss_peak_mb} MB | {'; '.join(m.notes) or 'ok'} |\n"
        )
    return 1 if any(m.notes for m in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
