"""The report endpoints over HTTP: partner-scoped, JSON/CSV, the reconciliation file parses."""

from __future__ import annotations

import csv
import io
import json
import uuid

import httpx

from rewardmiles import clock
from rewardmiles.reports import reconciliation
from tests.e2e.conftest import World
from tests.support import data

AUDIT = "/checkout/issuance/reports/audit"
RECON = "/checkout/issuance/reports/reconciliation"


def _get(world: World, path: str, **params: str) -> httpx.Response:
    return world.partner.http.get(
        path, params=params, headers={"Authorization": f"Bearer {world.partner.token}"}
    )


def test_audit_report_lists_the_days_requests_of_the_partners_sponsor(world: World) -> None:
    collector = world.collector()
    accepted = world.partner.post_event(world.body(collector, miles=6)).json()
    today = data.processed_day(accepted)  # the accepted one's own Transaction Day
    rejected_body = world.body(world.collector("CLOSED"))
    before = clock.transaction_day_of(clock.utc_now(), "America/Toronto").isoformat()
    rejected = world.partner.post_event(rejected_body)
    after = clock.transaction_day_of(clock.utc_now(), "America/Toronto").isoformat()
    assert rejected.json()["code"] == "COLLECTOR_CLOSED"

    response = _get(world, AUDIT, date=today)
    assert response.status_code == 200
    report = response.json()
    assert report["sponsorCode"] == world.sponsor
    assert report["transactionDay"] == today
    assert report["timeZone"] == "America/Toronto"
    by_id = {t["partnerTransactionId"]: t for t in report["transactions"]}
    assert by_id[accepted["clientTransactionId"]]["transactionId"] == accepted["transactionId"]
    assert by_id[accepted["clientTransactionId"]]["issuances"][0]["status"] == "ISSUED"
    # The rejection was processed on `before` or on `after` (they differ only across midnight).
    rejections = [
        t
        for day in sorted({before, after})
        for t in _get(world, AUDIT, date=day).json()["transactions"]
        if t["partnerTransactionId"] == rejected_body["clientTransactionId"]
    ]
    assert [t["errorCode"] for t in rejections] == ["COLLECTOR_CLOSED"]

    csv_text = _get(world, AUDIT, date=today, format="csv").text
    assert accepted["transactionId"] in csv_text


def test_the_partner_sees_its_own_collector_numbers_in_full_in_both_formats(
    world: World,
) -> None:
    collector = world.collector()
    assert world.partner.post_event(world.body(collector, miles=2)).status_code == 200
    today = clock.transaction_day_of(clock.utc_now(), "America/Toronto").isoformat()
    masked = f"{collector[:3]}*****{collector[-3:]}"
    for fmt in ("json", "csv"):
        text = _get(world, AUDIT, date=today, format=fmt).text
        assert collector in text, fmt
        assert masked not in text, fmt
    # The former switch is gone from the contract: asking for masking changes nothing either.
    assert "unmaskCollectors" not in json.dumps(world.partner.http.get("/openapi.json").json())


FORMULAS = ('=HYPERLINK("http://x.test","y")', "-2+3", "@SUM(A1)", "+SUM(1)", "\t=1")


def test_audit_csv_neutralises_partner_text_that_a_spreadsheet_would_run(world: World) -> None:
    collector = world.collector()
    sent = []
    for tid in FORMULAS[:4]:
        body = world.body(collector, clientTransactionId=tid + uuid.uuid4().hex[:8], miles=5)
        assert world.partner.post_event(body).status_code == 200, tid
        sent.append(body)
    rejected = world.body(world.collector("CLOSED"), clientTransactionId="@" + uuid.uuid4().hex)
    rejected["issuances"][0]["locationCode"] = "=1+2"  # type: ignore[index]
    assert world.partner.post_event(rejected).status_code == 400
    sent.append(rejected)
    today = clock.transaction_day_of(clock.utc_now(), "America/Toronto").isoformat()

    csv_text = _get(world, AUDIT, date=today, format="csv").text
    header, *rows = list(csv.reader(io.StringIO(csv_text.split("\n", 1)[1])))
    by_id = {row[header.index("partnerTransactionId")]: row for row in rows}
    for body in sent:
        row = by_id["'" + str(body["clientTransactionId"])]
        assert row[header.index("milesAmount")] in ("5", "8")  # numbers stay numbers
    rejected_row = by_id["'" + str(rejected["clientTransactionId"])]
    assert rejected_row[header.index("locationCode")] == "'=1+2"

    report = _get(world, AUDIT, date=today).json()
    ids = {t["partnerTransactionId"] for t in report["transactions"]}
    assert {str(b["clientTransactionId"]) for b in sent} <= ids  # JSON exact
    by_json = {t["partnerTransactionId"]: t for t in report["transactions"]}
    assert by_json[rejected["clientTransactionId"]]["issuances"][0]["locationCode"] == "=1+2"


def test_reconciliation_file_over_http_parses_and_includes_the_days_postings(world: World) -> None:
    collector = world.collector()
    accepted = world.partner.post_event(world.body(collector, miles=13)).json()
    today = data.processed_day(accepted)
    response = _get(world, RECON, date=today)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    parsed = reconciliation.parse(response.text)
    assert parsed.sponsor_code == world.sponsor
    assert parsed.day.isoformat() == today
    assert any(
        d.transaction_id == accepted["transactionId"] and d.miles == 13 for d in parsed.details
    )


def test_reports_of_another_sponsor_are_403_and_bad_dates_400(world: World) -> None:
    other = data.new_sponsor(world.db)
    for path in (AUDIT, RECON):
        forbidden = _get(world, path, date="2026-11-25", sponsorCode=other)
        assert forbidden.status_code == 403
        assert forbidden.json()["code"] == "SPONSOR_NOT_ALLOWED"
        for wrong in ("25/11/2026", "20261125", "2026-W48-3", "2026-11-25T00:00", "2026-02-30"):
            bad = _get(world, path, date=wrong)
            assert bad.status_code == 400, wrong
            assert bad.json()["errors"][0]["field"] == "date"
        missing = _get(world, path)
        assert missing.status_code == 400
