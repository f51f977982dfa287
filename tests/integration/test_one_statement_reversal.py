"""Reversals on the one-statement path (PostgreSQL): a REVERSE or REVERSE/EVENT naming its
original is written by the group commit, with the rows the unit of work writes for it, only when
the unit of work would post its every line at once; every other case is left to the unit of
work, which answers it. However reversals are batched, raced or split between writers, those of
one original never take back more than it issued."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import StatementPool
from rewardmiles.issuance import service
from rewardmiles.issuance.calls import Outcome, PartnerCall
from rewardmiles.ledger import GroupCommit
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import Endpoint, NegativeBalancePolicy
from tests.conftest import DatabaseFactory
from tests.integration.test_one_statement_issue import (
    ACTIVE,
    ANSWERED_WITHIN,
    CLIENT,
    NOW,
    SPONSOR,
    Rig,
    _balance,
    _count_statements,
    _counts,
    _together,
    basket,
    both_ways_the_same,
    event,
    keys_stored_with_their_calls,
    postgres_only,
)
from tests.support.issue import build_call

__all__ = ["postgres_only"]  # a fixture, used by name

OTHER = "70000000020"
SETTINGS = Settings()  # the calls' validation limits


@pytest.fixture
def rig(postgres_only: None, database_factory: DatabaseFactory) -> Iterator[Rig]:
    made = Rig(database_factory.create("postgresql"))
    with made.db.unit_of_work() as session:
        collectors.add_collector(session, OTHER, "ACTIVE", NOW)
    made.general(call(Endpoint.POST, basket()))  # caches both offers and the location
    yield made
    made.close()


def call(endpoint: Endpoint, body: dict[str, Any], key: str | None = None) -> PartnerCall:
    return build_call(SETTINGS, endpoint, body, client_id=CLIENT, idempotency_key=key)


def reversal_of(
    original: dict[str, Any], miles: int | list[tuple[str, int]], **overrides: Any
) -> dict[str, Any]:
    """A REVERSE/EVENT body taking back `miles` of STANDARD (or these (offer, miles) lines)
    of the POST/EVENT or POST `original`."""
    lines = [("STANDARD", miles)] if isinstance(miles, int) else miles
    body: dict[str, Any] = {
        "clientTransactionId": uuid.uuid4().hex,
        "collectorNumber": original["collectorNumber"],
        "sponsorCode": SPONSOR,
        "transactionDateTime": original.get("transactionDateTime") or original["checkoutDateTime"],
        "originalClientTransactionId": original.get("clientTransactionId")
        or original["checkoutTransactionId"],
        "issuances": [{"issuanceOfferCode": code, "milesAmount": m} for code, m in lines],
    }
    body.update(overrides)
    return body


def basket_reversal_of(original: dict[str, Any], miles: int) -> dict[str, Any]:
    """A REVERSE (basket) body taking back `miles` of the BONUS line of the POST `original`."""
    return {
        "checkoutTransactionId": uuid.uuid4().hex,
        "collectorNumber": original["collectorNumber"],
        "sponsorCode": SPONSOR,
        "checkoutDateTime": original["checkoutDateTime"],
        "originalCheckoutTransactionId": original["checkoutTransactionId"],
        "basketPreTaxAmount": 3.0,
        "basketPostTaxAmount": 3.39,
        "issuances": [{"issuanceOfferCode": "BONUS", "milesAmount": miles}],
    }


def issued(rig: Rig, body: dict[str, Any], endpoint: Endpoint = Endpoint.POST_EVENT) -> None:
    outcome = rig.general(call(endpoint, body))
    assert outcome.status == 200, outcome.body


def reversed_miles(rig: Rig, original_partner_id: str) -> int:
    with rig.db.reader() as session:
        return int(
            session.execute(
                text(
                    "SELECT coalesce(sum(l.miles), 0) FROM issuance_lines AS l"
                    " JOIN transactions AS r ON r.id = l.transaction_id"
                    " JOIN transactions AS o ON o.id = r.original_transaction_id"
                    " WHERE o.partner_transaction_id = :p AND l.status <> 'rejected'"
                ),
                {"p": original_partner_id},
            ).scalar_one()
        )


def _refused_over_the_bound(
    rig: Rig, reversal: PartnerCall, original: dict[str, Any], *, reversed_so_far: int
) -> None:
    """The unit of work refuses `reversal` as over the original, which keeps what it had."""
    refused = rig.general(reversal)
    assert refused.status == 400
    assert "REVERSAL_EXCEEDS_ORIGINAL" in str(refused.body)
    assert reversed_miles(rig, original["clientTransactionId"]) == reversed_so_far


def test_reversals_write_exactly_what_the_unit_of_work_writes(
    postgres_only: None, database_factory: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = (Rig(database_factory.create("postgresql")) for _ in range(2))
    try:
        event_original = event(miles=20)
        basket_original = basket()
        originals = [
            call(Endpoint.POST_EVENT, event_original),
            call(Endpoint.POST, basket_original),
        ]
        reversals = [
            call(Endpoint.REVERSE_EVENT, reversal_of(event_original, 5), "k-part"),
            call(Endpoint.REVERSE_EVENT, reversal_of(event_original, 15)),  # the rest, keyless
            call(Endpoint.REVERSE, basket_reversal_of(basket_original, 4), "k-basket"),
            # a REVERSE/EVENT may name a POST's checkout id (the seed)
            call(Endpoint.REVERSE_EVENT, reversal_of(basket_original, [("STANDARD", 3)])),
        ]
        both_ways_the_same(fast, slow, monkeypatch, originals, reversals)
        with fast.db.reader() as session:  # each names its original, found by the statement
            named = session.execute(
                text(
                    "SELECT count(*) FROM transactions WHERE endpoint IN ('reverse', "
                    "'reverse_event') AND original_transaction_id IS NOT NULL"
                )
            ).scalar_one()
        assert named == len(reversals)
    finally:
        fast.close()
        slow.close()


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no_original", 400, "ORIGINAL_NOT_FOUND"),
        ("other_collector", 400, "ORIGINAL_COLLECTOR_MISMATCH"),
        ("exceeds", 400, "REVERSAL_EXCEEDS_ORIGINAL"),
        ("exceeds_after_earlier", 400, "REVERSAL_EXCEEDS_ORIGINAL"),
        ("offer_not_on_original", 400, "REVERSAL_EXCEEDS_ORIGINAL"),
        ("original_pending", 202, None),
        ("below_zero", 400, "INSUFFICIENT_BALANCE"),
        ("other_family", 400, "ORIGINAL_WRONG_FAMILY"),
    ],
)
def test_reversals_the_statement_cannot_post_are_left_to_the_unit_of_work(
    rig: Rig, case: str, status: int, code: str | None
) -> None:
    original = event(miles=10)
    endpoint = Endpoint.REVERSE_EVENT
    if case == "original_pending":
        with rig.db.unit_of_work() as session:
            sponsors.set_sponsor(session, SPONSOR, review_threshold_miles=9)
        assert rig.general(call(Endpoint.POST_EVENT, original)).status == 202
        with rig.db.unit_of_work() as session:
            sponsors.set_sponsor(session, SPONSOR, review_threshold_miles=None)
        rig.general(call(Endpoint.POST_EVENT, event(miles=1)))  # the new version, cached
    elif case != "no_original":
        issued(rig, original)
    body = reversal_of(original, 4)
    if case == "other_collector":
        body["collectorNumber"] = OTHER
    elif case == "exceeds":
        body = reversal_of(original, 11)
    elif case == "exceeds_after_earlier":
        assert rig.general(call(endpoint, reversal_of(original, 7))).status == 200
    elif case == "offer_not_on_original":
        body = reversal_of(original, [("BONUS", 1)])
    elif case == "below_zero":  # a correction spent all but 2 miles; then the floor is set
        spent = _balance(rig, ACTIVE) - 2
        correction = event(miles=spent)
        assert rig.general(call(endpoint, correction)).status == 200
        rig.settings = rig.settings.model_copy(
            update={"negative_balance_policy": NegativeBalancePolicy.REJECT}
        )
    elif case == "other_family":
        body["originalClientTransactionId"] = _an_issue(rig)
    reversal = call(endpoint, body, f"k-{case}")
    before = _counts(rig)
    assert rig.at_once(reversal) is None
    assert _counts(rig) == before  # the statement wrote nothing
    outcome = rig.general(reversal)
    assert outcome.status == status, outcome.body
    if code is not None:
        assert code in str(outcome.body)


def _an_issue(rig: Rig) -> str:
    """The partner id of an accepted ISSUE of the sponsor (program-calculated miles: taken
    back by RETURN, not by REVERSE/EVENT), written directly as the unit of work stores one."""
    partner_id = uuid.uuid4().hex
    with rig.db.unit_of_work() as session:
        session.execute(
            text(
                "INSERT INTO transactions (id, client_id, sponsor_code, endpoint,"
                " partner_transaction_id, collector_number, status, http_status, fingerprint,"
                " partner_datetime, processed_at, request_json, response_json)"
                " VALUES (:id, :client, :sponsor, 'issue', :p, :c, 'posted', 200, 'f', :now,"
                " :now, '{}', '{}')"
            ),
            {
                "id": str(uuid.uuid4()),
                "client": CLIENT,
                "sponsor": SPONSOR,
                "p": partner_id,
                "c": ACTIVE,
                "now": NOW,
            },
        )
    return partner_id


def test_a_reversal_within_the_balance_floor_is_written(rig: Rig) -> None:
    """The control of "below_zero": under REJECT, a reversal the balance covers posts at once."""
    rig.settings = rig.settings.model_copy(
        update={"negative_balance_policy": NegativeBalancePolicy.REJECT}
    )
    original = event(miles=10)
    issued(rig, original)
    outcome = rig.at_once(call(Endpoint.REVERSE_EVENT, reversal_of(original, 10), "k-floor"))
    assert outcome is not None
    assert outcome.status == 200


def test_issues_and_reversals_arriving_together_share_one_transaction(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    originals = [event(miles=10) for _ in range(4)]
    for original in originals:
        issued(rig, original)
    before = {n: _balance(rig, n) for n in (ACTIVE, OTHER)}
    calls = [
        call(Endpoint.REVERSE_EVENT, reversal_of(o, 3), f"k-mix-r{n}")
        for n, o in enumerate(originals)
    ]
    calls += [call(Endpoint.POST_EVENT, event(OTHER, miles=m), f"k-mix-i{m}") for m in (1, 2)]
    calls += [call(Endpoint.POST_EVENT, event(miles=7))]  # an issue for a reversal's collector
    statements = _count_statements(rig, monkeypatch)

    outcomes = _together(rig, calls)

    assert statements == [1]  # one connection, one transaction for all seven
    assert all(o is not None and o.status == 200 and not o.replayed for o in outcomes)
    assert _balance(rig, ACTIVE) == before[ACTIVE] - 4 * 3 + 7
    assert _balance(rig, OTHER) == before[OTHER] + 3
    keys_stored_with_their_calls(rig, calls[:4], outcomes[:4])


def test_two_reversals_of_one_original_in_one_batch_take_no_more_than_it_issued(
    rig: Rig,
) -> None:
    original = event(miles=10)
    issued(rig, original)
    first = call(Endpoint.REVERSE_EVENT, reversal_of(original, 6), "k-twice-1")
    second = call(Endpoint.REVERSE_EVENT, reversal_of(original, 6), "k-twice-2")

    outcomes = _together(rig, [first, second])

    # The statement writes the first; the second is the unit of work's, which refuses it.
    assert outcomes[0] is not None
    assert outcomes[0].status == 200
    assert outcomes[1] is None
    _refused_over_the_bound(rig, second, original, reversed_so_far=6)


def test_racing_reversals_from_two_writers_and_the_unit_of_work_never_exceed_the_original(
    rig: Rig,
) -> None:
    """Two API processes (two group commits, each with its own connections) and the unit of
    work reverse one mile at a time of one 30-mile original, 60 calls at once: exactly 30 are
    accepted, whichever path took each, and the original's balance of reversals is exact."""
    original = event(miles=30)
    issued(rig, original)
    second_pool = rig.db.statement_pool(4)
    assert isinstance(second_pool, StatementPool)
    writers = [rig.writer, GroupCommit(second_pool)]
    reversals = [
        call(Endpoint.REVERSE_EVENT, reversal_of(original, 1), f"k-race-{n}") for n in range(60)
    ]
    general: list[Outcome] = []

    def unit_of_work(calls: list[PartnerCall]) -> None:
        general.extend(rig.general(c) for c in calls)

    async def run() -> list[Outcome]:
        async def one(n: int, reversal: PartnerCall) -> Outcome:
            outcome = await service.execute_at_once(
                writers[n % 2], rig.db, rig.settings, rig.registry, reversal, now=lambda: NOW
            )
            if outcome is None:  # as the route does: the unit of work answers it
                outcome = await asyncio.to_thread(rig.general, reversal)
            return outcome

        async with asyncio.timeout(ANSWERED_WITHIN * 3):
            return list(await asyncio.gather(*(one(n, r) for n, r in enumerate(reversals[:48]))))

    thread = threading.Thread(target=unit_of_work, args=(reversals[48:],))
    thread.start()
    outcomes = rig.loop.run_until_complete(run())
    thread.join()
    rig.loop.run_until_complete(second_pool.close())
    every = outcomes + general
    accepted = [o for o in every if o.status == 200]
    refused = [o for o in every if o.status == 400]
    assert len(accepted) == 30
    assert len(refused) == 30
    assert all("REVERSAL_EXCEEDS_ORIGINAL" in str(o.body) for o in refused)
    assert reversed_miles(rig, original["clientTransactionId"]) == 30


def test_a_reversal_waiting_for_its_collector_sees_the_reversal_it_waited_for(rig: Rig) -> None:
    """The statement that reads what an original's reversals took runs after the collector's
    lock was taken, with a snapshot of its own: a reversal committed by the unit of work while
    the batch waited for that lock is counted, so the two never take more than was issued."""
    original = event(miles=10)
    issued(rig, original)
    first = call(Endpoint.REVERSE_EVENT, reversal_of(original, 6), "k-wait-1")
    second = call(Endpoint.REVERSE_EVENT, reversal_of(original, 6), "k-wait-2")
    result: dict[str, Outcome | None] = {}
    worker = threading.Thread(target=lambda: result.update(second=rig.at_once(second)))
    with rig.db.unit_of_work() as session:  # the first holds the collector's row until commit
        assert service.execute(session, 1, rig.settings, first, lambda: NOW).status == 200
        worker.start()
        time.sleep(0.1)  # the batch waits for the row (less than the pool's lock timeout)
    worker.join(ANSWERED_WITHIN)
    assert result["second"] is None  # it saw the first: left to the unit of work
    _refused_over_the_bound(rig, second, original, reversed_so_far=6)


def test_a_reversal_batch_that_times_out_on_a_lock_is_rolled_back_and_its_connection_kept(
    rig: Rig,
) -> None:
    """A collector held elsewhere past the pool's lock timeout: the batch's transaction is
    refused whole (the call goes to the unit of work), rolled back on its connection, and that
    connection serves the next batch."""
    original = event(miles=10)
    issued(rig, original)
    blocked = call(Endpoint.REVERSE_EVENT, reversal_of(original, 4), "k-held")
    url = rig.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as holder:  # a long transaction holds the collector's row
        holder.execute("SELECT 1 FROM collectors WHERE number = %s FOR UPDATE", [ACTIVE])
        assert rig.at_once(blocked) is None
    idle = list(rig.pool._idle)
    assert len(idle) == 1  # rolled back and kept, not closed
    assert reversed_miles(rig, original["clientTransactionId"]) == 0
    outcome = rig.at_once(blocked)  # the lock is free now: written, on the same connection
    assert outcome is not None
    assert outcome.status == 200
    assert rig.pool._idle == idle
    assert reversed_miles(rig, original["clientTransactionId"]) == 4
