"""The rewardmiles rows: `rewardmiles serve` on PostgreSQL (with 1 and 2 API processes, the better
one running every scenario) and on SQLite, each database ending with `ledger verify`."""

from __future__ import annotations

from typing import Any

from bench.run.config import log
from bench.run.databases import verify_ledger
from bench.run.harness import Harness
from bench.run.measurement import Measurement, from_loadgen
from bench.run.processes import Server, serving, token

SCENARIOS: dict[str, dict[str, Any]] = {
    "a": {"mode": "issue", "hot": False, "title": "(a) POST/EVENT, unique keys, many collectors"},
    "b": {"mode": "issue", "hot": True, "title": "(b) POST/EVENT, unique keys, 10 hot collectors"},
    "c": {"mode": "mix", "hot": False, "title": "(c) 50/50 POST/EVENT + REVERSE/EVENT of it"},
    "d": {"mode": "replay", "hot": False, "title": "(d) replays of completed keys"},
}
# Run after (a), on the configuration (a) found the faster.
OTHERS = ("b", "c", "d")


def rewardmiles_pg(h: Harness) -> None:
    candidates = h.args.pg_workers
    # workers → (database URL, successful req/s of scenario (a))
    per_workers = {
        workers: _pg_candidate(h, workers, len(candidates) == 1) for workers in candidates
    }
    # Only answers that worked count: a configuration that fails fast is not the faster one.
    best = max(per_workers, key=lambda w: per_workers[w][1])
    h.extra["pg_workers"] = {
        "candidates": {str(w): rps for w, (_, rps) in per_workers.items()},
        "chosen": best,
    }
    if len(per_workers) == 1:
        return
    log(f"PostgreSQL: {best} API process(es) chosen for the other scenarios")
    url = per_workers[best][0]
    with serving(f"pg-w{best}-b", url, best) as server:
        bearer = token(server.port, h.creds)
        for key in OTHERS:
            scenario(h, server, bearer, key, h.args.concurrency, "PostgreSQL", best)
    h.verified(f"pg_w{best}", verify_ledger(url, f"PostgreSQL w{best}"))


def _pg_candidate(h: Harness, workers: int, only: bool) -> tuple[str, float]:
    """Scenario (a) with `workers` API processes on a copy of its own (and the other scenarios
    right away when it is the `only` candidate); its database and successful req/s."""
    c = h.args.concurrency
    url = h.pg_copy(f"pg_w{workers}")
    with serving(f"pg-w{workers}", url, workers) as server:
        bearer = token(server.port, h.creds)
        m = scenario(h, server, bearer, "a", c, "PostgreSQL", workers)
        ok = sum(n for s, n in m.statuses.get("issue", {}).items() if s.startswith("2"))
        result = (url, round(ok / m.detail["duration_s"], 1))
        if h.args.latency_floor:
            scenario(h, server, bearer, "a", 1, "PostgreSQL", workers)
        if only:  # nothing to choose: the other scenarios right away
            for key in OTHERS:
                scenario(h, server, bearer, key, c, "PostgreSQL", workers)
    h.verified(f"pg_w{workers}", verify_ledger(url, f"PostgreSQL w{workers}"))
    return result


def rewardmiles_sqlite(h: Harness) -> None:
    url = h.sqlite_url
    c = h.args.concurrency
    with serving("sqlite", url, 1) as server:
        bearer = token(server.port, h.sqlite_creds)
        scenario(h, server, bearer, "a", c, "SQLite", 1)
        if h.args.latency_floor:
            scenario(h, server, bearer, "a", 1, "SQLite", 1)
        for key in OTHERS:
            scenario(h, server, bearer, key, c, "SQLite", 1)
    h.verified("sqlite", verify_ledger(url, "SQLite"))


def scenario(
    h: Harness, server: Server, bearer: str, key: str, concurrency: int, target: str, workers: int
) -> Measurement:
    spec = SCENARIOS[key]
    offset = server.log_size()
    run = h.loadgen(
        server.port,
        spec["mode"],
        concurrency,
        token=bearer,
        hot=spec["hot"],
        server_pid=server.pid,
    )
    db = "pg" if target == "PostgreSQL" else "sqlite"
    m = h.record(
        from_loadgen(
            f"{db}-w{workers}-{key}-c{concurrency}",
            "rewardmiles",
            spec["title"],
            target,
            workers,
            run,
        )
    )
    m.detail["src"] = server.src
    if server.src != h.src_at_start:
        m.notes.append(f"src/ changed since the run started (server code {server.src})")
    if m.non_2xx or m.transport_errors:
        m.detail["server_errors"] = server.errors_since(offset)
        h.keep_logs.add(server.log_path)
        log(f"{m.id}: errors — server log kept: {server.log_path}")
        for line in m.detail["server_errors"][-3:]:
            log(f"  {line[:300]}")
    return m
