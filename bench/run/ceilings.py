"""The ceilings each rewardmiles row is compared with: the load generator's own (against a fixed
responder), the HTTP stack's (a no-op POST) and the database's (pgbench doing the SQL work of one
POST/EVENT, in both forms)."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import free_port

from bench.run.config import (
    HOT_COLLECTORS,
    PGBENCH_ONE_STATEMENT,
    PGBENCH_REVERSE,
    PGBENCH_SCRIPT,
    PGBENCH_SCRIPTS,
    ROOT,
    SCRATCH,
    BenchError,
    log,
)
from bench.run.databases import reference_version, seed_originals, verify_ledger
from bench.run.harness import Harness
from bench.run.measurement import Measurement, from_loadgen, parse_pgbench, parse_wrk, pct
from bench.run.processes import base_env, running
from bench.run.sampler import Sampler
from bench.run.scripts import ceiling_name
from rewardmiles.db.engine import STATEMENT_POOL_OPTIONS

# ---------------------------------------------------------------- the load generator's ceiling


def generator_ceiling(h: Harness) -> None:
    port = free_port()
    command = [sys.executable, "-m", "bench.rawserver", "--port", str(port)]
    with running("rawserver", command, base_env(), port) as raw:
        run = h.loadgen(port, "noop", h.args.concurrency, path="/noop", server_pid=raw.pid)
        h.record(
            from_loadgen(
                f"gen-raw-c{h.args.concurrency}",
                "generator",
                "load generator → fixed responder",
                "bench/rawserver.py",
                1,
                run,
            )
        )
        if h.args.wrk and shutil.which("wrk"):
            wrk(
                h,
                port,
                "/noop",
                "",
                "gen-raw-wrk",
                "wrk → fixed responder",
                "bench/rawserver.py",
                1,
                raw.pid,
            )


def _wrk_script(h: Harness, token: str) -> Path:
    """The Lua script that makes wrk send one POST/EVENT (always the same key: replays)."""
    body = (
        '{"clientTransactionId":"wrk-1","collectorNumber":"80000000001","sponsorCode":"BNCH",'
        f'"transactionDateTime":"{h.moment}","issuances":[{{"issuanceOfferCode":"STANDARD",'
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
    return script


def wrk(
    h: Harness,
    port: int,
    path: str,
    token: str,
    mid: str,
    title: str,
    target: str,
    processes: int,
    server_pid: int,
) -> Measurement:
    script = _wrk_script(h, token)
    seconds = max(1, round(h.args.duration))
    background = h.quiet()
    sampler = Sampler(server_pid)
    sampler.start()
    proc = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{h.args.concurrency}",
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
        concurrency=h.args.concurrency,
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
    return h.record(m)


# ---------------------------------------------------------------- the HTTP ceiling

NOOP_PATH = "/checkout/bench/noop"
NOOP_TITLE = "HTTP ceiling: no-op POST, same stack"


def http_ceiling(h: Harness) -> None:
    url = h.pg_copy("noop") if h.pg else h.sqlite_url
    for workers in sorted(set(h.args.pg_workers) | {1}) if h.pg else [1]:
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
        with running(f"noop-w{workers}", cmd, base_env(url), port) as noop:
            _http_rows(h, port, workers, noop.pid)


def _http_rows(h: Harness, port: int, workers: int, pid: int) -> None:
    c = h.args.concurrency
    run = h.loadgen(port, "noop", c, token="bench", path=NOOP_PATH, server_pid=pid)
    h.record(
        from_loadgen(
            f"http-w{workers}-c{c}", "http", NOOP_TITLE, "bench/noop_server.py", workers, run
        )
    )
    if workers == 1 and h.args.latency_floor:
        run = h.loadgen(port, "noop", 1, token="bench", path=NOOP_PATH, server_pid=pid)
        h.record(from_loadgen("http-w1-c1", "http", NOOP_TITLE, "bench/noop_server.py", 1, run))
    if workers == 1 and h.args.wrk and shutil.which("wrk"):
        wrk(
            h,
            port,
            NOOP_PATH,
            "bench",
            f"http-w1-c{c}-wrk",
            "HTTP ceiling (wrk): no-op POST, same stack",
            "bench/noop_server.py",
            1,
            pid,
        )


# ---------------------------------------------------------------- the database ceilings


def pgbench(h: Harness) -> None:
    """Both database ceilings, each on its own copy of the seeded database, their rows
    interleaved (same collectors and concurrency one after the other) so that a change of
    the machine's load between rows weighs on both alike."""
    if shutil.which("pgbench") is None:
        log("pgbench not found: no database ceiling")
        return
    urls = {prefix: h.pg_copy(prefix.replace("-", "_")) for prefix in PGBENCH_SCRIPTS}
    runs = [
        ("many", h.args.collectors, h.args.concurrency),
        ("hot", HOT_COLLECTORS, h.args.concurrency),
    ]
    if h.args.latency_floor:
        runs.append(("many", h.args.collectors, 1))
    seq = 0
    for label, collectors, clients in runs:
        for prefix, script in PGBENCH_SCRIPTS.items():
            seq += 1
            pgbench_once(h, urls[prefix], prefix, script, label, collectors, clients, seq)
    # REVERSE/EVENT alone and the 50/50 mix of scenario (c): many collectors only, as (c) runs.
    reverse, mix = h.pg_copy("pgbench_reverse"), h.pg_copy("pgbench_mix")
    for _, collectors, clients in (r for r in runs if r[0] == "many"):
        seq += 1
        seconds = max(h.args.warmup, h.args.duration)
        per_client = max(2_000, math.ceil(ORIGINALS_PER_SECOND * seconds / clients))

        pgbench_once(
            h,
            reverse,
            "pgbench-reverse",
            PGBENCH_REVERSE,
            "many",
            collectors,
            clients,
            seq,
            what="REVERSE/EVENT alone",
            prepare=functools.partial(
                seed_originals,
                reverse,
                clients=clients,
                per_client=per_client,
                collectors=collectors,
            ),
        )
        seq += 1
        pgbench_once(
            h,
            mix,
            "pgbench-mix",
            mix_script(),
            "many",
            collectors,
            clients,
            seq,
            what="50/50 POST/EVENT + REVERSE/EVENT of it",
        )
    for prefix, url in {**urls, "pgbench-reverse": reverse, "pgbench-mix": mix}.items():
        h.verified(prefix.replace("-", "_"), verify_ledger(url, prefix))


# Calls a second the originals of a standing-alone REVERSE/EVENT run are written for: well above
# what one connection or sixteen reach on this stack (a call past them finds no original and
# fails the run, loudly).
ORIGINALS_PER_SECOND = 4_000
# Meta-commands of the scripts that the mix sets itself.
_MIX_OWN = ("\\set seq ", "\\set orun ", "\\set oseq ", "\\set c ")


def mix_script() -> Path:
    """The 50/50 mix of scenario (c) as one pgbench script: each client's calls alternate between
    bench/pgbench_issue.sql (odd sequence numbers) and bench/pgbench_reverse.sql of the call
    before it (even), so a pgbench transaction is one partner call, as a request of the load
    generator is. Written to SCRATCH from the two scripts, whose header \\set lines give way to
    the mix's own."""

    def body(script: Path, keep_collector: bool) -> list[str]:
        return [
            line
            for line in script.read_text().splitlines()
            if not line.startswith("--")
            and not any(
                line.startswith(own)
                for own in _MIX_OWN
                if not (keep_collector and own.startswith("\\set c "))
            )
        ]

    lines = [
        "-- Generated by bench.run.ceilings.mix_script from bench/pgbench_issue.sql and",
        "-- bench/pgbench_reverse.sql: odd calls issue, even calls reverse the call before.",
        "\\set seq :seq + 1",
        "\\if :seq % 2 = 1",
        *body(PGBENCH_SCRIPT, keep_collector=True),
        "\\else",
        "\\set orun :run",
        "\\set oseq :seq - 1",
        *body(PGBENCH_REVERSE, keep_collector=False),
        "\\endif",
    ]
    SCRATCH.mkdir(exist_ok=True)
    path = SCRATCH / "pgbench_mix.sql"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Pgbench:
    """One pgbench script run against one database by `clients` clients."""

    url: str
    script: Path
    clients: int
    variables: list[str]
    env: dict[str, str] | None = field(default=None)

    def command(self, seconds: float, run: int, log_prefix: Path | None) -> list[str]:
        cmd = [
            "pgbench",
            "-n",
            "-c",
            str(self.clients),
            "-j",
            str(min(2, self.clients)),
            "-T",
            str(max(1, round(seconds))),
            "-M",
            "prepared",
            "-r",
            "-f",
            str(self.script),
            "-D",
            f"run={run}",
        ]
        for variable in self.variables:
            cmd += ["-D", variable]
        if log_prefix is not None:
            cmd += ["-l", f"--log-prefix={log_prefix}"]
        return [*cmd, self.url]


def _pgbench_for(url: str, script: Path, collectors: int, clients: int) -> Pgbench:
    variables = [f"collectors={collectors}", "seq=0"]
    env = None
    if script == PGBENCH_ONE_STATEMENT:  # the statement checks the reference-data version
        variables.append(f"version={reference_version(url)}")
        # and runs with its generic plan, as on the service's statement pool
        env = {**os.environ, "PGOPTIONS": STATEMENT_POOL_OPTIONS}
    return Pgbench(url, script, clients, variables, env)


def _latencies(prefix: Path, keep: bool) -> list[float]:
    """The transaction latencies (ms, sorted) of pgbench's logs `prefix`.*; the logs go unless
    kept."""
    latencies: list[float] = []
    for path in SCRATCH.glob(f"{prefix.name}.*"):
        with open(path, encoding="ascii") as fh:
            latencies.extend(int(line.split()[2]) / 1000 for line in fh if line.strip())
        if not keep:
            path.unlink()
    latencies.sort()
    return latencies


def pgbench_once(
    h: Harness,
    url: str,
    id_prefix: str,
    script: Path,
    label: str,
    collectors: int,
    clients: int,
    seq: int,
    *,
    what: str | None = None,
    prepare: Callable[[list[int]], None] | None = None,
) -> None:
    """One ceiling row: `script` by `clients` clients (a warm-up run, then the measured one),
    titled by `what` it mirrors (default: its shape); `prepare` gets the two runs' numbers
    first."""
    bench = _pgbench_for(url, script, collectors, clients)
    base_run = int(h.run_id, 16) % 100_000 * 100 + seq * 10
    if prepare is not None:
        prepare([base_run, base_run + 1])
    warm = subprocess.run(
        bench.command(h.args.warmup, base_run, None),
        capture_output=True,
        text=True,
        check=False,
        env=bench.env,
    )
    if warm.returncode != 0:
        raise BenchError(f"pgbench warm-up failed:\n{warm.stdout}{warm.stderr}")
    prefix = SCRATCH / f"pgbench-{h.run_id}-{seq}"
    background = h.quiet()
    sampler = Sampler(None)
    sampler.start()
    cmd = bench.command(h.args.duration, base_run + 1, prefix)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=bench.env
    )
    sampler.generator_pid = proc.pid
    started = time.monotonic()
    out, _ = proc.communicate(timeout=h.args.duration + 120)
    ended = time.monotonic()
    sampler.stop()
    if proc.returncode != 0:
        raise BenchError(f"pgbench failed:\n{out}")
    parsed = parse_pgbench(out)
    latencies = _latencies(prefix, h.args.keep)
    m = Measurement(
        id=f"{id_prefix}-{label}-c{clients}",
        kind="database",
        title=f"DB ceiling: pgbench, {what or ceiling_name(script)}, {collectors:,} collectors",
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
    h.record(m)
