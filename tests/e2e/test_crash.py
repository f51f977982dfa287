"""SIGKILL crash safety: partners retrying through killed API and worker processes lose nothing and
double nothing (PostgreSQL).

The deployment is the production shape on one fresh database: two `rewardmiles serve --no-worker`
API processes on their own ports and two `rewardmiles worker` settlement processes. Four partner
client processes (multiprocessing) drive mixed traffic at the two APIs:

- POST/EVENT issues of 1–3 lines, each with a fresh clientTransactionId and Idempotency-Key;
- partial REVERSE/EVENT reversals of issues already acknowledged, within what is left of them;
- over-reversals (1–5 miles more than is left): a final 400 REVERSAL_EXCEEDS_ORIGINAL;
- deliberate duplicates of calls already answered: the same key and body (must replay), or the
  same body under a new key (a content duplicate, must replay the same transaction);
- about 3% of first attempts give up after 5 ms, as if the response were lost in transit.

Every logical call is retried with the same key and body — on the other API process after a
connection error or a 5xx, after `Retry-After` on 409 IDEMPOTENCY_KEY_IN_USE — until it gets a
definitive answer: 200/202 (acknowledged) or 400 (refused). Each client reverses only its own
issues, so it knows exactly how much of each original is left; the collectors are shared, so
requests for one collector race each other across the API processes and the workers (row locks).
Half of the collectors are enrolled and active; the other half are unknown numbers or ON_HOLD, so
their lines are accepted PENDING (202) and only the workers can post them, once the test enrols or
releases the collector — which it does a few at a time while the traffic runs, the last ones
after it.

Meanwhile a chaos loop SIGKILLs a random process — an API (in the middle of requests: its
database transactions roll back, its clients see a dropped connection) or a worker (possibly in
the middle of settling a collector) — at random moments spread over the traffic, leaves it down a
random moment, restarts it on the same port and waits until it is ready. An API is only killed
while the other one is ready; the workers may both be down at once.

The model is computed from the clients' records alone: the acknowledged issues and reversals,
each with its miles, collector and transaction id. Once everything has been restarted and the
workers have settled every pending line, the database must hold every acknowledged transaction
exactly once (by sponsor, endpoint and clientTransactionId, with the transaction id the client
was given), no accepted transaction the clients were not told about, every refused one as exactly
one rejected record, every line posted with exactly one balanced entry pair, each collector's
balance (and the sum of its entries) equal to the model's issued minus reversed miles, and
`rewardmiles ledger verify` must pass. No call may end without a definitive answer, and none may
get a 500 (the database never goes away here); 502–504 are retried and only reported.

Profiles (REWARDMILES_CRASH_PROFILE, numbers in tests/support/chaos.py): `short` (default, CI)
and `long`. REWARDMILES_CRASH_SEED replays a run's random choices (the timing of kills cannot be
replayed exactly). REWARDMILES_CRASH_REPORT names a file for the JSON summary, which is also
printed (pytest -s).
"""

from __future__ import annotations

import compileall
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import rewardmiles
from rewardmiles.auth import keys as signing_keys
from rewardmiles.collectors import service as collectors
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Collector, IssuanceLine, LedgerEntry, Transaction
from tests.conftest import TEST_BOX, TEST_HASH_COST, DatabaseFactory
from tests.support import chaos, data

PROFILE = chaos.profile_from_env()
ENDPOINTS = {chaos.POST_EVENT: "post_event", chaos.REVERSE_EVENT: "reverse_event"}
EXPECTED = {"issue": "accepted", "reverse": "accepted", "over_reverse": "rejected"}
WARM_UP_REQUESTS = 50  # the chaos starts once the clients are under way
RELEASE_BEFORE_END = 0.85  # share of the late collectors released during the traffic


@dataclass
class Seeded:
    sponsor: str
    client_id: str
    client_secret: str
    collectors: list[str]  # every client's
    late: list[tuple[str, str]]  # (number, "unknown" | "on_hold"), in release order


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)
    id_mismatches: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    rejections_misrecorded: list[str] = field(default_factory=list)
    unposted_lines: list[str] = field(default_factory=list)
    balance_mismatches: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {name: items for name, items in vars(self).items() if items}


# --------------------------------------------------------------------------- setup


def _seed(db: Database, profile: chaos.Profile, rng: random.Random) -> Seeded:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    with db.unit_of_work() as session:  # before the APIs start, so none has to pick one
        signing_keys.generate_key(session, data.now(), TEST_BOX)
    active = [data.new_collector(db, "ACTIVE") for _ in range(profile.active_collectors)]
    late = [
        (data.new_collector(db, "ON_HOLD"), "on_hold")
        if i % 2
        else (data.unknown_collector(), "unknown")
        for i in range(profile.late_collectors)
    ]
    rng.shuffle(late)
    return Seeded(sponsor, client_id, secret, active + [number for number, _ in late], late)


def _snapshot_source(tmp: Path) -> Path:
    """A copy of the rewardmiles package for every process of the run: an incarnation restarted
    late in a long run runs the same code as the first one, whatever happens to the working tree
    meanwhile."""
    target = tmp / "src"
    # With __pycache__: copy2 keeps the sources' mtimes, so the compiled files stay valid; the
    # stale ones are compiled here once rather than by each process as it starts.
    shutil.copytree(Path(rewardmiles.__file__).parent, target / "rewardmiles")
    compileall.compile_dir(target, quiet=1)
    return target


def _deployment(
    url: str, profile: chaos.Profile, logdir: Path, source: Path
) -> list[chaos.ServiceProcess]:
    env = {
        "PYTHONPATH": str(source),
        "REWARDMILES_DATABASE_URL": url,
        "REWARDMILES_SECRET_HASH_COST": TEST_HASH_COST,
        "REWARDMILES_DATABASE_POOL_SIZE": "4",
        "REWARDMILES_WORKER_POLL_SECONDS": "0.2",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed process keeps its last log lines
        # The partners here are a test rig, not the traffic the limits are for.
        "REWARDMILES_RATE_LIMIT_PER_SECOND": "0",
        "REWARDMILES_TOKEN_RATE_LIMIT_PER_MINUTE": "0",
    }
    processes = [
        chaos.ServiceProcess(
            f"api-{i + 1}",
            "api",
            {**env, "REWARDMILES_LOG_LEVEL": "warning"},
            logdir,
            chaos.listening_port(),
        )
        for i in range(profile.api_processes)
    ]
    processes += [
        chaos.ServiceProcess(
            f"worker-{i + 1}", "worker", {**env, "REWARDMILES_LOG_LEVEL": "info"}, logdir
        )
        for i in range(profile.worker_processes)
    ]
    return processes


class Releaser(threading.Thread):
    """Enrols unknown late collectors and releases ON_HOLD ones, in step with the run's progress,
    so the workers have pending lines to settle while they are being killed."""

    def __init__(self, url: str, late: list[tuple[str, str]], progress: Any) -> None:
        super().__init__(name="releaser", daemon=True)
        self.db = Database.from_url(url, pool_size=1)
        self.late = late
        self.progress = progress
        self.released = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def release_up_to(self, count: int) -> None:
        while self.released < min(count, len(self.late)):
            number, kind = self.late[self.released]
            with self.db.unit_of_work() as session:
                if kind == "unknown":
                    collectors.add_collector(session, number, "ACTIVE", data.now())
                else:
                    collectors.set_status(session, number, "ACTIVE", data.now())
            self.released += 1

    def run(self) -> None:
        try:
            while not self.stopping.wait(0.2):
                share = min(1.0, self.progress()) * RELEASE_BEFORE_END
                self.release_up_to(math.floor(share * len(self.late)))
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error
        self.release_up_to(len(self.late))
        self.db.dispose()


# --------------------------------------------------------------------------- helpers


def _pending_lines(db: Database) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                select(func.count()).where(IssuanceLine.status == "pending")
            ).scalar_one()
        )


def _log_errors(processes: list[chaos.ServiceProcess]) -> list[str]:
    out = []
    for process in processes:
        for path in process.logs:
            for line in path.read_text(errors="replace").splitlines():
                lowered = line.lower()
                if '"level": "error"' in lowered or "traceback" in lowered or "error:" in lowered:
                    out.append(f"{path.name}: {line[:500]}")
    return out


# --------------------------------------------------------------------------- the model and checks


def _check(
    db: Database, seeded: Seeded, ops: list[dict[str, Any]]
) -> tuple[Findings, dict[str, Any]]:
    findings = Findings()
    by_op = {op["op"]: op for op in ops}
    acked: dict[tuple[str, str], dict[str, Any]] = {}
    refused: dict[tuple[str, str], dict[str, Any]] = {}
    model: Counter[str] = Counter()
    for op in ops:
        kind = op["kind"]
        if kind in EXPECTED:
            key = (ENDPOINTS[op["path"]], op["partner_id"])
            if op["outcome"] != EXPECTED[kind] or (
                kind == "over_reverse" and op["code"] != "REVERSAL_EXCEEDS_ORIGINAL"
            ):
                findings.unexpected.append(
                    f"{op['op']} {kind}: {op['status']} {op['code']} ({op['outcome']})"
                )
            if op["outcome"] == "accepted":
                acked[key] = op
                model[op["collector"]] += op["miles"] if kind == "issue" else -op["miles"]
            elif op["outcome"] == "rejected":
                refused[key] = op
            continue
        target = by_op[op["target"]]
        same = op["outcome"] == target["outcome"] and op["code"] == target["code"]
        if (
            target["outcome"] == op["outcome"] == "accepted"
            and op["transaction_id"] != target["transaction_id"]
        ):
            findings.duplicated.append(
                f"{op['op']} {kind} of {target['op']} answered a new transaction "
                f"{op['transaction_id']} (first {target['transaction_id']})"
            )
            continue
        if not same or (kind == "replay_same_key" and not op["replayed"]):
            findings.unexpected.append(
                f"{op['op']} {kind} of {target['op']}: {op['status']} {op['code']} replayed="
                f"{op['replayed']} (first {target['status']} {target['code']})"
            )

    with db.reader() as session:
        transactions = session.execute(
            select(
                Transaction.id,
                Transaction.endpoint,
                Transaction.partner_transaction_id,
                Transaction.status,
            ).where(Transaction.sponsor_code == seeded.sponsor)
        ).all()
        lines = session.execute(
            select(
                IssuanceLine.transaction_id,
                IssuanceLine.line_no,
                IssuanceLine.direction,
                IssuanceLine.miles,
                IssuanceLine.status,
                IssuanceLine.settled_at,
                Transaction.processed_at,
            )
            .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
            .where(Transaction.sponsor_code == seeded.sponsor)
        ).all()
        entries = session.execute(
            select(
                LedgerEntry.transaction_id,
                LedgerEntry.line_no,
                LedgerEntry.account_kind,
                LedgerEntry.account_code,
                LedgerEntry.amount_miles,
            )
        ).all()
        balances = {
            row.number: (row.status, row.balance_miles)
            for row in session.execute(
                select(Collector.number, Collector.status, Collector.balance_miles)
            )
        }

    accepted_rows: dict[tuple[str, str], list[str]] = defaultdict(list)
    rejected_rows: Counter[tuple[str, str]] = Counter()
    for row in transactions:
        key = (row.endpoint, row.partner_transaction_id)
        if row.status == "rejected":
            rejected_rows[key] += 1
        else:
            accepted_rows[key].append(row.id)

    for key, op in acked.items():
        ids = accepted_rows.get(key, [])
        if not ids:
            findings.lost.append(
                f"{op['op']} {op['kind']} {key[1]} acknowledged {op['status']}, not in the ledger"
            )
        elif len(ids) > 1:
            findings.duplicated.append(f"{op['op']} {key[1]} stored {len(ids)} times: {ids}")
        elif ids[0] != op["transaction_id"]:
            findings.id_mismatches.append(
                f"{op['op']} {key[1]}: told {op['transaction_id']}, stored {ids[0]}"
            )
    for key, ids in accepted_rows.items():
        if key not in acked:
            findings.phantoms.append(f"{key} accepted as {ids} but never acknowledged")
    for key in refused.keys() | rejected_rows.keys():
        if rejected_rows[key] != (1 if key in refused else 0):
            findings.rejections_misrecorded.append(
                f"{key}: {rejected_rows[key]} rejected records, refused: {key in refused}"
            )

    pairs: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    entry_sums: Counter[str] = Counter()
    for entry in entries:
        pairs[(entry.transaction_id, entry.line_no)].append(
            (entry.account_kind, entry.amount_miles)
        )
        if entry.account_kind == "collector":
            entry_sums[entry.account_code] += entry.amount_miles
    accepted_ids = {i for ids in accepted_rows.values() for i in ids}
    settled_by_workers = 0
    for line in lines:
        if line.transaction_id not in accepted_ids:
            continue
        signed = line.miles if line.direction == "credit" else -line.miles
        got = sorted(pairs.get((line.transaction_id, line.line_no), []))
        if line.status != "posted":
            findings.unposted_lines.append(f"{line.transaction_id}:{line.line_no} is {line.status}")
        elif got != [("collector", signed), ("sponsor", -signed)]:
            bucket = findings.duplicated if len(got) > 2 else findings.unposted_lines
            bucket.append(
                f"{line.transaction_id}:{line.line_no} entries {got}, expected one pair of {signed}"
            )
        if line.settled_at is not None and line.settled_at > line.processed_at:
            settled_by_workers += 1  # posted by a worker, not by the request that brought it

    for number in seeded.collectors:
        status, balance = balances.get(number, (None, None))
        if (status, balance, entry_sums[number]) != ("ACTIVE", model[number], model[number]):
            findings.balance_mismatches.append(
                f"{number}: status {status}, balance {balance}, entries {entry_sums[number]}, "
                f"model {model[number]}"
            )
    stats = {
        "acknowledged": len(acked),
        "acknowledged_pending": sum(1 for op in acked.values() if op["status"] == 202),
        "acknowledged_after_retries": sum(1 for op in acked.values() if op["attempts"] > 1),
        "refused_as_expected": len(refused),
        "lines_settled_by_workers": settled_by_workers,
        "model_miles": sum(model.values()),
    }
    return findings, stats


# --------------------------------------------------------------------------- the test


@pytest.mark.postgres_only
@pytest.mark.timeout(PROFILE.test_timeout_seconds)
def test_sigkilled_api_and_worker_processes_lose_and_double_nothing(
    dialect: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite has a single writer: the multi-process deployment needs PostgreSQL")
    profile = PROFILE
    seed = chaos.seed_from_env()
    rng = random.Random(seed)
    began = time.monotonic()
    url = database_factory.create("postgresql")
    db = Database.from_url(url, pool_size=2)
    seeded = _seed(db, profile, rng)
    source = _snapshot_source(tmp_path)
    processes = _deployment(url, profile, tmp_path, source)
    apis = [p for p in processes if p.kind == "api"]

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    sent = ctx.Value("q", 0)
    record_paths = [tmp_path / f"client-{i}.jsonl" for i in range(profile.clients)]
    clients = [
        ctx.Process(
            target=chaos.run_client,
            name=f"client-{i}",
            args=(
                chaos.ClientPlan(
                    index=i,
                    seed=rng.randrange(2**31),
                    base_urls=tuple(api.base_url for api in apis),
                    client_id=seeded.client_id,
                    client_secret=seeded.client_secret,
                    sponsor=seeded.sponsor,
                    collectors=tuple(seeded.collectors),
                    records_path=str(record_paths[i]),
                    call_deadline_seconds=profile.call_deadline_seconds,
                ),
                stop,
                sent,
            ),
        )
        for i in range(profile.clients)
    ]
    monkey = chaos.Chaos(processes, profile, rng, stamp=lambda: {"requests": sent.value})
    releaser = Releaser(url, seeded.late, lambda: 0.0)

    def client_died() -> str:
        dead = [c.name for c in clients if not c.is_alive()]
        return f"client processes ended early: {dead}" if dead else ""

    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready(profile.ready_timeout_seconds)
        traffic_began = time.monotonic()
        for client in clients:
            client.start()
        deadline = traffic_began + profile.ready_timeout_seconds
        while sent.value < WARM_UP_REQUESTS and time.monotonic() < deadline:  # clients logged in
            assert not client_died(), client_died()
            time.sleep(0.05)
        releaser.progress = lambda: min(
            sent.value / profile.requests, monkey.kills.total() / profile.kills
        )
        releaser.start()
        monkey.run(progress=lambda: sent.value / profile.requests, check=client_died)
        stop.set()
        for client in clients:
            client.join(timeout=profile.call_deadline_seconds + 30)
        traffic_seconds = time.monotonic() - traffic_began

        settle_began = time.monotonic()
        releaser.finish()
        deadline = settle_began + profile.settle_deadline_seconds
        while _pending_lines(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        settle_seconds = time.monotonic() - settle_began
    finally:
        stop.set()
        releaser.stopping.set()
        for client in clients:
            if client.is_alive():
                client.terminate()
                client.join(timeout=10)
        for process in processes:
            process.stop()

    verify_run = subprocess.run(
        [sys.executable, "-m", "rewardmiles", "ledger", "verify"],
        env={**os.environ, "PYTHONPATH": str(source), "REWARDMILES_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = chaos.read_records(record_paths)
    ops = [r for r in records if r["type"] == "op"]
    anomalies = [r for r in records if r["type"] == "anomaly"]
    findings, stats = _check(db, seeded, ops)
    db.dispose()
    reasons: Counter[str] = Counter()
    for op in ops:
        reasons.update(op["reasons"])
    log_errors = _log_errors(processes)
    summary = {
        "profile": profile.name,
        "aborted": monkey.aborted,
        "seed": seed,
        "duration_seconds": round(time.monotonic() - began, 1),
        "setup_seconds": round(traffic_began - began, 1),
        "traffic_seconds": round(traffic_seconds, 1),
        "settle_seconds": round(settle_seconds, 1),
        "requests": sent.value,
        "logical_operations": len(ops),
        "operations_by_kind": dict(Counter(op["kind"] for op in ops)),
        "kills": {**monkey.kills, "total": monkey.kills.total()},
        "retries": sum(op["attempts"] - 1 for op in ops),
        "retries_by_reason": dict(reasons.most_common()),
        "retried_operations": sum(1 for op in ops if op["attempts"] > 1),
        "indeterminate": sum(1 for op in ops if op["outcome"] == "indeterminate"),
        "slowest_call_seconds": max((op["elapsed"] for op in ops), default=0.0),
        **stats,
        "lost": len(findings.lost),
        "duplicated": len(findings.duplicated),
        "phantoms": len(findings.phantoms),
        "unexpected_outcomes": len(findings.unexpected),
        # 500 is a bug; 502-504 (e.g. a statement timeout) say "retry", and are only reported.
        "server_errors": sum(n for reason, n in reasons.items() if reason.startswith("500")),
        "unavailable": sum(
            n for reason, n in reasons.items() if reason[:3] in ("502", "503", "504")
        ),
        "ledger_verify_exit": verify_run.returncode,
        "log_error_lines": len(log_errors),
        "client_cpu_seconds": sum(r["cpu_seconds"] for r in records if r["type"] == "client_done"),
        "kill_log": monkey.log,
    }
    report = os.environ.get("REWARDMILES_CRASH_REPORT")
    if report:
        Path(report).write_text(json.dumps(summary, indent=2) + "\n")
    print("\ncrash run:", json.dumps(summary, indent=2))
    for sample in anomalies[:10]:
        print("anomaly:", json.dumps(sample)[:1000])
    for line in log_errors[:20]:
        print("log:", line)

    assert not monkey.aborted, monkey.aborted
    assert [c.exitcode for c in clients] == [0] * len(clients), "a client process failed"
    problems = findings.problems()
    assert not problems, json.dumps({k: v[:10] for k, v in problems.items()}, indent=2)
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    assert summary["indeterminate"] == 0
    assert summary["server_errors"] == 0, [a for a in anomalies if a.get("status") == 500][:5]
    assert verify_run.returncode == 0, verify_run.stdout + verify_run.stderr
    assert monkey.kills.total() >= profile.kills
    assert monkey.kills["api"] > 0
    assert monkey.kills["worker"] > 0
    assert sent.value >= profile.requests
    assert stats["lines_settled_by_workers"] > 0
