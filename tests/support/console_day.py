"""A known day of partner traffic for the console's Today and Reports pages: a server whose
clock stands at 14:30 America/Toronto, one sponsor, a partner sending posts, a reversal, a
pending post and two refused requests; what each of them should add up to; and an operator
signed in to that server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx

from rewardmiles.config import TEST_CLOCK_PREFIX
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.console import COOKIE
from tests.support.operators import new_operator, new_session
from tests.support.partner import Partner
from tests.support.server import Server

PINNED = "2026-12-15T14:30:00-05:00"
PINNED_DAY = date(2026, 12, 15)
PINNED_HOUR = "14:00"


@dataclass
class Traffic:
    """What a day's partner requests should show: miles and requests by answer."""

    issued: int = 0
    reversed: int = 0
    answered: dict[str, int] = field(default_factory=lambda: {"200": 0, "202": 0, "4xx": 0})
    refused_ids: list[str] = field(default_factory=list)  # request ids, oldest first
    codes: dict[str, int] = field(default_factory=dict)
    partner_ids: list[str] = field(default_factory=list)  # accepted ones' clientTransactionId
    collector: str = ""  # the posts' and the reversal's


@dataclass
class Day:
    server: Server
    db: Database
    moment: datetime  # where the server's clock stands, UTC
    sponsor: str
    partner: Partner

    def operator(self, role: OperatorRole = OperatorRole.VIEWER) -> httpx.Client:
        """An HTTP client signed in to the console as a new operator of `role`."""
        login = new_operator(self.db, role, now=self.moment)
        signed = new_session(self.db, login.email, self.moment)
        return httpx.Client(
            base_url=self.server.base_url,
            cookies={COOKIE: signed.cookie},
            follow_redirects=False,
            timeout=30,
        )

    def login(self, role: OperatorRole = OperatorRole.VIEWER) -> tuple[str, str]:
        found = new_operator(self.db, role, now=self.moment)
        return found.email, found.password

    def send_traffic(self) -> Traffic:
        """Three posts (8, 13, 21 miles), the reversal of the 13, a post held for review (5
        miles, collector on hold), a post for an unknown collector (refused) and one with 0
        miles."""
        at = data.iso(self.moment - timedelta(seconds=5))
        traffic = Traffic()
        collector = traffic.collector = data.new_collector(self.db)
        posted: dict[int, dict[str, Any]] = {}
        for miles in (8, 13, 21):
            body = data.event_body(self.sponsor, collector, miles=miles, transactionDateTime=at)
            response = self.partner.post_event(body)
            assert response.status_code == 200, response.text
            posted[miles] = body
            traffic.issued += miles
            traffic.answered["200"] += 1
            traffic.partner_ids.append(body["clientTransactionId"])
        reversal = data.event_body(
            self.sponsor,
            collector,
            miles=13,
            transactionDateTime=at,
            originalClientTransactionId=posted[13]["clientTransactionId"],
        )
        response = self.partner.reverse_event(reversal)
        assert response.status_code == 200, response.text
        traffic.reversed += 13
        traffic.answered["200"] += 1
        traffic.partner_ids.append(reversal["clientTransactionId"])

        held = data.new_collector(self.db, "ON_HOLD")
        body = data.event_body(self.sponsor, held, miles=5, transactionDateTime=at)
        response = self.partner.post_event(body)
        assert response.status_code == 202, response.text
        traffic.answered["202"] += 1
        traffic.partner_ids.append(body["clientTransactionId"])

        for refused_body in (
            data.event_body(self.sponsor, data.unknown_collector(), transactionDateTime=at),
            data.event_body(self.sponsor, collector, miles=0, transactionDateTime=at),
        ):
            response = self.partner.post_event(refused_body)
            assert 400 <= response.status_code < 500, response.text
            problem = response.json()
            traffic.answered["4xx"] += 1
            traffic.refused_ids.append(problem["requestId"])
            traffic.codes[problem["code"]] = traffic.codes.get(problem["code"], 0) + 1
        return traffic


def pinned_day(dialect: str, server_factory: ServerFactory) -> Iterator[Day]:
    """A server of its own (its own database) at `PINNED`, with one sponsor and its partner."""
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_TEST_CLOCK": TEST_CLOCK_PREFIX + PINNED,
            "REWARDMILES_UNKNOWN_COLLECTOR_POLICY": "reject",  # a refusal naming the number
        },
    )
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    yield Day(server, db, datetime.fromisoformat(PINNED).astimezone(UTC), sponsor, partner)
    partner.close()
    db.dispose()


def eventually(check: Any, timeout: float = 10) -> Any:
    """`check()` until it answers something true (the failure recorder writes within a
    moment); its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


class _Tables(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.depth = 0  # inside the table when > 0
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, text: str) -> None:
        if self.cell is not None:
            self.cell.append(text)


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """The text of every cell of the table `table_id`, row by row (its header row first)."""
    parser = _Tables(table_id)
    parser.feed(html)
    return parser.rows
