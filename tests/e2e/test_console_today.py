"""The console's Today page over HTTP: a server of its own whose clock stands at 14:30 Toronto,
a known day of partner traffic, and the page's hours, figures and latest errors showing exactly
that traffic; earlier days, refusals of bad days, sign-in and escaping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, timedelta
from html import unescape

import httpx
import pytest

from rewardmiles.vocabulary import OperatorRole
from tests.conftest import ServerFactory
from tests.support.console_day import (
    PINNED_DAY,
    PINNED_HOUR,
    Day,
    Traffic,
    eventually,
    pinned_day,
    table_rows,
)

PAGE = "/console/today"


@pytest.fixture(scope="module")
def day(dialect: str, server_factory: ServerFactory) -> Iterator[Day]:
    yield from pinned_day(dialect, server_factory)


@pytest.fixture(scope="module")
def traffic(day: Day) -> Traffic:
    return day.send_traffic()


def _chart(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="today-data">(.*?)</script>', html, re.S)
    assert found is not None, "the page embeds its chart's data"
    data: dict[str, object] = json.loads(found.group(1))
    return data


def _recorded(client: httpx.Client, traffic: Traffic) -> str:
    """The page once the failure recorder has written the refused requests."""

    def page() -> str | None:
        response = client.get(PAGE)
        assert response.status_code == 200, response.text
        return response.text if all(i in response.text for i in traffic.refused_ids) else None

    html = eventually(page)
    assert html, "the refused requests were recorded"
    return str(html)


def test_the_hours_show_exactly_the_days_traffic(day: Day, traffic: Traffic) -> None:
    with day.operator(OperatorRole.VIEWER) as viewer:
        html = _recorded(viewer, traffic)

    rows = table_rows(html, "hours-table")
    assert rows[0] == ["Hour", "Issued", "Reversed", "200", "202", "4xx", "5xx"]
    hours = rows[1:-1]
    assert [r[0] for r in hours] == [f"{h:02d}:00" for h in range(24)]
    expected = [
        str(traffic.issued),
        str(traffic.reversed),
        str(traffic.answered["200"]),
        str(traffic.answered["202"]),
        str(traffic.answered["4xx"]),
        "0",
    ]
    for row in hours:
        assert row[1:] == (expected if row[0] == PINNED_HOUR else ["0"] * 6), row
    assert rows[-1] == ["Day", *expected]

    chart = _chart(html)
    index = 14
    assert chart["day"] == PINNED_DAY.isoformat()
    assert chart["labels"] == [f"{h:02d}:00" for h in range(24)]
    assert len(chart["hours"]) == 24  # type: ignore[arg-type]
    assert chart["issued"] == [traffic.issued if i == index else 0 for i in range(24)]
    assert chart["reversed"] == [traffic.reversed if i == index else 0 for i in range(24)]
    requests = chart["requests"]
    assert isinstance(requests, dict)
    for outcome in ("200", "202", "4xx"):
        assert requests[outcome] == [
            traffic.answered[outcome] if i == index else 0 for i in range(24)
        ]
    assert requests["5xx"] == [0] * 24

    assert 'id="total-issued">42<' in html
    assert 'id="total-reversed">13<' in html
    # The current day refreshes itself, by its content only.
    assert 'hx-trigger="every 30s"' in html
    assert 'hx-select="#today-content"' in html


def test_the_refusals_codes_pending_lines_and_partner_errors(day: Day, traffic: Traffic) -> None:
    with day.operator(OperatorRole.VIEWER) as viewer:
        html = _recorded(viewer, traffic)

    codes = table_rows(html, "codes-table")
    assert codes[0] == ["Code", "Requests"]
    assert sorted((c, int(n)) for c, n in codes[1:]) == sorted(traffic.codes.items())

    errors = table_rows(html, "errors-table")
    assert [row[5] for row in errors[1:]] == list(reversed(traffic.refused_ids))
    for request_id in traffic.refused_ids:
        assert f'href="/console/transactions?q={request_id}"' in html
    assert all(row[3] == "POST /checkout/issuance/post/event" for row in errors[1:])
    assert all(row[4] == day.partner.client_id for row in errors[1:])

    assert 'id="pending-lines">1<' in html
    assert "Oldest waiting under a minute" in html
    assert 'id="deliveries-retrying">0<' in html


def test_a_viewer_sees_collector_numbers_in_errors_masked_an_agent_in_full(
    day: Day, traffic: Traffic
) -> None:
    with day.operator(OperatorRole.VIEWER) as viewer:
        as_viewer = _recorded(viewer, traffic)
    with day.operator(OperatorRole.AGENT) as agent:
        as_agent = _recorded(agent, traffic)
    viewer_details = " ".join(row[6] for row in table_rows(as_viewer, "errors-table")[1:])
    agent_details = " ".join(row[6] for row in table_rows(as_agent, "errors-table")[1:])
    numbers = re.findall(r"\b6[0-9]{10}\b", agent_details)
    assert numbers, agent_details  # the unknown collector's number, in full for an agent
    for number in numbers:
        assert number not in viewer_details


def test_an_earlier_day_is_empty_and_does_not_refresh(day: Day, traffic: Traffic) -> None:
    earlier = PINNED_DAY - timedelta(days=1)
    with day.operator() as viewer:
        response = viewer.get(PAGE, params={"day": earlier.isoformat()})
    assert response.status_code == 200, response.text
    html = response.text
    assert f"Transaction Day {earlier.isoformat()}" in html
    assert "hx-trigger" not in html
    rows = table_rows(html, "hours-table")
    assert rows[-1] == ["Day", "0", "0", "0", "0", "0", "0"]
    assert "No failed partner request recorded this day." in html
    assert 'id="pending-lines">1<' in html  # pending lines are counted now, whatever the day
    assert '<input id="today-day" name="day" type="date" value="2026-12-14"' in html
    assert '<label for="today-day">Day</label>' in html


def test_a_day_on_which_the_clocks_change_has_its_own_hours(day: Day) -> None:
    with day.operator() as viewer:
        autumn = viewer.get(PAGE, params={"day": "2026-11-01"})
        spring = viewer.get(PAGE, params={"day": "2026-03-08"})
    assert autumn.status_code == spring.status_code == 200
    autumn_hours = [r[0] for r in table_rows(autumn.text, "hours-table")[1:-1]]
    spring_hours = [r[0] for r in table_rows(spring.text, "hours-table")[1:-1]]
    assert len(autumn_hours) == 25
    assert "01:00 EDT" in autumn_hours
    assert "01:00 EST" in autumn_hours
    assert len(spring_hours) == 23
    assert "02:00" not in spring_hours


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("2026-13-01", "day must be a day, YYYY-MM-DD."),
        ("20261215", "day must be a day, YYYY-MM-DD."),
        ("2026-W51-2", "day must be a day, YYYY-MM-DD."),
        ("<script>alert(1)</script>", "day must be a day, YYYY-MM-DD."),
        ("0001-01-01", "day must lie between 0001-01-02 and 9999-12-30."),
    ],
)
def test_a_bad_day_is_refused_with_a_message(day: Day, raw: str, message: str) -> None:
    with day.operator() as viewer:
        response = viewer.get(PAGE, params={"day": raw})
    assert response.status_code == 400, response.text
    assert message in unescape(response.text)
    assert "<script>alert(1)</script>" not in response.text


def test_no_session_goes_to_the_sign_in_page(day: Day) -> None:
    response = httpx.get(day.server.base_url + PAGE + "?day=2026-12-14", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in?next=/console/today%3Fday%3D2026-12-14"


def test_a_failed_path_is_shown_escaped(day: Day) -> None:
    response = day.partner.http.get(
        "/checkout/issuance/<script>alert(1)</script>",
        headers={"Authorization": f"Bearer {day.partner.token}"},
    )
    assert response.status_code == 404
    request_id = response.json()["requestId"]
    with day.operator() as viewer:

        def page() -> str | None:
            text = viewer.get(PAGE).text
            return text if request_id in text else None

        html = eventually(page)
    assert html, "the 404 was recorded"
    assert "<script>alert(1)</script>" not in html
    assert "GET /checkout/issuance/&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_today_is_the_program_days_default(day: Day) -> None:
    with day.operator() as viewer:
        response = viewer.get(PAGE)
    assert response.status_code == 200
    assert f"Today {PINNED_DAY.isoformat()}" in response.text
    assert date.fromisoformat(_chart(response.text)["day"]) == PINNED_DAY  # type: ignore[arg-type]
