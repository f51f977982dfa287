"""The Partners page in Chromium: an admin creates a partner client (its secret shown once, with
a copy button that copies it), revokes it through the confirm step, and the client's token is
refused within seconds; a sponsor named like a script shows as text and opens no dialog."""

from __future__ import annotations

import re
import secrets
import time

import httpx
from playwright.sync_api import Dialog, Page, expect

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import OperatorRole
from tests.support.browser import snap
from tests.support.operators import Login, new_operator
from tests.support.partner import fetch_token
from tests.support.server import Server

XSS = "<script>alert(1)</script>"
LOOKUP = "/checkout/issuance/transactions/no-such-transaction"
WITHIN_SECONDS = 5.0  # the revocation promise (docs/operations.md)


def _xss_sponsor(db: Database) -> str:
    code = "X" + secrets.token_hex(3).upper()
    with db.unit_of_work() as session:
        sponsors.add_sponsor(session, code, XSS, clock.utc_now())
    return code


def _sign_in_to(page: Page, login: Login, path: str) -> None:
    """Sign in through the console's form, going on to `path` (the form's `next`)."""
    page.goto(f"/console/sign-in?next={path}")
    page.get_by_label("Email").fill(login.email)
    page.get_by_label("Password").fill(login.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}")


def _seconds_until_refused(server: Server, token: str, started: float) -> float:
    while True:
        response = httpx.get(
            server.base_url + LOOKUP, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        if response.status_code == 401 and response.json()["code"] == "TOKEN_REVOKED":
            return time.monotonic() - started
        assert response.status_code == 404, response.text
        assert time.monotonic() - started < 2 * WITHIN_SECONDS, "the revoked token still works"
        time.sleep(0.1)


def test_an_admin_creates_a_client_copies_its_secret_and_revokes_it(
    page: Page, server: Server, db: Database
) -> None:
    dialogs: list[str] = []

    def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sponsor = _xss_sponsor(db)
    admin = new_operator(db, OperatorRole.ADMIN, now=clock.utc_now())
    _sign_in_to(page, admin, f"/console/partners?sponsor={sponsor}")
    # the sponsor's name is text, in the table and in the select
    sponsor_row = page.get_by_role("row").filter(has_text=sponsor)
    expect(sponsor_row.get_by_role("cell", name=XSS, exact=True)).to_be_visible()
    expect(page.get_by_label("Sponsor", exact=True)).to_contain_text(XSS)
    assert page.evaluate("document.querySelectorAll('main script').length") == 0

    page.get_by_label("Client name").fill("Till 4")
    box = page.get_by_role("checkbox", name=re.compile(re.escape(sponsor)))
    expect(box).to_be_checked()  # the chosen sponsor's
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", name="Partner client created")).to_be_visible()
    secret = page.locator("#secret").inner_text().strip()
    client_id = page.locator("#client-id").inner_text().strip()
    assert client_id.startswith("rmc_")
    assert len(secret) >= 32
    copy = page.locator('button[data-copy="#secret"]')
    expect(copy).to_have_text("Copy secret")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    token = fetch_token(server.base_url, client_id, secret)

    page.get_by_role("link", name="Back to partners").click()
    expect(page.get_by_role("cell", name=client_id, exact=True)).to_be_visible()
    assert secret not in page.content()  # shown once
    snap(page, "partners")

    page.get_by_role("button", name=f"Revoke {client_id}").click()
    expect(page.get_by_role("heading", name="Revoke partner client Till 4?")).to_be_visible()
    expect(page.get_by_text(client_id).first).to_be_visible()
    page.get_by_label("Reason (kept in the audit log)").fill("till stolen")
    started = time.monotonic()
    page.get_by_role("button", name=f"Confirm: revoke {client_id}").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"Partner client Till 4 ({client_id}) revoked"
    )
    assert _seconds_until_refused(server, token, started) < WITHIN_SECONDS
    row = page.get_by_role("row").filter(has_text=client_id)
    expect(row).to_contain_text("REVOKED")
    expect(row.get_by_role("button")).to_have_count(0)  # nothing left to do to it
    assert dialogs == []


def test_a_viewer_sees_the_clients_but_no_action(page: Page, server: Server, db: Database) -> None:
    sponsor = _xss_sponsor(db)
    viewer = new_operator(db, OperatorRole.VIEWER, now=clock.utc_now())
    _sign_in_to(page, viewer, f"/console/partners?sponsor={sponsor}")
    expect(page.get_by_role("heading", name=f"Partner clients of {sponsor}")).to_be_visible()
    for name in ("Create client", "Add sponsor", "Add location"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
