"""The audit log page in Chromium: an agent approves a line on the pending review page, opens the
audit log from the navigation and finds the change (who, what, before → after, the note); the
filters by operator, entity and day narrow the log; an entity id opens that entity's history."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import server_settings
from tests.support.browser import snap
from tests.support.operators import new_operator
from tests.support.review_desk import HeldLines, held_lines
from tests.support.server import Server


@pytest.fixture
def held(server: Server, db: Database) -> Iterator[HeldLines]:
    made = held_lines(db, server.base_url, 2)
    yield made
    made.partner.close()


def _actions(page: Page) -> list[str]:
    return [text.strip() for text in page.locator("table.audit tbody th").all_inner_texts()]


def test_a_review_shows_in_the_audit_log_and_the_filters_narrow_it(
    page: Page, db: Database, server: Server, held: HeldLines
) -> None:
    login = new_operator(db, OperatorRole.AGENT, now=datetime.now(UTC))
    page.goto("/console/pending?sponsor=" + held.sponsor)
    page.get_by_label("Email").fill(login.email)
    page.get_by_label("Password").fill(login.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label(held.ids[0], exact=True).check()
    page.get_by_label("Note").fill("regular at the desk")
    page.get_by_role("button", name="Approve selected").click()
    expect(page.get_by_text("Approved 1 line.")).to_be_visible()

    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url(re.compile(r"/console/audit-log$"))
    mine = page.get_by_role("row").filter(has_text=held.ids[0])
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text(login.email)
    expect(mine).to_contain_text("pending.approve")
    expect(mine).to_contain_text('"review" → "approved"')
    expect(mine).to_contain_text("regular at the desk")

    today = datetime.now(UTC).astimezone(clock.zone(server_settings(server).program_time_zone))
    page.get_by_label("Operator").fill(login.email)
    page.get_by_label("Entity", exact=True).fill("issuance_line")
    page.get_by_label("Day").fill(today.date().isoformat())
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"day="))
    assert _actions(page) == ["pending.approve"]
    expect(page.get_by_label("Operator")).to_have_value(login.email)
    snap(page, "audit-log")

    page.get_by_label("Day").fill((today.date() - timedelta(days=1)).isoformat())
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No change is logged with these filters.")).to_be_visible()

    page.get_by_label("Entity", exact=True).fill("operator")
    page.get_by_label("Day").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No change is logged with these filters.")).to_be_visible()

    # From the full log, an entity id opens that line's history alone.
    page.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name=held.ids[0], exact=True).click()
    page.wait_for_url(re.compile(r"entity_id="))
    assert _actions(page) == ["pending.approve"]
    expect(page.get_by_label("Entity id")).to_have_value(held.ids[0])
