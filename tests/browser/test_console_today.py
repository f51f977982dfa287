"""The Today page in Chromium: on a server of its own whose clock stands at 14:30 Toronto, a
known day of partner traffic drawn by the charts and listed in the table below them exactly, the
latest partner errors linked to the transaction search, and the Day picker showing an earlier
day (which does not refresh itself)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ServerFactory
from tests.support.browser import snap
from tests.support.console_day import (
    PINNED_DAY,
    PINNED_HOUR,
    Day,
    Traffic,
    eventually,
    pinned_day,
)


@pytest.fixture(scope="module")
def day(dialect: str, server_factory: ServerFactory) -> Iterator[Day]:
    yield from pinned_day(dialect, server_factory)


@pytest.fixture(scope="module")
def traffic(day: Day) -> Traffic:
    return day.send_traffic()


def _sign_in(page: Page, day: Day) -> None:
    email, password = day.login()
    page.goto(day.server.base_url + "/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(day.server.base_url + "/console/today")


def _cells(page: Page, hour: str) -> list[str]:
    row = page.locator("#hours-table tbody tr").filter(
        has=page.get_by_role("rowheader", name=hour, exact=True)
    )
    return [text.strip() for text in row.locator("td").all_inner_texts()]


def test_the_charts_and_table_show_exactly_the_days_traffic(
    page: Page, day: Day, traffic: Traffic
) -> None:
    _sign_in(page, day)

    def recorded() -> bool:  # the failure recorder writes within a moment
        page.reload()
        return page.locator("#errors-table tbody tr").count() == len(traffic.refused_ids)

    assert eventually(recorded), "the refused requests are listed"
    expect(page.get_by_role("heading", name=f"Today {PINNED_DAY.isoformat()}")).to_be_visible()

    expected = [
        str(traffic.issued),
        str(traffic.reversed),
        str(traffic.answered["200"]),
        str(traffic.answered["202"]),
        str(traffic.answered["4xx"]),
        "0",
    ]
    assert _cells(page, PINNED_HOUR) == expected
    assert _cells(page, "13:00") == ["0"] * 6
    assert _cells(page, "15:00") == ["0"] * 6
    assert page.locator("#hours-table tbody tr").count() == 24
    totals = page.locator("#hours-table tfoot td").all_inner_texts()
    assert [t.strip() for t in totals] == expected

    # The charts were drawn (uPlot's canvas) from the data the page carries.
    for chart in ("#today-miles-chart", "#today-requests-chart"):
        expect(page.locator(f"{chart} canvas").first).to_be_attached()
        expect(page.locator(chart)).to_have_attribute("data-points", "24")
    expect(page.locator("#today-miles-chart")).to_have_attribute(
        "data-series", json.dumps(["Issued", "Reversed"], separators=(",", ":"))
    )
    data = json.loads(page.locator("#today-data").text_content() or "{}")
    assert data["issued"][14] == traffic.issued
    assert data["reversed"][14] == traffic.reversed
    assert sum(data["issued"]) == traffic.issued
    assert data["requests"]["4xx"][14] == traffic.answered["4xx"]
    drawn = page.evaluate(
        "() => document.querySelectorAll('#today-miles-chart .u-legend .u-series').length"
    )
    assert drawn == 3  # the hour and the two series

    # The latest errors, newest first, each linked to the transaction search.
    links = page.locator("#errors-table tbody a")
    assert links.all_inner_texts() == list(reversed(traffic.refused_ids))
    assert links.first.get_attribute("href") == (
        f"/console/transactions?q={traffic.refused_ids[-1]}"
    )
    expect(page.locator("#pending-lines")).to_have_text("1")
    # The current day refreshes its content by itself.
    expect(page.locator("#today-content")).to_have_attribute("hx-trigger", "every 30s")
    snap(page, "today")


def test_the_day_picker_shows_an_earlier_day(page: Page, day: Day, traffic: Traffic) -> None:
    _sign_in(page, day)
    earlier = PINNED_DAY - timedelta(days=1)
    picker = page.get_by_label("Day", exact=True)
    expect(picker).to_have_value(PINNED_DAY.isoformat())
    picker.fill(earlier.isoformat())
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**/console/today?day={earlier.isoformat()}")

    expect(
        page.get_by_role("heading", name=f"Transaction Day {earlier.isoformat()}")
    ).to_be_visible()
    expect(page.get_by_label("Day", exact=True)).to_have_value(earlier.isoformat())
    assert [t.strip() for t in page.locator("#hours-table tfoot td").all_inner_texts()] == (
        ["0"] * 6
    )
    data = json.loads(page.locator("#today-data").text_content() or "{}")
    assert data["day"] == earlier.isoformat()
    assert sum(data["issued"]) == 0
    assert page.locator("#today-content").get_attribute("hx-trigger") is None

    page.get_by_role("link", name="Back to today").click()
    page.wait_for_url(day.server.base_url + "/console/today")
    assert _cells(page, PINNED_HOUR)[0] == str(traffic.issued)
