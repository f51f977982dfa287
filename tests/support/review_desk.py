"""The review desk's cast: lines held for review, made the way a partner makes them (a sponsor
whose review threshold is below the miles sent, its partner client, and one
`POST /checkout/issuance/post/event` per line, answered 202), each with its body and
Idempotency-Key so that the partner's replay can be asked what became of it; and an operator
signed in to the console over HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.operators import new_operator, new_session
from tests.support.partner import Partner
from tests.support.server import Server

THRESHOLD = 50
MILES = 100
COOKIE = "rewardmiles-admin"  # the session cookie over http on 127.0.0.1
BULK = "/console/pending/bulk"


@dataclass(frozen=True)
class HeldLine:
    line_id: str
    body: dict[str, Any]
    key: str


@dataclass
class HeldLines:
    sponsor: str
    partner: Partner
    lines: list[HeldLine]

    @property
    def ids(self) -> list[str]:
        return [line.line_id for line in self.lines]

    def replayed_status(self, line: HeldLine) -> str:
        """The line's status in the replay of its call (same body, same Idempotency-Key)."""
        replay = self.partner.post_event(line.body, key=line.key)
        assert replay.headers["Idempotent-Replayed"] == "true", replay.text
        return str(replay.json()["issuances"][0]["status"])


def held_lines(db: Database, base_url: str, count: int) -> HeldLines:
    sponsor = data.new_sponsor(db, review_threshold_miles=THRESHOLD)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(base_url, client_id, secret)
    lines = []
    for _ in range(count):
        body = data.event_body(sponsor, data.new_collector(db), miles=MILES)
        key = str(uuid.uuid4())
        answer = partner.post_event(body, key=key)
        assert answer.status_code == 202, answer.text  # accepted, pending review
        lines.append(HeldLine(f"{answer.json()['transactionId']}:0", body, key))
    return HeldLines(sponsor, partner, lines)


class Console:
    """An operator signed in to the console: an HTTP client with the session's cookie."""

    def __init__(self, server: Server, db: Database, role: OperatorRole) -> None:
        login = new_operator(db, role, now=datetime.now(UTC))
        signed = new_session(db, login.email, datetime.now(UTC))
        self.email = login.email
        self.csrf = signed.csrf_token
        self.http = httpx.Client(
            base_url=server.base_url, cookies={COOKIE: signed.cookie}, timeout=30
        )

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)

    def bulk(
        self, fields: dict[str, str | list[str]], *, htmx: bool = False, csrf: str | None = "own"
    ) -> httpx.Response:
        """The bulk form posted: with htmx (the token as its header) or as a plain form."""
        body = dict(fields)
        headers = {}
        token = self.csrf if csrf == "own" else csrf
        if htmx:
            headers["HX-Request"] = "true"
            headers["HX-Current-URL"] = "http://testserver/console/pending"
            if token is not None:
                headers["X-CSRF-Token"] = token
        elif token is not None:
            body["csrf"] = token
        return self.http.post(BULK, data=body, headers=headers)

    def close(self) -> None:
        self.http.close()
