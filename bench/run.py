"""The rewardmiles benchmark harness: database ceiling, HTTP ceiling and the service, side by side.

    .venv/bin/python -m bench.run            # full run, a few minutes
    .venv/bin/python -m bench.run --quick    # smoke run, about a minute

One run, on this machine, measures:

1. the load generator's own ceiling (bench/loadgen.py against bench/rawserver.py; wrk too when
   installed) — the generator must not be the bottleneck;
2. the HTTP ceiling: the service's server stack (create_app, uvicorn as `rewardmiles serve` runs
   it) answering a no-op POST (bench/noop_server.py) with the POST/EVENT request;
3. two database ceilings, pgbench on throwaway databases with the real schema (migrated by the
   CLI), each doing the SQL work of one POST/EVENT: bench/pgbench_issue.sql as separate
   statements in a transaction (6 round trips: the general unit of work, which every POST/EVENT
   ran before the one-statement path and which it still falls back to) and
   bench/pgbench_issue_one_statement.sql as the one statement the service now sends (1 round
   trip, autocommit; generated from the service's statement by bench/pgbench_one_statement.py);
4. rewardmiles itself (`rewardmiles serve`, a real process): PostgreSQL with 1 and 2 API
   processes (the better one runs every scenario) and SQLite with 1 — (a) POST/EVENT with unique
   keys over many collectors, (b) over 10 hot collectors, (c) 50/50 POST/EVENT and REVERSE/EVENT
   of an acknowledged issue, (d) replays of completed keys.

Each rewardmiles row is given as a ratio to both database ceilings and to the HTTP ceiling. The
SQL the service sends for one request is captured in process on every run (bench/capture_sql.py,
both ways to the database) and compared with the two pgbench scripts.

Every rewardmiles database ends with `rewardmiles ledger verify` (the run fails loudly if it does
not pass); durability settings are left as they are. Results: a Markdown table on stdout and in
bench/results/latest.md, everything in bench/results/latest.json; with py-spy installed, a profile
of the unique-keys scenario on PostgreSQL (bench/results/profile.txt and profile.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python bench/…): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import pgbench_one_statement, pyspy_summary
from rewardmiles.db.engine import STATEMENT_POOL_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRATCH = ROOT / ".bench"  # ignored by git
# The database ceilings: the SQL work of one POST/EVENT as separate statements (the general unit
# of work) and as the service's one statement.
PGBENCH_SCRIPT = BENCH / "pgbench_issue.sql"
PGBENCH_ONE_STATEMENT = pgbench_one_statement.SCRIPT
# (id prefix, script) of each ceiling; the ids of the separate-statements rows are unchanged.
PGBENCH_SCRIPTS = {"pgbench": PGBENCH_SCRIPT, "pgbench-one": PGBENCH_ONE_STATEMENT}
# The captured requests each script must mirror (bench/capture_sql.py names them).
SCRIPT_MIRRORS = {
    PGBENCH_ONE_STATEMENT: "POST/EVENT",
    PGBENCH_SCRIPT: "POST/EVENT, one-statement path off",
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
CLK_TCK = os.sysconf("SC_CLK_TCK")
BACKEND = re.compile(r"\(\d+\)|\[local\]")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
NCPU = os.cpu_count() or 1

SCENARIOS: dict[str, dict[str, Any]] = {
    "a": {"mode": "issue", "hot": False, "title": "(a) POST/EVENT, unique keys, many collectors"},
    "b": {"mode": "issue", "hot": True, "title": "(b) POST/EVENT, unique keys, 10 hot collectors"},
    "c": {"mode": "mix", "hot": False, "title": "(c) 50/50 POST/EVENT + REVERSE/EVENT of it"},
    "d": {"mode": "replay", "hot": False, "title": "(d) replays of completed keys"},
}


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- /proc sampling


def _read_stat(pid: str) -> tuple[int, str, int, int] | None:
    """(ppid, comm, cpu ticks, rss pages) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    close = raw.rfind(b")")
    comm = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
    rest = raw[close + 2 :].split()
    return int(rest[1]), comm, int(rest[11]) + int(rest[12]), int(rest[21])


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _tree(root: int, children: dict[int, list[int]]) -> set[int]:
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


class Sampler(threading.Thread):
    """Samples CPU time of the server tree, the generator tree, PostgreSQL and the machine, and
    the server tree's RSS, every `interval` seconds (from /proc)."""

    GROUPS = ("server", "generator", "postgres", "harness")

    # Set by the harness: PostgreSQL backends of other databases (other sessions' tests on the
    # same server) are not ours; the server's shared processes (WAL writer, checkpointer…) are.
    database_mark: str | None = None

    def __init__(self, server_pid: int | None = None, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self._pg_ours: dict[int, bool] = {}
        self.generator_pid: int | None = None
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int], int, int]] = []
        self.rss_peak = 0
        self._last: dict[str, dict[int, int]] = {g: {} for g in self.GROUPS}
        self._stop_event = threading.Event()

    def snapshot(self) -> None:
        stats: dict[int, tuple[int, str, int, int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _read_stat(name)
                if stat is not None:
                    stats[int(name)] = stat
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in stats.items():
            children.setdefault(ppid, []).append(pid)
        members = {
            "server": _tree(self.server_pid, children) if self.server_pid else set(),
            "generator": _tree(self.generator_pid, children) if self.generator_pid else set(),
            "postgres": {pid for pid, s in stats.items() if s[1] == "postgres" and self._ours(pid)},
            "harness": {os.getpid()},
        }
        for group, pids in members.items():
            last = self._last[group]
            for pid in pids:
                if pid in stats:
                    last[pid] = stats[pid][2]
        rss = sum(stats[p][3] for p in members["server"] if p in stats) * PAGE_SIZE
        self.rss_peak = max(self.rss_peak, rss)
        busy, total = _machine_ticks()
        totals = {g: sum(v.values()) for g, v in self._last.items()}
        self.samples.append((time.monotonic(), totals, busy, total))

    def _ours(self, pid: int) -> bool:
        known = self._pg_ours.get(pid)
        if known is not None:
            return known
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        mark = self.database_mark
        if mark is None or mark in cmdline:
            ours = True
        else:  # a backend or autovacuum worker of another database is someone else's
            ours = not (BACKEND.search(cmdline) or "autovacuum worker" in cmdline)
        self._pg_ours[pid] = ours
        return ours

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.snapshot()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.snapshot()

    def usage(self, start: float, end: float) -> dict[str, float]:
        """CPU % of one core per group over [start, end] (nearest samples), and the rest of the
        machine's busy time ("other": processes that are not part of the measurement)."""
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        a, b = before[-1], after[0]
        seconds = b[0] - a[0]
        if seconds <= 0:
            return {}
        out = {g: 100 * (b[1][g] - a[1][g]) / CLK_TCK / seconds for g in self.GROUPS}
        machine = 100 * NCPU * (b[2] - a[2]) / max(b[3] - a[3], 1)
        out["machine"] = machine
        out["other"] = max(0.0, machine - sum(out[g] for g in self.GROUPS))
        return {k: round(v, 1) for k, v in out.items()}


def machine_busy(seconds: float) -> float:
    """Busy % of the whole machine (0–100) over `seconds`."""
    b0, t0 = _machine_ticks()
    time.sleep(seconds)
    b1, t1 = _machine_ticks()
    return 100 * (b1 - b0) / max(t1 - t0, 1)


def wait_for_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to `max_wait` s) until the machine is below `threshold` % busy; return the last
    reading. Other sessions' test suites share these cores: starting in a burst skews a run."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy(0.5)
    while busy > threshold and time.monotonic() < deadline:
        time.sleep(1.0)
        busy = machine_busy(0.5)
    return round(busy, 1)


# --------------------------------------------------------------------------- processes


def src_fingerprint() -> str:
    """Short hash of the service's source files (path, size, mtime): a server started after
    someone edited src/ runs other code than the rows before it."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted((ROOT / "src").rglob("*.py")):
        with contextlib.suppress(OSError):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:10]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDMILES_")}
    env.update(SERVER_ENV)
    if database_url is not None:
        env["REWARDMILES_DATABASE_URL"] = database_url
    return env


def rewardmiles_cmd() -> list[str]:
    script = VENV_BIN / "rewardmiles"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rewardmiles"]


def cli(database_url: str, *args: str) -> str:
    proc = subprocess.run(
        [*rewardmiles_cmd(), *args],
        env=base_env(database_url),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"rewardmiles {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def http_request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """A server process we started (its own session, so its workers go with it)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.cmd, self.env, self.port = name, cmd, env, port
        self.log_path = SCRATCH / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.src = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, health_path: str = "/healthz", timeout: float = 180) -> Server:
        self.src = src_fingerprint()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                status, _ = http_request(f"http://127.0.0.1:{self.port}{health_path}")
                if status < 500:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"{self.name} did not answer within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def errors_since(self, offset: int, limit: int = 8) -> list[str]:
        """Error lines the server logged after `offset` (JSON error events, tracebacks, uvicorn's
        supervisor messages), the last `limit` of them, shortened."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        keep = [
            line
            for line in text.splitlines()
            if '"level": "error"' in line
            or '"level": "warning"' in line
            or line.startswith(("Traceback", "ERROR", "WARNING", "Child process"))
            or "Error:" in line
        ]
        return [line[:1500] for line in keep[-limit:]]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- databases


class Postgres:
    """Throwaway databases on one PostgreSQL server: one seeded template, cheap copies."""

    def __init__(self, admin_url: str, run_id: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.admin_url = admin_url
        self.prefix = f"rmbench_{run_id}"
        self.created: list[str] = []

    def url(self, name: str) -> str:
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    def _admin(self, sql: str) -> list[tuple[Any, ...]]:
        with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def create(self, suffix: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        clause = f" TEMPLATE {template}" if template else ""
        for attempt in range(10):
            try:
                self._admin(f"CREATE DATABASE {name}{clause}")
                break
            except self._psycopg.errors.ObjectInUse:  # autovacuum visiting the template
                if attempt == 9:
                    raise
                time.sleep(1)
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        for name in reversed(self.created):
            with contextlib.suppress(Exception):
                self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.created.clear()

    def info(self) -> dict[str, str]:
        names = (
            "server_version",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "shared_buffers",
            "max_connections",
        )
        return {n: str(self._admin(f"SHOW {n}")[0][0]) for n in names}


def write_collectors_csv(path: Path, count: int) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write("collectorNumber\n")
        for i in range(1, count + 1):
            fh.write(f"{COLLECTOR_BASE + i:011d}\n")


def seed(database_url: str, collectors_csv: Path) -> dict[str, str]:
    """Schema (the CLI migrates), sponsor BNCH with its STANDARD offer, one partner client, the
    enrolled collectors. Returns the client's credentials."""
    cli(database_url, "db", "upgrade")
    imported: list[str] = []
    failed: list[BaseException] = []

    def import_collectors() -> None:  # alongside the sponsor and client: independent rows
        try:
            imported.append(cli(database_url, "collector", "import", str(collectors_csv)))
        except BaseException as exc:
            failed.append(exc)

    importer = threading.Thread(target=import_collectors)
    importer.start()
    cli(database_url, "sponsor", "add", SPONSOR, "--name", "Benchmark sponsor")
    creds = json.loads(cli(database_url, "partner", "create", "--sponsor", SPONSOR, "--json"))
    importer.join()
    if failed:
        raise failed[0]
    if "invalid 0" not in imported[0]:
        raise BenchError(f"collector import: {imported[0]}")
    return {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "import": imported[0].strip(),
    }


def verify_ledger(database_url: str, label: str) -> str:
    proc = subprocess.run(
        [*rewardmiles_cmd(), "ledger", "verify"],
        env=base_env(database_url),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BenchError(f"LEDGER VERIFY FAILED on {label}:\n{text}")
    log(f"ledger verify {label}: {text.splitlines()[0] if text else 'ok'}")
    return text


# --------------------------------------------------------------------------- measurements


@dataclass
class Measurement:
    id: str
    kind: str  # generator | http | database | rewardmiles
    title: str
    target: str
    processes: int | None
    concurrency: int
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int = 0
    transport_errors: int = 0
    unexpected: int = 0
    requests: int = 0
    statuses: dict[str, Any] = field(default_factory=dict)
    server_rss_peak_mb: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    background_before_pct: float | None = None
    ratio_db: float | None = None  # to the separate-statements ceiling (pgbench_issue.sql)
    ratio_db_one_statement: float | None = None  # to pgbench_issue_one_statement.sql
    ratio_http: float | None = None
    ceiling_db: str | None = None
    ceiling_db_one_statement: str | None = None
    ceiling_http: str | None = None
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.measurements: list[Measurement] = []
        self.verifications: list[dict[str, str]] = []
        self.moment = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pg: Postgres | None = None
        self.creds: dict[str, str] = {}
        self.sqlite_creds: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.busy_streak = 0
        self.src_at_start = src_fingerprint()
        self.keep_logs: set[Path] = set()

    # ---------------------------------------------------------------- helpers

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
    ) -> tuple[dict[str, Any], dict[str, float], float, float | None]:
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
        result = json.loads(out.strip().splitlines()[-1])
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

    def from_loadgen(
        self,
        mid: str,
        kind: str,
        title: str,
        target: str,
        processes: int | None,
        run: tuple[dict[str, Any], dict[str, float], float, float | None],
        tool: str = "loadgen",
    ) -> Measurement:
        result, usage, rss_mb, background = run
        lat = result["latency_ms"]
        m = Measurement(
            id=mid,
            kind=kind,
            title=title,
            target=target,
            processes=processes,
            concurrency=result["concurrency"],
            tool=tool,
            rps=result["rps"],
            p50_ms=lat["p50"],
            p99_ms=lat["p99"],
            max_ms=lat["max"],
            non_2xx=result["non_2xx"],
            transport_errors=result["transport_errors"],
            unexpected=result["unexpected"],
            requests=result["requests"],
            statuses=result["by_kind"],
            server_rss_peak_mb=round(rss_mb, 1) if rss_mb else None,
            cpu=usage,
            background_before_pct=background,
            detail={
                "duration_s": result["duration_s"],
                "latency_ms": lat,
                "generator_cpu": result["cpu"],
                "error_samples": result["error_samples"],
                "prepared_requests": result["prepared_requests"],
            },
        )
        if result["unexpected"]:
            m.notes.append(f"{result['unexpected']} 2xx responses not as expected")
        if result["error_samples"]:
            m.notes.append("errors: " + " | ".join(result["error_samples"][:2]))
        return self.record(m)

    # ---------------------------------------------------------------- stages

    def prepare(self) -> None:
        SCRATCH.mkdir(exist_ok=True)
        csv = SCRATCH / f"collectors-{self.args.collectors}.csv"
        write_collectors_csv(csv, self.args.collectors)
        jobs: list[threading.Thread] = []
        errors: list[BaseException] = []

        def job(fn: Any) -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        if self.args.postgres:
            self.pg = Postgres(self.args.pg_url, self.run_id)
            Sampler.database_mark = self.pg.prefix
            template = self.pg.create("template")
            self.template = template

            def seed_pg() -> None:
                assert self.pg is not None
                self.creds = seed(self.pg.url(template), csv)

            jobs.append(threading.Thread(target=job, args=(seed_pg,)))
        if self.args.sqlite:
            self.sqlite_path = SCRATCH / f"rmbench_{self.run_id}.db"

            def seed_sqlite() -> None:
                self.sqlite_creds = seed(f"sqlite:///{self.sqlite_path}", csv)

            jobs.append(threading.Thread(target=job, args=(seed_sqlite,)))
        log(f"seeding databases ({self.args.collectors:,} collectors) …")
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()
        if errors:
            raise errors[0]

    def pg_copy(self, suffix: str) -> str:
        assert self.pg is not None
        return self.pg.url(self.pg.create(suffix, template=self.template))

    def token(self, port: int, creds: dict[str, str]) -> str:
        data = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
            }
        ).encode()
        status, body = http_request(
            f"http://127.0.0.1:{port}/oauth/token",
            data,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 200:
            raise BenchError(f"token request failed: {status} {body[:300]!r}")
        return str(json.loads(body)["access_token"])

    def capture_sql(self) -> None:
        url = self.pg_copy("capture")
        proc = subprocess.run(
            [
                sys.executable,
                "-W",
                "ignore",
                "-m",
                "bench.capture_sql",
                self.creds["client_id"],
                self.creds["client_secret"],
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
            self.extra["sql"] = {"error": proc.stderr[-3000:]}
            return
        self.extra["sql"] = json.loads(proc.stdout.strip().splitlines()[-1])
        self.extra["sql"]["pgbench_scripts"], mismatches = compare_scripts(
            self.extra["sql"]["requests"]
        )
        if mismatches:
            self.extra["sql"]["pgbench_mismatches"] = mismatches
            for mismatch in mismatches:
                log(f"WARNING: {mismatch}")
        bad = [r["request"] for r in self.extra["sql"]["requests"] if r["status"] not in (200, 202)]
        if bad:
            log(f"WARNING: SQL capture got no success for {', '.join(bad)}")
        counts = ", ".join(
            f"{r['request']} {r['round_trips']} round trips" for r in self.extra["sql"]["requests"]
        )
        log(f"captured SQL: {counts}")
        self.verifications.append({"database": "capture", "result": verify_ledger(url, "capture")})

    def generator_ceiling(self) -> None:
        port = free_port()
        raw = Server(
            "rawserver",
            [sys.executable, "-m", "bench.rawserver", "--port", str(port)],
            base_env(),
            port,
        )
        with running(raw):
            run = self.loadgen(
                port, "noop", self.args.concurrency, path="/noop", server_pid=raw.pid
            )
            self.from_loadgen(
                f"gen-raw-c{self.args.concurrency}",
                "generator",
                "load generator → fixed responder",
                "bench/rawserver.py",
                1,
                run,
            )
            if self.args.wrk and shutil.which("wrk"):
                self.wrk(
                    port,
                    "/noop",
                    "",
                    "gen-raw-wrk",
                    "wrk → fixed responder",
                    "bench/rawserver.py",
                    1,
                    raw.pid,
                )

    def wrk(
        self,
        port: int,
        path: str,
        token: str,
        mid: str,
        title: str,
        target: str,
        processes: int,
        server_pid: int,
    ) -> Measurement:
        body = (
            '{"clientTransactionId":"wrk-1","collectorNumber":"80000000001","sponsorCode":"BNCH",'
            f'"transactionDateTime":"{self.moment}","issuances":[{{"issuanceOfferCode":"STANDARD",'
            '"milesAmount":5}]}'
        )
        script = SCRATCH / "wrk_post.lua"
        headers = {"Content-Type": "application/json", "Idempotency-Key": "wrk-1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body)}\n"
            + "".join(f'wrk.headers["{k}"] = {json.dumps(v)}\n' for k, v in headers.items())
        )
        seconds = max(1, round(self.args.duration))
        background = self.quiet()
        sampler = Sampler(server_pid)
        sampler.start()
        proc = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{self.args.concurrency}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{path}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sampler.generator_pid = proc.pid
        started = time.monotonic()
        out, _ = proc.communicate(timeout=seconds + 60)
        ended = time.monotonic()
        sampler.stop()
        parsed = parse_wrk(out)
        m = Measurement(
            id=mid,
            kind="generator" if target.startswith("bench/raw") else "http",
            title=title,
            target=target,
            processes=processes,
            concurrency=self.args.concurrency,
            tool="wrk",
            rps=parsed["rps"],
            p50_ms=parsed["p50_ms"],
            p99_ms=parsed["p99_ms"],
            max_ms=parsed["max_ms"],
            non_2xx=parsed["non_2xx"],
            transport_errors=parsed["socket_errors"],
            requests=parsed["requests"],
            server_rss_peak_mb=round(sampler.rss_peak / 2**20, 1),
            cpu=sampler.usage(started + 0.5, ended - 0.2),
            background_before_pct=background,
            notes=["wrk has no warm-up: the whole run counts"],
            detail={"wrk_output": out},
        )
        return self.record(m)

    def http_ceiling(self) -> None:
        url = self.pg_copy("noop") if self.pg else f"sqlite:///{self.sqlite_path}"
        for workers in sorted(set(self.args.pg_workers) | {1}) if self.pg else [1]:
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "bench.noop_server",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ]
            noop = Server(f"noop-w{workers}", cmd, base_env(url), port)
            with running(noop):
                c = self.args.concurrency
                run = self.loadgen(
                    port, "noop", c, token="bench", path="/checkout/bench/noop", server_pid=noop.pid
                )
                self.from_loadgen(
                    f"http-w{workers}-c{c}",
                    "http",
                    "HTTP ceiling: no-op POST, same stack",
                    "bench/noop_server.py",
                    workers,
                    run,
                )
                if workers == 1 and self.args.latency_floor:
                    run = self.loadgen(
                        port,
                        "noop",
                        1,
                        token="bench",
                        path="/checkout/bench/noop",
                        server_pid=noop.pid,
                    )
                    self.from_loadgen(
                        "http-w1-c1",
                        "http",
                        "HTTP ceiling: no-op POST, same stack",
                        "bench/noop_server.py",
                        1,
                        run,
                    )
                if workers == 1 and self.args.wrk and shutil.which("wrk"):
                    self.wrk(
                        port,
                        "/checkout/bench/noop",
                        "bench",
                        f"http-w1-c{c}-wrk",
                        "HTTP ceiling (wrk): no-op POST, same stack",
                        "bench/noop_server.py",
                        1,
                        noop.pid,
                    )

    def pgbench(self) -> None:
        """Both database ceilings, each on its own copy of the seeded database, their rows
        interleaved (same collectors and concurrency one after the other) so that a change of
        the machine's load between rows weighs on both alike."""
        if shutil.which("pgbench") is None:
            log("pgbench not found: no database ceiling")
            return
        urls = {prefix: self.pg_copy(prefix.replace("-", "_")) for prefix in PGBENCH_SCRIPTS}
        runs = [
            ("many", self.args.collectors, self.args.concurrency),
            ("hot", HOT_COLLECTORS, self.args.concurrency),
        ]
        if self.args.latency_floor:
            runs.append(("many", self.args.collectors, 1))
        seq = 0
        for label, collectors, clients in runs:
            for prefix, script in PGBENCH_SCRIPTS.items():
                seq += 1
                self.pgbench_once(urls[prefix], prefix, script, label, collectors, clients, seq)
        for prefix, url in urls.items():
            self.verifications.append(
                {"database": prefix.replace("-", "_"), "result": verify_ledger(url, prefix)}
            )

    def pgbench_once(
        self,
        url: str,
        id_prefix: str,
        script: Path,
        label: str,
        collectors: int,
        clients: int,
        seq: int,
    ) -> None:
        variables = [f"collectors={collectors}", "seq=0"]
        env = None
        if script == PGBENCH_ONE_STATEMENT:  # the statement checks the reference-data version
            variables.append(f"version={reference_version(url)}")
            # and runs with its generic plan, as on the service's statement pool
            env = {**os.environ, "PGOPTIONS": STATEMENT_POOL_OPTIONS}

        def command(seconds: float, run: int, log_prefix: Path | None) -> list[str]:
            cmd = [
                "pgbench",
                "-n",
                "-c",
                str(clients),
                "-j",
                str(min(2, clients)),
                "-T",
                str(max(1, round(seconds))),
                "-M",
                "prepared",
                "-r",
                "-f",
                str(script),
                "-D",
                f"run={run}",
            ]
            for variable in variables:
                cmd += ["-D", variable]
            if log_prefix is not None:
                cmd += ["-l", f"--log-prefix={log_prefix}"]
            return [*cmd, url]

        base_run = int(self.run_id, 16) % 100_000 * 100 + seq * 10
        warm = subprocess.run(
            command(self.args.warmup, base_run, None),
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if warm.returncode != 0:
            raise BenchError(f"pgbench warm-up failed:\n{warm.stdout}{warm.stderr}")
        prefix = SCRATCH / f"pgbench-{self.run_id}-{seq}"
        background = self.quiet()
        sampler = Sampler(None)
        sampler.start()
        cmd = command(self.args.duration, base_run + 1, prefix)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        sampler.generator_pid = proc.pid
        started = time.monotonic()
        out, _ = proc.communicate(timeout=self.args.duration + 120)
        ended = time.monotonic()
        sampler.stop()
        if proc.returncode != 0:
            raise BenchError(f"pgbench failed:\n{out}")
        parsed = parse_pgbench(out)
        latencies: list[float] = []
        for path in SCRATCH.glob(f"{prefix.name}.*"):
            with open(path, encoding="ascii") as fh:
                latencies.extend(int(line.split()[2]) / 1000 for line in fh if line.strip())
            if not self.args.keep:
                path.unlink()
        latencies.sort()
        m = Measurement(
            id=f"{id_prefix}-{label}-c{clients}",
            kind="database",
            title=f"DB ceiling: pgbench, {ceiling_name(script)}, {collectors:,} collectors",
            target="PostgreSQL",
            processes=None,
            concurrency=clients,
            tool="pgbench",
            rps=round(parsed["tps"], 1),
            p50_ms=round(pct(latencies, 0.5), 3),
            p99_ms=round(pct(latencies, 0.99), 3),
            max_ms=round(latencies[-1], 3) if latencies else math.nan,
            non_2xx=parsed["failed"],
            requests=parsed["transactions"],
            cpu=sampler.usage(started + 0.3, ended - 0.1),
            background_before_pct=background,
            detail={
                "command": " ".join(cmd),
                "script": str(script.relative_to(ROOT)),
                "latency_average_ms": parsed["latency_avg_ms"],
                "statements_ms": parsed["statements"],
            },
        )
        m.notes.append("errors column: failed transactions")
        self.record(m)

    def rewardmiles_pg(self) -> None:
        c = self.args.concurrency
        candidates = self.args.pg_workers
        per_workers: dict[int, tuple[str, float]] = {}
        for workers in candidates:
            url = self.pg_copy(f"pg_w{workers}")
            server = self.serve(f"pg-w{workers}", url, workers)
            with running(server):
                token = self.token(server.port, self.creds)
                m = self.scenario(server, token, "a", c, "PostgreSQL", workers)
                ok = sum(n for s, n in m.statuses.get("issue", {}).items() if s.startswith("2"))
                per_workers[workers] = (url, round(ok / m.detail["duration_s"], 1))
                if self.args.latency_floor:
                    self.scenario(server, token, "a", 1, "PostgreSQL", workers)
                if len(candidates) == 1:  # nothing to choose: the other scenarios right away
                    for key in ("b", "c", "d"):
                        self.scenario(server, token, key, c, "PostgreSQL", workers)
            self.verifications.append(
                {
                    "database": f"pg_w{workers}",
                    "result": verify_ledger(url, f"PostgreSQL w{workers}"),
                }
            )
        # Only answers that worked count: a configuration that fails fast is not the faster one.
        best = max(per_workers, key=lambda w: per_workers[w][1])
        self.extra["pg_workers"] = {
            "candidates": {str(w): rps for w, (_, rps) in per_workers.items()},
            "chosen": best,
        }
        if len(per_workers) == 1:
            return
        log(f"PostgreSQL: {best} API process(es) chosen for the other scenarios")
        url = per_workers[best][0]
        server = self.serve(f"pg-w{best}-b", url, best)
        with running(server):
            token = self.token(server.port, self.creds)
            for key in ("b", "c", "d"):
                self.scenario(server, token, key, c, "PostgreSQL", best)
        self.verifications.append(
            {"database": f"pg_w{best}", "result": verify_ledger(url, f"PostgreSQL w{best}")}
        )

    def rewardmiles_sqlite(self) -> None:
        url = f"sqlite:///{self.sqlite_path}"
        server = self.serve("sqlite", url, 1)
        c = self.args.concurrency
        with running(server):
            token = self.token(server.port, self.sqlite_creds)
            self.scenario(server, token, "a", c, "SQLite", 1)
            if self.args.latency_floor:
                self.scenario(server, token, "a", 1, "SQLite", 1)
            for key in ("b", "c", "d"):
                self.scenario(server, token, key, c, "SQLite", 1)
        self.verifications.append({"database": "sqlite", "result": verify_ledger(url, "SQLite")})

    def serve(self, name: str, url: str, workers: int) -> Server:
        port = free_port()
        cmd = [*rewardmiles_cmd(), "serve", "--port", str(port), "--workers", str(workers)]
        return Server(name, cmd, base_env(url), port)

    def scenario(
        self, server: Server, token: str, key: str, concurrency: int, target: str, workers: int
    ) -> Measurement:
        spec = SCENARIOS[key]
        offset = server.log_size()
        run = self.loadgen(
            server.port,
            spec["mode"],
            concurrency,
            token=token,
            hot=spec["hot"],
            server_pid=server.pid,
        )
        db = "pg" if target == "PostgreSQL" else "sqlite"
        m = self.from_loadgen(
            f"{db}-w{workers}-{key}-c{concurrency}",
            "rewardmiles",
            spec["title"],
            target,
            workers,
            run,
        )
        m.detail["src"] = server.src
        if server.src != self.src_at_start:
            m.notes.append(f"src/ changed since the run started (server code {server.src})")
        if m.non_2xx or m.transport_errors:
            m.detail["server_errors"] = server.errors_since(offset)
            self.keep_logs.add(server.log_path)
            log(f"{m.id}: errors — server log kept: {server.log_path}")
            for line in m.detail["server_errors"][-3:]:
                log(f"  {line[:300]}")
        return m

    def profile(self) -> None:
        pyspy = shutil.which("py-spy") or (
            str(VENV_BIN / "py-spy") if (VENV_BIN / "py-spy").exists() else None
        )
        if pyspy is None:
            log("py-spy not installed: no profile (pip install py-spy)")
            return
        url = self.pg_copy("profile")
        server = self.serve("profile-pg-w1", url, 1)
        results = Path(self.args.output_dir)
        raw_path = results / "profile.txt"
        seconds = max(5, round(self.args.duration))
        with running(server):
            token = self.token(server.port, self.creds)
            cfg_warmup = self.args.warmup
            holder: dict[str, Any] = {}

            def load() -> None:
                holder["run"] = self.loadgen(
                    server.port,
                    "issue",
                    self.args.concurrency,
                    token=token,
                    server_pid=server.pid,
                    warmup=cfg_warmup,
                    duration=seconds + 2,
                    wait_quiet=False,
                )

            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(cfg_warmup + 1.0)
            cmd = [
                pyspy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--gil",
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(raw_path),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            thread.join()
        self.verifications.append({"database": "profile", "result": verify_ledger(url, "profile")})
        if proc.returncode != 0 or not raw_path.exists():
            log(f"py-spy failed (continuing): {proc.stderr[-1000:]}")
            self.extra["profile"] = {"error": proc.stderr[-2000:]}
            return
        summary = pyspy_summary.summarise(raw_path.read_text().splitlines())
        result = holder["run"][0]
        self.extra["profile"] = {
            "command": " ".join(cmd),
            "server": "rewardmiles serve --workers 1, PostgreSQL, scenario (a)",
            "load_rps_while_profiling": result["rps"],
            "summary": summary,
        }
        (results / "profile.md").write_text(
            "# py-spy profile: POST/EVENT, unique keys, PostgreSQL, 1 API process\n\n"
            f"`{' '.join(cmd)}` while the generator ran scenario (a) at concurrency "
            f"{self.args.concurrency} ({result['rps']:,.0f} req/s under the profiler). `--gil`: only "
            "samples of the thread holding the GIL, i.e. where the process spends its Python CPU.\n\n"
            + pyspy_summary.markdown(summary)
        )
        log(f"profile: {summary['samples']:,} samples → {raw_path}")

    # ---------------------------------------------------------------- ratios and output

    def ratios(self) -> None:
        by_id = {m.id: m for m in self.measurements}
        for m in self.measurements:
            if m.kind != "rewardmiles":
                continue
            hot = "-b-" in m.id and m.concurrency > 1
            suffix = f"{'hot' if hot else 'many'}-c{m.concurrency}"
            db_id, one_id = f"pgbench-{suffix}", f"pgbench-one-{suffix}"
            http_id = f"http-w{m.processes if m.concurrency > 1 else 1}-c{m.concurrency}"
            if db_id in by_id and by_id[db_id].rps:
                m.ratio_db = round(m.rps / by_id[db_id].rps, 3)
                m.ceiling_db = db_id
            if one_id in by_id and by_id[one_id].rps:
                m.ratio_db_one_statement = round(m.rps / by_id[one_id].rps, 3)
                m.ceiling_db_one_statement = one_id
            if http_id in by_id and by_id[http_id].rps:
                m.ratio_http = round(m.rps / by_id[http_id].rps, 3)
                m.ceiling_http = http_id

    def machine(self) -> dict[str, Any]:
        cpu_model = ""
        with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        mem_kb = 0
        with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
        versions = {}
        for package in (
            "fastapi",
            "starlette",
            "uvicorn",
            "uvloop",
            "httptools",
            "pydantic",
            "SQLAlchemy",
            "psycopg",
            "orjson",
            "structlog",
        ):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[package] = metadata.version(package)
        tools = {}
        for tool, flag in (("pgbench", "--version"), ("wrk", "-v"), ("py-spy", "--version")):
            path = shutil.which(tool) or (
                str(VENV_BIN / tool) if (VENV_BIN / tool).exists() else None
            )
            if path:
                out = subprocess.run([path, flag], capture_output=True, text=True, check=False)
                tools[tool] = (
                    (out.stdout or out.stderr).strip().splitlines()[0]
                    if (out.stdout or out.stderr)
                    else "?"
                )
        git = {}
        with contextlib.suppress(Exception):
            git["commit"] = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--", "src"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            git["src_uncommitted_files"] = str(
                len([line for line in status.splitlines() if line.strip()])
            )
        with open("/proc/loadavg", encoding="ascii") as fh:
            loadavg = fh.read().split()[:3]
        return {
            "cpu_model": cpu_model,
            "cores": NCPU,
            "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "postgresql": self.pg.info() if self.pg else None,
            "packages": versions,
            "tools": tools,
            "git": git,
            "load_average_at_start": loadavg,
        }


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]


def parse_pgbench(out: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {
        "tps": 0.0,
        "failed": 0,
        "transactions": 0,
        "latency_avg_ms": None,
        "statements": [],
    }
    in_statements = False
    for line in out.splitlines():
        text = line.strip()
        if text.startswith("tps ="):
            parsed["tps"] = float(text.split()[2])
        elif text.startswith("number of failed transactions:"):
            parsed["failed"] = int(text.split(":")[1].split()[0])
        elif text.startswith("number of transactions actually processed:"):
            parsed["transactions"] = int(text.split(":")[1].split("/")[0].split()[0])
        elif text.startswith("latency average ="):
            parsed["latency_avg_ms"] = float(text.split()[3])
        elif text.startswith("statement latencies"):
            in_statements = True
        elif in_statements and text:
            parts = text.split(None, 2)
            if len(parts) == 3 and not parts[2].startswith("\\"):
                with contextlib.suppress(ValueError):
                    parsed["statements"].append({"ms": float(parts[0]), "statement": parts[2]})
    return parsed


def _wrk_ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * factor, 3)
    return float(text)


def parse_wrk(out: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {
        "rps": 0.0,
        "p50_ms": math.nan,
        "p99_ms": math.nan,
        "max_ms": math.nan,
        "non_2xx": 0,
        "socket_errors": 0,
        "requests": 0,
    }
    for line in out.splitlines():
        text = line.strip()
        parts = text.split()
        if text.startswith("Requests/sec:"):
            parsed["rps"] = float(parts[1])
        elif (
            text.startswith("Latency")
            and len(parts) >= 4
            and not text.startswith("Latency Distribution")
        ):
            parsed["max_ms"] = _wrk_ms(parts[3])
        elif text.startswith("50%"):
            parsed["p50_ms"] = _wrk_ms(parts[1])
        elif text.startswith("99%"):
            parsed["p99_ms"] = _wrk_ms(parts[1])
        elif text.startswith("Non-2xx or 3xx responses:"):
            parsed["non_2xx"] = int(parts[-1])
        elif text.startswith("Socket errors:"):
            parsed["socket_errors"] = sum(
                int(p.rstrip(",")) for p in parts if p.rstrip(",").isdigit()
            )
        elif "requests in" in text:
            parsed["requests"] = int(parts[0])
    return parsed


# --------------------------------------------------------------------------- report


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def table(measurements: list[Measurement]) -> str:
    head = (
        "| row | measurement | target | procs | conc | req/s | p50 ms | p99 ms | max ms | non-2xx | "
        "transport err | server RSS peak MB | CPU % srv / pg / gen / other | "
        f"× DB ceiling ({ceiling_column(PGBENCH_SCRIPT)}) | "
        f"× DB ceiling ({ceiling_column(PGBENCH_ONE_STATEMENT)}) | × HTTP ceiling |"
    )
    lines = [head, "|" + "---|" * 16]
    for m in measurements:
        cpu = m.cpu
        cpu_text = (
            f"{_num(cpu.get('server'), 0)} / {_num(cpu.get('postgres'), 0)} / "
            f"{_num(cpu.get('generator'), 0)} / {_num(cpu.get('other'), 0)}"
            if cpu
            else "–"
        )
        title = f"{m.title} [{m.tool}]" if m.tool != "loadgen" else m.title
        db_ratios = []
        for ratio in (m.ratio_db, m.ratio_db_one_statement):
            text = _num(ratio, 2)
            db_ratios.append(f"({text})" if ratio is not None and m.target == "SQLite" else text)
        lines.append(
            f"| `{m.id}` | {title} | {m.target} | {m.processes or '–'} | {m.concurrency} | "
            f"{_num(m.rps, 0)} | "
            f"{_num(m.p50_ms)} | {_num(m.p99_ms)} | {_num(m.max_ms)} | {m.non_2xx} | "
            f"{m.transport_errors} | {_num(m.server_rss_peak_mb, 0)} | {cpu_text} | "
            f"{db_ratios[0]} | {db_ratios[1]} | {_num(m.ratio_http, 2)} |"
        )
    return "\n".join(lines)


def render(h: Harness, machine: dict[str, Any], command: str, elapsed: float) -> str:
    a = h.args
    machine = {
        "cpu_model": "?",
        "cores": NCPU,
        "memory_gib": "?",
        "kernel": platform.release(),
        "load_average_at_start": ["?"],
        "python": platform.python_version(),
        "packages": {},
        "tools": {},
        "git": {},
        **machine,
    }
    pg = machine.get("postgresql") or {}
    out = [
        "# rewardmiles benchmark",
        "",
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {elapsed / 60:.1f} min. Command:",
        "",
        f"    {command}",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cores']} cores; RAM {machine['memory_gib']} GiB; "
        f"Linux {machine['kernel']}; load average at start {' '.join(machine['load_average_at_start'])}",
        f"- PostgreSQL {pg.get('server_version', '–')} (synchronous_commit={pg.get('synchronous_commit', '–')}, "
        f"fsync={pg.get('fsync', '–')}, wal_sync_method={pg.get('wal_sync_method', '–')}, "
        f"shared_buffers={pg.get('shared_buffers', '–')}), same machine, loopback",
        f"- Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        "- tools: " + "; ".join(f"{v}" for v in machine["tools"].values()),
        f"- code: commit {machine['git'].get('commit', '?')}, "
        f"{machine['git'].get('src_uncommitted_files', '?')} uncommitted file(s) under src/ "
        f"(source fingerprint {h.src_at_start}; rows whose server started on other code are "
        "noted)",
        "",
        "## Method",
        "",
        f"- Closed loop, {a.concurrency} connections (headline)"
        f"{' and 1 (latency floor)' if a.latency_floor else ''}; "
        f"{a.warmup:g} s warm-up excluded, then {a.duration:g} s measured per row. Load generator: "
        "bench/loadgen.py, a separate process (uvloop, raw HTTP/1.1 keep-alive sockets).",
        f"- Each request: one 5-mile STANDARD line, fresh Idempotency-Key and clientTransactionId, "
        f"collector drawn at random from {a.collectors:,} enrolled ACTIVE ones (10 for the hot "
        "rows). One partner client; its rate limit is raised so the limiter runs but never refuses "
        f"({', '.join(f'{k}={v}' for k, v in SERVER_ENV.items())}).",
        "- `rewardmiles serve --port P --workers N` as shipped (access log on, embedded settlement "
        "worker on); fresh databases copied from one seeded template; durability untouched.",
        "- CPU % is of one core over the measured window, sampled from /proc: the server's process "
        "tree, every PostgreSQL process, the generator, and **other** = the rest of the machine "
        "(other sessions' processes share these cores; a high value marks a noisy row).",
        "- Two database ceilings, pgbench doing the SQL work of one POST/EVENT on a copy of the "
        f"same seeded database: `{PGBENCH_SCRIPT.relative_to(ROOT)}` as separate statements in a "
        f"transaction ({ceiling_column(PGBENCH_SCRIPT)}: the general unit of work, which the "
        "service falls back to) and "
        f"`{PGBENCH_ONE_STATEMENT.relative_to(ROOT)}` as the service's one statement in "
        f"autocommit ({ceiling_column(PGBENCH_ONE_STATEMENT)}, one round trip: the path a "
        "POST/EVENT now takes). Their rows run one after the other at each concurrency.",
        f"- × DB ceiling ({ceiling_column(PGBENCH_SCRIPT)}) and × DB ceiling "
        f"({ceiling_column(PGBENCH_ONE_STATEMENT)}): req/s over that pgbench run's tps at the same "
        "concurrency (hot rows: the 10-collector runs; SQLite rows in parentheses, for scale "
        "only). × HTTP ceiling: over the no-op endpoint with the same number of API processes and "
        "concurrency.",
        "",
    ]
    failing = [
        m
        for m in h.measurements
        if m.kind == "rewardmiles" and (m.non_2xx or m.transport_errors or m.unexpected)
    ]
    if failing:
        out += ["## Warnings", ""]
        for m in failing:
            first = (m.detail.get("server_errors") or ["(no error line in the server log)"])[-1]
            out.append(
                f"- **{m.id}**: {m.non_2xx} non-2xx, {m.transport_errors} transport errors, "
                f"{m.unexpected} unexpected; statuses {json.dumps(m.statuses)}; server: "
                f"`{first[:400]}`"
            )
        out += [""]
    out += ["## Results", "", table(h.measurements), ""]
    notes = [f"- {m.id}: {'; '.join(m.notes)}" for m in h.measurements if m.notes]
    mixed = [
        m
        for m in h.measurements
        if len(m.statuses) > 1 or any(len(v) > 1 for v in m.statuses.values())
    ]
    notes += [f"- {m.id} statuses: {json.dumps(m.statuses)}" for m in mixed]
    noisy = [m.id for m in h.measurements if m.cpu.get("other", 0) > 30]
    if noisy:
        which = "every row" if len(noisy) == len(h.measurements) else ", ".join(noisy)
        notes.append(
            f"- noisy (other processes used > 30% of a core while measuring): {which}. Compare "
            "rows of one run with each other; re-run on a quiet machine for absolute numbers."
        )
    if notes:
        out += ["Notes:", "", *notes, ""]
    choice = h.extra.get("pg_workers")
    if choice:
        cands = ", ".join(
            f"{w} process(es): {_num(r, 0)} successful req/s"
            for w, r in choice["candidates"].items()
        )
        out += [
            "## API processes on PostgreSQL",
            "",
            f"Scenario (a) at concurrency {a.concurrency}: {cands}. Chosen for (b)–(d): "
            f"**{choice['chosen']}**.",
            "",
        ]
    out += generator_section(h)
    out += ["## Ledger verification", ""]
    out += [
        f"- {v['database']}: " + v["result"].splitlines()[-1]
        if v["result"]
        else f"- {v['database']}: ok"
        for v in h.verifications
    ]
    out += [""]
    out += sql_section(h)
    pgb = next(
        (
            m
            for m in h.measurements
            if m.id.startswith("pgbench-many") and m.concurrency == a.concurrency
        ),
        None,
    )
    if pgb and pgb.detail.get("statements_ms"):
        out += [
            f"## pgbench per-statement latency ({pgb.id}, {pgb.detail.get('script', '')}, ms)",
            "",
            "| ms | statement |",
            "|---|---|",
        ]
        out += [f"| {s['ms']:.3f} | `{s['statement'][:90]}` |" for s in pgb.detail["statements_ms"]]
        out += [""]
    prof = h.extra.get("profile")
    if prof and "summary" in prof:
        out += [
            "## Profile (py-spy, scenario (a), PostgreSQL, 1 API process)",
            "",
            f"See profile.md and profile.txt (collapsed stacks; open in speedscope). "
            f"`{prof['command']}`",
            "",
        ]
        out += pyspy_summary.group_table(prof["summary"])
        out += [
            "",
            "| # | function (own time) | group | own % | total % |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {i} | `{r['function']}` | {r['group']} | {r['own_pct']} | {r['total_pct']} |"
            for i, r in enumerate(prof["summary"]["top_own"], 1)
        ]
        out += [""]
    return "\n".join(out) + "\n"


def generator_section(h: Harness) -> list[str]:
    gen = [m for m in h.measurements if m.kind == "generator"]
    if not gen:
        return []
    best_rm = max(
        (m for m in h.measurements if m.kind == "rewardmiles"), key=lambda m: m.rps, default=None
    )
    lines = ["## Is the load generator the bottleneck?", ""]
    for m in gen:
        own = m.detail.get("generator_cpu", {})
        extra = (
            f", generator CPU {own.get('percent_of_one_core', m.cpu.get('generator', '–'))}% of a core ({own.get('us_per_request', '–')} µs/request)"
            if own
            else f", generator CPU {m.cpu.get('generator', '–')}% of a core"
        )
        lines.append(f"- {m.tool} → fixed responder: {m.rps:,.0f} req/s{extra}.")
    http = {m.id: m for m in h.measurements if m.kind == "http"}
    c = h.args.concurrency
    ours, theirs = http.get(f"http-w1-c{c}"), http.get(f"http-w1-c{c}-wrk")
    if ours and theirs:
        lines.append(
            f"- No-op endpoint, 1 process: loadgen {ours.rps:,.0f} req/s vs wrk {theirs.rps:,.0f} "
            "req/s — the server, not the generator, sets the HTTP ceiling."
        )
    if best_rm is not None:
        raw = next((m for m in gen if m.tool == "loadgen"), None)
        share = (
            f" ({100 * best_rm.rps / raw.rps:.0f}% of the generator's ceiling)"
            if raw and raw.rps
            else ""
        )
        cpu = best_rm.detail.get("generator_cpu", {})
        lines.append(
            f"- Fastest rewardmiles row: {best_rm.id} at {best_rm.rps:,.0f} req/s{share}; the "
            f"generator used {cpu.get('percent_of_one_core', '–')}% of one core there "
            f"({cpu.get('us_per_request', '–')} µs CPU per request)."
        )
    return [*lines, ""]


def pgbench_script_shape(path: Path) -> tuple[int, int]:
    """(round trips, SQL statements) of one transaction of a pgbench script: each SQL command
    (ended by `;`, or by `\\gset`/`\\aset`) is a round trip, except that a \\startpipeline …
    \\endpipeline block is one; BEGIN and END (COMMIT) are round trips, not statements of the
    work."""
    trips = statements = 0
    in_pipeline = False
    command: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        if stripped.startswith("\\startpipeline"):
            in_pipeline = True
            trips += 1
        elif stripped.startswith("\\endpipeline"):
            in_pipeline = False
        elif stripped.startswith("\\"):
            continue  # \set and other meta-commands run in pgbench, not in the database
        else:
            command.append(stripped)
            if stripped.endswith(";") or re.search(r"\\[ga]set\b", stripped):
                first = command[0].split(None, 1)[0].rstrip(";").upper()
                command = []
                trips += 0 if in_pipeline else 1
                if first not in ("BEGIN", "START", "END", "COMMIT"):
                    statements += 1
    return trips, statements


def ceiling_column(script: Path) -> str:
    """How a database ceiling is named in the report: by the shape of its script."""
    trips, statements = pgbench_script_shape(script)
    return "1 statement" if statements == 1 and trips == 1 else f"{trips} round trips"


def ceiling_name(script: Path) -> str:
    trips, statements = pgbench_script_shape(script)
    if statements == 1 and trips == 1:
        return "one statement"
    return f"separate statements, {trips} round trips"


def reference_version(url: str) -> int:
    """The database's reference-data version (the one-statement script checks it)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM reference_version WHERE id = 1").fetchone()
    if row is None:
        raise BenchError(f"no reference_version row in {url}")
    return int(row[0])


def service_shape(request: dict[str, Any]) -> tuple[int | None, int]:
    statements = sum(
        s.get("executemany") or 1
        for s in request["statements"]
        if s["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")
    )
    return request.get("round_trips"), statements


def compare_scripts(requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each pgbench script against the captured request it mirrors (`SCRIPT_MIRRORS`): round
    trips and statements, and for the one-statement script the statement's text. Returns what
    was compared and the mismatches (a ceiling that no longer does the service's work)."""
    by_name = {r["request"]: r for r in requests}
    compared: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for script, mirrors in SCRIPT_MIRRORS.items():
        script_trips, script_statements = pgbench_script_shape(script)
        entry: dict[str, Any] = {
            "script": str(script.relative_to(ROOT)),
            "round_trips": script_trips,
            "statements": script_statements,
            "mirrors": mirrors,
        }
        compared.append(entry)
        request = by_name.get(mirrors)
        if request is None:
            mismatches.append(f"no capture of {mirrors!r} to compare {script.name} with")
            continue
        trips, statements = service_shape(request)
        entry["service_round_trips"], entry["service_statements"] = trips, statements
        if (trips is not None and trips != script_trips) or statements != script_statements:
            mismatches.append(
                f"{script.name} makes {script_trips} round trip(s) with {script_statements} "
                f"statement(s); the service's {mirrors} now makes {trips} with {statements}. "
                "That database ceiling no longer mirrors the service: "
                + (
                    "see why the POST/EVENT did not take the one-statement path, or regenerate "
                    "the script (python -m bench.pgbench_one_statement) if the path changed."
                    if script == PGBENCH_ONE_STATEMENT
                    else "update the script from the statements above."
                )
            )
        if script == PGBENCH_ONE_STATEMENT:
            ones = [s["sql"] for s in request["statements"] if s.get("path") == "one statement"]
            if ones:
                drift = pgbench_one_statement.drift(ones[0], script)
                entry["same_statement_text"] = drift is None
                if drift is not None:
                    mismatches.append(drift)
    return compared, mismatches


def _statement_lines(request: dict[str, Any]) -> list[str]:
    out = []
    for i, s in enumerate(request["statements"], 1):
        many = f"  -- executemany × {s['executemany']}" if s.get("executemany") else ""
        path = s.get("path", "")
        if path == "one statement":
            name = f"{s['name']}, " if s.get("name") else ""
            many += f"  -- {name}one statement in autocommit (full text in latest.json)"
        out.append(f"{i}. `{s['sql'][:160]}{'…' if len(s['sql']) > 160 else ''}`{many}")
    return out


def sql_section(h: Harness) -> list[str]:
    sql = h.extra.get("sql")
    if not sql or "requests" not in sql:
        return []
    out = ["## SQL of one request (PostgreSQL, captured in process)", ""]
    if sql.get("one_statement_path") is False:
        out += ["The one-statement path was off in the captured process.", ""]
    for r in sql["requests"]:
        trips = r.get("round_trips")
        by_path = r.get("round_trips_by_path") or {}
        split = (
            ": " + " + ".join(f"{n} {path}" for path, n in by_path.items())
            if len(by_path) > 1
            else ""
        )
        trips_text = (
            f"**{trips} round trip{'' if trips == 1 else 's'}** on the wire (libpq trace{split}; "
            f"{r.get('round_trips_if_unpipelined', '?')} without pipelining)"
            if trips is not None
            else f"{r.get('round_trips_if_unpipelined', '?')} round trips (estimated)"
        )
        warn = "" if r["status"] in (200, 202) else " — **not a success: see latest.json**"
        paths = r.get("paths") or []
        commit = (
            "BEGIN and COMMIT included"
            if "unit of work" in paths
            else "autocommit: no BEGIN/COMMIT"
        )
        out.append(
            f"- {r['request']}: {r['status']}{' (replayed)' if r['replayed'] else ''}{warn}, "
            f"{' then '.join(paths) or '?'}: {r['executes']} "
            f"statement{'' if r['executes'] == 1 else 's'}, {trips_text}, {commit}"
        )
    mirrored = set(SCRIPT_MIRRORS.values())
    for r in sql["requests"]:
        if r["request"] in mirrored:
            out += ["", f"{r['request']}, in order:", "", *_statement_lines(r)]
    scripts = sql.get("pgbench_scripts") or []
    if scripts:
        out += ["", "The database ceilings against the requests they mirror:", ""]
        for c in scripts:
            service = (
                f"{c['service_round_trips']} round trip(s), {c['service_statements']} statement(s)"
                if "service_statements" in c
                else "not captured"
            )
            same = (
                "; same statement text"
                if c.get("same_statement_text")
                else "; statement text differs"
                if c.get("same_statement_text") is False
                else ""
            )
            out.append(
                f"- `{c['script']}`: {c['round_trips']} round trip(s), {c['statements']} "
                f"statement(s); the service's {c['mirrors']}: {service}{same}"
            )
    for mismatch in sql.get("pgbench_mismatches") or []:
        out += ["", f"**Warning:** {mismatch}"]
    return [*out, ""]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
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
    args = parser.parse_args(argv)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    started = time.monotonic()
    h = Harness(args)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    failure: str | None = None
    machine: dict[str, Any] = {}
    try:
        h.prepare()
        machine = h.machine()
        if args.postgres:
            h.capture_sql()
        h.generator_ceiling()
        h.http_ceiling()
        if args.postgres:
            h.pgbench()
            h.rewardmiles_pg()
        if args.sqlite:
            h.rewardmiles_sqlite()
        if args.postgres and args.profile:
            h.profile()
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        failure = str(exc)
        log(f"BENCHMARK FAILED: {failure}")
    except Exception as exc:  # a bug of the harness or of a library: still report what ran
        failure = "".join(traceback.format_exception(exc))
        log(f"BENCHMARK FAILED: {failure}")
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        if h.pg is not None and not args.keep:
            h.pg.drop_all()
        if not args.keep:
            for path in SCRATCH.glob("*"):
                if path in h.keep_logs:
                    continue
                if path.is_file() and (h.run_id in path.name or path.suffix in (".log", ".lua")):
                    with contextlib.suppress(OSError):
                        path.unlink()
    h.ratios()
    if not machine:
        try:
            machine = h.machine()
        except Exception as exc:  # the report still gets written
            machine = {"error": repr(exc)}
    elapsed = time.monotonic() - started
    text = render(h, machine, command, elapsed)
    if failure:
        text += f"\n**FAILED:** {failure}\n"
    results = Path(args.output_dir)
    (results / "latest.md").write_text(text)
    (results / "latest.json").write_text(
        json.dumps(
            {
                "command": command,
                "failed": failure,
                "elapsed_s": round(elapsed, 1),
                "settings": vars(args),
                "server_env": SERVER_ENV,
                "machine": machine,
                "measurements": [asdict(m) for m in h.measurements],
                "ledger_verification": h.verifications,
                **h.extra,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    sys.stdout.write(text)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
