"""The pending review page in Chromium: an agent filters the lines a partner's calls left held for
review, ticks some, approves them with a note and sees the list change in place (no navigation),
rejects the rest with "All", and the partner's replays of the original calls tell the same; a
refusal (a line reviewed meanwhile) is shown in place; a viewer has no review controls."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page, expect

from rewardmiles.db.engine import Database
from rewardmiles.settlement import service as settlement
from rewardmiles.vocabulary import OperatorRole
from tests.support.browser import PageProblems, snap
from tests.support.operators import new_operator
from tests.support.review_desk import HeldLines, held_lines
from tests.support.server import Server

STAY = "window.stillTheSamePage"
PAGE = "/console/pending"


@pytest.fixture
def held(server: Server, db: Database) -> Iterator[HeldLines]:
    made = held_lines(db, server.base_url, 5)
    yield made
    made.partner.close()


def _sign_in_as(page: Page, db: Database, role: OperatorRole) -> None:
    """Open the page, signed out: the sign-in form, then back to the page."""
    login = new_operator(db, role, now=datetime.now(UTC))
    page.goto(PAGE)
    page.get_by_label("Email").fill(login.email)
    page.get_by_label("Password").fill(login.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(PAGE) + "$"))


def _filter(page: Page, held: HeldLines) -> None:
    page.get_by_label("Sponsor").fill(held.sponsor.lower())
    page.get_by_label("Reason").select_option("review")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"reason=review"))


def _rows(page: Page) -> list[str]:
    return [text.strip() for text in page.locator("#pending-list tbody th").all_inner_texts()]


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_an_agent_approves_and_rejects_in_bulk_without_leaving_the_page(
    page: Page, db: Database, held: HeldLines
) -> None:
    ids = held.ids
    _sign_in_as(page, db, OperatorRole.AGENT)
    _filter(page, held)
    assert _rows(page) == ids
    expect(page.get_by_label("Sponsor")).to_have_value(held.sponsor)
    listed_at = page.url
    page.evaluate(f"{STAY} = true")  # gone if the page were loaded again

    for line in ids[:3]:
        page.get_by_label(line, exact=True).check()
    expect(page.get_by_role("button", name="Approve selected (3)")).to_be_visible()
    page.get_by_label("Note").fill("known customer")
    page.get_by_role("button", name="Approve selected").click()

    done = page.get_by_text("Approved 3 lines.")
    expect(done).to_be_visible()
    expect(done).to_be_focused()
    assert _rows(page) == ids[3:]
    assert page.url == listed_at
    assert page.evaluate(STAY) is True
    snap(page, "pending")

    page.get_by_label("All", exact=True).check()
    expect(page.get_by_label(ids[3], exact=True)).to_be_checked()
    expect(page.get_by_label(ids[4], exact=True)).to_be_checked()
    page.get_by_label("Note").fill("fraud")
    page.get_by_role("button", name="Reject selected").click()
    expect(page.get_by_text("Rejected 2 lines.")).to_be_visible()
    expect(page.get_by_text("No line is pending with these filters.")).to_be_visible()
    assert page.url == listed_at
    assert page.evaluate(STAY) is True

    # The partner replays its calls (same Idempotency-Key): rejected at once, approved once the
    # settlement worker has posted them.
    assert [held.replayed_status(line) for line in held.lines[3:]] == ["REJECTED", "REJECTED"]
    _until(
        lambda: all(held.replayed_status(line) == "ISSUED" for line in held.lines[:3]),
        "the approved lines to post",
    )


def test_a_line_reviewed_meanwhile_is_refused_in_place_and_nothing_changes(
    page: Page, db: Database, held: HeldLines, page_problems: PageProblems
) -> None:
    page_problems.allow(r"console-error: .*status of 409")  # the browser logs the 409 answer
    ids = held.ids
    _sign_in_as(page, db, OperatorRole.AGENT)
    _filter(page, held)
    page.evaluate(f"{STAY} = true")
    page.get_by_label(ids[0], exact=True).check()
    page.get_by_label(ids[1], exact=True).check()
    with db.unit_of_work() as session:  # another operator's rejection, meanwhile
        settlement.reject(
            session,
            ids[1],
            settlement.REVIEW_REJECTED,
            datetime.now(UTC),
            known_codes=[settlement.REVIEW_REJECTED],
        )

    page.get_by_role("button", name="Approve selected").click()

    refused = page.get_by_role("alert").filter(has_text="nothing was changed")
    expect(refused).to_have_text(f"line {ids[1]} is not pending review; nothing was changed.")
    assert page.evaluate(STAY) is True
    expect(page.get_by_label(ids[0], exact=True)).to_be_checked()  # ready to send again
    assert _rows(page) == [ids[0], *ids[2:]]
    assert held.replayed_status(held.lines[0]) == "PENDING"


def test_a_viewer_sees_the_lines_but_no_review_controls(
    page: Page, db: Database, held: HeldLines
) -> None:
    _sign_in_as(page, db, OperatorRole.VIEWER)
    _filter(page, held)
    assert _rows(page) == held.ids
    expect(page.get_by_role("button", name="Approve selected")).to_have_count(0)
    expect(page.get_by_role("button", name="Reject selected")).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_label("Note")).to_have_count(0)
