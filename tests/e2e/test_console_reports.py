"""The console's Reports page over HTTP: a sponsor's audit report of a known day as a table, its
CSV and JSON downloads and the reconciliation file byte for byte what the partner reports API
gives, the partner logs uploaded and their discrepancies; refusals, sign-in and escaping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape

import httpx
import pytest

from rewardmiles.reports import batches, reconciliation
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import ServerFactory
from tests.support.console_day import PINNED_DAY, Day, Traffic, pinned_day, table_rows

PAGE = "/console/reports"
API = "/checkout/issuance/reports"
BATCHES = "/checkout/issuance/batches"


@pytest.fixture(scope="module")
def day(dialect: str, server_factory: ServerFactory) -> Iterator[Day]:
    yield from pinned_day(dialect, server_factory)


@pytest.fixture(scope="module")
def traffic(day: Day) -> Traffic:
    return day.send_traffic()


def _partner_get(day: Day, path: str, **params: str) -> httpx.Response:
    response = day.partner.http.get(
        path, params=params, headers={"Authorization": f"Bearer {day.partner.token}"}
    )
    assert response.status_code == 200, response.text
    return response


def _scope(day: Day) -> dict[str, str]:
    return {"sponsor": day.sponsor, "day": PINNED_DAY.isoformat()}


def test_the_audit_report_of_the_day_as_a_table(day: Day, traffic: Traffic) -> None:
    with day.operator(OperatorRole.VIEWER) as viewer:
        response = viewer.get(PAGE, params=_scope(day))
    assert response.status_code == 200, response.text
    rows = table_rows(response.text, "audit-table")
    assert rows[0] == [
        "Processed at",
        "Transaction",
        "Type",
        "Partner transaction",
        "Collector",
        "HTTP",
        "Status",
        "Error code",
        "Lines",
        "Miles",
    ]
    api = _partner_get(day, API + "/audit", date=PINNED_DAY.isoformat()).json()
    expected = [
        [
            t["processedAt"],
            t["transactionId"],
            t["transactionType"],
            t["partnerTransactionId"],
            t["collectorNumber"] or "",
            str(t["httpStatus"]),
            t["status"],
            t["errorCode"] or "",
            str(len(t["issuances"])),
            str(
                sum(line["milesAmount"] for line in t["issuances"] if line["status"] != "REJECTED")
            ),
        ]
        for t in api["transactions"]
    ]
    assert rows[1:] == expected
    # The posts, the reversal, the held post and the refused unknown collector reached the rules.
    shown = {row[3] for row in rows[1:]}
    assert set(traffic.partner_ids) <= shown
    assert len(rows) - 1 == len(traffic.partner_ids) + 1
    assert sorted(row[9] for row in rows[1:] if row[6] == "posted") == ["13", "13", "21", "8"]
    assert [row[9] for row in rows[1:] if row[6] == "rejected"] == ["0"]  # nothing issued
    assert "data-sortable" in response.text
    assert '<th scope="col" aria-sort="ascending"><button type="button" class="sort">' in (
        response.text
    )


def test_the_downloads_are_the_reports_apis_bytes(day: Day, traffic: Traffic) -> None:
    with day.operator(OperatorRole.VIEWER) as viewer:
        csv_file = viewer.get(PAGE + "/audit.csv", params=_scope(day))
        json_file = viewer.get(PAGE + "/audit.json", params=_scope(day))
        recon_file = viewer.get(PAGE + "/reconciliation", params=_scope(day))
    date = PINNED_DAY.isoformat()
    api_csv = _partner_get(day, API + "/audit", date=date, format="csv")
    api_json = _partner_get(day, API + "/audit", date=date)
    api_recon = _partner_get(day, API + "/reconciliation", date=date)

    assert csv_file.status_code == json_file.status_code == recon_file.status_code == 200
    assert csv_file.content == api_csv.content
    assert csv_file.headers["content-type"] == api_csv.headers["content-type"]
    assert csv_file.headers["content-disposition"] == (
        f'attachment; filename="audit-{day.sponsor}-{date}.csv"'
    )
    assert json_file.content == api_json.content
    assert json_file.headers["content-disposition"].endswith(f'{date}.json"')
    for partner_id in traffic.partner_ids:
        assert partner_id in csv_file.text

    # Two files of the same day differ only by their own id (and the moment, pinned here).
    ours, theirs = reconciliation.parse(recon_file.text), reconciliation.parse(api_recon.text)
    assert (ours.details, ours.created_at) == (theirs.details, theirs.created_at)
    assert recon_file.text.split("\n")[1:] == api_recon.text.split("\n")[1:]
    assert recon_file.headers["content-disposition"] == api_recon.headers["content-disposition"]
    assert [d.miles for d in ours.details] == [8, 13, 21, -13]


def _upload(day: Day, log: str) -> dict[str, object]:
    auth = {"Authorization": f"Bearer {day.partner.token}"}
    upload = day.partner.http.post(
        BATCHES, content=log.encode(), headers={**auth, "Content-Type": "text/csv"}
    )
    assert upload.status_code == 202, upload.text
    deadline = time.monotonic() + 20
    while True:
        view: dict[str, object] = day.partner.http.get(
            upload.headers["location"], headers=auth
        ).json()
        if view["status"] != "processing" or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


def test_partner_logs_are_listed_with_their_discrepancies(day: Day, traffic: Traffic) -> None:
    at = day.moment.isoformat().replace("+00:00", "Z")
    eight, thirteen, twenty_one = traffic.partner_ids[:3]
    log = (
        "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"
        f"POST/EVENT,{eight},{traffic.collector},{at},8\n"
        f"POST/EVENT,{twenty_one},{traffic.collector},{at},20\n"
        f"POST/EVENT,never-sent-1,{traffic.collector},{at},4\n"
    )
    view = _upload(day, log)
    assert view["status"] == "done", view

    with day.operator(OperatorRole.VIEWER) as viewer:
        listed = viewer.get(PAGE, params=_scope(day))
        detail = viewer.get(f"{PAGE}/batches/{view['batchId']}")
    assert listed.status_code == detail.status_code == 200
    rows = table_rows(listed.text, "batches-table")
    assert rows[0] == ["Uploaded", "Sponsor", "Source", "Status", "Results", "Log"]
    mine = [row for row in rows[1:] if str(view["batchId"]) in row[5]]
    assert len(mine) == 1
    counts = view["counts"]
    assert isinstance(counts, dict)
    assert mine[0][4] == ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    assert counts["matched"] == 1
    assert counts["amount_mismatch"] == 1
    assert counts["missing_in_program"] == 1
    assert f'href="/console/reports/batches/{view["batchId"]}"' in listed.text

    records = table_rows(detail.text, "discrepancies-table")
    records_by_outcome = {row[1]: row for row in records[1:]}
    assert eight not in detail.text  # matched records are not discrepancies
    assert records_by_outcome["amount_mismatch"][4] == twenty_one
    assert records_by_outcome["amount_mismatch"][6:8] == ["20", "21"]
    assert records_by_outcome["missing_in_program"][4] == "never-sent-1"
    api_records = view["records"]
    assert isinstance(api_records, list)
    assert len(records) - 1 == len(api_records)
    # The day's other accepted transactions the log leaves out: the 13, its reversal, the held 5.
    missing = sorted((row[4], row[7]) for row in records[1:] if row[1] == "missing_in_log")
    reversal, held = traffic.partner_ids[3:5]
    assert missing == sorted([(thirteen, "13"), (reversal, "13"), (held, "5")])


def test_the_page_without_a_sponsor_asks_for_one(day: Day) -> None:
    with day.operator() as viewer:
        response = viewer.get(PAGE)
    assert response.status_code == 200
    assert "Choose a sponsor and a day" in response.text
    assert f'<option value="{day.sponsor}">' in response.text
    assert '<label for="reports-sponsor">Sponsor</label>' in response.text
    assert '<label for="reports-day">Day</label>' in response.text


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        (PAGE, {"sponsor": "NOPE", "day": "2026-12-15"}, 404, "No sponsor NOPE."),
        (PAGE, {"day": "2026-02-30"}, 400, "day must be a day, YYYY-MM-DD."),
        (PAGE, {"day": "20261215"}, 400, "day must be a day, YYYY-MM-DD."),
        (PAGE, {"day": "9999-12-31"}, 400, "day must lie between 0001-01-02 and 9999-12-30."),
        (PAGE + "/audit.csv", {"day": "2026-12-15"}, 400, "Choose a sponsor."),
        (PAGE + "/audit.csv", {"sponsor": "NOPE"}, 404, "No sponsor NOPE."),
        (PAGE + "/audit.xml", {"sponsor": "NOPE"}, 404, "No audit report as xml; csv or json."),
        (
            PAGE + "/reconciliation",
            {"sponsor": "<script>alert(1)</script>"},
            400,
            "sponsor must be a sponsor code.",
        ),
        (PAGE, {"sponsor": "x" * 11}, 400, "sponsor must be a sponsor code."),
        (PAGE + "/batches/nope", {}, 404, "No batch nope."),
    ],
)
def test_bad_requests_are_refused_with_a_message(
    day: Day, path: str, params: dict[str, str], status: int, message: str
) -> None:
    with day.operator() as viewer:
        response = viewer.get(path, params=params)
    assert response.status_code == status, response.text
    assert message in unescape(response.text)
    assert "<script>alert(1)</script>" not in response.text


@pytest.mark.parametrize(
    "path", [PAGE, PAGE + "/audit.csv", PAGE + "/reconciliation", PAGE + "/batches/x"]
)
def test_no_session_goes_to_the_sign_in_page(day: Day, path: str) -> None:
    response = httpx.get(day.server.base_url + path, params=_scope(day), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/sign-in?next=/console/reports")


def test_a_log_named_like_markup_is_shown_escaped(day: Day) -> None:
    with day.db.unit_of_work() as session:
        batch_id = batches.start_batch(
            session, day.sponsor, "<script>alert(1)</script>", False, datetime.now(UTC)
        )
    with day.operator() as viewer:
        listed = viewer.get(PAGE, params=_scope(day))
        detail = viewer.get(f"{PAGE}/batches/{batch_id}")
    for response in (listed, detail):
        assert response.status_code == 200
        assert "<script>alert(1)</script>" not in response.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
