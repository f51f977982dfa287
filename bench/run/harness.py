"""The state of one run (its settings, databases, rows, verifications) and the steps every stage
uses: waiting for a quiet machine, running the load generator under the sampler, recording a
row."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.run.config import COLLECTOR_BASE, HOT_COLLECTORS, ROOT, SCRATCH, SPONSOR, BenchError, log
from bench.run.databases import Postgres, seed, write_collectors_csv
from bench.run.measurement import LoadRun, Measurement
from bench.run.processes import src_fingerprint
from bench.run.sampler import Sampler, machine_busy, wait_for_quiet


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.measurements: list[Measurement] = []
        self.verifications: list[dict[str, str]] = []
        self.moment = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pg: Postgres | None = None
        self.template = ""  # the seeded PostgreSQL database the others are copied from
        self.sqlite_path: Path | None = None
        self.creds: dict[str, str] = {}
        self.sqlite_creds: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.busy_streak = 0
        self.src_at_start = src_fingerprint()
        self.keep_logs: set[Path] = set()

    @property
    def sqlite_url(self) -> str:
        assert self.sqlite_path is not None, "no SQLite database in this run"
        return f"sqlite:///{self.sqlite_path}"

    def verified(self, database: str, result: str) -> None:
        self.verifications.append({"database": database, "result": result})

    # ---------------------------------------------------------------- databases

    def prepare(self) -> None:
        """The seeded databases: PostgreSQL's template and SQLite's file, side by side."""
        SCRATCH.mkdir(exist_ok=True)
        csv = SCRATCH / f"collectors-{self.args.collectors}.csv"
        write_collectors_csv(csv, self.args.collectors)
        seeds: list[Callable[[], None]] = []
        if self.args.postgres:
            self.pg = Postgres(self.args.pg_url, self.run_id)
            Sampler.database_mark = self.pg.prefix
            self.template = self.pg.create("template")
            pg_url = self.pg.url(self.template)

            def seed_pg() -> None:
                self.creds = seed(pg_url, csv)

            seeds.append(seed_pg)
        if self.args.sqlite:
            self.sqlite_path = SCRATCH / f"rmbench_{self.run_id}.db"

            def seed_sqlite() -> None:
                self.sqlite_creds = seed(self.sqlite_url, csv)

            seeds.append(seed_sqlite)
        log(f"seeding databases ({self.args.collectors:,} collectors) …")
        in_parallel(seeds)

    def pg_copy(self, suffix: str) -> str:
        assert self.pg is not None
        return self.pg.url(self.pg.create(suffix, template=self.template))

    # ---------------------------------------------------------------- measuring

    def quiet(self) -> float | None:
        """Wait for a quiet machine before a row; after two waits in vain, only measure the
        background (waiting would just lengthen the run)."""
        if self.args.wait_idle <= 0 or self.busy_streak >= 2:
            return round(machine_busy(0.3), 1)
        busy = wait_for_quiet(self.args.wait_idle, self.args.idle_threshold)
        if busy > self.args.idle_threshold:
            self.busy_streak += 1
            log(f"machine still {busy}% busy (other processes) — measuring anyway")
            if self.busy_streak >= 2:
                log("the machine stays busy: no more waiting for quiet in this run")
        else:
            self.busy_streak = 0
        return busy

    def loadgen(
        self,
        port: int,
        mode: str,
        concurrency: int,
        *,
        token: str = "",
        path: str | None = None,
        hot: bool = False,
        server_pid: int | None = None,
        warmup: float | None = None,
        duration: float | None = None,
        wait_quiet: bool = True,
    ) -> LoadRun:
        cfg: dict[str, Any] = {
            "port": port,
            "scenario": mode,
            "token": token,
            "sponsor": SPONSOR,
            "collector_base": COLLECTOR_BASE,
            "collectors": HOT_COLLECTORS if hot else self.args.collectors,
            "concurrency": concurrency,
            "warmup": self.args.warmup if warmup is None else warmup,
            "duration": self.args.duration if duration is None else duration,
            "moment": self.moment,
            "run_id": uuid.uuid4().hex[:10],
        }
        if path is not None:
            cfg["path"] = path
        background = self.quiet() if wait_quiet else None
        sampler = Sampler(server_pid)
        sampler.start()
        result = run_loadgen(cfg, sampler)
        usage = sampler.usage(*result["window_monotonic"])
        return result, usage, sampler.rss_peak / 2**20, background

    def record(self, m: Measurement) -> Measurement:
        self.measurements.append(m)
        cpu = m.cpu
        log(
            f"{m.id}: {m.rps:,.0f} req/s  p50 {m.p50_ms:.1f} ms  p99 {m.p99_ms:.1f} ms  "
            f"max {m.max_ms:.1f} ms  non-2xx {m.non_2xx}  transport {m.transport_errors}  "
            f"cpu srv/pg/gen/other {cpu.get('server', 0):.0f}/{cpu.get('postgres', 0):.0f}/"
            f"{cpu.get('generator', 0):.0f}/{cpu.get('other', 0):.0f}%"
        )
        return m


def run_loadgen(cfg: dict[str, Any], sampler: Sampler) -> dict[str, Any]:
    """bench/loadgen.py with `cfg`, its process tree sampled as the generator's; its result.
    Stops the sampler."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", json.dumps(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler.generator_pid = proc.pid
    limit = cfg["warmup"] + cfg["duration"] + 180
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        sampler.stop()
        raise BenchError(f"load generator did not finish within {limit}s") from None
    sampler.stop()
    if proc.returncode != 0 or not out.strip():
        raise BenchError(f"load generator failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def in_parallel(jobs: list[Callable[[], None]]) -> None:
    """Run `jobs` each in a thread; raise the first error once all have ended."""
    errors: list[BaseException] = []

    def job(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(fn,)) for fn in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
