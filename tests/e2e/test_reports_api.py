"""The report endpoints over HTTP: partner-scoped, JSON/CSV, the reconciliation file parses."""

from __future__ import annotations

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
    assert collector not in csv_text
    assert accepted["transactionId"] in csv_text
    unmasked = _get(world, AUDIT, date=today, format="csv", unmaskCollectors="true")
    assert collector in unmasked.text


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
