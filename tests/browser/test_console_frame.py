"""The console's frame in Chromium: signing in and out with the keyboard alone, a wrong password
said in the page, a form posted from another site refused with nothing changed, and every page
readable at 768 px (no page wider than the window; wide tables scroll inside their frame)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.browser import PageProblems, sign_in, snap
from tests.support.operators import new_operator
from tests.support.server import Server

PAGES = (
    "/console/today",
    "/console/collectors",
    "/console/transactions",
    "/console/pending",
    "/console/partners",
    "/console/offers",
    "/console/reports",
    "/console/audit-log",
)


def test_an_operator_signs_in_and_out_with_the_keyboard_alone(page: Page, db: Database) -> None:
    login = new_operator(db, OperatorRole.AGENT, now=clock.utc_now())
    page.goto("/console/today")  # no session: the sign-in page, then back here
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    snap(page, "sign-in")
    expect(page.get_by_label("Email")).to_be_focused()  # the form starts at the e-mail
    page.keyboard.type(login.email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(login.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/today")
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()

    sign_out = page.get_by_role("button", name="Sign out")
    sign_out.focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/sign-in")
    page.goto("/console/today")  # the session has ended
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_wrong_password_is_said_in_the_page(
    page: Page, page_problems: PageProblems, db: Database
) -> None:
    page_problems.allow(r"401 .*/console/sign-in")  # the form again, answered 401
    login = new_operator(db, OperatorRole.VIEWER, now=clock.utc_now())
    page.goto("/console/sign-in")
    page.get_by_label("Email").fill(login.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Unknown e-mail, wrong password or disabled operator."
    )
    expect(page.get_by_label("Email")).to_have_value(login.email)


class _ElsewhereHandler(BaseHTTPRequestHandler):
    """Another site's page: a form aimed at the console's adjustment action."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>Win a prize</title>"
            f'<form method="post" action="{self.target}">'
            '<input type="hidden" name="miles" value="50">'
            '<input type="hidden" name="reason" value="GOODWILL">'
            '<input type="hidden" name="note" value="forged">'
            '<input type="hidden" name="confirm" value="1">'
            '<input type="hidden" name="key" value="8f14e45f-ceea-467f-a8ad-0c4b3b1c4b1f">'
            '<input type="hidden" name="csrf" value="guessed">'
            "<button>Claim</button></form>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def elsewhere() -> Iterator[ThreadingHTTPServer]:
    site = ThreadingHTTPServer(("127.0.0.2", 0), _ElsewhereHandler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield site
    site.shutdown()
    site.server_close()


def test_a_form_posted_from_another_site_changes_nothing(
    page: Page,
    page_problems: PageProblems,
    server: Server,
    db: Database,
    elsewhere: ThreadingHTTPServer,
) -> None:
    number = data.new_collector(db)
    login = new_operator(db, OperatorRole.ADMIN, now=clock.utc_now())
    sign_in(page, login.email, login.password)
    _ElsewhereHandler.target = f"{server.base_url}/console/collectors/{number}/adjustments"
    host, port = elsewhere.server_address[:2]
    page.goto(f"http://{host!s}:{port}/")
    page.get_by_role("button", name="Claim").click()
    # The session cookie is SameSite=Strict: the post arrives without it and the console asks
    # for a sign-in; had it arrived, the forged token and the foreign Origin would be refused.
    page.wait_for_url("**/console/sign-in**")
    assert data.balance(db, number) == 0
    page.goto(f"/console/collectors/{number}")  # still signed in here, and nothing was posted
    expect(page.get_by_role("heading", name="Adjust miles")).to_be_visible()
    assert data.balance(db, number) == 0


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_readable_768_pixels_wide(page: Page, db: Database, path: str) -> None:
    login = new_operator(db, OperatorRole.ADMIN, now=clock.utc_now())
    sign_in(page, login.email, login.password)
    page.set_viewport_size({"width": 768, "height": 1000})
    page.goto(path)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 768, f"{path} is {width} px wide at 768 px"
