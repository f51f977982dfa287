"""The Offers page's rule editor in Chromium: typing a rule shows the members at fault and clears
them once the rule is whole; the preview gives the miles of the sample basket, edited too, and
they are the miles a real CALCULATE gives for that basket once the offer is saved."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Page, expect

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.offers import service as offers
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.browser import snap
from tests.support.operators import Login, new_operator
from tests.support.partner import Partner
from tests.support.server import Server

CALCULATE = "/checkout/issuance/calculate"
BASE = {"type": "base", "miles": 1, "perDollars": 10}


def _sign_in_to(page: Page, login: Login, path: str) -> None:
    """Sign in through the console's form, going on to `path` (the form's `next`)."""
    page.goto(f"/console/sign-in?next={path}")
    page.get_by_label("Email").fill(login.email)
    page.get_by_label("Password").fill(login.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}")


def _calculate(server: Server, partner: Partner, sponsor: str, basket: str) -> dict[str, Any]:
    answer = partner.call(CALCULATE, {**json.loads(basket), "sponsorCode": sponsor}, key=None)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_typing_a_rule_checks_it_and_previews_what_calculate_gives(
    page: Page, server: Server, db: Database
) -> None:
    sponsor = data.new_sponsor(db)
    with db.unit_of_work() as session:
        offers.put_offer(
            session,
            sponsor,
            "BASE",
            description="1 mile per $10",
            rule=BASE,
            valid_from=None,
            valid_to=None,
            locations=None,
            offer_id=None,
            now=clock.utc_now(),
            replace=False,
        )
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    admin = new_operator(db, OperatorRole.ADMIN, now=clock.utc_now())
    _sign_in_to(page, admin, f"/console/offers?sponsor={sponsor}")

    expect(page.get_by_role("cell", name="1 mile per $10")).to_be_visible()
    page.get_by_role("link", name="New offer").click()
    page.get_by_label("Offer code").fill("COFFEE")
    page.get_by_label("Description").fill("7 miles a coffee")
    rule = page.get_by_label("Rule (JSON)")
    check = page.locator("#rule-check")
    total = page.locator("#preview-total")

    # typed as a person types: the rule is incomplete, and the check says what is missing
    rule.press_sequentially('{"type": "item", "categories": ["COFFEE"]}', delay=10)
    expect(check.locator('[data-state="bad"]')).to_be_visible()
    expect(check).to_contain_text("give either milesPerUnit, or miles with perDollars")
    expect(rule).to_have_attribute("aria-invalid", "true")
    rule.press("ArrowLeft")  # before the closing brace
    rule.press_sequentially(', "milesPerUnit": 0', delay=10)
    expect(check).to_contain_text("milesPerUnit")
    expect(check).to_contain_text("greater than or equal to 1")
    rule.press("Backspace")
    rule.press_sequentially("7", delay=10)
    expect(check).to_contain_text("The rule is valid")
    expect(check.locator('[data-state="bad"]')).to_have_count(0)
    expect(rule).not_to_have_attribute("aria-invalid", "true")

    # the prefilled sample basket: 2 coffees ($40) and $25.50 more: 2 × 7 + 6 (BASE) miles
    expect(total).to_have_text("20")
    preview = page.locator("#preview")
    expect(preview.get_by_role("row").filter(has_text="COFFEE (this offer)")).to_contain_text("14")
    expect(preview.get_by_role("row").filter(has_text="BASE")).to_contain_text("6")

    # an edited basket: 3 coffees ($60), $85.50 in all: 3 × 7 + 8 miles
    basket = page.get_by_label("Sample basket (JSON)")
    edited = json.loads(basket.input_value())
    edited["items"][0].update(quantity=3, finalAmount=60.0)
    edited["basketPreTaxAmount"] = edited["basketPostTaxAmount"] = 85.5
    basket.fill(json.dumps(edited, indent=2))
    expect(total).to_have_text("29")
    snap(page, "offers")
    shown = int(total.inner_text().replace(",", ""))
    sample = basket.input_value()

    page.get_by_role("button", name="Save offer").click()
    expect(page.get_by_role("status")).to_have_text("Offer COFFEE added.")
    expect(page.get_by_role("cell", name="7 miles a coffee")).to_be_visible()
    answer = _calculate(server, partner, sponsor, sample)
    assert answer["totalMiles"] == shown
    lines = {line["issuanceOfferCode"]: line["milesAmount"] for line in answer["issuances"]}
    assert lines == {"BASE": 8, "COFFEE": 21}
    partner.close()


def test_a_broken_sample_basket_is_named_in_the_preview(
    page: Page, server: Server, db: Database
) -> None:
    sponsor = data.new_sponsor(db)
    admin = new_operator(db, OperatorRole.ADMIN, now=clock.utc_now())
    _sign_in_to(page, admin, f"/console/offers/edit?sponsor={sponsor}")
    page.get_by_label("Offer code").fill("BASE")
    page.get_by_label("Rule (JSON)").fill(json.dumps(BASE))
    expect(page.locator("#preview-total")).to_have_text("6")
    basket = page.get_by_label("Sample basket (JSON)")
    text = basket.input_value()
    basket.fill(re.sub(r'"basketPreTaxAmount": [0-9.]+', '"basketPreTaxAmount": 1.0', text))
    preview = page.locator("#preview")
    expect(preview.locator('[data-state="bad"]')).to_be_visible()
    expect(preview).to_contain_text("items add up to 65.50, not the pre-tax 1.00")
