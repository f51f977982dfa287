"""HTTP plumbing around every route: no redirects (a path with a trailing slash is a 404 problem,
whatever the method), and a client that drops the connection mid-body is logged as a client
disconnect (499), not as a server error."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from rewardmiles.db.engine import Database
from tests.conftest import ServerFactory
from tests.e2e.conftest import World
from tests.support import data
from tests.support.partner import POST_EVENT, fetch_token
from tests.support.problems import assert_problem

SLASHED_POSTS = [
    POST_EVENT + "/",
    "/checkout/issuance/reverse/event/",
    "/checkout/issuance/post/",
    "/checkout/issuance/calculate/",
    "/oauth/token/",
]
SLASHED_GETS = [
    "/healthz/",
    "/readyz/",
    "/problems/",
    "/.well-known/jwks.json/",
    "/checkout/issuance/transactions/",
    f"/checkout/issuance/transactions/{uuid.uuid4()}/",
]


@pytest.mark.parametrize("path", SLASHED_POSTS)
def test_a_post_to_a_path_with_a_trailing_slash_is_a_404_problem_not_a_redirect(
    world: World, path: str
) -> None:
    body = world.body(world.collector())
    response = world.partner.http.post(
        path,
        json=body,
        headers={"Authorization": f"Bearer {world.partner.token}"},
        follow_redirects=False,
    )
    assert "location" not in response.headers
    problem = assert_problem(response, 404, "NOT_FOUND")
    assert "no trailing slash" in problem["detail"]


@pytest.mark.parametrize("path", SLASHED_GETS)
def test_a_get_to_a_path_with_a_trailing_slash_is_a_404_problem_not_a_redirect(
    world: World, path: str
) -> None:
    response = world.partner.http.get(
        path,
        headers={"Authorization": f"Bearer {world.partner.token}"},
        follow_redirects=False,
    )
    assert "location" not in response.headers
    assert_problem(response, 404, "NOT_FOUND")


# --------------------------------------------------------------------------- client disconnects


def _send_half_a_body(base_url: str, path: str, request_id: str, headers: dict[str, str]) -> None:
    """Headers announcing 1000 bytes of body, then 10 bytes, then the connection is closed."""
    url = urlsplit(base_url)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {url.hostname}:{url.port}",
        "Content-Length: 1000",
        f"X-Request-Id: {request_id}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(head + b'{"a":12345')
        time.sleep(0.2)  # the server is now waiting for the rest of the body


def _log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def _access_line(server_log: Any, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        for event in _log_events(server_log()):
            if event.get("event") == "request" and event.get("request_id") == request_id:
                return event
        if time.monotonic() > deadline:
            raise AssertionError(f"no access line for {request_id}:\n{server_log()}")
        time.sleep(0.05)


def test_a_client_that_drops_the_connection_mid_body_is_a_499_not_a_server_error(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(dialect, env={"REWARDMILES_LOG_LEVEL": "info"})
    db = Database.from_url(server.database_url)
    try:
        client_id, secret = data.new_client(db, [data.new_sponsor(db)])
    finally:
        db.dispose()
    token = fetch_token(server.base_url, client_id, secret)
    calls = {
        # the direct lane (http.direct) ...
        POST_EVENT: {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        # ... and a route of the framework's full stack
        "/oauth/token": {"Content-Type": "application/x-www-form-urlencoded"},
    }
    for path, headers in calls.items():
        # Letters only: eleven digits in a row of a client's id would be masked in the log.
        request_id = "gone-" + uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghijklmnop"))
        _send_half_a_body(server.base_url, path, request_id, headers)
        line = _access_line(server.log, request_id)
        assert line["status"] == 499, line
        assert line["path"] == path
        assert line["level"] == "info"
        mentions = [e for e in _log_events(server.log()) if e.get("request_id") == request_id]
        assert [e["event"] for e in mentions] == ["request"], mentions

    text = server.log()
    assert "request_failed" not in text
    assert "Traceback" not in text
    assert "trace" not in {key for event in _log_events(text) for key in event}
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200  # still serving
