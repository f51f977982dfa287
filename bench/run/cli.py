"""`python -m bench.run`: its options, and the run from the first stage to the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import bench.run
from bench.run import report
from bench.run.batch_import import past_rows
from bench.run.capture import capture_sql
from bench.run.ceilings import generator_ceiling, http_ceiling, pgbench
from bench.run.config import BENCH, DEFAULT_PG_URL, SCRATCH, BenchError, log
from bench.run.harness import Harness
from bench.run.history import history_rows
from bench.run.machine import describe
from bench.run.measurement import set_ratios
from bench.run.profiling import profile
from bench.run.scenarios import rewardmiles_pg, rewardmiles_sqlite


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, with the defaults that depend on --quick filled in."""
    args = _parser().parse_args(argv)
    quick = args.quick
    args.duration = args.duration if args.duration is not None else (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    args.wait_idle = args.wait_idle if args.wait_idle is not None else (0.0 if quick else 15.0)
    workers = args.pg_workers or ("1" if quick else "1,2")
    args.pg_workers = [int(w) for w in workers.split(",") if w.strip()]
    args.latency_floor = not quick
    if quick:
        args.profile = False
        args.wrk = False
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=bench.run.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (~1 min): short rows, fewer of them"
    )
    parser.add_argument(
        "--duration", type=float, help="measured seconds per row (default 10; quick 3)"
    )
    parser.add_argument("--warmup", type=float, help="warm-up seconds per row (default 3; quick 1)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="headline concurrency (default 16)"
    )
    parser.add_argument(
        "--collectors", type=int, default=10_000, help="enrolled collectors (default 10,000)"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("REWARDMILES_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="PostgreSQL admin URL; throwaway databases are created next to it "
        "(default $REWARDMILES_BENCH_POSTGRES_URL or " + DEFAULT_PG_URL + ")",
    )
    parser.add_argument(
        "--pg-workers", help="API process counts to compare on PostgreSQL (default 1,2; quick 1)"
    )
    parser.add_argument(
        "--no-postgres", dest="postgres", action="store_false", help="skip PostgreSQL (and pgbench)"
    )
    parser.add_argument("--no-sqlite", dest="sqlite", action="store_false", help="skip SQLite")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the py-spy profile"
    )
    parser.add_argument(
        "--no-wrk", dest="wrk", action="store_false", help="do not cross-check with wrk"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        help="wait up to S seconds for a quiet machine before each row (default 15; quick 0 = never)",
    )
    parser.add_argument(
        "--idle-threshold",
        type=float,
        default=15.0,
        help="machine busy %% counted as quiet (default 15)",
    )
    parser.add_argument(
        "--output-dir", default=str(BENCH / "results"), help="where latest.md/json go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases and scratch files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    started = time.monotonic()
    h = Harness(args)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    machine: dict[str, Any] = {}
    failure = run(h, machine)
    set_ratios(h.measurements)
    if not machine:
        try:
            machine = describe(h.pg)
        except Exception as exc:  # the report still gets written
            machine = {"error": repr(exc)}
    text = report.write(h, machine, command, time.monotonic() - started, failure)
    sys.stdout.write(text)
    return 1 if failure else 0


def run(h: Harness, machine: dict[str, Any]) -> str | None:
    """Every stage of the run, in order (`machine` gets the machine's description once the
    databases are ready); what failed, or None."""
    failure: str | None = None
    try:
        h.prepare()
        machine.update(describe(h.pg))
        stages(h)
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        failure = str(exc)
        log(f"BENCHMARK FAILED: {failure}")
    except Exception as exc:  # a bug of the harness or of a library: still report what ran
        failure = "".join(traceback.format_exception(exc))
        log(f"BENCHMARK FAILED: {failure}")
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        if not h.args.keep:
            clean_up(h)
    return failure


def stages(h: Harness) -> None:
    args = h.args
    if args.postgres:
        capture_sql(h)
    generator_ceiling(h)
    http_ceiling(h)
    if args.postgres:
        pgbench(h)
        rewardmiles_pg(h)
    if args.sqlite:
        rewardmiles_sqlite(h)
    history_rows(h)  # (h): a collector's ledger history, page 1 and page 200 of 100k entries
    past_rows(h)  # (i) every console page on 1M transactions; (j) a 1M-record log imported
    if args.postgres and args.profile:
        profile(h)


def clean_up(h: Harness) -> None:
    """The throwaway databases and this run's scratch files (server logs with errors stay)."""
    if h.pg is not None:
        h.pg.drop_all()
    for path in SCRATCH.glob("*"):
        if path in h.keep_logs:
            continue
        if path.is_file() and (h.run_id in path.name or path.suffix in (".log", ".lua")):
            with contextlib.suppress(OSError):
                path.unlink()
