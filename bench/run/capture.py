"""The SQL the service sends for one request, captured in process (bench/capture_sql.py) on a copy
of the seeded PostgreSQL database, and compared with the pgbench scripts of the ceilings."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.run.config import COLLECTOR_BASE, ROOT, SPONSOR, log
from bench.run.databases import verify_ledger
from bench.run.harness import Harness
from bench.run.processes import base_env
from bench.run.scripts import compare_scripts


def capture_sql(h: Harness) -> None:
    url = h.pg_copy("capture")
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-m",
            "bench.capture_sql",
            h.creds["client_id"],
            h.creds["client_secret"],
            SPONSOR,
            f"{COLLECTOR_BASE + 1:011d}",
        ],
        env={**base_env(url), "REWARDMILES_LOG_LEVEL": "warning"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        log(f"SQL capture failed (continuing): {proc.stderr[-1500:]}")
        h.extra["sql"] = {"error": proc.stderr[-3000:]}
        return
    h.extra["sql"] = sql = json.loads(proc.stdout.strip().splitlines()[-1])
    _compare(sql)
    h.verified("capture", verify_ledger(url, "capture"))


def _compare(sql: dict[str, Any]) -> None:
    """The pgbench scripts against the captured requests, into `sql`; what differs is logged."""
    sql["pgbench_scripts"], mismatches = compare_scripts(sql["requests"])
    if mismatches:
        sql["pgbench_mismatches"] = mismatches
        for mismatch in mismatches:
            log(f"WARNING: {mismatch}")
    bad = [r["request"] for r in sql["requests"] if r["status"] not in (200, 202)]
    if bad:
        log(f"WARNING: SQL capture got no success for {', '.join(bad)}")
    counts = ", ".join(f"{r['request']} {r['round_trips']} round trips" for r in sql["requests"])
    log(f"captured SQL: {counts}")
