"""Closed-loop HTTP/1.1 load generator: uvloop protocols over raw keep-alive sockets.

One process opens `concurrency` connections; each sends its next request as soon as the previous
response is complete (closed loop). Request bytes are a per-connection prebuilt head plus the few
fields that change (Idempotency-Key, clientTransactionId, collector); responses are parsed only
for the status line, Content-Length (or chunked framing) and, for replays, one header. The
generator measures its own CPU time over the measurement window, so a run shows what it cost.

    python -m bench.loadgen '{"port": 8000, "scenario": "issue", "token": "...", ...}'

prints one JSON object (see `Result`). Scenarios:

- `issue`:  POST/EVENT, a fresh Idempotency-Key and clientTransactionId per request, collector
            drawn at random from `collectors` enrolled numbers (`collector_base` + 1 … + n);
- `mix`:    each connection alternates POST/EVENT and a REVERSE/EVENT of the issue it just had
            acknowledged (50/50);
- `replay`: each connection first completes `replay_keys` issues (not measured), then replays
            them round-robin (same key, same body) and expects 200 + `Idempotent-Replayed: true`;
- `noop`:   the issue request sent to `path` (the no-op endpoint of bench/noop_server.py or the
            fixed responder of bench/rawserver.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

ISSUE_PATH = "/checkout/issuance/post/event"
REVERSE_PATH = "/checkout/issuance/reverse/event"
NOOP_PATH = "/checkout/bench/noop"
REPLAYED_HEADER = b"\r\nidempotent-replayed: true"
ERROR_SAMPLES_MAX = 5


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    scenario: str = "issue"  # issue | mix | replay | noop
    path: str = ISSUE_PATH  # issue and noop only
    token: str = ""
    sponsor: str = "BNCH"
    offer: str = "STANDARD"
    miles: int = 5
    collector_base: int = 80_000_000_000
    collectors: int = 10_000
    concurrency: int = 16
    warmup: float = 3.0
    duration: float = 10.0
    run_id: str = ""
    moment: str = ""  # transactionDateTime of every request (ISO-8601 with Z)
    replay_keys: int = 20  # per connection
    timeout: float = 30.0
    connect_attempts: int = 50


@dataclass
class Result:
    scenario: str
    concurrency: int
    duration_s: float
    requests: int
    rps: float
    latency_ms: dict[str, float]
    statuses: dict[str, int]
    by_kind: dict[str, dict[str, int]]
    non_2xx: int
    transport_errors: int
    unexpected: int  # 2xx but not what the scenario expects (e.g. a replay without the header)
    cpu: dict[str, float]
    window_monotonic: tuple[float, float]
    prepared_requests: int
    error_samples: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- wire


def take_response(buf: bytearray) -> tuple[int, bytes, bytes] | None:
    """Remove one complete response from `buf`: (status, lower-cased head, body if status ≥ 400).

    None while the response is incomplete. Handles Content-Length and chunked bodies; a response
    with neither has no body (the generator only sends POSTs, answered with a length)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    start = end + 4
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 17)
        length = int(head[i + 17 : j if j > 0 else len(head)])
        stop = start + length
        if len(buf) < stop:
            return None
        body = bytes(buf[start:stop]) if status >= 400 else b""
        del buf[:stop]
        return status, head, body
    if b"\r\ntransfer-encoding: chunked" in head:
        pos = start
        chunks: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            chunk_end = eol + 2 + size
            if len(buf) < chunk_end + 2:
                return None
            chunks.append(bytes(buf[eol + 2 : chunk_end]))
            pos = chunk_end + 2
            if size == 0:
                del buf[:pos]
                return status, head, b"".join(chunks) if status >= 400 else b""
    del buf[:start]
    return status, head, b""


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        waiter = self.waiter
        if waiter is None:
            return
        response = take_response(buf)
        if response is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        if self.lost or self.transport is None:
            raise ConnectionError("connection closed")
        waiter: asyncio.Future[tuple[int, bytes, bytes]] = self.loop.create_future()
        self.waiter = waiter
        self.transport.write(data)
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("response timeout"))


async def connect(cfg: Config) -> Connection:
    loop = asyncio.get_running_loop()
    last: Exception | None = None
    for attempt in range(cfg.connect_attempts):
        try:
            _, protocol = await loop.create_connection(lambda: Connection(loop), cfg.host, cfg.port)
            return protocol
        except OSError as exc:
            last = exc
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
    raise ConnectionError(f"cannot connect to {cfg.host}:{cfg.port}: {last!r}")


# --------------------------------------------------------------------------- scenarios


class Requests:
    """Builds a connection's requests and judges its responses."""

    def __init__(self, cfg: Config, conn_no: int) -> None:
        self.cfg = cfg
        self.prefix = f"{cfg.run_id}-{conn_no}-"
        self.seq = 0
        self.kind = "issue"
        self.numbers = [f"{cfg.collector_base + i:011d}" for i in range(1, cfg.collectors + 1)]
        host = f"{cfg.host}:{cfg.port}".encode()
        auth = f"Authorization: Bearer {cfg.token}\r\n".encode() if cfg.token else b""

        def head(path: str) -> bytes:
            return (
                b"POST "
                + path.encode()
                + b" HTTP/1.1\r\nHost: "
                + host
                + b"\r\n"
                + auth
                + b"Content-Type: application/json\r\n"
            )

        self.issue_head = head(cfg.path if cfg.scenario in ("issue", "noop") else ISSUE_PATH)
        self.reverse_head = head(REVERSE_PATH)
        common = (
            f'"sponsorCode":"{cfg.sponsor}","transactionDateTime":"{cfg.moment}",'
            f'"issuances":[{{"issuanceOfferCode":"{cfg.offer}","milesAmount":{cfg.miles}}}]}}'
        )
        self.issue_body = '{"clientTransactionId":"%s","collectorNumber":"%s",' + common
        self.reverse_body = (
            '{"clientTransactionId":"%s","collectorNumber":"%s",'
            '"originalClientTransactionId":"%s",' + common
        )

    @staticmethod
    def build(head: bytes, key: str, body: str) -> bytes:
        raw = body.encode()
        return b"%sIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            head,
            key.encode(),
            len(raw),
            raw,
        )

    def issue(self) -> tuple[bytes, str, str]:
        self.seq += 1
        key = f"{self.prefix}{self.seq}"
        number = random.choice(self.numbers)
        return self.build(self.issue_head, key, self.issue_body % (key, number)), key, number

    async def prepare(self, send: Callable[[bytes], Awaitable[tuple[int, bytes, bytes]]]) -> int:
        return 0

    def next(self) -> bytes:
        return self.issue()[0]

    def done(self, status: int, head: bytes) -> bool:
        return status == 200

    def failed(self) -> None:
        """The last request got no response (transport error)."""


class Mix(Requests):
    def __init__(self, cfg: Config, conn_no: int) -> None:
        super().__init__(cfg, conn_no)
        self.pending: tuple[str, str] | None = None  # (key, collector) of the last issue
        self.original: tuple[str, str] | None = None  # acknowledged issue to reverse next

    def next(self) -> bytes:
        if self.original is not None:
            key, number = self.original
            self.kind = "reverse"
            body = self.reverse_body % ("r" + key, number, key)
            return self.build(self.reverse_head, "r" + key, body)
        self.kind = "issue"
        request, key, number = self.issue()
        self.pending = (key, number)
        return request

    def done(self, status: int, head: bytes) -> bool:
        if self.kind == "issue":
            self.original = self.pending if status in (200, 202) else None
        else:
            self.original = None
        return status == 200

    def failed(self) -> None:
        self.original = None


class Replay(Requests):
    def __init__(self, cfg: Config, conn_no: int) -> None:
        super().__init__(cfg, conn_no)
        self.kind = "replay"
        self.saved: list[bytes] = []
        self.position = 0

    async def prepare(self, send: Callable[[bytes], Awaitable[tuple[int, bytes, bytes]]]) -> int:
        for _ in range(self.cfg.replay_keys):
            request = self.issue()[0]
            status, _, body = await send(request)
            if status != 200:
                raise RuntimeError(f"replay seeding got {status}: {body[:300]!r}")
            self.saved.append(request)
        return len(self.saved)

    def next(self) -> bytes:
        request = self.saved[self.position]
        self.position = (self.position + 1) % len(self.saved)
        return request

    def done(self, status: int, head: bytes) -> bool:
        return status == 200 and REPLAYED_HEADER in head


SCENARIOS: dict[str, type[Requests]] = {
    "issue": Requests,
    "noop": Requests,
    "mix": Mix,
    "replay": Replay,
}


# --------------------------------------------------------------------------- run


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.by_kind: dict[str, dict[int, int]] = {}
        self.transport_errors = 0
        self.unexpected = 0
        self.error_samples: list[str] = []


async def _worker(
    cfg: Config,
    conn: Connection,
    requests: Requests,
    tally: Tally,
    window: tuple[float, float],
) -> None:
    start, end = window
    perf = time.perf_counter
    latencies = tally.latencies
    by_kind = tally.by_kind
    timeout = cfg.timeout
    while True:
        data = requests.next()
        kind = requests.kind
        t0 = perf()
        if t0 >= end:
            break
        try:
            status, head, body = await conn.request(data, timeout)
        except (ConnectionError, TimeoutError, OSError) as exc:
            if t0 >= start:
                tally.transport_errors += 1
                if len(tally.error_samples) < ERROR_SAMPLES_MAX:
                    tally.error_samples.append(f"transport: {exc!r}")
            requests.failed()
            conn.close()
            if perf() >= end:
                break
            conn = await connect(cfg)
            continue
        t1 = perf()
        expected = requests.done(status, head)
        if t0 < start:
            continue
        latencies.append(t1 - t0)
        counts = by_kind.get(kind)
        if counts is None:
            counts = by_kind[kind] = {}
        counts[status] = counts.get(status, 0) + 1
        if not expected and 200 <= status < 300:
            tally.unexpected += 1
        if status >= 300 and len(tally.error_samples) < ERROR_SAMPLES_MAX:
            tally.error_samples.append(f"{kind} {status}: {body[:300].decode(errors='replace')}")
        if b"\r\nconnection: close" in head:
            conn.close()
            conn = await connect(cfg)
    conn.close()


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0…1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(cfg: Config) -> Result:
    if cfg.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {cfg.scenario!r}")
    if not cfg.run_id:
        cfg.run_id = f"{random.getrandbits(40):010x}"
    conns = await asyncio.gather(*(connect(cfg) for _ in range(cfg.concurrency)))
    builders = [SCENARIOS[cfg.scenario](cfg, i) for i in range(cfg.concurrency)]

    def sender(conn: Connection) -> Callable[[bytes], Awaitable[tuple[int, bytes, bytes]]]:
        return lambda data: conn.request(data, cfg.timeout)

    prepared = await asyncio.gather(
        *(b.prepare(sender(c)) for b, c in zip(builders, conns, strict=True))
    )
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    window = (now + cfg.warmup, now + cfg.warmup + cfg.duration)
    marks: dict[str, Any] = {}

    def mark(name: str) -> None:
        marks[name] = (time.perf_counter(), time.monotonic(), _cpu())

    loop.call_later(cfg.warmup, mark, "start")
    loop.call_later(cfg.warmup + cfg.duration, mark, "end")
    tally = Tally()
    await asyncio.gather(
        *(_worker(cfg, c, b, tally, window) for c, b in zip(conns, builders, strict=True))
    )
    if "end" not in marks:
        mark("end")
    (p0, m0, (u0, s0)), (p1, m1, (u1, s1)) = marks["start"], marks["end"]
    elapsed = p1 - p0
    latencies = sorted(tally.latencies)
    n = len(latencies)
    statuses: dict[str, int] = {}
    for counts in tally.by_kind.values():
        for status, count in counts.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    non_2xx = sum(c for s, c in statuses.items() if not 200 <= int(s) < 300)
    cpu_user, cpu_sys = u1 - u0, s1 - s0

    def ms(value: float) -> float:
        return round(value * 1000, 3)

    return Result(
        scenario=cfg.scenario,
        concurrency=cfg.concurrency,
        duration_s=round(elapsed, 3),
        requests=n,
        rps=round(n / elapsed, 1) if elapsed > 0 else 0.0,
        latency_ms={
            "min": ms(latencies[0]) if n else math.nan,
            "p50": ms(percentile(latencies, 0.50)),
            "p90": ms(percentile(latencies, 0.90)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(latencies[-1]) if n else math.nan,
            "mean": ms(sum(latencies) / n) if n else math.nan,
        },
        statuses=statuses,
        by_kind={k: {str(s): c for s, c in v.items()} for k, v in tally.by_kind.items()},
        non_2xx=non_2xx,
        transport_errors=tally.transport_errors,
        unexpected=tally.unexpected,
        cpu={
            "user_s": round(cpu_user, 3),
            "sys_s": round(cpu_sys, 3),
            "percent_of_one_core": round(100 * (cpu_user + cpu_sys) / elapsed, 1),
            "us_per_request": round(1e6 * (cpu_user + cpu_sys) / n, 1) if n else math.nan,
        },
        window_monotonic=(m0, m1),
        prepared_requests=sum(prepared),
        error_samples=tally.error_samples,
    )


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the service
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m bench.loadgen CONFIG_JSON|@FILE")
    text = args[0]
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    cfg = Config(**json.loads(text))
    install_uvloop()
    result = asyncio.run(run(cfg))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
