"""Hostile clients at the connection level, against a real `rewardmiles serve`: endless headers,
half-sent and byte-by-byte request heads (slowloris), idle keep-alive connections, and more
connections than a process takes. Every attack is bounded in size and time and stays on loopback.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from rewardmiles import limits
from tests.conftest import ServerFactory
from tests.support.server import Server

# Small deadlines so that each attack is over in a second or two.
FAST_TIMEOUTS = {
    "REWARDMILES_HTTP_HEAD_TIMEOUT_SECONDS": "1",
    "REWARDMILES_HTTP_KEEP_ALIVE_SECONDS": "1",
}
CHUNK = b"a" * 16_384


@pytest.fixture(scope="module")
def guarded(dialect: str, server_factory: ServerFactory) -> Server:
    """One API process (its RSS is the server's) with 1-second head and keep-alive deadlines."""
    return server_factory(dialect, env=FAST_TIMEOUTS)


def _address(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(_address(server), timeout=5)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == self.status, problem
        return problem


def _parse(raw: bytes) -> Answer | None:
    """The first complete response in `raw`, or None when it is not complete yet."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return Answer(status, headers, rest[:length])


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `timeout` passes (False)."""
    received = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65_536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not data:
            return received, True
        received += data
    return received, False


def _read_answer(sock: socket.socket, timeout: float = 5) -> Answer:
    received = b""
    deadline = time.monotonic() + timeout
    while (answer := _parse(received)) is None:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        data = sock.recv(65_536)
        assert data, f"closed before a complete answer: {received!r}"
        received += data
    return answer


@dataclass
class EndlessHeader:
    """Sends one header that never ends (up to `budget` bytes) until the server answers."""

    sock: socket.socket
    budget: int
    sent: int = 0
    received: bytes = b""
    closed: bool = False
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()

    def _run(self) -> None:
        sock = self.sock
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: attack\r\nX-Endless: ")
        sock.setblocking(False)
        deadline = time.monotonic() + 20
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while time.monotonic() < deadline:
                for _key, events in selector.select(timeout=0.5):
                    if events & selectors.EVENT_READ:
                        sock.setblocking(True)
                        self.received, self.closed = _read_until_closed(sock, 3)
                        return
                    if self.sent < self.budget:
                        with contextlib.suppress(BlockingIOError):
                            self.sent += sock.send(CHUNK)
                if self.sent >= self.budget:
                    selector.modify(sock, selectors.EVENT_READ)


def test_an_endless_header_is_refused_with_431_while_memory_stays_bounded(
    guarded: Server,
) -> None:
    pid = guarded.process.pid
    baseline = _rss_bytes(pid)
    attackers = [EndlessHeader(_connect(guarded), budget=16 * 1024**2) for _ in range(8)]
    threads = [threading.Thread(target=a.run, daemon=True) for a in attackers]
    for thread in threads:
        thread.start()
    peak = baseline
    while not all(a.done.is_set() for a in attackers):
        peak = max(peak, _rss_bytes(pid))
        time.sleep(0.02)
    for attacker in attackers:
        attacker.sock.close()
        assert attacker.error is None, attacker.error
        answer = _parse(attacker.received)
        assert answer is not None, (attacker.sent, attacker.received[:200])
        assert answer.status == 431
        assert answer.problem()["code"] == "HEADERS_TOO_LARGE"
        assert answer.headers.get("connection") == "close"
        assert attacker.closed, "the connection stays open after the 431"
        # Answered long before the 16 MiB were sent: the limit, plus what the sockets buffer.
        assert attacker.sent < 8 * 1024**2, attacker.sent
    growth = peak - baseline
    assert growth < 24 * 1024**2, f"RSS grew by {growth / 1024**2:.0f} MiB under 8 endless headers"
    assert httpx.get(guarded.base_url + "/healthz", timeout=2).status_code == 200


def test_a_head_just_under_the_limit_is_served(guarded: Server) -> None:
    # The service's own 431 (16 KiB of names and values) answers before the connection limit.
    padding = "a" * (limits.request_header_bytes_max - 200)
    response = httpx.get(guarded.base_url + "/healthz", headers={"X-Padding": padding}, timeout=5)
    assert response.status_code == 200
    response = httpx.get(
        guarded.base_url + "/healthz", headers={"X-Padding": padding + "a" * 2_000}, timeout=5
    )
    assert response.status_code == 431
    assert response.json()["code"] == "HEADERS_TOO_LARGE"


def test_a_half_sent_request_head_is_closed_after_the_deadline(guarded: Server) -> None:
    with _connect(guarded) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /checkout/issuance/post/event HTTP/1.1\r\nHost: x\r\nContent-Ty")
        received, closed = _read_until_closed(sock, 5)
        waited = time.monotonic() - started
    assert closed, "a half-sent head is still held after 5 s"
    assert 0.8 <= waited <= 3, waited
    answer = _parse(received)
    assert answer is not None, received
    assert answer.status == 408
    assert answer.problem()["code"] == "REQUEST_TIMEOUT"
    assert answer.headers.get("connection") == "close"


def test_a_connection_that_sends_nothing_is_closed_after_the_deadline(guarded: Server) -> None:
    with _connect(guarded) as sock:
        started = time.monotonic()
        received, closed = _read_until_closed(sock, 5)
        waited = time.monotonic() - started
    assert closed, "a silent connection is still held after 5 s"
    assert 0.8 <= waited <= 3, waited
    assert received == b"", "nothing was asked, nothing is answered"


def test_slowloris_connections_are_closed_while_others_are_served(guarded: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 100
    socks = [_connect(guarded) for _ in range(200)]
    started = time.monotonic()
    closed_after: dict[int, float] = {}
    latencies: list[float] = []
    try:
        for sock in socks:
            sock.setblocking(False)
        with selectors.DefaultSelector() as selector, httpx.Client(timeout=2) as other:
            for index, sock in enumerate(socks):
                selector.register(sock, selectors.EVENT_READ, index)
            position = 0
            next_byte = started
            while len(closed_after) < len(socks) and time.monotonic() - started < 5:
                now = time.monotonic()
                if now >= next_byte:  # one byte a second on every open connection
                    for index, sock in enumerate(socks):
                        if index not in closed_after:
                            with contextlib.suppress(OSError):
                                sock.send(head[position : position + 1])
                    position += 1
                    next_byte += 1
                for key, _ in selector.select(timeout=0.05):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    try:
                        data = ready.recv(65_536)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        closed_after[key.data] = time.monotonic() - started
                        selector.unregister(ready)
                began = time.monotonic()
                assert other.get(guarded.base_url + "/healthz").status_code == 200
                latencies.append(time.monotonic() - began)
    finally:
        for sock in socks:
            sock.close()
    assert len(closed_after) == len(socks), f"{len(socks) - len(closed_after)} still open after 5 s"
    assert min(closed_after.values()) >= 0.8, "closed before their deadline"
    assert max(closed_after.values()) <= 3.5, max(closed_after.values())
    latencies.sort()
    # Others are served as usual (bounds loose enough for a busy 2-core machine).
    assert latencies[len(latencies) // 2] < 0.1, latencies
    assert latencies[-1] < 1, latencies


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(guarded: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(guarded) as sock:
        sock.sendall(request)
        assert _read_answer(sock).status == 200
        time.sleep(0.5)  # within the keep-alive timeout: the connection is reused
        sock.sendall(request)
        assert _read_answer(sock).status == 200
        idle_since = time.monotonic()
        received, closed = _read_until_closed(sock, 5)
        idle = time.monotonic() - idle_since
    assert closed
    assert received == b""
    assert 0.8 <= idle <= 2.5, idle


def test_the_head_deadline_does_not_run_while_a_connection_is_idle(
    dialect: str, server_factory: ServerFactory
) -> None:
    """Idle between requests is the keep-alive timeout's business, however long it is; the head
    deadline starts with the first byte of the next head."""
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_HTTP_HEAD_TIMEOUT_SECONDS": "1",
            "REWARDMILES_HTTP_KEEP_ALIVE_SECONDS": "4",
        },
    )
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(server) as sock:
        sock.sendall(request)
        assert _read_answer(sock).status == 200
        time.sleep(1.6)  # idle past the head deadline, within the keep-alive timeout
        sock.sendall(request)
        assert _read_answer(sock).status == 200


def test_connections_beyond_the_cap_are_refused_and_logged_once(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(dialect, env={"REWARDMILES_HTTP_CONNECTIONS_MAX": "4"})
    assert httpx.get(server.base_url + "/healthz", timeout=2).status_code == 200
    holders = [_connect(server) for _ in range(4)]
    try:
        # The server has taken the four once a fifth connection is refused (a probe that sends
        # nothing and reads: it gets the whole answer, then the close).
        refused = _until_refused(server)
        answered = 0
        for _ in range(6):
            with _connect(server) as sock:
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    received, closed = _read_until_closed(sock, 3)
                except (BrokenPipeError, ConnectionResetError):
                    received, closed = b"", True
            assert closed, "a connection beyond the cap is held"
            answer = _parse(received)
            assert answer is None or answer.status == 503, received
            if answer is not None:
                assert answer.problem()["code"] == "SERVICE_UNAVAILABLE"
                assert answer.headers.get("retry-after") == "1"
                answered += 1
            refused += 1
        # A server that closed over-cap connections without a word would pass the loop above.
        assert answered >= 1, "no connection beyond the cap was answered 503"
    finally:
        for sock in holders:
            sock.close()
    _wait_for(lambda: bool(_events(server, "connection_limit_cleared")))
    reached = _events(server, "connection_limit_reached")
    assert len(reached) == 1, reached  # once for the episode, not once per refusal
    assert reached[0]["connections_max"] == 4
    assert reached[0]["level"] == "warning"
    cleared = _events(server, "connection_limit_cleared")
    assert len(cleared) == 1, cleared
    assert cleared[0]["refused"] == refused
    # Below the cap, everything works: several connections at once.
    with httpx.Client(timeout=2) as a, httpx.Client(timeout=2) as b:
        assert a.get(server.base_url + "/healthz").status_code == 200
        assert b.get(server.base_url + "/healthz").status_code == 200


def test_api_processes_of_workers_mode_enforce_the_same_limits(
    dialect: str, server_factory: ServerFactory
) -> None:
    if dialect != "postgresql":
        pytest.skip("--workers > 1 needs PostgreSQL")
    server = server_factory(dialect, env=FAST_TIMEOUTS, workers=2)
    for _ in range(4):  # connections land on either process
        with _connect(server) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half")
            received, closed = _read_until_closed(sock, 5)
            waited = time.monotonic() - started
        assert closed
        assert 0.8 <= waited <= 3, waited
        answer = _parse(received)
        assert answer is not None, received
        assert answer.status == 408
        attacker = EndlessHeader(_connect(server), budget=4 * 1024**2)
        attacker.run()
        attacker.sock.close()
        answer = _parse(attacker.received)
        assert answer is not None, attacker.received[:200]
        assert answer.status == 431


def _until_refused(server: Server, timeout: float = 5) -> int:
    """Open probe connections (sending nothing) until one is answered 503 and closed; a probe the
    server holds instead (it has not taken all the connections before it yet) is closed and tried
    again. The number of probes refused: one."""
    deadline = time.monotonic() + timeout
    while True:
        with _connect(server) as probe:
            received, closed = _read_until_closed(probe, 0.5)
        if closed:
            answer = _parse(received)
            assert answer is not None, received
            assert answer.status == 503, received
            assert answer.problem()["code"] == "SERVICE_UNAVAILABLE"
            assert answer.headers.get("retry-after") == "1"
            return 1
        assert time.monotonic() < deadline, "no connection beyond the cap was refused in time"


def _events(server: Server, name: str) -> list[dict[str, Any]]:
    """The server's JSON log events called `name`."""
    events = []
    for line in server.log().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            events.append(event)
    return events


def _wait_for(condition: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 30, "an attack test ran too long"
