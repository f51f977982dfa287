"""Prometheus metrics: what the service counts, and the text a scrape of `GET /metrics` answers
(`http.metrics` serves it and decides who may read it, with `scrape_allowed` below).

Every instrument is created here, once, with a fixed set of label values: routes by their
template (`/checkout/issuance/transactions/{transactionId}`, never the id), endpoints, line
outcomes, sponsors. The request path counts through `observe_request`, called once per request by
`http.middleware.RequestContextMiddleware` where the access log is written; its label children
are bound once per (route, method, status) and kept, so a request costs two dictionary reads and
the two updates.

Several API processes (`rewardmiles serve --workers N`): prometheus-client's multiprocess mode.
`serve` sets `PROMETHEUS_MULTIPROC_DIR` to a fresh, empty directory before the API processes
start; each process writes its values to files there, and a scrape, whichever process answers
it, adds up every process's files (`MultiProcessCollector`). A process that stops removes its
live gauges (`mark_process_dead`, from the application's shutdown). One process (`--workers 1`,
tests, the CLI) keeps its values in memory and scrapes its own registry.

What is read from the database (pending lines, the outbox) is not counted by any process: a
scrape asks the database, through the repositories, and keeps the answer
`limits.metrics_database_cache_seconds` (`DatabaseGauges`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rewardmiles import limits
from rewardmiles.vocabulary import Endpoint, IssuanceStatus, LineStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST
# No `_created` sample beside each counter and histogram: half the text for nothing Prometheus
# needs (it sees resets itself).
disable_created_metrics()  # type: ignore[no-untyped-call]
# prometheus-client chose its value storage when it was first imported: files in
# PROMETHEUS_MULTIPROC_DIR when that was set (`serve --workers N`), memory otherwise.
MULTIPROCESS: bool = values.ValueClass is not values.MutexValue

# Seconds; around the 50 ms SLO of a partner call.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32)

REQUESTS = Counter(
    "rewardmiles_http_requests",
    "HTTP requests answered, by route template, method and status (499: the client left)",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "rewardmiles_http_request_duration_seconds",
    "Time from the request's arrival in the service to its answer, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
LINES = Counter(
    "rewardmiles_issuance_lines",
    "Issuance lines of partner calls, once each (replays are not counted), by endpoint and "
    "outcome: issued, reversed, pending, rejected (a line refused in an accepted transaction), "
    "recorded (RECORD), refused (a line of a call a business rule refused whole)",
    ["endpoint", "outcome"],
)
MILES_ISSUED = Counter(
    "rewardmiles_miles_issued",
    "Miles credited to collectors by partner calls, as they posted (not at settlement), by sponsor",
    ["sponsor"],
)
MILES_REVERSED = Counter(
    "rewardmiles_miles_reversed",
    "Miles debited from collectors by partner reversals, as they posted, by sponsor",
    ["sponsor"],
)
GROUP_COMMIT_BATCH = Histogram(
    "rewardmiles_group_commit_batch_size",
    "Calls per statement of the group commit (the one-statement issue path, PostgreSQL)",
    buckets=BATCH_SIZE_BUCKETS,
)
WEBHOOK_FAILURES = Counter(
    "rewardmiles_webhook_delivery_failures",
    "Webhook delivery attempts that failed (each is retried until the attempts run out)",
)
SETTLEMENT_LAST_PASS = Gauge(
    "rewardmiles_settlement_last_pass_timestamp_seconds",
    "When the settlement worker of an API process last completed a pass (Unix time; the latest "
    "over the live processes)",
    multiprocess_mode="livemax",
)
POOL_IN_USE = Gauge(
    "rewardmiles_db_pool_in_use",
    "Database connections checked out of the API processes' pools",
    multiprocess_mode="livesum",
)
POOL_CAPACITY = Gauge(
    "rewardmiles_db_pool_capacity",
    "Connections the API processes' pools may hold (pool size plus overflow)",
    multiprocess_mode="livesum",
)
POOL_EXHAUSTED = Counter(
    "rewardmiles_db_pool_exhausted",
    "Checkouts that took a pool's last free connection: until one is checked in, the next "
    "checkout waits",
)
SCRAPE_READ_FAILURES = Counter(
    "rewardmiles_metrics_database_read_failures",
    "Scrapes whose database reading failed (the database gauges kept their last value)",
)
RATE_LIMITED = Counter(
    "rewardmiles_rate_limited",
    "Partner requests refused with 429 because the client's request budget was spent",
)
SIGN_INS_REJECTED = Counter(
    "rewardmiles_sign_ins_rejected",
    "Rejected sign-ins: kind oauth_token (POST /oauth/token, unknown client or wrong secret) or "
    "operator (POST /admin/session); reason credentials or throttled",
    ["kind", "reason"],
)

# ----------------------------------------------------------------------- the request path

UNMATCHED_ROUTE = "unmatched"  # a path no route took (404s): never the raw path
_exact_paths: frozenset[str] = frozenset()
_request_children: dict[tuple[str, str, int], tuple[Callable[[], None], Any]] = {}


def name_exact_paths(paths: Iterable[str]) -> None:
    """The paths of the routes served past the framework's routing (the direct lane): exact
    paths, so a request's path is its route's template."""
    global _exact_paths
    _exact_paths = _exact_paths | frozenset(paths)


def observe_request(scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
    """Count one answered request and its duration (the middleware, once per request)."""
    route = scope.get("route")  # the framework's route; none on the direct lane and for a 404
    key = (
        route.path_format if route is not None else scope.get("path", ""),
        scope.get("method", ""),
        status,
    )
    children = _request_children.get(key)
    if children is None:
        children = _bind_request(key, known=route is not None)
    children[0]()
    children[1](seconds)


def _bind_request(key: tuple[str, str, int], *, known: bool) -> tuple[Callable[[], None], Any]:
    path, method, status = key
    template = path if known or path in _exact_paths else UNMATCHED_ROUTE
    children = (
        REQUESTS.labels(template, method if method in _METHODS else "OTHER", str(status)).inc,
        REQUEST_SECONDS.labels(template, method if method in _METHODS else "OTHER").observe,
    )
    if template != UNMATCHED_ROUTE:  # an unmatched path is not kept: it could be anything
        _request_children[key] = children
    return children


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# ----------------------------------------------------------------------- partner calls


_line_counters: dict[tuple[str, str], Callable[[float], None]] = {}
_miles_counters: dict[tuple[bool, str], Callable[[float], None]] = {}
_ISSUED, _REVERSED = IssuanceStatus.ISSUED.value, IssuanceStatus.REVERSED.value
_OUTCOMES = {status.value: status.value.lower() for status in IssuanceStatus}
RECORDED, REFUSED = LineStatus.RECORDED.value, "refused"


def _line_counter(endpoint: str, outcome: str) -> Callable[[float], None]:
    counter = _line_counters.get((endpoint, outcome))
    if counter is None:
        counter = _line_counters[(endpoint, outcome)] = LINES.labels(endpoint, outcome).inc
    return counter


def _miles_counter(issued: bool, sponsor: str) -> Callable[[float], None]:
    counter = _miles_counters.get((issued, sponsor))
    if counter is None:
        family = MILES_ISSUED if issued else MILES_REVERSED
        counter = _miles_counters[(issued, sponsor)] = family.labels(sponsor).inc
    return counter


def count_call(
    endpoint: str, sponsor: str, status: int, body: dict[str, Any], lines_sent: int
) -> None:
    """Count the lines and miles of one partner call's first answer (never a replay's: the
    caller skips those), once its unit of work or statement has committed. `body` is the
    answer: each line's status is the partner's (ISSUED, REVERSED, PENDING, REJECTED; none on
    a RECORD line). A call a business rule refused (400, stored as a rejected transaction) has
    no lines in its answer: its `lines_sent` lines count as refused."""
    if endpoint == Endpoint.CALCULATE:
        return  # a preview: nothing issued
    if status >= 400:
        if lines_sent:
            _line_counter(endpoint, REFUSED)(lines_sent)
        return
    for line in body.get("issuances", ()):
        wire = line.get("status")
        if wire is None:
            _line_counter(endpoint, RECORDED)(1)
            continue
        _line_counter(endpoint, _OUTCOMES[wire])(1)
        if wire in (_ISSUED, _REVERSED):
            _miles_counter(wire == _ISSUED, sponsor)(line["milesAmount"])


# ----------------------------------------------------------------------- the database pool


def watch_pool(pool: Any) -> None:
    """Count `pool`'s (a SQLAlchemy pool's) connections in use at each checkout and checkin."""
    from sqlalchemy import event

    capacity = pool.size() + max(pool._max_overflow, 0) if hasattr(pool, "_max_overflow") else 0
    if capacity:
        POOL_CAPACITY.set(capacity)  # one database per API process
    set_in_use = POOL_IN_USE.set
    exhausted = POOL_EXHAUSTED.inc

    def checked_out(*_: object) -> None:
        in_use = pool.checkedout()
        set_in_use(in_use)
        if capacity and in_use >= capacity:
            exhausted()

    def checked_in(*_: object) -> None:
        set_in_use(pool.checkedout())

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)


# ----------------------------------------------------------------------- a scrape


@dataclass(frozen=True, slots=True)
class DatabaseReading:
    pending_lines: int
    oldest_pending: datetime | None
    outbox_depth: int
    deliveries_given_up: int


class DatabaseGauges(Collector):
    """The gauges a scrape reads from the database (`read`, run in a database thread by the
    route), kept `limits.metrics_database_cache_seconds`."""

    def __init__(self, read: Callable[[], DatabaseReading], now: Callable[[], float]) -> None:
        self._read = read
        self._now = now
        self._lock = threading.Lock()
        self._reading: DatabaseReading | None = None
        self._read_at = float("-inf")

    def refresh(self) -> None:
        """Read again unless the last reading is recent enough (blocking: a database thread)."""
        with self._lock:
            if time.monotonic() - self._read_at < limits.metrics_database_cache_seconds:
                return
            self._reading = self._read()
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        reading = self._reading
        if reading is None:
            return
        yield GaugeMetricFamily(
            "rewardmiles_pending_lines", "Issuance lines waiting to settle", reading.pending_lines
        )
        oldest = reading.oldest_pending
        yield GaugeMetricFamily(
            "rewardmiles_pending_oldest_age_seconds",
            "Age of the oldest pending line (since its transaction was processed); 0 when none",
            0.0 if oldest is None else max(0.0, self._now() - oldest.timestamp()),
        )
        yield GaugeMetricFamily(
            "rewardmiles_webhook_outbox_depth",
            "Webhook deliveries still to make (pending in the outbox)",
            reading.outbox_depth,
        )
        yield GaugeMetricFamily(
            "rewardmiles_webhook_deliveries_given_up",
            "Webhook deliveries that failed their last attempt (status failed)",
            reading.deliveries_given_up,
        )


class SettlementLag(Collector):
    """`rewardmiles_settlement_lag_seconds`: seconds since the latest completed settlement pass of
    the live API processes (left out while none has completed one: the worker may run
    elsewhere, `rewardmiles worker`)."""

    def __init__(self, values_of: Collector, now: Callable[[], float]) -> None:
        self._values_of = values_of
        self._now = now

    def collect(self) -> Iterator[Metric]:
        last = 0.0
        for family in self._values_of.collect():
            if family.name == SETTLEMENT_LAST_PASS._name:
                last = max((sample.value for sample in family.samples), default=0.0)
            yield family
        if last > 0:
            yield GaugeMetricFamily(
                "rewardmiles_settlement_lag_seconds",
                "Seconds since the settlement worker last completed a pass",
                max(0.0, self._now() - last),
            )


def scrape(database: DatabaseGauges, now: Callable[[], float] = time.time) -> bytes:
    """The exposition text: every process's instruments (all API processes' in multiprocess
    mode), the settlement lag, and the database gauges as last read."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        values_of: Collector = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    else:
        values_of = REGISTRY
    registry.register(SettlementLag(values_of, now))
    registry.register(database)
    return generate_latest(registry)


def process_stopped() -> None:
    """The API process is stopping: drop its live gauges from the shared directory."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# ----------------------------------------------------------------------- who may scrape


def source_allowed(
    host: str | None,
    *,
    allow_loopback: bool,
    networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> bool:
    """Whether a scrape from `host` (the connection's peer address, never a header) is allowed
    without a token: from loopback (when allowed), or from one of `networks`."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow_loopback and address.is_loopback:
        return True
    return any(address in network for network in networks)


def token_matches(authorization: str | None, token: str | None) -> bool:
    """Whether `Authorization: Bearer <token>` names the configured token (constant time)."""
    if not token or not authorization:
        return False
    scheme, _, sent = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(sent.strip().encode(), token.encode())
