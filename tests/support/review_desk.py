"""The review desk's cast: lines held for review, made the way a partner makes them (a sponsor
whose review threshold is below the miles sent, its partner client, and one
`POST /checkout/issuance/post/event` per line, answered 202), each with its body and
Idempotency-Key so that the partner's replay can be asked what became of it; and the console's
bulk review form posted as a browser posts it (with htmx or without)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from rewardmiles.db.engine import Database
from tests.support import data
from tests.support.console import Console
from tests.support.partner import Partner

THRESHOLD = 50
MILES = 100
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


def bulk(
    console: Console,
    fields: dict[str, str | list[str]],
    *,
    htmx: bool = False,
    csrf: str | None = "",
) -> httpx.Response:
    """The pending page's bulk form posted: as htmx posts it (the session's token as its header)
    or as a plain form. `csrf`: "" this session's token, None none, anything else that."""
    pairs = [
        (name, one)
        for name, value in fields.items()
        for one in (value if isinstance(value, list) else [value])
    ]
    if not htmx:
        return console.post(BULK, pairs, csrf=csrf)
    token = console.csrf if csrf == "" else csrf
    headers = {"HX-Request": "true", "HX-Current-URL": console.base_url + "/console/pending"}
    if token is not None:
        headers["X-CSRF-Token"] = token
    return console.post(BULK, pairs, csrf=None, headers=headers)
