"""The console's frame over HTTP against a real server: the sign-in and sign-out pages (the admin
API's sign-in path and sessions), where a page without a session sends the browser, CSRF and
Origin on forms, the security headers of every page, HTML refusals under /console (problem+json
elsewhere), and the static assets."""

from __future__ import annotations

import httpx
import pytest

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support.console import COOKIE, Console, signed_in, text_of
from tests.support.operators import new_operator
from tests.support.server import Server


@pytest.fixture
def agent(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.AGENT)


def _post_sign_in(
    server: Server, fields: dict[str, str], *, origin: str | None = None
) -> httpx.Response:
    headers = {"Origin": origin or server.base_url}
    return httpx.post(
        server.base_url + "/console/sign-in", data=fields, headers=headers, timeout=30
    )


def _me(server: Server, cookie: str) -> httpx.Response:
    return httpx.get(server.base_url + "/admin/v1/me", cookies={COOKIE: cookie}, timeout=30)


def test_the_sign_in_page_has_labelled_fields_and_the_consoles_headers(server: Server) -> None:
    page = httpx.get(server.base_url + "/console/sign-in", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    html = page.text
    assert '<label for="email">Email</label>' in html
    assert '<label for="password">Password</label>' in html
    assert '<button type="submit">Sign in</button>' in html
    assert "<script>" not in html  # nothing inline
    assert "style=" not in html


def test_signing_in_sets_the_session_cookie_and_goes_where_the_operator_was_going(
    server: Server, db: Database
) -> None:
    login = new_operator(db, OperatorRole.VIEWER, now=clock.utc_now())
    answer = _post_sign_in(
        server,
        {"email": login.email, "password": login.password, "next": "/console/pending?x=1"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/pending?x=1"
    cookie = answer.cookies[COOKIE]
    assert "httponly" in answer.headers["set-cookie"].lower()
    assert "samesite=strict" in answer.headers["set-cookie"].lower()
    me = _me(server, cookie)
    assert me.status_code == 200
    assert me.json()["operator"]["email"] == login.email


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/console", "/admin/v1/me", "/console\\x"]
)
def test_after_sign_in_the_browser_never_leaves_the_console(
    server: Server, db: Database, target: str
) -> None:
    login = new_operator(db, OperatorRole.VIEWER, now=clock.utc_now())
    answer = _post_sign_in(
        server, {"email": login.email, "password": login.password, "next": target}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/today"


def test_a_wrong_password_shows_the_form_again_with_the_reason_and_no_cookie(
    server: Server, db: Database
) -> None:
    login = new_operator(db, OperatorRole.VIEWER, now=clock.utc_now())
    answer = _post_sign_in(server, {"email": login.email, "password": "not-the-password"})
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    assert "Unknown e-mail, wrong password or disabled operator." in text_of(answer.text)
    assert f'value="{login.email}"' in answer.text  # the e-mail kept, the password not
    empty = _post_sign_in(server, {"email": "", "password": ""})
    assert empty.status_code == 400
    assert "Enter your e-mail and password." in empty.text


def test_a_sign_in_from_another_site_or_not_as_a_form_is_refused(
    server: Server, db: Database
) -> None:
    login = new_operator(db, OperatorRole.VIEWER, now=clock.utc_now())
    fields = {"email": login.email, "password": login.password}
    cross = _post_sign_in(server, fields, origin="https://evil.example")
    assert cross.status_code == 403
    assert "set-cookie" not in cross.headers
    assert "CSRF_REJECTED" in cross.text
    as_json = httpx.post(server.base_url + "/console/sign-in", json=fields, timeout=30)
    assert as_json.status_code == 415
    assert as_json.headers["content-type"].startswith("text/html")


def test_sign_out_needs_the_forms_token_then_ends_the_session(agent: Console) -> None:
    server_url = agent.base_url
    for token in (None, "forged-token"):
        refused = agent.post("/console/sign-out", csrf=token)
        assert refused.status_code == 403
        assert "CSRF_REJECTED" in refused.text
    assert httpx.get(
        server_url + "/admin/v1/me", cookies={COOKIE: agent.cookie}, timeout=30
    ).is_success
    cross = agent.post("/console/sign-out", headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    out = agent.post("/console/sign-out")
    assert out.status_code == 303
    assert out.headers["location"] == "/console/sign-in"
    assert (
        "Max-Age=0" in out.headers["set-cookie"] or "expires=" in out.headers["set-cookie"].lower()
    )
    me = httpx.get(server_url + "/admin/v1/me", cookies={COOKIE: agent.cookie}, timeout=30)
    assert me.status_code == 401


def test_an_unknown_console_page_is_an_html_404_and_the_api_keeps_problem_json(
    agent: Console,
) -> None:
    page = agent.get("/console/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "No console page at /console/no-such-page." in text_of(page.text)
    api = agent.get("/admin/v1/no-such-route")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")


def test_the_console_root_opens_today(agent: Console) -> None:
    root = agent.get("/console")
    assert root.status_code == 303
    assert root.headers["location"] == "/console/today"


def test_assets_are_served_from_the_package_and_nothing_else_is(server: Server) -> None:
    css = httpx.get(server.base_url + "/console/static/console.css", timeout=30)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["cache-control"] == "public, max-age=3600"
    js = httpx.get(server.base_url + "/console/static/console.js", timeout=30)
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    for path in ("/console/static/../web.py", "/console/static/%2e%2e/web.py"):
        outside = httpx.get(server.base_url + path, timeout=30)
        assert outside.status_code == 404
        assert "def signed_in" not in outside.text
