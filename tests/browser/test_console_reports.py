"""The Reports page in Chromium: a sponsor's audit report of a known day, sorted by a column's
header button (aria-sort follows), and downloaded as CSV with the bytes the partner reports API
gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ServerFactory
from tests.support.browser import snap
from tests.support.console_day import PINNED_DAY, Day, Traffic, pinned_day


@pytest.fixture(scope="module")
def day(dialect: str, server_factory: ServerFactory) -> Iterator[Day]:
    yield from pinned_day(dialect, server_factory)


@pytest.fixture(scope="module")
def traffic(day: Day) -> Traffic:
    return day.send_traffic()


def _open_report(page: Page, day: Day) -> None:
    email, password = day.login()
    page.goto(day.server.base_url + "/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(day.server.base_url + "/console/today")
    page.get_by_role("link", name="Reports").click()
    page.get_by_label("Sponsor").fill(day.sponsor)
    page.get_by_label("Day", exact=True).fill(PINNED_DAY.isoformat())
    page.get_by_role("button", name="Show").click()
    expect(
        page.get_by_role("heading", name=f"Audit report: {day.sponsor}, {PINNED_DAY.isoformat()}")
    ).to_be_visible()


def _column(page: Page, index: int) -> list[str]:
    return [
        text.strip()
        for text in page.locator(f"#audit-table tbody tr td:nth-child({index})").all_inner_texts()
    ]


def test_sort_a_column_both_ways(page: Page, day: Day, traffic: Traffic) -> None:
    _open_report(page, day)
    assert len(_column(page, 1)) == len(traffic.partner_ids) + 1  # and the refused unknown
    miles_header = page.get_by_role("columnheader", name="Miles")
    processed_header = page.get_by_role("columnheader", name="Processed at")
    expect(processed_header).to_have_attribute("aria-sort", "ascending")

    miles_header.get_by_role("button").click()
    ascending = [int(m) for m in _column(page, 10)]
    assert ascending == sorted(ascending)
    assert ascending[-1] == 21
    expect(miles_header).to_have_attribute("aria-sort", "ascending")
    expect(processed_header).not_to_have_attribute("aria-sort", "ascending")

    miles_header.get_by_role("button").press("Enter")  # the keyboard sorts too
    descending = [int(m) for m in _column(page, 10)]
    assert descending == sorted(ascending, reverse=True)
    expect(miles_header).to_have_attribute("aria-sort", "descending")

    partner_header = page.get_by_role("columnheader", name="Partner transaction")
    partner_header.get_by_role("button").click()
    partner_ids = _column(page, 4)
    assert partner_ids == sorted(partner_ids)  # t-<hex>: the same order in any locale
    assert set(traffic.partner_ids) <= set(partner_ids)
    # Rows move whole: each partner id keeps its own miles.
    rows = dict(zip(_column(page, 4), _column(page, 10), strict=True))
    assert rows[traffic.partner_ids[2]] == "21"
    assert rows[traffic.partner_ids[0]] == "8"
    snap(page, "reports")


def test_download_the_audit_report_as_csv(
    page: Page, day: Day, traffic: Traffic, tmp_path: Path
) -> None:
    _open_report(page, day)
    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download CSV").click()
    download = waiting.value
    assert download.suggested_filename == f"audit-{day.sponsor}-{PINNED_DAY.isoformat()}.csv"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    content = saved.read_bytes()

    api = day.partner.http.get(
        "/checkout/issuance/reports/audit",
        params={"date": PINNED_DAY.isoformat(), "format": "csv"},
        headers={"Authorization": f"Bearer {day.partner.token}"},
    )
    assert api.status_code == 200, api.text
    assert content == api.content
    text = content.decode()
    assert text.startswith(f"# audit report; sponsor {day.sponsor}; transaction day 2026-12-15")
    for partner_id in traffic.partner_ids:
        assert f",{partner_id}," in text
    miles = sorted(
        int(line.split(",")[11]) for line in text.splitlines()[2:] if line.split(",")[6] == "posted"
    )
    assert miles == [8, 13, 13, 21]
