"""Idempotency keys as a partner sees them, in-process through the service the routes call: a key
sent again with the same request replays the first answer (a settled transaction as it stands
now), with another request it is refused, while it runs elsewhere it is 409, and keys older than
the retention window are purged (and only those).

On a database of this module's own, at a fixed `NOW`.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, insert, select

from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IdempotencyKey, Transaction
from rewardmiles.errors import ProblemError
from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import calls
from rewardmiles.ledger.verify import verify
from rewardmiles.settlement.worker import settle_pending
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
SETTINGS = Settings.from_env({})
CLIENT = "idempotency-client"
OTHER_CLIENT = "idempotency-other-client"
PURGE_CLIENT = "idempotency-purge-client"

# Every call of this module at NOW, as CLIENT unless it says otherwise.
_call = functools.partial(call, settings=SETTINGS, now=NOW, client_id=CLIENT)


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session, SETTINGS)
    database.dispose()
    assert report.ok, report.problems


def _body(sponsor: str, collector: str, miles: int = 7) -> dict[str, Any]:
    return {
        "clientTransactionId": data.txn_id(),
        "collectorNumber": collector,
        "sponsorCode": sponsor,
        "transactionDateTime": data.iso(NOW - timedelta(minutes=5)),
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": miles}],
    }


def _transactions(db: Database, body: dict[str, Any]) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                select(func.count()).where(
                    Transaction.partner_transaction_id == body["clientTransactionId"]
                )
            ).scalar_one()
        )


def _key() -> str:
    return "key-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- replay


def test_the_same_request_under_a_key_replays_the_first_answer_and_writes_nothing(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = _body(sponsor, number)
    key = _key()
    first = _call(own_db, body=body, idempotency_key=key)
    assert (first.status, first.replayed) == (200, False)
    assert first.body["issuances"][0]["status"] == "ISSUED"

    again = _call(own_db, body=body, idempotency_key=key)

    assert again == calls.Outcome(200, first.body, first.transaction_id, replayed=True)
    assert _transactions(own_db, body) == 1
    assert data.balance(own_db, number) == 7


def test_a_replay_shows_the_transaction_as_it_stands_now(own_db: Database) -> None:
    """Accepted as pending (the collector is not enrolled yet), then settled: the replay answers
    200 with the line issued, not the 202 kept with the key."""
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    body = _body(sponsor, number)
    key = _key()
    first = _call(own_db, body=body, idempotency_key=key)
    assert first.status == 202
    assert first.body["issuances"][0]["status"] == "PENDING"
    with own_db.unit_of_work() as session:
        collectors.add_collector(session, number, "ACTIVE", NOW)
    assert settle_pending(own_db, SETTINGS, NOW).posted >= 1

    again = _call(own_db, body=body, idempotency_key=key)

    assert (again.status, again.replayed, again.transaction_id) == (
        200,
        True,
        first.transaction_id,
    )
    assert again.body["issuances"][0]["status"] == "ISSUED"
    assert again.body["clientTransactionId"] == body["clientTransactionId"]
    assert _transactions(own_db, body) == 1
    assert data.balance(own_db, number) == 7


def test_a_rejection_under_a_key_is_replayed_as_it_was_answered(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, "CLOSED")
    body = _body(sponsor, number)
    key = _key()
    first = _call(own_db, body=body, idempotency_key=key)
    assert first.status == 400
    assert first.body["code"] == "COLLECTOR_CLOSED"

    again = _call(own_db, body=body, idempotency_key=key)

    assert again == calls.Outcome(400, first.body, None, replayed=True)
    assert _transactions(own_db, body) == 1


def test_the_same_key_with_another_request_is_refused_and_changes_nothing(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = _body(sponsor, number)
    key = _key()
    assert _call(own_db, body=body, idempotency_key=key).status == 200

    changed = {**body, "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}]}
    with pytest.raises(ProblemError) as refused:
        _call(own_db, body=changed, idempotency_key=key)

    message = "This Idempotency-Key was already used with a different request."
    assert (refused.value.code, refused.value.status) == ("IDEMPOTENCY_KEY_REUSED", 422)
    assert refused.value.detail == message
    assert [(e.code, e.field, e.message) for e in refused.value.errors] == [
        ("IDEMPOTENCY_KEY_REUSED", "Idempotency-Key", message)
    ]
    assert _transactions(own_db, body) == 1
    assert data.balance(own_db, number) == 7
    # Another client's key of the same name is its own: its request runs.
    other_body = _body(sponsor, number, miles=8)
    other = _call(own_db, body=other_body, idempotency_key=key, client_id=OTHER_CLIENT)
    assert (other.status, other.replayed) == (200, False)
    assert data.balance(own_db, number) == 15


# --------------------------------------------------------------------------- in use elsewhere


@pytest.mark.postgres_only
def test_a_key_running_in_another_process_gets_409_and_no_other_key_waits_for_it(
    own_db: Database,
) -> None:
    """Another process running (CLIENT, key) holds that key's advisory lock: the same key is
    refused with 409 while it does, and neither another key of CLIENT nor the same key of
    another client is held up."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    key = _key()
    url = own_db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as other:  # its transaction holds the lock until the block ends
        other.execute("SELECT pg_advisory_xact_lock(%s)", (idempotency.lock_number(CLIENT, key),))
        body = _body(sponsor, number, miles=3)
        with pytest.raises(ProblemError) as in_use:
            _call(own_db, body=body, idempotency_key=key)
        assert (in_use.value.code, in_use.value.status) == ("IDEMPOTENCY_KEY_IN_USE", 409)
        assert in_use.value.headers == {"Retry-After": "1"}
        assert in_use.value.detail == (
            "A request with this Idempotency-Key is still executing; retry shortly."
        )
        assert _transactions(own_db, body) == 0

        assert _call(own_db, body=_body(sponsor, number), idempotency_key=_key()).status == 200
        assert (
            _call(
                own_db, body=_body(sponsor, number), idempotency_key=key, client_id=OTHER_CLIENT
            ).status
            == 200
        )
    assert _call(own_db, body=body, idempotency_key=key).status == 200  # released
    assert data.balance(own_db, number) == 17


# --------------------------------------------------------------------------- purge


def _store_key(db: Database, client_id: str, key: str, created_at: datetime) -> None:
    with db.unit_of_work() as session:
        session.execute(
            insert(IdempotencyKey).values(
                client_id=client_id,
                key=key,
                fingerprint="f",
                transaction_id=None,
                response_status=400,
                response_json="{}",
                created_at=created_at,
            )
        )


def test_purge_drops_the_keys_older_than_the_retention_window_and_only_those(
    own_db: Database,
) -> None:
    """Every other key of this module's database was stored at NOW: none is old enough."""
    days = SETTINGS.idempotency_retention_days
    cutoff = NOW - timedelta(days=days)
    for key, created_at in (
        ("older", cutoff - timedelta(microseconds=1)),
        ("much-older", cutoff - timedelta(days=400)),
        ("exactly-the-window", cutoff),
        ("younger", cutoff + timedelta(microseconds=1)),
    ):
        _store_key(own_db, PURGE_CLIENT, key, created_at)

    with own_db.unit_of_work() as session:
        purged = keys.purge_expired(session, NOW, days)
    with own_db.unit_of_work() as session:
        purged_again = keys.purge_expired(session, NOW, days)

    assert (purged, purged_again) == (2, 0)
    with own_db.reader() as session:
        left = session.execute(
            select(IdempotencyKey.key)
            .where(IdempotencyKey.client_id == PURGE_CLIENT)
            .order_by(IdempotencyKey.key)
        )
        assert left.scalars().all() == ["exactly-the-window", "younger"]
