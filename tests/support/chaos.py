"""Crash-safety harness pieces: the profiles, a supervisor for killable service processes, and the
partner client processes that drive traffic and record every logical call.

This module imports only the standard library and httpx, so the client processes (started with
multiprocessing's `spawn`) come up fast and never touch the database: what they know, they learnt
over HTTP. The test (tests/e2e/test_crash.py) compares their records with the database.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import httpx

POST_EVENT = "/checkout/issuance/post/event"
REVERSE_EVENT = "/checkout/issuance/reverse/event"

# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """Every number of a crash run. The traffic phase lasts until `kills` SIGKILLs were injected
    (at random moments spread over the traffic) and `requests` HTTP requests were sent, or fails
    after `traffic_deadline_seconds`."""

    name: str
    kills: int
    requests: int
    clients: int = 4
    api_processes: int = 2
    worker_processes: int = 2
    active_collectors: int = 24  # shared by every client
    late_collectors: int = 24  # half unknown (enrolled later), half ON_HOLD (released later)
    down_seconds: tuple[float, float] = (0.0, 0.8)  # killed → restarted
    traffic_deadline_seconds: float = 240.0  # a safety net: a busy 2-CPU box needs ~100 s
    settle_deadline_seconds: float = 90.0
    call_deadline_seconds: float = 120.0  # one logical call, all its retries included
    ready_timeout_seconds: float = 60.0
    test_timeout_seconds: int = 480  # pytest-timeout for the whole test


PROFILES = {
    "short": Profile(name="short", kills=8, requests=4_000),
    "long": Profile(
        name="long",
        kills=30,
        requests=30_000,
        late_collectors=48,
        traffic_deadline_seconds=2_400.0,
        test_timeout_seconds=3_600,
    ),
}

# What a client does at each step, by weight. Replays resend an earlier call: `replay_same_key`
# with its key and body (an idempotent retry), `replay_new_key` with its body and a fresh key (a
# content duplicate, SPEC rule 3.7).
TRAFFIC_MIX = {
    "issue": 45,
    "reverse": 25,
    "over_reverse": 5,
    "replay_same_key": 15,
    "replay_new_key": 10,
}
LOST_RESPONSE_PROBABILITY = 0.03  # first attempt given up after a few ms: response lost in transit
LOST_RESPONSE_READ_TIMEOUT_SECONDS = 0.005
REPICK_SERVER_PROBABILITY = 0.1  # a call goes to a random API process instead of the last one
ISSUE_LINES_MAX = 3
LINE_MILES_MAX = 40
REVERSE_MILES_MAX = 30
BACKOFF_SECONDS = (0.02, 0.5)  # first retry, cap (doubling, with jitter)
RETRY_AFTER_CAP_SECONDS = 1.0
# Longer than the API's statement timeout (15 s), so a slow answer is seen as the server gives it.
READ_TIMEOUT_SECONDS = 30.0
ANOMALY_SAMPLES_MAX = 20
SEED_ENV = "REWARDMILES_CRASH_SEED"


def profile_from_env() -> Profile:
    name = os.environ.get("REWARDMILES_CRASH_PROFILE", "short")
    if name not in PROFILES:
        raise ValueError(f"REWARDMILES_CRASH_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]


def seed_from_env() -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(2**31)


# --------------------------------------------------------------------------- supervisor

LISTEN_PORTS = (20_000, 30_000)  # below Linux's ephemeral range: no outgoing socket takes one


def listening_port() -> int:
    """A free port for an API process that will be restarted on it: outside the ephemeral range,
    so while the process is down no other process gets it from bind(0) or for a connection."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(*LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS}")


@dataclass
class ServiceProcess:
    """One slot of the deployment (`api-1`, `worker-2`…): started, SIGKILLed and restarted on the
    same port with the same environment. Each incarnation logs to its own file.

    States: `stopped` → `starting` → `ready` → (SIGKILL) `down` → `starting` …
    """

    name: str
    kind: str  # "api" | "worker"
    env: dict[str, str]
    logdir: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    logs: list[Path] = field(default_factory=list)
    state: str = "stopped"
    started_at: float = 0.0
    restart_at: float = 0.0

    @property
    def base_url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        command = [sys.executable, "-m", "rewardmiles"]
        if self.kind == "api":
            return [*command, "serve", "--port", str(self.port), "--no-worker"]
        return [*command, "worker"]

    def start(self) -> None:
        assert self.state in ("stopped", "down"), f"{self.name} is {self.state}"
        self.incarnation += 1
        log_path = self.logdir / f"{self.name}.{self.incarnation}.log"
        self.logs.append(log_path)
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.argv(),
                cwd=self.logdir,
                env={**os.environ, **self.env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.state = "starting"
        self.started_at = time.monotonic()

    def poll_ready(self, timeout: float) -> bool:
        """API: /readyz answers 200. Worker: it logged `worker_started` (its loop is running).
        Raises when the process died while starting or is not ready `timeout` s after start."""
        if self.state != "starting":
            return self.state == "ready"
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        if self._ready():
            self.state = "ready"
            return True
        if time.monotonic() - self.started_at > timeout:
            raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
        return False

    def wait_ready(self, timeout: float) -> None:
        while not self.poll_ready(timeout):
            time.sleep(0.05)

    def _ready(self) -> bool:
        if self.kind == "worker":
            return "worker_started" in self.logs[-1].read_text(errors="replace")
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.process is not None, f"{self.name} never started"
        assert self.state == "ready", f"{self.name} is {self.state}"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.state = "down"

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.state = "stopped"
        return self.process.returncode

    def log_tail(self, chars: int = 4_000) -> str:
        return self.logs[-1].read_text(errors="replace")[-chars:] if self.logs else ""


class Chaos:
    """SIGKILLs `profile.kills` random victims at random moments of the traffic; each victim stays
    down a random moment, is restarted and waited for (other victims may be picked meanwhile).

    The moments are random points of the run's progress (share of the request target sent), one in
    each of `kills` equal slices of its first 95%, so the kills spread over the whole traffic
    whatever its speed. An API is only killed while every API is ready, so partners always have one
    to fail over to; a worker whenever one is ready (both may be down at once: pending lines just
    wait). Half the victims are APIs, half workers, in a shuffled order.
    """

    KILL_SPAN = 0.95

    def __init__(
        self,
        processes: list[ServiceProcess],
        profile: Profile,
        rng: random.Random,
        stamp: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.processes = processes
        self.profile = profile
        self.rng = rng
        self.stamp = stamp
        self.kills: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []
        self.schedule = ["api"] * math.ceil(profile.kills / 2) + ["worker"] * (profile.kills // 2)
        rng.shuffle(self.schedule)
        self.moments = [
            (i + rng.uniform(0.05, 0.95)) / profile.kills * self.KILL_SPAN
            for i in range(profile.kills)
        ]
        self.aborted = ""  # why the run stopped before its targets, if it did

    def _of(self, kind: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.kind == kind]

    def _pick(self) -> ServiceProcess | None:
        """The next victim: the first scheduled kind that may be killed now, if any."""
        feasible = []
        if all(p.state == "ready" for p in self._of("api")):
            feasible.append("api")
        if any(p.state == "ready" for p in self._of("worker")):
            feasible.append("worker")
        kind = next((k for k in self.schedule if k in feasible), None)
        if kind is None:
            return None
        self.schedule.remove(kind)
        return self.rng.choice([p for p in self._of(kind) if p.state == "ready"])

    def run(self, progress: Callable[[], float], check: Callable[[], str]) -> None:
        """Until every kill is done and `progress()` reached 1, unless `check()` names a reason to
        stop early (e.g. a client process ended) or the traffic deadline passes: then `aborted`
        says why. Either way every process is left running and ready."""
        began = time.monotonic()
        while True:
            now = time.monotonic()
            elapsed = now - began
            if elapsed > self.profile.traffic_deadline_seconds:
                self.aborted = f"targets not reached in {elapsed:.0f}s"
                break
            self.aborted = check()
            if self.aborted:
                break
            for process in self.processes:
                if process.state == "down" and now >= process.restart_at:
                    process.start()
                process.poll_ready(self.profile.ready_timeout_seconds)
            done = self.kills.total()
            if done == self.profile.kills and progress() >= 1.0:
                break
            if (
                done < self.profile.kills
                and progress() >= self.moments[done]
                and (victim := self._pick()) is not None
            ):
                victim.kill()
                self.kills[victim.kind] += 1
                self.log.append(
                    {
                        "t": round(elapsed, 2),
                        "victim": f"{victim.name}#{victim.incarnation}",
                        **self.stamp(),
                    }
                )
                victim.restart_at = now + self.rng.uniform(*self.profile.down_seconds)
            time.sleep(0.02)
        for process in self.processes:
            if process.state == "down":
                process.start()
        for process in self.processes:
            process.wait_ready(self.profile.ready_timeout_seconds)


# --------------------------------------------------------------------------- client processes


@dataclass(frozen=True)
class ClientPlan:
    """Everything one client process needs (picklable: it crosses a `spawn`)."""

    index: int
    seed: int
    base_urls: tuple[str, ...]
    client_id: str
    client_secret: str
    sponsor: str
    collectors: tuple[str, ...]
    records_path: str
    call_deadline_seconds: float


@dataclass
class CallResult:
    outcome: str  # accepted | rejected | unexpected | indeterminate
    attempts: int
    reasons: Counter[str]
    status: int | None = None
    code: str | None = None
    transaction_id: str | None = None
    replayed: bool = False
    line_statuses: list[str] = field(default_factory=list)
    elapsed: float = 0.0


@dataclass
class Issued:
    """An acknowledged POST/EVENT as the client knows it: what may still be reversed."""

    op: str
    partner_id: str
    collector: str
    miles: int
    reversed: int = 0


class OpDetails(TypedDict, total=False):
    """What a kind of logical call adds to its record (the records file's `op` lines)."""

    collector: str
    miles: int
    original: str  # the reversed POST/EVENT's clientTransactionId
    target: str  # the replayed op


class OpRecord(OpDetails):
    """One logical call as a client records it, and as a replay finds it again."""

    type: Literal["op"]
    op: str
    client: int
    kind: str
    path: str
    key: str
    partner_id: str
    outcome: str
    attempts: int
    reasons: dict[str, int]
    status: int | None
    code: str | None
    transaction_id: str | None
    replayed: bool
    line_statuses: list[str]
    elapsed: float


def run_client(plan: ClientPlan, stop: Any, sent: Any) -> None:
    """Entry point of a client process: drive traffic until `stop` is set, then write the last
    record. `sent` is a shared counter of HTTP requests (the test's stop condition)."""
    driver = Driver(plan, sent)
    try:
        driver.login()
        while not stop.is_set():
            if not driver.step():
                break  # a call never got a definitive answer: the test fails on it
    finally:
        driver.close()


class Driver:
    """A partner's checkout terminal: sequential logical calls, each retried with the same
    Idempotency-Key and body until it gets a definitive answer."""

    def __init__(self, plan: ClientPlan, sent: Any) -> None:
        self.plan = plan
        self.sent = sent
        self.rng = random.Random(plan.seed)
        self.http = [
            httpx.Client(base_url=url, timeout=httpx.Timeout(READ_TIMEOUT_SECONDS, connect=3.0))
            for url in plan.base_urls
        ]
        self.token = ""
        self.server = self.rng.randrange(len(self.http))  # sticky; the next one after a failure
        self.seq = 0
        self.requests = 0
        self.issued: list[Issued] = []
        self.reversible: list[Issued] = []
        self.history: list[OpRecord] = []  # definitive calls, as replay targets
        self.by_op: dict[str, OpRecord] = {}
        self.bodies: dict[str, bytes] = {}
        self.anomalies = 0
        self.records = Path(plan.records_path).open("a", encoding="utf-8")  # noqa: SIM115

    # -- plumbing

    def _write(self, record: Mapping[str, object]) -> None:
        self.records.write(json.dumps(record, sort_keys=True) + "\n")
        self.records.flush()

    def _count(self) -> None:
        self.requests += 1
        with self.sent.get_lock():
            self.sent.value += 1

    def _anomaly(self, what: str, **details: Any) -> None:
        if self.anomalies < ANOMALY_SAMPLES_MAX:
            self._write({"type": "anomaly", "client": self.plan.index, "what": what, **details})
        self.anomalies += 1

    def close(self) -> None:
        self._write(
            {
                "type": "client_done",
                "client": self.plan.index,
                "requests": self.requests,
                "cpu_seconds": round(time.process_time(), 1),
            }
        )
        self.records.close()
        for client in self.http:
            client.close()

    def _backoff(self, failures: int) -> None:
        """No wait while another API process is left to try; then doubling waits, jittered."""
        rounds = failures // len(self.http)
        if rounds:
            first, cap = BACKOFF_SECONDS
            time.sleep(min(cap, first * 2 ** (rounds - 1)) * self.rng.uniform(0.5, 1.0))

    def login(self) -> None:
        deadline = time.monotonic() + self.plan.call_deadline_seconds
        failures = 0
        while time.monotonic() < deadline:
            client = self.http[failures % len(self.http)]
            self._count()
            try:
                response = client.post(
                    "/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.plan.client_id,
                        "client_secret": self.plan.client_secret,
                    },
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                self.token = str(response.json()["access_token"])
                return
            if response is not None and response.status_code not in (429, 500, 502, 503, 504):
                raise RuntimeError(f"token refused: {response.status_code} {response.text}")
            failures += 1
            self._backoff(failures)
        raise RuntimeError("no token within the call deadline")

    # -- one logical call, retried until definitive

    def call(self, path: str, body: bytes, key: str, *, lose_first: bool = False) -> CallResult:
        started = time.monotonic()
        deadline = started + self.plan.call_deadline_seconds
        reasons: Counter[str] = Counter()
        attempts = 0
        failures = 0
        if self.rng.random() < REPICK_SERVER_PROBABILITY:
            self.server = self.rng.randrange(len(self.http))
        logins = 0
        while True:
            if time.monotonic() > deadline:
                return CallResult(
                    "indeterminate", attempts, reasons, elapsed=time.monotonic() - started
                )
            attempts += 1
            self._count()
            timeout: Any = httpx.USE_CLIENT_DEFAULT
            dropping = lose_first and attempts == 1
            if dropping:
                timeout = httpx.Timeout(
                    READ_TIMEOUT_SECONDS, read=LOST_RESPONSE_READ_TIMEOUT_SECONDS
                )
            headers = {
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Idempotency-Key": key,
            }
            try:
                response = self.http[self.server % len(self.http)].post(
                    path, content=body, headers=headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                timed_out = isinstance(exc, httpx.TimeoutException)
                reasons["response_dropped" if dropping and timed_out else type(exc).__name__] += 1
                failures += 1
                self.server += 1  # fail over to the next API process
                if not dropping:
                    self._backoff(failures)
                continue
            status = response.status_code
            problem = _json(response) if status >= 400 else {}
            code = problem.get("code")
            if status in (200, 202, 400):
                payload = _json(response)
                return CallResult(
                    "accepted" if status < 300 else "rejected",
                    attempts,
                    reasons,
                    status=status,
                    code=code,
                    transaction_id=payload.get("transactionId"),
                    replayed=response.headers.get("Idempotent-Replayed") == "true",
                    line_statuses=[str(x.get("status")) for x in payload.get("issuances", ())],
                    elapsed=time.monotonic() - started,
                )
            if status in (409, 429):  # IDEMPOTENCY_KEY_IN_USE / RATE_LIMITED: the contract's wait
                reasons[f"{status} {code}"] += 1
                if status == 409 and code != "IDEMPOTENCY_KEY_IN_USE":
                    return self._unexpected(reasons, attempts, response, started)
                wait = float(response.headers.get("Retry-After", "1"))
                time.sleep(min(wait, RETRY_AFTER_CAP_SECONDS) * self.rng.uniform(0.5, 1.0))
                continue
            if status == 401 and code == "TOKEN_EXPIRED" and logins < 3:
                reasons["401 TOKEN_EXPIRED"] += 1
                logins += 1
                self.login()
                continue
            if status >= 500:  # stored nothing (SPEC §4): retry, on the other process
                reasons[f"{status} {code}"] += 1
                self._anomaly(
                    "server_error",
                    status=status,
                    body=problem,
                    path=path,
                    key=key,
                    server=self.plan.base_urls[self.server % len(self.http)],
                )
                failures += 1
                self.server += 1
                self._backoff(failures)
                continue
            return self._unexpected(reasons, attempts, response, started)

    def _unexpected(
        self, reasons: Counter[str], attempts: int, response: httpx.Response, started: float
    ) -> CallResult:
        self._anomaly("unexpected_status", status=response.status_code, body=response.text[:2000])
        return CallResult(
            "unexpected",
            attempts,
            reasons,
            status=response.status_code,
            code=_json(response).get("code"),
            elapsed=time.monotonic() - started,
        )

    # -- traffic

    def _new_op(self) -> str:
        self.seq += 1
        return f"c{self.plan.index}-{self.seq}"

    def _event(self, collector: str, lines: list[int], original: str | None = None) -> bytes:
        moment = datetime.now(UTC) - timedelta(seconds=5)
        body: dict[str, Any] = {
            "clientTransactionId": f"crash-{uuid.uuid4().hex}",
            "collectorNumber": collector,
            "sponsorCode": self.plan.sponsor,
            "transactionDateTime": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": m} for m in lines],
        }
        if original is not None:
            body["originalClientTransactionId"] = original
        return json.dumps(body, separators=(",", ":")).encode()

    def step(self) -> bool:
        """One logical call; False when it got no definitive answer within its deadline."""
        kind = self.rng.choices(list(TRAFFIC_MIX), weights=list(TRAFFIC_MIX.values()))[0]
        if kind == "reverse" and not self.reversible:
            kind = "issue"
        if kind in ("over_reverse", "replay_new_key") and not self.issued:
            kind = "issue"
        if kind == "replay_same_key" and not self.history:
            kind = "issue"
        actions: dict[str, Callable[[], bool]] = {
            "issue": self._do_issue,
            "reverse": self._do_reverse,
            "over_reverse": self._do_over_reverse,
            "replay_same_key": self._do_replay_same_key,
            "replay_new_key": self._do_replay_new_key,
        }
        return actions[kind]()

    def _do_issue(self) -> bool:
        collector = self.rng.choice(self.plan.collectors)
        lines = [
            self.rng.randint(1, LINE_MILES_MAX) for _ in range(self.rng.randint(1, ISSUE_LINES_MAX))
        ]
        body = self._event(collector, lines)
        record = self._send("issue", POST_EVENT, body, collector=collector, miles=sum(lines))
        if record["outcome"] == "accepted":
            issued = Issued(record["op"], record["partner_id"], collector, sum(lines))
            self.issued.append(issued)
            self.reversible.append(issued)
        return record["outcome"] != "indeterminate"

    def _do_reverse(self) -> bool:
        original = self.rng.choice(self.reversible)
        remaining = original.miles - original.reversed
        miles = self.rng.randint(1, min(remaining, REVERSE_MILES_MAX))
        body = self._event(original.collector, [miles], original.partner_id)
        record = self._send(
            "reverse",
            REVERSE_EVENT,
            body,
            collector=original.collector,
            miles=miles,
            original=original.partner_id,
        )
        if record["outcome"] == "accepted":
            original.reversed += miles
            if original.reversed == original.miles:
                self.reversible.remove(original)
        return record["outcome"] != "indeterminate"

    def _do_over_reverse(self) -> bool:
        """1–5 miles more than is left of the original: a final 400 REVERSAL_EXCEEDS_ORIGINAL."""
        original = self.rng.choice(self.issued)
        miles = original.miles - original.reversed + self.rng.randint(1, 5)
        body = self._event(original.collector, [miles], original.partner_id)
        record = self._send(
            "over_reverse",
            REVERSE_EVENT,
            body,
            collector=original.collector,
            miles=miles,
            original=original.partner_id,
        )
        return record["outcome"] != "indeterminate"

    def _do_replay_same_key(self) -> bool:
        target = self.rng.choice(self.history)
        record = self._send(
            "replay_same_key",
            target["path"],
            self.bodies[target["op"]],
            key=target["key"],
            target=target["op"],
            collector=target["collector"],
        )
        return record["outcome"] != "indeterminate"

    def _do_replay_new_key(self) -> bool:
        target = self.by_op[self.rng.choice(self.issued).op]  # an acknowledged POST/EVENT
        record = self._send(
            "replay_new_key",
            target["path"],
            self.bodies[target["op"]],
            target=target["op"],
            collector=target["collector"],
        )
        return record["outcome"] != "indeterminate"

    def _send(
        self,
        kind: str,
        path: str,
        body: bytes,
        *,
        key: str | None = None,
        **fields: Unpack[OpDetails],
    ) -> OpRecord:
        op = self._new_op()
        key = key or str(uuid.uuid4())
        result = self.call(
            path, body, key, lose_first=self.rng.random() < LOST_RESPONSE_PROBABILITY
        )
        record: OpRecord = {
            "type": "op",
            "op": op,
            "client": self.plan.index,
            "kind": kind,
            "path": path,
            "key": key,
            "partner_id": json.loads(body)["clientTransactionId"],
            "outcome": result.outcome,
            "attempts": result.attempts,
            "reasons": dict(result.reasons),
            "status": result.status,
            "code": result.code,
            "transaction_id": result.transaction_id,
            "replayed": result.replayed,
            "line_statuses": result.line_statuses,
            "elapsed": round(result.elapsed, 4),
            **fields,
        }
        self._write(record)
        if kind in ("issue", "reverse", "over_reverse") and result.outcome in (
            "accepted",
            "rejected",
        ):
            self.bodies[op] = body
            self.history.append(record)
            self.by_op[op] = record
        return record


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_records(paths: list[Path]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in paths:
        if path.exists():
            with path.open(encoding="utf-8") as stream:
                records.extend(json.loads(line) for line in stream if line.strip())
    return records
