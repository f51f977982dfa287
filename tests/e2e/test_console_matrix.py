"""Every console route, found in the application, behind the console's doors: without a session
a page sends the browser to the sign-in page (htmx: `HX-Redirect`), an action changes nothing and
does the same; with a session, an action without the form's CSRF token, with a forged one or from
another origin is refused (403) before any work."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support.console import Console, signed_in
from tests.support.server import Server

# The routes open to anyone: the sign-in page and form, the root (a redirect to a page), and
# sign-out (without a session there is nothing to end).
OPEN = {
    ("GET", "/console"),
    ("GET", "/console/sign-in"),
    ("POST", "/console/sign-in"),
    ("POST", "/console/sign-out"),
}


def _console_routes() -> list[tuple[str, str]]:
    app = create_app(Settings(database_url="sqlite://"))
    found = {
        (method, path)
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        for path in (route.path or "",)
        if path == "/console" or path.startswith("/console/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    return sorted(found - OPEN)


ROUTES = _console_routes()
PAGES = [path for method, path in ROUTES if method == "GET"]
ACTIONS = [path for method, path in ROUTES if method == "POST"]


def _filled(path: str) -> str:
    """A path with its parameters given a value of the right shape (the door is checked first)."""
    return re.sub(r"\{[^}]+\}", "1", path)


def test_the_console_has_pages_and_actions_behind_the_session() -> None:
    assert PAGES, "no console page found"
    assert {method for method, _ in ROUTES} <= {"GET", "POST"}


@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_a_session_sends_the_browser_to_sign_in(server: Server, path: str) -> None:
    url = server.base_url + _filled(path)
    plain = httpx.get(url, timeout=30)
    assert plain.status_code == 303, plain.text
    assert plain.headers["location"].startswith("/console/sign-in?next=")
    htmx = httpx.get(url, headers={"HX-Request": "true"}, timeout=30)
    assert htmx.status_code == 204
    assert htmx.headers["hx-redirect"].startswith("/console/sign-in?next=")
    stale = httpx.get(url, cookies={"rewardmiles-admin": "no-such-session"}, timeout=30)
    assert stale.status_code == 303


@pytest.mark.parametrize("path", ACTIONS)
def test_an_action_without_a_session_changes_nothing_and_asks_to_sign_in(
    server: Server, path: str
) -> None:
    answer = httpx.post(
        server.base_url + _filled(path),
        data={"csrf": "x"},
        headers={"Origin": server.base_url},
        timeout=30,
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=")


@pytest.fixture(scope="module")
def admin_console(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.ADMIN)


@pytest.mark.parametrize("path", ACTIONS)
def test_an_action_without_the_forms_token_or_from_elsewhere_is_refused(
    admin_console: Console, path: str
) -> None:
    for token in (None, "forged"):
        refused = admin_console.post(_filled(path), {"x": "1"}, csrf=token)
        assert refused.status_code == 403, (path, refused.text)
        assert "CSRF_REJECTED" in refused.text
    cross = admin_console.post(
        _filled(path), {"x": "1"}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert "CSRF_REJECTED" in cross.text
