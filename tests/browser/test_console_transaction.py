"""The Transaction page in Chromium: one search box finds a transaction by its id and by the
partner's id, and a failed partner call by its request id; the detail shows request, response,
lines and reversals and leads to the collector."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.browser.test_console_collector import signed_in
from tests.support import data
from tests.support.browser import PageProblems, snap
from tests.support.partner import Partner
from tests.support.server import Server

LABEL = "Transaction id, partner id or request id"


def _find(page: Page, text: str) -> None:
    page.goto("/console/transactions")
    page.get_by_label(LABEL).fill(text)
    page.get_by_label(LABEL).press("Enter")
    page.wait_for_load_state()


def test_a_transaction_is_found_by_either_id_and_a_failed_call_by_its_request_id(
    page: Page, page_problems: PageProblems, server: Server, db: Database
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    number = data.new_collector(db)
    try:
        body = data.event_body(sponsor, number, miles=20)
        posted = partner.post_event(body).json()
        reversal = partner.reverse_event(
            data.event_body(
                sponsor, number, miles=8, originalClientTransactionId=body["clientTransactionId"]
            )
        ).json()
        refused = partner.post_event(data.event_body(sponsor, number, miles=0))
        assert refused.status_code == 400
        request_id = refused.json()["requestId"]
    finally:
        partner.close()
    signed_in(page, page_problems, db, OperatorRole.AGENT)
    transaction_id = posted["transactionId"]

    _find(page, transaction_id)
    page.wait_for_url(f"**/console/transactions/{transaction_id}")
    expect(page.locator("#transaction-id")).to_have_text(transaction_id)

    _find(page, body["clientTransactionId"])
    page.wait_for_url(f"**/console/transactions/{transaction_id}")
    expect(page.locator("#partner-id")).to_have_text(body["clientTransactionId"])
    expect(page.locator("#transaction-status")).to_contain_text("posted")
    expect(page.locator("#request-json")).to_contain_text(f'"collectorNumber": "{number}"')
    expect(page.locator("#response-json")).to_contain_text(transaction_id)
    expect(page.get_by_role("link", name=reversal["transactionId"])).to_be_visible()
    snap(page, "transaction")

    # The failure recorder writes a moment after the answer: until then, "nothing found" (404).
    page_problems.allow(rf"404 .*/console/transactions\?q={request_id}")
    deadline = time.monotonic() + 10
    _find(page, request_id)
    while page.locator("#failed-request").count() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        _find(page, request_id)
    failed = page.locator("#failed-request")
    expect(failed).to_contain_text(f"Failed partner request {request_id}")
    expect(failed).to_contain_text("/checkout/issuance/post/event")
    expect(failed).to_contain_text("MILES_AMOUNT_INVALID")

    _find(page, transaction_id)
    page.get_by_role("link", name=number).click()
    page.wait_for_url(f"**/console/collectors/{number}")
    expect(page.locator("#collector-balance")).to_have_text("12")
