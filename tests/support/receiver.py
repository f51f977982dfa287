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
