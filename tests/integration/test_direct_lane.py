"""The direct lane answers exactly as the framework's routing would: the same partner calls, sent
in-process to the application with the lane and to one without it (`create_app(direct_lane=False)`),
get the same status, headers and body, byte for byte, once the ids each side made and the
processing times are set aside."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from rewardmiles import limits
from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.http.application import IssuanceApp
from rewardmiles.http.direct import DirectLane
from rewardmiles.issuance import routes as issuance_routes
from tests.conftest import TEST_SECRET_KEY
from tests.support import data
from tests.support.partner import POST_EVENT, REVERSE_EVENT, bearer_header

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MOMENT = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)")
_JSON = {"Content-Type": "application/json"}

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
# A call as (path, headers, body) for one side: the side's name is in its partner ids and keys.
Call = Callable[[str], tuple[str, dict[str, str], bytes]]


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _calls(sponsor: str, other_sponsor: str, collector: str) -> dict[str, Call]:
    moment = data.iso(data.now() - timedelta(seconds=30))  # one for both sides
    unknown = data.unknown_collector()

    def event(side: str, name: str, **overrides: Any) -> bytes:
        body = data.event_body(
            sponsor, collector, clientTransactionId=f"{name}-{side}", transactionDateTime=moment
        )
        body.update(overrides)
        return json.dumps(body).encode()

    return {
        "issued": lambda s: (POST_EVENT, {**_JSON, "Idempotency-Key": f"k1-{s}"}, event(s, "a")),
        "replayed": lambda s: (POST_EVENT, {**_JSON, "Idempotency-Key": f"k1-{s}"}, event(s, "a")),
        "key reused": lambda s: (
            POST_EVENT,
            {**_JSON, "Idempotency-Key": f"k1-{s}"},
            event(s, "a", issuances=[{"issuanceOfferCode": "STANDARD", "milesAmount": 9}]),
        ),
        "pending": lambda s: (
            POST_EVENT,
            _JSON,
            event(s, "b", collectorNumber=unknown),
        ),
        "reversed": lambda s: (
            REVERSE_EVENT,
            _JSON,
            event(s, "c", originalClientTransactionId=f"a-{s}"),
        ),
        "original unknown": lambda s: (
            REVERSE_EVENT,
            _JSON,
            event(s, "d", originalClientTransactionId=f"nothing-{s}"),
        ),
        "fields invalid": lambda s: (
            POST_EVENT,
            _JSON,
            event(s, "e", milesAmount=1, issuances=[{"milesAmount": -1}], extra=None),
        ),
        "sponsor not allowed": lambda s: (
            POST_EVENT,
            _JSON,
            event(s, "f", sponsorCode=other_sponsor),
        ),
        "malformed": lambda s: (POST_EVENT, _JSON, b'{"collectorNumber": 1, "collectorNumber": 2}'),
        "not an object": lambda s: (POST_EVENT, _JSON, b"[1, 2]"),
        "media type": lambda s: (POST_EVENT, {"Content-Type": "text/plain"}, event(s, "g")),
        "too large": lambda s: (
            POST_EVENT,
            _JSON,
            b" " * (limits.request_body_bytes_max + 1),
        ),
        "bad key": lambda s: (POST_EVENT, {**_JSON, "Idempotency-Key": "\x7f"}, event(s, "h")),
        "basket fields": lambda s: ("/checkout/issuance/post", _JSON, _body(sponsorCode=sponsor)),
        "record": lambda s: (
            "/checkout/issuance/record",
            _JSON,
            json.dumps(
                data.basket_body(sponsor, collector, checkoutTransactionId=f"r-{s}")
                | {"checkoutDateTime": moment}
            ).encode(),
        ),
        "calculate": lambda s: (
            "/checkout/issuance/calculate",
            _JSON,
            _body(sponsorCode=sponsor, collectorNumber=collector),
        ),
        "issue": lambda s: ("/checkout/issuance/issue", _JSON, _body(sponsorCode=sponsor)),
        "return": lambda s: ("/checkout/issuance/return", _JSON, b"{}"),
        "reverse basket": lambda s: ("/checkout/issuance/reverse", _JSON, b"{}"),
    }


def _settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_hash_cost=10,
        embedded_worker=False,
        log_level="warning",
        secret_key=TEST_SECRET_KEY,
    )


async def _answers(
    app: IssuanceApp,
    side: str,
    calls: dict[str, Call],
    client_id: str,
    secret: str,
    token_headers: dict[str, dict[str, str]],
) -> dict[str, Answer]:
    answers: dict[str, Answer] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in") as client:
            auth = await bearer_header(client, client_id, secret)
            for name, call in calls.items():
                path, headers, content = call(side)
                sent = {
                    **auth,
                    **token_headers.get(name, {}),
                    **headers,
                    "X-Request-Id": name.replace(" ", "-"),
                }
                response = await client.post(path, content=content, headers=sent)
                body = response.content.replace(side.encode(), b"SIDE")
                body = _MOMENT.sub(b"MOMENT", _UUID.sub(b"UUID", body))  # ids, processing times
                answers[name] = (response.status_code, response.headers.raw, body)
    return answers


def test_the_partner_calls_answer_the_same_on_the_lane_and_through_the_framework(
    db: Database, database_url: str
) -> None:
    sponsor, other_sponsor = data.new_sponsor(db), data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    collector = data.new_collector(db)
    calls = _calls(sponsor, other_sponsor, collector)
    # The first call again, without a token and with one that is not a token.
    calls["token missing"] = calls["issued"]
    calls["token invalid"] = calls["issued"]
    token_headers = {
        "token missing": {"Authorization": ""},
        "token invalid": {"Authorization": "Bearer not-a-token"},
    }

    lane_app = create_app(_settings(database_url))
    full_app = create_app(_settings(database_url), direct_lane=False)
    lane = asyncio.run(_answers(lane_app, "lane", calls, client_id, secret, token_headers))
    # "full" (the full stack) is as long as "lane", so that the lengths compare.
    framework = asyncio.run(_answers(full_app, "full", calls, client_id, secret, token_headers))

    assert isinstance(lane_app.middleware_stack, DirectLane)
    assert not isinstance(full_app.middleware_stack, DirectLane)

    assert {name: status for name, (status, _, _) in lane.items()} == {
        name: status for name, (status, _, _) in framework.items()
    }
    for name in calls:
        assert lane[name] == framework[name], name
    statuses = {status for status, _, _ in lane.values()}
    assert {200, 202, 400, 401, 403, 413, 415, 422} <= statuses, statuses


@pytest.mark.parametrize(
    ("error", "status"),
    [(OperationalError("SELECT 1", {}, Exception("gone")), 503), (RuntimeError("bug"), 500)],
)
def test_a_failure_in_a_partner_call_answers_the_same_on_the_lane_and_through_the_framework(
    database_url: str, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    async def failing(request: object) -> None:
        raise error

    monkeypatch.setattr(issuance_routes, "authorize", failing)

    async def answer(app: IssuanceApp) -> Answer:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://in") as client:
                response = await client.post(
                    POST_EVENT, content=b"{}", headers={**_JSON, "X-Request-Id": "failed"}
                )
                return response.status_code, response.headers.raw, response.content

    lane_app = create_app(_settings(database_url))
    lane = asyncio.run(answer(lane_app))
    framework = asyncio.run(answer(create_app(_settings(database_url), direct_lane=False)))
    assert isinstance(lane_app.middleware_stack, DirectLane)
    assert lane == framework
    assert lane[0] == status
