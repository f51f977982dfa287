"""`operators.access.require`, the gate every later `/admin/v1` route goes through, in-process on
probe routes of each role and each method: roles (viewer < agent < admin), the CSRF token and
Origin of unsafe methods with a cookie (tokens need neither), and a role change reaching a live
session at its next request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import Request
from starlette.responses import Response

from rewardmiles.db.engine import Database
from rewardmiles.http.application import IssuanceApp
from rewardmiles.http.responses import json_response
from rewardmiles.operators import service
from rewardmiles.operators.access import COOKIE_NAME, require
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import DatabaseFactory
from tests.support.apps import in_process_app
from tests.support.operators import TEST_ACTOR, new_operator, new_session, new_token


def _now() -> datetime:
    """The time of the test's own set-up: sessions are judged by the real clock, so a moment
    taken once at import would age past the idle timeout in a long run."""
    return datetime.now(UTC)


BASE = "http://admin.test"  # not loopback: the cookie is the Secure, __Host- one
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _probe(role: OperatorRole) -> Callable[[Request], Awaitable[Response]]:
    async def probe(request: Request) -> Response:
        caller = await require(request, role)
        return json_response(200, {"actor": caller.actor, "role": caller.role.value})

    return probe


@pytest.fixture(scope="module")
def setup(
    dialect: str, database_factory: DatabaseFactory
) -> Iterator[tuple[IssuanceApp, Database]]:
    url = database_factory.create(dialect)
    app = in_process_app(url)
    for role in OperatorRole:
        app.add_api_route(f"/admin/v1/probe/{role.value}", _probe(role), methods=list(METHODS))
    db = Database.from_url(url)
    yield app, db
    db.dispose()


Call = tuple[str, str, dict[str, str]]  # method, path, headers


def _send(app: IssuanceApp, calls: list[Call]) -> list[httpx.Response]:
    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                return [await client.request(m, p, headers=h) for m, p, h in calls]

    return asyncio.run(scenario())


def _statuses(responses: list[httpx.Response]) -> list[tuple[int, Any]]:
    return [
        (r.status_code, r.json().get("code") if r.status_code >= 400 else None) for r in responses
    ]


def test_each_role_reaches_the_routes_of_its_role_and_below(
    setup: tuple[IssuanceApp, Database],
) -> None:
    app, db = setup
    tokens = {role: new_token(db, role, now=_now()).token for role in OperatorRole}
    calls: list[Call] = [
        ("GET", f"/admin/v1/probe/{needed.value}", {"Authorization": f"Bearer {tokens[held]}"})
        for held in OperatorRole
        for needed in OperatorRole
    ]
    answers = _statuses(_send(app, calls))
    expected = [
        (200, None) if held.includes(needed) else (403, "ADMIN_FORBIDDEN")
        for held in OperatorRole
        for needed in OperatorRole
    ]
    assert answers == expected


def test_unsafe_methods_with_the_cookie_need_the_csrf_token_and_a_matching_origin(
    setup: tuple[IssuanceApp, Database],
) -> None:
    app, db = setup
    login = new_operator(db, now=_now())
    signed = new_session(db, login.email, _now())
    cookie = {"Cookie": f"{COOKIE_NAME}={signed.cookie}"}
    token = {"Authorization": f"Bearer {new_token(db, now=_now()).token}"}
    path = "/admin/v1/probe/viewer"
    calls: list[Call] = []
    expected: list[tuple[int, Any]] = []
    for method in METHODS:
        unsafe = method != "GET"
        refused = (403, "CSRF_REJECTED") if unsafe else (200, None)
        for headers, answer in (
            (cookie, refused),
            ({**cookie, "X-CSRF-Token": signed.csrf_token + "x"}, refused),
            ({**cookie, "X-CSRF-Token": signed.csrf_token}, (200, None)),
            ({**cookie, "X-CSRF-Token": signed.csrf_token, "Origin": BASE}, (200, None)),
            ({**cookie, "X-CSRF-Token": signed.csrf_token, "Origin": "http://evil.test"}, refused),
            ({**cookie, "X-CSRF-Token": signed.csrf_token, "Origin": "http://[x"}, refused),
            (token, (200, None)),  # a token is no ambient credential: no CSRF token needed
        ):
            calls.append((method, path, headers))
            expected.append(answer)
    assert _statuses(_send(app, calls)) == expected


def test_a_role_change_reaches_a_live_session_at_its_next_request(
    setup: tuple[IssuanceApp, Database],
) -> None:
    app, db = setup
    login = new_operator(db, OperatorRole.VIEWER, now=_now())
    signed = new_session(db, login.email, _now())
    call: Call = ("GET", "/admin/v1/probe/agent", {"Cookie": f"{COOKIE_NAME}={signed.cookie}"})
    assert _statuses(_send(app, [call])) == [(403, "ADMIN_FORBIDDEN")]
    with db.unit_of_work() as session:
        service.set_role(session, login.email, OperatorRole.AGENT, _now(), TEST_ACTOR)
    [answer] = _send(app, [call])
    assert answer.status_code == 200
    assert answer.json() == {"actor": login.email, "role": "agent"}
