"""The seed's "API call validation process", row by row, against a real server over HTTP."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, text

from rewardmiles.db.models import IdempotencyKey, LedgerEntry, Transaction
from tests.e2e.conftest import World
from tests.support import data

UUID_LENGTH = 36


def test_post_event_for_active_collector_is_200_with_issued_lines(world: World) -> None:
    collector = world.collector()
    body = world.body(
        collector, miles=8, coupon=["SAVE10"], deviceId="POS-7", context={"key1": "value1"}
    )
    body["issuances"] = [
        {
            "issuanceOfferCode": "STANDARD",
            "milesAmount": 8,
            "offerDescription": "offer",
            "offerId": 22,
        }
    ]

    response = world.partner.post_event(body)

    assert response.status_code == 200, response.text
    out = response.json()
    assert out["clientTransactionId"] == body["clientTransactionId"]
    assert out["collectorNumber"] == collector
    assert out["sponsorCode"] == world.sponsor
    assert out["coupon"] == ["SAVE10"]
    assert out["deviceId"] == "POS-7"
    assert "context" not in out
    assert out["issuances"] == [
        {
            "issuanceOfferCode": "STANDARD",
            "milesAmount": 8,
            "offerDescription": "offer",
            "offerId": "22",
            "status": "ISSUED",
        }
    ]
    assert len(out["transactionId"]) == UUID_LENGTH
    assert uuid.UUID(out["transactionId"]).version == 4
    assert out["transactionDateTime"][-6:] in ("-05:00", "-04:00")
    assert "." in out["transactionDateTime"]
    assert len(out["transactionDateTime"].split(".")[1]) == 9
    assert world.balance(collector) == 8


def test_reverse_event_reverses_and_answers_with_reversed_lines(world: World) -> None:
    collector = world.collector()
    original = world.body(collector, miles=20)
    assert world.partner.post_event(original).status_code == 200

    reversal = world.body(
        collector, miles=8, originalClientTransactionId=original["clientTransactionId"]
    )
    response = world.partner.reverse_event(reversal)

    assert response.status_code == 200, response.text
    assert response.json()["issuances"][0]["status"] == "REVERSED"
    assert response.json()["originalClientTransactionId"] == original["clientTransactionId"]
    assert world.balance(collector) == 12


def test_standalone_reverse_event_is_a_correction(world: World) -> None:
    collector = world.collector()
    response = world.partner.reverse_event(world.body(collector, miles=5))
    assert response.status_code == 200, response.text
    assert world.balance(collector) == -5  # default negative-balance policy: allow


@pytest.mark.parametrize("status", ["ON_HOLD"])
def test_on_hold_collector_is_202_pending_and_resubmitting_has_no_effect(
    world: World, status: str
) -> None:
    collector = world.collector(status)
    body = world.body(collector, miles=8)

    first = world.partner.post_event(body)
    again = world.partner.post_event(body, key=None)

    assert first.status_code == 202, first.text
    assert first.json()["issuances"][0]["status"] == "PENDING"
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["transactionId"] == first.json()["transactionId"]
    assert world.balance(collector) == 0


def test_unknown_but_well_formed_collector_is_202_pending(world: World) -> None:
    response = world.partner.post_event(world.body(data.unknown_collector(), miles=8))
    assert response.status_code == 202, response.text
    assert response.json()["issuances"][0]["status"] == "PENDING"


def test_line_above_sponsor_review_threshold_is_pending_others_issue(world: World) -> None:
    sponsor = data.new_sponsor(world.db, review_threshold_miles=100)
    partner = world.new_partner(sponsor)
    collector = world.collector()
    body = data.event_body(sponsor, collector)
    body["issuances"] = [
        {"issuanceOfferCode": "STANDARD", "milesAmount": 100},
        {"issuanceOfferCode": "STANDARD", "milesAmount": 101},
    ]
    response = partner.post_event(body)
    assert response.status_code == 202, response.text
    assert [line["status"] for line in response.json()["issuances"]] == ["ISSUED", "PENDING"]
    assert world.balance(collector) == 100


def test_closed_collector_is_400_and_recorded_as_rejected(world: World) -> None:
    collector = world.collector("CLOSED")
    body = world.body(collector)
    response = world.partner.post_event(body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "COLLECTOR_CLOSED"
    assert problem["errors"] == [
        {
            "code": "COLLECTOR_CLOSED",
            "field": "collectorNumber",
            "message": "The collector's account is closed.",
        }
    ]
    assert problem["requestId"] == response.headers["x-request-id"]
    with world.db.reader() as session:
        status, code = session.execute(
            select(Transaction.status, Transaction.error_code).where(
                Transaction.partner_transaction_id == body["clientTransactionId"]
            )
        ).one()
    assert (status, code) == ("rejected", "COLLECTOR_CLOSED")


def test_rejected_id_can_be_resent_corrected_with_a_new_key(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, issuances=[{"issuanceOfferCode": "NOSUCH", "milesAmount": 5}])
    assert world.partner.post_event(body).json()["code"] == "OFFER_UNKNOWN"
    body["issuances"] = [{"issuanceOfferCode": "STANDARD", "milesAmount": 5}]
    response = world.partner.post_event(body)
    assert response.status_code == 200, response.text
    assert world.balance(collector) == 5


def test_forced_storage_failure_is_500_stores_nothing_and_retry_succeeds_once(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=40)
    key = str(uuid.uuid4())
    _install_failing_trigger(world, key)
    try:
        failed = world.partner.post_event(body, key=key)
        assert failed.status_code == 500
        problem = failed.json()
        assert problem["code"] == "INTERNAL_ERROR"
        assert problem["requestId"] == failed.headers["x-request-id"]
        assert "Traceback" not in failed.text
        assert "forced" not in failed.text
        assert world.balance(collector) == 0
        with world.db.reader() as session:
            assert (
                session.execute(
                    select(func.count())
                    .select_from(Transaction)
                    .where(Transaction.collector_number == collector)
                ).scalar_one()
                == 0
            )
            assert (
                session.execute(
                    select(func.count())
                    .select_from(LedgerEntry)
                    .where(LedgerEntry.account_code == collector)
                ).scalar_one()
                == 0
            )
            assert session.get(IdempotencyKey, (world.partner.client_id, key)) is None
    finally:
        _drop_failing_trigger(world)

    retried = world.partner.post_event(body, key=key)
    replayed = world.partner.post_event(body, key=key)

    assert retried.status_code == 200, retried.text
    assert replayed.status_code == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == retried.json()
    assert world.balance(collector) == 40


def _install_failing_trigger(world: World, key: str) -> None:
    """A real storage failure at the last write of the unit of work (the idempotency row)."""
    with world.db.engine.begin() as conn:
        if world.server.dialect == "postgresql":
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION rm_test_fail() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.key = '{key}' THEN RAISE EXCEPTION 'forced failure'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER rm_test_fail BEFORE INSERT ON idempotency_keys "
                    "FOR EACH ROW EXECUTE FUNCTION rm_test_fail()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER rm_test_fail BEFORE INSERT ON idempotency_keys "
                    f"WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'forced failure'); END"
                )
            )


def _drop_failing_trigger(world: World) -> None:
    with world.db.engine.begin() as conn:
        if world.server.dialect == "postgresql":
            conn.execute(text("DROP TRIGGER IF EXISTS rm_test_fail ON idempotency_keys"))
            conn.execute(text("DROP FUNCTION IF EXISTS rm_test_fail()"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS rm_test_fail"))
