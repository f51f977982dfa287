"""What every part of the harness shares: paths, the fixed data of the run, its error and log."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from bench import pgbench_one_statement

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "bench"
SCRATCH = ROOT / ".bench"  # ignored by git
# The database ceilings: the SQL work of one POST/EVENT as separate statements (the general unit
# of work) and as the service's one statement.
PGBENCH_SCRIPT = BENCH / "pgbench_issue.sql"
PGBENCH_ONE_STATEMENT = pgbench_one_statement.SCRIPT
# (id prefix, script) of each ceiling; the ids of the separate-statements rows are unchanged.
PGBENCH_SCRIPTS = {"pgbench": PGBENCH_SCRIPT, "pgbench-one": PGBENCH_ONE_STATEMENT}
# The SQL work of one REVERSE/EVENT of such a POST/EVENT (the unit of work, as the service sends it
# with the one-statement path off), standing alone on
# originals written beforehand, and in the 50/50 mix of scenario (c): the two scripts above and
# below, one call each in turn (written to SCRATCH by `ceilings.mix_script`).
PGBENCH_REVERSE = BENCH / "pgbench_reverse.sql"
# The captured requests each script must mirror (bench/capture_sql.py names them).
SCRIPT_MIRRORS = {
    PGBENCH_ONE_STATEMENT: "POST/EVENT",
    PGBENCH_SCRIPT: "POST/EVENT, one-statement path off",
    PGBENCH_REVERSE: "REVERSE/EVENT, one-statement path off",
}
VENV_BIN = Path(sys.executable).parent
SPONSOR = "BNCH"
COLLECTOR_BASE = 80_000_000_000
HOT_COLLECTORS = 10
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# One partner client sends all the load; the default per-client budget (200 req/s) would answer
# 429 to most of it. The limiter still runs on every request, it just never refuses.
# PostgreSQL is production mode: the stored secrets need a key-encryption key (a fixed one, for
# the benchmark's throwaway databases only).
SERVER_ENV = {
    "REWARDMILES_RATE_LIMIT_PER_SECOND": "1000000",
    "REWARDMILES_RATE_LIMIT_BURST": "1000000",
    "REWARDMILES_SECRET_KEY": "YmVuY2htYXJrLW9ubHkta2V5LW5vdC1hLXNlY3JldC0=",
}
NCPU = os.cpu_count() or 1


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def tool_path(name: str) -> str | None:
    """A tool on the PATH, or else in the virtualenv (py-spy is installed there)."""
    return shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
