"""The HTTP/1.1 connection layer of `rewardmiles serve`: uvicorn's httptools protocol, with what a
client may hold bounded (docs/adr/0002-connection-limits.md).

- A request head (request line and headers, as sent) larger than `limits.request_head_bytes_max`
  is refused while it is read: 431 `HEADERS_TOO_LARGE`, then the connection is closed. The parser
  never holds more than the limit (plus one read of the socket) of a head.
- A request head must arrive complete within `http_head_timeout_seconds` of its first byte (the
  first one of a connection: of the connection's opening). Past it the connection is closed,
  with 408 `REQUEST_TIMEOUT` when part of a head had arrived.
- A connection idle between requests is closed after `http_keep_alive_seconds`.
- A process holds at most `http_connections_max` connections; the ones beyond are answered 503
  `SERVICE_UNAVAILABLE` (`Retry-After: 1`) and closed before anything of them is read. One
  `connection_limit_reached` warning starts an episode, one `connection_limit_cleared` (with the
  count refused) ends it once the process is back to three quarters of the cap.

`serve` passes the class to uvicorn as `http=` (one process and `--workers N` alike); each process
reads its settings once, from the environment, on its first connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from rewardmiles import ids, limits, logs
from rewardmiles.config import Settings
from rewardmiles.errors import problem
from rewardmiles.http.responses import PROBLEM_JSON, SECURITY_HEADERS

log = logs.get_logger("rewardmiles.http")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    head_bytes_max: int
    head_timeout_seconds: float
    keep_alive_seconds: float
    connections_max: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            head_bytes_max=limits.request_head_bytes_max,
            head_timeout_seconds=settings.http_head_timeout_seconds,
            keep_alive_seconds=settings.http_keep_alive_seconds,
            connections_max=settings.http_connections_max,
        )


@cache
def process_limits() -> ConnectionLimits:
    """The limits of this process, read once (`serve` has validated the same environment)."""
    return ConnectionLimits.from_settings(Settings.from_env())


class ConnectionCapEpisodes:
    """One warning when the cap is reached, one when the process is back under three quarters of
    it, whatever the number of connections refused in between."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.refused = 0

    def refused_one(self, connections_max: int) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.refused = 0
            log.warning(
                "connection_limit_reached",
                connections_max=connections_max,
                detail="connections beyond the cap get 503 and are closed until the process "
                "is back under three quarters of it (REWARDMILES_HTTP_CONNECTIONS_MAX)",
            )
        self.refused += 1

    def released(self, open_connections: int, connections_max: int) -> None:
        if self.since is not None and open_connections * 4 <= connections_max * 3:
            log.warning(
                "connection_limit_cleared",
                connections_max=connections_max,
                refused=self.refused,
                seconds=round(time.monotonic() - self.since, 1),
            )
            self.since = None


_episodes = ConnectionCapEpisodes()


def refusal(
    status: int,
    code: str,
    detail: str,
    default_headers: list[tuple[bytes, bytes]],
    *extra: tuple[bytes, bytes],
) -> tuple[bytes, str]:
    """A complete problem+json response that closes the connection, and its request id."""
    request_id = ids.uuid4_hex()
    body = orjson.dumps(problem(code, detail, request_id))
    head = [STATUS_LINE[status]]
    headers = (
        *default_headers,
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
        *SECURITY_HEADERS,
        *extra,
    )
    head.extend(name + b": " + value + b"\r\n" for name, value in headers)
    return b"".join(head) + b"\r\n" + body, request_id


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head size, a head deadline, an idle timeout
    armed from the connection's opening, and a connection cap (see the module's docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = process_limits()
        self.timeout_keep_alive = self.limits.keep_alive_seconds  # type: ignore[assignment]
        self._reading_head = True  # the next bytes are (part of) a request head
        self._head_room = self.limits.head_bytes_max  # bytes the current head may still take
        self._head_timer: asyncio.TimerHandle | None = None  # the current head's deadline
        self._head_begun = False  # a byte of the current head has been parsed
        self._closing = False  # answered with a refusal: input is dropped until closed
        self._linger: asyncio.TimerHandle | None = None

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        connections_max = self.limits.connections_max
        if len(self.connections) >= connections_max:
            self.transport = transport
            self._closing = True
            _episodes.refused_one(connections_max)
            response, _ = refusal(
                503,
                "SERVICE_UNAVAILABLE",
                "The server holds as many connections as it takes; retry after `Retry-After` "
                "seconds.",
                self.server_state.default_headers,
                (b"retry-after", b"1"),
            )
            transport.write(response)
            transport.close()
            return
        super().connection_made(transport)
        # The first head is due from the opening.
        self._head_timer = self.loop.call_later(
            self.limits.head_timeout_seconds, self._head_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger = None
        if self.flow is None:  # refused at the cap: never counted
            return
        super().connection_lost(exc)
        _episodes.released(len(self.connections), self.limits.connections_max)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # answered already; dropped until the connection closes
        while data and self._reading_head:
            # Feed no more of a head than it may still take; what is left of the head's room
            # after a feed that did not complete it is gone.
            room = self._head_room
            if len(data) <= room:
                piece, data = data, b""
            else:
                piece, data = data[:room], data[room:]
            self._head_room = room - len(piece)
            HttpToolsProtocol.data_received(self, piece)
            if self._closing or self.transport.is_closing():
                return
            if self._reading_head and self._head_room <= 0:
                self._refuse_head(
                    431,
                    "HEADERS_TOO_LARGE",
                    f"The request line and headers exceed {self.limits.head_bytes_max} bytes.",
                )
                return
        if data:
            # The body (its size is the application's limit) and, at most, the beginning of a
            # pipelined head within this same read.
            HttpToolsProtocol.data_received(self, data)
        if self._head_begun and self._head_timer is None:
            # A head began in this read and did not end in it (the usual request, whose head
            # arrives in one read, needs no timer): it is due from now.
            self._head_timer = self.loop.call_later(
                self.limits.head_timeout_seconds, self._head_timed_out
            )

    # -- parser callbacks

    def on_message_begin(self) -> None:
        self._head_begun = True
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_begun = False
        self._head_room = self.limits.head_bytes_max
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._reading_head = True
        HttpToolsProtocol.on_message_complete(self)

    # -- refusals

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._closing:
            return
        if not self._head_begun:
            self.transport.close()  # nothing asked, nothing answered
        elif self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head stalls behind a response being written: that response is the
            # connection's last one.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
        else:
            self._refuse_head(
                408,
                "REQUEST_TIMEOUT",
                f"The request line and headers did not arrive within "
                f"{self.limits.head_timeout_seconds:g} s.",
            )

    def _refuse_head(self, status: int, code: str, detail: str) -> None:
        """Answer `status` and close: the answer, then end of output, and whatever still arrives
        is read and dropped for a moment, so the client can read the answer before the close."""
        self._closing = True
        self._unset_keepalive_if_required()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is being written: no answer can follow it
            return
        response, request_id = refusal(status, code, detail, self.server_state.default_headers)
        log.info("request_refused", request_id=request_id, status=status, code=code)
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(
            limits.refused_connection_linger_seconds, self.transport.close
        )
