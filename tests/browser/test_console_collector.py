"""The Collector page in Chromium: an agent finds a collector by typing its number, adjusts its
miles through the confirm step (which shows the balance after), sees the balance and the history
change (the next page of the history arrives as the Load more row scrolls into view), and the
audit log records it; a viewer sees no adjust or status form and a forged post is refused."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.browser import PageProblems, sign_in, snap
from tests.support.operators import new_operator
from tests.support.partner import Partner
from tests.support.server import Server

EVENTS = 51  # one more than a page of the history


def _collector_with_history(server: Server, db: Database) -> str:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    number = data.new_collector(db)
    try:
        for _ in range(EVENTS):
            answer = partner.post_event(data.event_body(sponsor, number, miles=1))
            assert answer.status_code == 200, answer.text
    finally:
        partner.close()
    return number


def signed_in(page: Page, page_problems: PageProblems, db: Database, role: OperatorRole) -> str:
    """Sign in a new operator of `role`; their e-mail."""
    login = new_operator(db, role, now=clock.utc_now())
    sign_in(page, login.email, login.password)
    return login.email


def _history_rows(page: Page) -> int:
    return page.locator("#history-rows tr:not(.more)").count()


def test_an_agent_adjusts_a_collectors_miles_through_the_confirm_step(
    page: Page, page_problems: PageProblems, server: Server, db: Database
) -> None:
    number = _collector_with_history(server, db)
    agent = signed_in(page, page_problems, db, OperatorRole.AGENT)

    page.goto("/console/collectors")
    page.get_by_label("Collector number").fill(number)
    page.get_by_label("Collector number").press("Enter")
    page.wait_for_url(f"**/console/collectors/{number}")
    expect(page.locator("#collector-balance")).to_have_text("51")
    assert _history_rows(page) == 50

    page.get_by_label("Miles", exact=True).fill("50")
    page.get_by_label("Reason", exact=True).select_option("GOODWILL")
    page.get_by_label("Note", exact=True).fill("Delayed flight, <b>goodwill</b>")
    page.get_by_role("button", name="Review adjustment").click()

    confirm = page.locator("#adjust-confirm")
    expect(confirm).to_contain_text("+50 miles (GOODWILL)")
    expect(page.locator("#balance-after")).to_have_text("101")
    expect(page.locator("#collector-balance")).to_have_text("51")  # nothing made yet
    page.get_by_role("button", name="Confirm").click()

    expect(page.get_by_role("status")).to_contain_text("Adjustment of +50 miles made; balance 101.")
    expect(page.locator("#collector-balance")).to_have_text("101")
    newest = page.locator("#history-rows tr").first
    expect(newest).to_contain_text("adjustment")
    expect(newest).to_contain_text("+50")
    expect(newest.locator("td").last).to_have_text("101")
    # The next page arrives when the Load more row is scrolled into view.
    assert _history_rows(page) == 50
    page.locator("#history-rows tr.more").scroll_into_view_if_needed()
    expect(page.locator("#history-rows tr:not(.more)")).to_have_count(EVENTS + 1)
    expect(page.locator("#history-rows tr.more")).to_have_count(0)
    expect(page.locator("#history-rows tr").last.locator("td").last).to_have_text("1")

    audit = page.request.get(
        "/admin/v1/audit-log", params={"entity": "collector", "entityId": number}
    )
    assert audit.status == 200, audit.text()
    [entry] = audit.json()["items"]
    assert (entry["action"], entry["actor"]) == ("collector.adjust", agent)
    assert entry["note"] == "Delayed flight, <b>goodwill</b>"
    assert (entry["before"]["balance"], entry["after"]["balance"]) == (51, 101)
    page.evaluate("window.scrollTo(0, 0)")
    snap(page, "collector")


def test_a_viewer_sees_no_adjust_or_status_form_and_a_forged_post_is_refused(
    page: Page, page_problems: PageProblems, db: Database
) -> None:
    number = data.new_collector(db)
    signed_in(page, page_problems, db, OperatorRole.VIEWER)

    page.goto(f"/console/collectors/{number}")

    expect(page.locator("#collector-status")).to_have_text("ACTIVE")
    expect(page.get_by_label("Miles", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("adjustment|Change status"))).to_have_count(0)
    headers = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")
    csrf = headers["X-CSRF-Token"]
    fields = {"miles": "50", "reason": "GOODWILL", "note": "n", "key": "k", "confirm": "1"}
    forged = page.request.post(
        f"/console/collectors/{number}/adjustments", form={**fields, "csrf": csrf}
    )
    assert forged.status == 403
    assert "needs the role agent" in forged.text()
    status = page.request.post(
        f"/console/collectors/{number}/status",
        form={"status": "CLOSED", "confirm": "1", "csrf": csrf},
    )
    assert status.status == 403
    page.reload()
    expect(page.locator("#collector-balance")).to_have_text("0")
    expect(page.locator("#collector-status")).to_have_text("ACTIVE")
    assert data.balance(db, number) == 0
