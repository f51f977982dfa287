"""Hostile clients against a real server: bodies that cost much CPU to validate, token requests
that never end or never stop, and sign-in floods. Each attack is bounded (size and time) and runs
over the loopback only; what is checked is the attacker's answer and that everyone else is still
served meanwhile."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from rewardmiles import limits
from rewardmiles.auth import service as auth
from rewardmiles.db.engine import Database
from tests.conftest import ServerFactory
from tests.e2e.conftest import World
from tests.support import data
from tests.support.partner import POST_EVENT, Partner
from tests.support.problems import assert_problem
from tests.support.server import Server

UNKNOWN_KEYS = 30_000


def _latencies_while(
    busy: Callable[[], None], probe: Callable[[], None], *, settle: float = 0.2
) -> tuple[list[float], float]:
    """Run `busy` in a thread; call `probe` in another, back to back, until `busy` returns.
    Returns the probe latencies (seconds) and how long `busy` took."""
    latencies: list[float] = []
    done = threading.Event()
    elapsed: list[float] = []

    def attack() -> None:
        started = time.perf_counter()
        try:
            busy()
        finally:
            elapsed.append(time.perf_counter() - started)
            done.set()

    def measure() -> None:
        while not done.is_set():
            started = time.perf_counter()
            probe()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)

    prober = threading.Thread(target=measure)
    prober.start()
    time.sleep(settle)
    attacker = threading.Thread(target=attack)
    attacker.start()
    attacker.join(timeout=60)
    done.set()
    prober.join(timeout=60)
    return latencies, elapsed[0] if elapsed else float("inf")


# --------------------------------------------------------------- many field errors in one body


def test_a_body_with_30000_unknown_keys_is_a_quick_400_and_other_requests_are_served(
    world: World,
) -> None:
    body: dict[str, Any] = world.body(world.collector())
    body.update({f"k{n:05d}": 1 for n in range(UNKNOWN_KEYS)})
    raw = json.dumps(body).encode()
    assert limits.inline_body_bytes_max < len(raw) < limits.request_body_bytes_max
    answers: list[httpx.Response] = []

    def attack() -> None:
        answers.append(
            httpx.post(
                world.server.base_url + POST_EVENT,
                content=raw,
                headers={
                    "Authorization": f"Bearer {world.partner.token}",
                    "Content-Type": "application/json",
                },
                timeout=10,
            )
        )

    def healthz() -> None:
        assert httpx.get(world.server.base_url + "/healthz", timeout=10).status_code == 200

    latencies, took = _latencies_while(attack, healthz)

    assert took < 2.0, f"the body took {took:.1f} s to refuse"
    problem = assert_problem(answers[0], 400, "FIELD_UNKNOWN")
    assert len(problem["errors"]) == limits.problem_errors_max == 50
    assert problem["errorsOmitted"] == UNKNOWN_KEYS - 50
    assert problem["errors"][0] == {
        "code": "FIELD_UNKNOWN",
        "field": "k00000",
        "message": "is not a field of this request",
    }
    assert f"{UNKNOWN_KEYS} fields are invalid" in problem["detail"]
    assert f"the first 50 are listed, {UNKNOWN_KEYS - 50} more are omitted" in problem["detail"]
    assert latencies, "no /healthz call completed"
    assert max(latencies) < 0.5, f"/healthz waited {max(latencies):.2f} s behind the body"


def test_a_few_errors_are_all_listed_without_an_omitted_count(world: World) -> None:
    body: dict[str, Any] = world.body(world.collector())
    body.update({"extraOne": 1, "extraTwo": 2})
    problem = assert_problem(world.partner.post_event(body), 400, "FIELD_UNKNOWN")
    assert [e["field"] for e in problem["errors"]] == ["extraOne", "extraTwo"]
    assert "errorsOmitted" not in problem
    assert problem["detail"] == "2 fields are invalid."


# --------------------------------------------------------------- token request bodies


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _read_status(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The status code of the answer and the whole answer (head and body, as its Content-Length
    says), within `timeout` seconds."""
    sock.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received or len(received) < _answer_length(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1]), received


def _answer_length(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


TOKEN_HEAD = (
    b"POST /oauth/token HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
)


def test_a_token_request_declaring_256_mib_is_413_before_any_of_it_is_sent(world: World) -> None:
    with _connect(world.server) as sock:
        sock.sendall(TOKEN_HEAD + b"Content-Length: 268435456\r\n\r\n")
        started = time.perf_counter()
        status, received = _read_status(sock, timeout=3)
    assert status == 413, received
    assert b"application/problem+json" in received
    assert b'"code":"PAYLOAD_TOO_LARGE"' in received
    assert time.perf_counter() - started < 2


def test_a_streamed_token_request_is_cut_off_at_8_kib_and_memory_stays_flat(
    world: World,
) -> None:
    pid = world.server.process.pid
    before = _rss_kib(pid)
    # Past the limit but far from its end: the server must answer without waiting for more.
    with _connect(world.server) as sock:
        sock.sendall(TOKEN_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"grant_type=client_credentials&" + b"x" * 994
        for _ in range(16):  # 16 KiB, twice the limit, and no final chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, received = _read_status(sock, timeout=3)
    assert status == 413, received
    # An endless body: whatever is pushed after the limit is not kept.
    pushed = 0
    with _connect(world.server) as sock:
        sock.sendall(TOKEN_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        block = b"x" * 65536
        sock.settimeout(5)
        try:
            while pushed < 64 * 1024 * 1024:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                pushed += len(block)
        except OSError:
            pass  # the server answered and closed the connection
    grown_mib = (_rss_kib(pid) - before) / 1024
    assert grown_mib < 16, f"the server grew {grown_mib:.0f} MiB for a refused token request"
    assert httpx.get(world.server.base_url + "/healthz").status_code == 200


# --------------------------------------------------------------- sign-in floods


def _p50_of_post_event(partner: Partner, sponsor: str, collector: str, seconds: float) -> float:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = partner.post_event(data.event_body(sponsor, collector))
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(latencies)


def test_a_flood_of_token_requests_does_not_starve_issuance(
    dialect: str, server_factory: ServerFactory
) -> None:
    # The production hash cost: every failed check costs what it would cost in service.
    # No partner budget: the issuing client's own calls, back to back, must not meet a 429.
    server = server_factory(
        dialect,
        env={"REWARDMILES_SECRET_HASH_COST": "14", "REWARDMILES_RATE_LIMIT_PER_SECOND": "0"},
    )
    db = Database.from_url(server.database_url)
    try:
        sponsor = data.new_sponsor(db)
        with db.unit_of_work() as session:
            victim_id = auth.create_client(
                session, [sponsor], data.now(), secret_hash_cost=14
            ).client_id
        collector = data.new_collector(db)
        partner = Partner(server.base_url, *data.new_client(db, [sponsor]))
    finally:
        db.dispose()

    _p50_of_post_event(partner, sponsor, collector, 0.5)  # warm up
    idle = _p50_of_post_event(partner, sponsor, collector, 1.5)

    stop = threading.Event()
    outcomes: list[int] = []

    def flood(worker: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                client_id = victim_id if n % 2 else "rmc_" + uuid.uuid4().hex[:24]
                response = http.post(
                    "/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": client_id,
                        "client_secret": "guess-" + uuid.uuid4().hex,
                    },
                    headers={"X-Forwarded-For": f"10.{worker}.{n // 250 % 250}.{n % 250 + 1}"},
                )
                outcomes.append(response.status_code)

    attackers = [threading.Thread(target=flood, args=(w,)) for w in range(8)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(0.5)
        attacked = _p50_of_post_event(partner, sponsor, collector, 3.0)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=30)
    partner.close()

    assert set(outcomes) <= {401, 429}, set(outcomes)
    assert outcomes.count(401) >= 10, "the flood did not reach the secret check"
    assert attacked < max(10 * idle, 0.05), (
        f"POST/EVENT p50 {attacked * 1000:.1f} ms under the flood, {idle * 1000:.1f} ms idle"
    )
