"""A webhook receiver on loopback: records what it gets, fails on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    always_fail: bool = False
    received: list[Received] = field(default_factory=list)
    answered_ok: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.received.append(Received(headers, body))
            if self.always_fail or len(self.received) <= self.fail_first:
                return 503
            self.answered_ok += 1
            return 204


@contextmanager
def receiver(*, fail_first: int = 0, always_fail: bool = False) -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status = state["r"].handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(
        f"http://127.0.0.1:{server.server_address[1]}/hook",
        fail_first=fail_first,
        always_fail=always_fail,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Dripper:
    """A receiver that answers one byte every `interval` seconds (a slow-loris receiver)."""

    url: str
    requests: int = 0
    in_flight: int = 0
    in_flight_max: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


DRIP_ANSWER = (
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Padding: " + b"." * 40 + b"\r\n\r\n"
)


@contextmanager
def dripping_receiver(*, interval: float = 1.0) -> Iterator[Dripper]:
    """Reads the request, then drips its answer (~80 bytes, so over a minute at 1 byte/s);
    stops when the sender hangs up or the receiver is closed."""
    stop = threading.Event()
    state: dict[str, Dripper] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            dripper = state["r"]
            dripper.enter()
            try:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                for byte in DRIP_ANSWER:
                    if stop.wait(interval):
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:
                pass  # the sender gave up
            finally:
                dripper.leave()
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["r"] = Dripper(f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
