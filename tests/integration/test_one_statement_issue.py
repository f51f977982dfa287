"""The one-statement issue path (PostgreSQL): it writes exactly the rows the general unit of work
writes for the same call, and writes nothing — leaving the call to the general path — whenever
it cannot be sure the general path would post every line at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from rewardmiles import ids
from rewardmiles.app import build_context
from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import STATEMENT_LOCK_TIMEOUT_MS, Database, StatementPool
from rewardmiles.db.models import Offer
from rewardmiles.errors import ProblemError
from rewardmiles.http.partner_json import canonical_json, parse_json_object
from rewardmiles.http.validation import validate_body
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import records, service
from rewardmiles.issuance.calls import Outcome, PartnerCall
from rewardmiles.issuance.reference import newest_reference
from rewardmiles.issuance.routes import run_write
from rewardmiles.issuance.schemas import (
    FIELD_CODES,
    FIELD_RULES,
    PostBasketRequest,
    PostEventRequest,
    ReverseEventRequest,
    basket_command,
    event_command,
)
from rewardmiles.ledger.batched import POST_BATCH_SENT, GroupCommit, batch_params
from rewardmiles.settlement.worker import settle_pending
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import Direction, Endpoint, LineStatus
from tests.conftest import (
    PG_ADMIN_URL,
    TEST_SECRET_KEY,
    DatabaseFactory,
    assert_ledger_balanced,
)
from tests.support.issue import build_call
from tests.support.servers import FORMS, two_servers
from tests.support.sessions import end_sessions

SPONSOR = "ONESTMT"
CLIENT = "one-statement-client"
NOW = datetime(2026, 11, 20, 15, 30, 0, 125_000, tzinfo=UTC)
ACTIVE, ON_HOLD, CLOSED = "70000000001", "70000000002", "70000000003"
UNKNOWN = "70000000099"
# A call answers in milliseconds: one left unanswered fails its test after this many seconds
# instead of hanging it (the group commit's scheduler has code that, broken, would hang it).
ANSWERED_WITHIN = 20.0


def seed(db: Database) -> None:
    with db.unit_of_work() as session:
        sponsors.add_sponsor(session, SPONSOR, "One statement", NOW)
        session.flush()
        sponsors.add_location(session, SPONSOR, "STORE1", NOW)
        session.add(Offer(sponsor_code=SPONSOR, code="BONUS", active=True, created_at=NOW))
        for number, status in ((ACTIVE, "ACTIVE"), (ON_HOLD, "ON_HOLD"), (CLOSED, "CLOSED")):
            collectors.add_collector(session, number, status, NOW)


def event(collector: str = ACTIVE, *, miles: int = 5, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clientTransactionId": uuid.uuid4().hex,
        "collectorNumber": collector,
        "sponsorCode": SPONSOR,
        "transactionDateTime": (NOW - timedelta(minutes=1)).isoformat(),
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": miles}],
    }
    body.update(overrides)
    return body


def basket(collector: str = ACTIVE) -> dict[str, Any]:
    return {
        "checkoutTransactionId": uuid.uuid4().hex,
        "collectorNumber": collector,
        "sponsorCode": SPONSOR,
        "checkoutDateTime": (NOW - timedelta(minutes=2)).isoformat(),
        "basketPreTaxAmount": 30.5,
        "basketPostTaxAmount": 34.47,
        "issuances": [
            {"issuanceOfferCode": "STANDARD", "milesAmount": 3, "locationCode": "STORE1"},
            {"issuanceOfferCode": "BONUS", "milesAmount": 12},
        ],
    }


def partner_call(
    body: dict[str, Any], *, key: str | None = None, endpoint: str = "post_event"
) -> PartnerCall:
    body = parse_json_object(json.dumps(body).encode())  # as the route reads it: exact decimals
    settings = Settings()
    context = {"miles_per_line_max": settings.miles_per_line_max}
    kind = Endpoint(endpoint)
    if kind is Endpoint.POST:
        basket_request = validate_body(
            PostBasketRequest, body, context=context, rules=FIELD_RULES, codes=FIELD_CODES
        )
        command = basket_command(basket_request, SPONSOR)
    else:
        model = PostEventRequest if kind is Endpoint.POST_EVENT else ReverseEventRequest
        command = event_command(
            validate_body(model, body, context=context, rules=FIELD_RULES, codes=FIELD_CODES)
        )
    canonical = canonical_json(body)
    return PartnerCall(
        endpoint=kind,
        client_id=CLIENT,
        command=command,
        request_json=canonical.decode(),
        fingerprint=hashlib.sha256(canonical).hexdigest(),
        idempotency_key=key,
        request_id="one-statement-test",
    )


class Rig:
    """A seeded database, its settings, and both ways of running a call at the fixed `NOW`."""

    def __init__(self, url: str) -> None:
        self.db = Database.from_url(url)
        self.settings = Settings.from_env({}, database_url=url)
        pool = self.db.statement_pool(4)
        assert pool is not None
        self.pool: StatementPool = pool
        self.writer = GroupCommit(pool)
        self.registry = idempotency.InFlightRegistry()
        self.loop = asyncio.new_event_loop()
        seed(self.db)

    def at_once(self, call: PartnerCall) -> Outcome | None:
        return self.loop.run_until_complete(
            asyncio.wait_for(
                service.execute_at_once(
                    self.writer, self.db, self.settings, self.registry, call, now=lambda: NOW
                ),
                ANSWERED_WITHIN,
            )
        )

    def general(self, call: PartnerCall) -> Outcome:
        return run_write(self.db, self.settings, self.registry, call, lambda: NOW)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        queries = {
            "transactions": "SELECT * FROM transactions ORDER BY id",
            "issuance_lines": "SELECT * FROM issuance_lines ORDER BY transaction_id, line_no",
            "ledger_entries": "SELECT transaction_id, line_no, account_kind, account_code, "
            "amount_miles, posted_at FROM ledger_entries ORDER BY 1, 2, 3",
            "idempotency_keys": "SELECT * FROM idempotency_keys ORDER BY client_id, key",
            "collectors": "SELECT * FROM collectors ORDER BY number",
        }
        with self.db.reader() as session:
            return {
                name: [tuple(row) for row in session.execute(text(sql))]
                for name, sql in queries.items()
            }

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()
        self.db.dispose()
        assert_ledger_balanced(self.settings.database_url)


@pytest.fixture
def postgres_only(dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("the one-statement path runs on PostgreSQL only")


@pytest.fixture
def rig(postgres_only: None, database_factory: DatabaseFactory) -> Iterator[Rig]:
    made = Rig(database_factory.create("postgresql"))
    made.general(partner_call(event()))  # loads the reference cache, as a first request would
    yield made
    made.close()


def test_sqlite_has_no_statement_pool(dialect: str, db: Database) -> None:
    pool = db.statement_pool(2)
    assert (pool is None) == (dialect == "sqlite")


def test_the_statement_is_never_jit_compiled(rig: Rig) -> None:
    """The batched statement's estimated cost grows with the tables until JIT would compile it on
    every run (250 ms each); the pool's connections turn JIT off, whatever the database says."""
    url = rig.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = rig.db.engine.url.database
    explain = "EXPLAIN (ANALYZE, FORMAT JSON) "
    with psycopg.connect(url, autocommit=True) as admin:  # JIT for every statement, by default
        admin.execute(f'ALTER DATABASE "{name}" SET jit_above_cost = 0')
    with psycopg.connect(url, autocommit=True) as plain:  # the control: JIT is there to be used
        (control,) = plain.execute(explain + "SELECT sum(x) FROM generate_series(1, 3) AS x")
        if "JIT" not in control[0][0]:
            pytest.skip("this PostgreSQL has no JIT")
    pool = rig.db.statement_pool(1)
    assert pool is not None

    async def plan() -> Any:
        async with pool.connection() as conn:
            cursor = await conn.execute(explain.encode() + POST_BATCH_SENT, batch_params([]))
            (row,) = await cursor.fetchall()
        await pool.close()
        return row[0][0]

    assert "JIT" not in rig.loop.run_until_complete(plan())


def both_ways_the_same(
    fast: Rig,
    slow: Rig,
    monkeypatch: pytest.MonkeyPatch,
    before: list[PartnerCall],
    calls: list[PartnerCall],
) -> None:
    """On two fresh rigs, `before` by the unit of work on both, then `calls` on the
    one-statement path (`fast`, every one written) and by the unit of work (`slow`): the same
    answers, all 200, and the same rows. Transaction ids come from a counter, so they are the
    same on both databases."""
    outcomes = {}
    for rig in (fast, slow):
        counter = iter(range(1, 1000))
        monkeypatch.setattr(ids, "uuid4_text", lambda c=counter: str(uuid.UUID(int=next(c))))
        for call in before:
            assert rig.general(call).status == 200
        if rig is fast:
            results = [rig.at_once(call) for call in calls]
            assert all(result is not None for result in results), results
        else:
            results = [rig.general(call) for call in calls]
        outcomes[rig] = results
    assert outcomes[fast] == outcomes[slow]
    assert all(o is not None and o.status == 200 for o in outcomes[fast])
    assert fast.rows() == slow.rows()


def test_writes_exactly_what_the_unit_of_work_writes(
    postgres_only: None, database_factory: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = (Rig(database_factory.create("postgresql")) for _ in range(2))
    try:
        bodies = [
            (event(), "k-event"),
            (event(miles=40), None),  # no Idempotency-Key
            (basket(), "k-basket"),
            (event(issuances=[{"issuanceOfferCode": "BONUS", "milesAmount": 7}] * 3), "k-3"),
        ]
        calls = [
            partner_call(
                body, key=key, endpoint="post" if "checkoutTransactionId" in body else "post_event"
            )
            for body, key in bodies
        ]
        warm = partner_call(basket(), endpoint="post")  # caches both offers and the location
        both_ways_the_same(fast, slow, monkeypatch, [warm], calls)
    finally:
        fast.close()
        slow.close()


def _counts(rig: Rig) -> dict[str, int]:
    return {name: len(rows) for name, rows in rig.rows().items() if name != "collectors"}


@pytest.mark.parametrize("collector", [ACTIVE, ON_HOLD, CLOSED])
def test_a_stored_key_is_replayed_as_the_unit_of_work_replays_it(rig: Rig, collector: str) -> None:
    call = partner_call(event(collector), key=f"k-replay-{collector}")
    first = rig.at_once(call) or rig.general(call)  # 200; 202 pending; 400 rejection stored
    assert not first.replayed
    before = _counts(rig)
    replay = rig.at_once(call)
    assert _counts(rig) == before
    assert replay is not None
    assert replay == rig.general(call)  # the same answer the unit of work gives
    assert replay.replayed
    assert (replay.status, replay.body) == (first.status, first.body)
    changed = partner_call(event(collector), key=f"k-replay-{collector}")
    with pytest.raises(ProblemError) as reused:
        rig.at_once(changed)
    assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"


def test_a_replay_shows_the_transaction_as_it_stands_now(rig: Rig) -> None:
    call = partner_call(event(ON_HOLD), key="k-replay-settled")
    first = rig.general(call)
    assert first.status == 202
    assert first.body["issuances"][0]["status"] == "PENDING"
    with rig.db.unit_of_work() as session:  # the hold is lifted and the line settles
        collectors.set_status(session, ON_HOLD, "ACTIVE", NOW)
    assert settle_pending(rig.db, rig.settings, NOW).posted == 1
    replay = rig.at_once(call)
    assert replay is not None
    assert replay.status == 200
    assert replay.body["issuances"][0]["status"] == "ISSUED"
    assert replay == rig.general(call)


def test_a_duplicate_transaction_id_is_left_to_the_general_path(rig: Rig) -> None:
    body = event()
    first = rig.at_once(partner_call(body, key="k-dup-1"))
    assert first is not None
    before = _counts(rig)
    again = partner_call(body, key="k-dup-2")
    assert rig.at_once(again) is None  # the unique index refused it; nothing was written
    assert _counts(rig) == before
    replay = rig.general(again)
    assert replay.replayed
    assert replay.transaction_id == first.transaction_id
    changed = partner_call(event(clientTransactionId=body["clientTransactionId"], miles=6))
    assert rig.at_once(changed) is None
    assert rig.general(changed).body["code"] == "DUPLICATE_TRANSACTION"


@pytest.mark.parametrize(
    ("collector", "status", "code"),
    [(ON_HOLD, 202, None), (CLOSED, 400, "COLLECTOR_CLOSED"), (UNKNOWN, 202, None)],
)
def test_a_collector_not_active_is_left_to_the_general_path(
    rig: Rig, collector: str, status: int, code: str | None
) -> None:
    call = partner_call(event(collector), key=f"k-{collector}")
    before = _counts(rig)
    assert rig.at_once(call) is None
    assert _counts(rig) == before
    outcome = rig.general(call)
    assert outcome.status == status
    assert outcome.body.get("code") == code


def test_a_reference_data_change_is_seen_by_the_next_call(rig: Rig) -> None:
    with rig.db.unit_of_work() as session:
        session.execute(
            update(Offer)
            .where(Offer.sponsor_code == SPONSOR, Offer.code == "STANDARD")
            .values(active=False)
        )
    call = partner_call(event(), key="k-offer-off")
    assert rig.at_once(call) is None  # the cached version is stale: the statement refuses it
    outcome = rig.general(call)
    assert outcome.status == 400
    assert outcome.body["code"] == "OFFER_INACTIVE"
    # the general path loaded the new version: the cache now knows the offer is inactive
    assert rig.at_once(partner_call(event(), key="k-offer-off-2")) is None
    with rig.db.unit_of_work() as session:
        session.execute(
            update(Offer)
            .where(Offer.sponsor_code == SPONSOR, Offer.code == "STANDARD")
            .values(active=True)
        )
    rig.general(partner_call(event()))  # loads the newest version again
    assert rig.at_once(partner_call(event(), key="k-offer-on")) is not None


def test_a_key_held_by_another_transaction_is_left_to_the_general_path(rig: Rig) -> None:
    call = partner_call(event(), key="k-held")
    url = rig.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as other:
        other.execute(
            "SELECT pg_advisory_xact_lock(%s)", (idempotency.lock_number(CLIENT, "k-held"),)
        )
        before = _counts(rig)
        assert rig.at_once(call) is None
        assert _counts(rig) == before
        with pytest.raises(ProblemError) as refused:
            rig.general(call)
        assert refused.value.code == "IDEMPOTENCY_KEY_IN_USE"
    assert rig.at_once(call) is not None  # released: the call goes through


def test_a_keyless_call_waits_for_no_key_in_flight(rig: Rig) -> None:
    """A call without an Idempotency-Key takes no key lock: another transaction holding a key of
    the same client — even one spelled "None" — does not send it to the general path."""
    url = rig.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as other:
        other.execute(
            "SELECT pg_advisory_xact_lock(%s)", (idempotency.lock_number(CLIENT, "None"),)
        )
        before = _balance(rig, ACTIVE)
        assert rig.at_once(partner_call(event(), key="None")) is None  # the control: held
        keyless = rig.at_once(partner_call(event(miles=7)))
        assert keyless is not None
        assert keyless.status == 200
        assert keyless.body["issuances"][0]["status"] == "ISSUED"
        assert _balance(rig, ACTIVE) == before + 7


def test_a_key_in_flight_in_this_process_is_refused_on_the_one_statement_path(rig: Rig) -> None:
    """The in-process registry holds (client, key): the same client's key already running here
    is 409 before any statement runs, and nothing is written; released, the call goes through."""
    call = partner_call(event(), key="in-flight")
    before = _counts(rig)
    with rig.registry.hold(CLIENT, "in-flight"):
        with pytest.raises(ProblemError) as refused:
            rig.at_once(call)
        assert refused.value.code == "IDEMPOTENCY_KEY_IN_USE"
        assert _counts(rig) == before
    done = rig.at_once(call)
    assert done is not None
    assert done.status == 200


@pytest.mark.parametrize(
    "case",
    [
        "review",
        "future",
        "too_old",
        "unknown_offer",
        "unregistered_location",
        "uncached_sponsor",
    ],
)
def test_calls_the_plan_is_not_sure_of_are_left_to_the_general_path(rig: Rig, case: str) -> None:
    body = event()
    endpoint = "post_event"
    if case == "review":
        with rig.db.unit_of_work() as session:
            sponsors.set_sponsor(session, SPONSOR, review_threshold_miles=4)
        rig.general(partner_call(event(miles=1)))  # load the new version
    elif case == "future":
        body = event(transactionDateTime=(NOW + timedelta(minutes=10)).isoformat())
    elif case == "too_old":
        body = event(transactionDateTime=(NOW - timedelta(days=400)).isoformat())
    elif case == "unknown_offer":
        body = event(issuances=[{"issuanceOfferCode": "NOSUCH", "milesAmount": 5}])
    elif case == "unregistered_location":
        body = event(
            issuances=[{"issuanceOfferCode": "STANDARD", "milesAmount": 5, "locationCode": "X9"}]
        )
    elif case == "uncached_sponsor":
        with rig.db.unit_of_work() as session:
            sponsors.add_sponsor(session, "OTHER1", "Other", NOW)
        rig.general(partner_call(event()))  # load the new version, without OTHER1 in it
        body = event(sponsorCode="OTHER1")
    call = partner_call(body, key=f"k-{case}", endpoint=endpoint)
    version, reference = newest_reference(rig.db.engine)
    assert version >= 0
    assert reference
    assert service.plan_at_once(rig.settings, call, reference, NOW) is None
    before = _counts(rig)
    assert rig.at_once(call) is None
    assert _counts(rig) == before


class Planner:
    """A seeded database of either dialect, its reference cache loaded by the unit of work, and
    `plan_at_once` asked about calls at the fixed `NOW` (no statement pool needed)."""

    def __init__(self, url: str) -> None:
        self.db = Database.from_url(url)
        self.settings = Settings.from_env({}, database_url=url)
        self.registry = idempotency.InFlightRegistry()
        seed(self.db)
        # A POST caches both offers and the location; a POST/EVENT the sponsor's STANDARD.
        assert self.general(self.call(Endpoint.POST, basket())).status == 200
        assert self.general(self.call(Endpoint.POST_EVENT, event())).status == 200

    def call(self, endpoint: Endpoint, body: dict[str, Any]) -> PartnerCall:
        return build_call(self.settings, endpoint, body, client_id=CLIENT)

    def general(self, call: PartnerCall) -> Outcome:
        return run_write(self.db, self.settings, self.registry, call, lambda: NOW)

    def plan(self, call: PartnerCall) -> records.WriteSet | None:
        _version, reference = newest_reference(self.db.engine)
        return service.plan_at_once(self.settings, call, reference, NOW)

    def close(self) -> None:
        self.db.dispose()
        assert_ledger_balanced(self.settings.database_url)


@pytest.fixture
def planner(dialect: str, database_factory: DatabaseFactory) -> Iterator[Planner]:
    made = Planner(database_factory.create(dialect))
    yield made
    made.close()


def _standalone(endpoint: Endpoint) -> dict[str, Any]:
    return basket() if endpoint in (Endpoint.POST, Endpoint.REVERSE, Endpoint.RECORD) else event()


@pytest.mark.parametrize(
    ("endpoint", "posting"),
    [
        (Endpoint.REVERSE_EVENT, Endpoint.POST_EVENT),  # a standalone correction: no original
        (Endpoint.REVERSE, Endpoint.POST),  # the same, basket-shaped
        (Endpoint.RECORD, Endpoint.POST),  # stored for audit: no miles move
    ],
)
def test_only_a_post_or_post_event_is_planned(
    planner: Planner, endpoint: Endpoint, posting: Endpoint
) -> None:
    """The body that a POST or POST/EVENT would post at once, sent to another endpoint without
    an original, is never planned as a posted issue (a credit)."""
    body = _standalone(endpoint)
    plan = planner.plan(planner.call(posting, body))
    assert plan is not None  # the control: as a posting, every line posts at once
    assert plan.outcome.status == 200
    assert [(line["direction"], line["status"]) for line in plan.lines] == [
        (Direction.CREDIT, LineStatus.POSTED)
    ] * len(body["issuances"])
    assert planner.plan(planner.call(endpoint, body)) is None


@pytest.mark.parametrize("case", ["inactive", "unknown"])
def test_a_sponsor_the_cache_knows_to_refuse_is_not_planned(planner: Planner, case: str) -> None:
    body = event()
    if case == "inactive":
        with planner.db.unit_of_work() as session:
            sponsors.set_sponsor(session, SPONSOR, active=False)
    else:
        body = event(sponsorCode="NOSUCH")
    call = planner.call(Endpoint.POST_EVENT, body)
    refused = planner.general(call)  # reads the sponsor into the cache: the newest version
    assert refused.status == 400
    assert refused.body["code"] == f"SPONSOR_{case.upper()}"
    _version, reference = newest_reference(planner.db.engine)
    cached = reference[body["sponsorCode"]]
    assert (cached.sponsor is None) == (case == "unknown")
    assert cached.sponsor is None or not cached.sponsor.active
    again = planner.call(Endpoint.POST_EVENT, event(sponsorCode=body["sponsorCode"]))
    assert planner.plan(again) is None
    assert planner.general(again).body["code"] == f"SPONSOR_{case.upper()}"


def test_a_sponsor_the_cache_has_not_read_is_not_planned(planner: Planner) -> None:
    with planner.db.unit_of_work() as session:
        sponsors.add_sponsor(session, "OTHER1", "Other", NOW)
    assert planner.general(planner.call(Endpoint.POST_EVENT, event())).status == 200  # new version
    _version, reference = newest_reference(planner.db.engine)
    assert "OTHER1" not in reference
    assert planner.plan(planner.call(Endpoint.POST_EVENT, event(sponsorCode="OTHER1"))) is None


def test_a_location_the_cache_knows_is_not_registered_is_not_planned(planner: Planner) -> None:
    line = {"issuanceOfferCode": "STANDARD", "milesAmount": 5, "locationCode": "X9"}
    refused = planner.general(planner.call(Endpoint.POST_EVENT, event(issuances=[line])))
    assert refused.body["code"] == "LOCATION_UNKNOWN"
    _version, reference = newest_reference(planner.db.engine)
    cached = reference[SPONSOR]
    assert cached.registers_any is True
    assert cached.locations.get("X9") is False  # read, and known not to be registered
    assert planner.plan(planner.call(Endpoint.POST_EVENT, event(issuances=[line]))) is None
    registered = {**line, "locationCode": "STORE1"}
    assert planner.plan(planner.call(Endpoint.POST_EVENT, event(issuances=[registered])))


@pytest.mark.parametrize("state", ["inactive", "ended", "not_started"])
def test_an_offer_the_cache_knows_is_not_usable_is_not_planned(
    planner: Planner, state: str
) -> None:
    with planner.db.unit_of_work() as session:
        changes: dict[str, dict[str, Any]] = {
            "inactive": {"active": False},
            "ended": {"valid_to": date(2026, 11, 19)},
            "not_started": {"valid_from": date(2026, 11, 21)},
        }
        values = changes[state]
        session.execute(
            update(Offer).where(Offer.sponsor_code == SPONSOR, Offer.code == "BONUS").values(values)
        )
    line = {"issuanceOfferCode": "BONUS", "milesAmount": 5}
    refused = planner.general(planner.call(Endpoint.POST_EVENT, event(issuances=[line])))
    assert refused.body["code"] == "OFFER_INACTIVE"  # read into the cache, as not usable
    assert planner.plan(planner.call(Endpoint.POST_EVENT, event(issuances=[line]))) is None


def test_an_offer_is_usable_on_the_program_days_date_not_utcs(planner: Planner) -> None:
    """02:00 UTC on 20 November is 21:00 on 19 November in Toronto: an offer that ended on the
    19th is still usable for that purchase."""
    with planner.db.unit_of_work() as session:
        session.execute(
            update(Offer)
            .where(Offer.sponsor_code == SPONSOR, Offer.code == "BONUS")
            .values(valid_to=date(2026, 11, 19))
        )
    late = datetime(2026, 11, 20, 2, 0, tzinfo=UTC).isoformat()
    line = {"issuanceOfferCode": "BONUS", "milesAmount": 5}
    call = planner.call(Endpoint.POST_EVENT, event(issuances=[line], transactionDateTime=late))
    assert planner.general(call).status == 200  # the unit of work agrees, and caches BONUS
    again = event(issuances=[line], transactionDateTime=late)
    assert planner.plan(planner.call(Endpoint.POST_EVENT, again)) is not None


def test_a_line_of_exactly_the_review_threshold_is_planned_one_mile_more_is_not(
    planner: Planner,
) -> None:
    with planner.db.unit_of_work() as session:
        sponsors.set_sponsor(session, SPONSOR, review_threshold_miles=5)
    assert planner.general(planner.call(Endpoint.POST_EVENT, event(miles=1))).status == 200
    at = planner.call(Endpoint.POST_EVENT, event(miles=5))
    plan = planner.plan(at)
    assert plan is not None
    assert plan.outcome.status == 200
    assert [line["status"] for line in plan.lines] == [LineStatus.POSTED]
    posted = planner.general(at)  # the unit of work agrees: the line posts at once
    assert posted.status == 200
    assert posted.body["issuances"][0]["status"] == "ISSUED"
    over = planner.call(Endpoint.POST_EVENT, event(miles=6))
    assert planner.plan(over) is None
    held = planner.general(over)  # it goes to review
    assert held.status == 202
    assert held.body["issuances"][0]["status"] == "PENDING"


def test_a_database_that_cannot_be_reached_is_a_database_error(postgres_only: None) -> None:
    pool = StatementPool("postgresql://postgres@127.0.0.1:1/none", 1, {"connect_timeout": 2})

    async def attempt() -> None:
        async with pool.connection():
            pass

    with pytest.raises(DBAPIError):
        asyncio.run(attempt())


@pytest.mark.parametrize("form", FORMS)
def test_both_paths_get_past_a_server_that_is_down_to_the_next(
    postgres_only: None, database_factory: DatabaseFactory, form: str
) -> None:
    """A URL naming two servers, the first down, written each way: the unit of work (the
    synchronous pool) and the statement (the asynchronous pool) both reach the second."""
    rig = Rig(two_servers(database_factory.create("postgresql"), form))
    try:
        assert rig.general(partner_call(event(), key="k-general")).status == 200
        outcome = rig.at_once(partner_call(event(), key="k-at-once"))
        assert outcome is not None
        assert outcome.status == 200
        assert len(rig.rows()["transactions"]) == 2
    finally:
        rig.close()


def _backend_pid(rig: Rig) -> int:
    async def take() -> int:
        async with rig.pool.connection() as conn:
            return int(conn.info.backend_pid)

    return rig.loop.run_until_complete(take())


def test_connections_the_server_ended_while_idle_are_replaced_before_use(rig: Rig) -> None:
    async def hold_two() -> list[tuple[int, int]]:
        async with rig.pool.connection() as first, rig.pool.connection() as second:
            return [(c.info.backend_pid, c.pgconn.socket) for c in (first, second)]

    held = rig.loop.run_until_complete(hold_two())  # both idle in the pool now
    pids = [pid for pid, _ in held]
    end_sessions(pids, [socket for _, socket in held])

    outcome = rig.at_once(partner_call(event(), key="k-after-restart"))  # no error: replaced

    assert outcome is not None
    assert outcome.status == 200
    fresh = _backend_pid(rig)
    assert fresh not in pids
    assert _backend_pid(rig) == fresh  # a connection the server keeps is kept


def test_a_connection_lost_mid_statement_is_a_database_error_and_closes_the_idle_ones(
    rig: Rig,
) -> None:
    async def lose_one() -> psycopg.AsyncConnection[Any]:
        async with rig.pool.connection() as running, rig.pool.connection() as idle:
            pid = running.info.backend_pid  # returned last: the next statement takes it
        statement = asyncio.create_task(rig.pool.run(b"SELECT pg_sleep(30)", []))
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
                (pid,),
            ).fetchone() != (1,):
                await asyncio.sleep(0.02)
        end_sessions([pid])
        with pytest.raises(DBAPIError) as lost:
            await statement
        assert isinstance(lost.value.orig, psycopg.OperationalError)
        return idle

    idle = rig.loop.run_until_complete(asyncio.wait_for(lose_one(), ANSWERED_WITHIN))

    assert idle.closed  # the one lost may not have been alone: the idle ones go with it
    outcome = rig.at_once(partner_call(event(), key="k-after-loss"))
    assert outcome is not None
    assert outcome.status == 200


def _together(rig: Rig, calls: list[PartnerCall]) -> list[Outcome | None]:
    async def run() -> list[Outcome | None]:
        async with asyncio.timeout(ANSWERED_WITHIN):
            return await asyncio.gather(
                *(
                    service.execute_at_once(
                        rig.writer, rig.db, rig.settings, rig.registry, call, now=lambda: NOW
                    )
                    for call in calls
                )
            )

    return rig.loop.run_until_complete(run())


def _count_statements(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    connection = rig.pool.connection

    def counting() -> Any:
        count[0] += 1
        return connection()

    monkeypatch.setattr(rig.pool, "connection", counting)
    return count


def test_calls_arriving_together_share_one_statement_and_each_gets_its_own_answer(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_call = partner_call(event(), key="k-group-stored")
    first = rig.at_once(stored_call)
    assert first is not None
    with rig.db.unit_of_work() as session:
        collectors.add_collector(session, "70000000010", "ACTIVE", NOW)
    calls = [partner_call(event(miles=m), key=f"k-group-{m}") for m in range(1, 9)]
    calls += [partner_call(event("70000000010", miles=100 + m)) for m in range(4)]  # keyless
    calls += [stored_call]  # a replay in the batch
    calls += [partner_call(event(ON_HOLD), key="k-group-held")]  # not ACTIVE: left alone
    before = {number: _balance(rig, number) for number in (ACTIVE, "70000000010")}
    statements = _count_statements(rig, monkeypatch)

    outcomes = _together(rig, calls)

    # All 14 were waiting before the writer sent anything: one statement, one commit, for all.
    assert statements == [1]
    for outcome in outcomes[:12]:
        assert outcome is not None
        assert outcome.status == 200
        assert not outcome.replayed
    assert len({o.transaction_id for o in outcomes[:12] if o is not None}) == 12
    replay = outcomes[12]
    assert replay is not None
    assert replay.replayed
    assert replay.transaction_id == first.transaction_id
    assert outcomes[13] is None  # ON_HOLD: the unit of work answers it
    # Two calls of one batch for one collector moved its balance by their sum.
    assert _balance(rig, ACTIVE) == before[ACTIVE] + sum(range(1, 9))
    assert _balance(rig, "70000000010") == before["70000000010"] + sum(range(100, 104))
    keys_stored_with_their_calls(rig, calls[:8], outcomes[:8])


def keys_stored_with_their_calls(
    rig: Rig, calls: list[PartnerCall], outcomes: list[Outcome | None]
) -> None:
    """Each call's key was stored with it, in the same commit: sent again, the unit of work
    replays the transaction the call wrote."""
    for call, outcome in zip(calls, outcomes, strict=True):
        replayed = rig.general(call)
        assert replayed.replayed
        assert outcome is not None
        assert replayed.transaction_id == outcome.transaction_id


def test_a_batch_refused_on_the_unique_index_is_run_again_call_by_call(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.at_once(partner_call(event(), key="k-unique-first"))
    duplicate = event()
    calls = [partner_call(event(miles=m), key=f"k-unique-{m}") for m in range(1, 4)]
    calls += [
        partner_call(duplicate, key="k-unique-dup-1"),
        partner_call(duplicate, key="k-unique-dup-2"),  # the same transaction id twice
    ]
    statements = _count_statements(rig, monkeypatch)
    before = _balance(rig, ACTIVE)

    async def first_then_the_rest() -> list[Outcome | None]:
        alone = asyncio.ensure_future(  # keeps the writer busy, so the rest form one batch
            service.execute_at_once(
                rig.writer,
                rig.db,
                rig.settings,
                rig.registry,
                partner_call(event(), key="k-unique-lead"),
                now=lambda: NOW,
            )
        )
        rest = await asyncio.gather(
            *(
                service.execute_at_once(
                    rig.writer, rig.db, rig.settings, rig.registry, call, now=lambda: NOW
                )
                for call in calls
            )
        )
        assert await alone is not None
        return rest

    outcomes = rig.loop.run_until_complete(asyncio.wait_for(first_then_the_rest(), ANSWERED_WITHIN))

    assert statements == [1 + 1 + len(calls)]  # the lead, the refused batch, then one by one
    assert all(o is not None for o in outcomes[:3])
    dup_1, dup_2 = outcomes[3], outcomes[4]
    assert (dup_1 is None) != (dup_2 is None)  # one written; the other left to the unit of work
    left = calls[4] if dup_2 is None else calls[3]
    assert rig.general(left).replayed  # rule 3.7: the same body again is a replay
    assert _balance(rig, ACTIVE) == before + 5 + sum(range(1, 4)) + 5


def _balance(rig: Rig, number: str) -> int:
    with rig.db.reader() as session:
        view = collectors.get_collector(session, number)
    assert view is not None
    return view.balance_miles


def test_a_collector_locked_elsewhere_delays_its_batch_by_the_lock_timeout_at_most(
    rig: Rig,
) -> None:
    with rig.db.unit_of_work() as session:
        collectors.add_collector(session, "70000000011", "ACTIVE", NOW)
    blocked = partner_call(event("70000000011"), key="k-blocked")
    others = [partner_call(event(miles=m), key=f"k-free-{m}") for m in range(1, 4)]
    before = _balance(rig, ACTIVE)
    url = rig.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as holder:  # a long transaction holds the collector's row
        holder.execute("SELECT 1 FROM collectors WHERE number = '70000000011' FOR UPDATE")
        started = time.monotonic()
        outcomes = _together(rig, [blocked, *others])
        elapsed = time.monotonic() - started
    assert elapsed < 5 * STATEMENT_LOCK_TIMEOUT_MS / 1000 + 2  # not the 15 s statement timeout
    assert outcomes[0] is None  # gave up on the lock: left to the unit of work
    assert all(o is not None and o.status == 200 for o in outcomes[1:])
    assert _balance(rig, ACTIVE) == before + sum(range(1, 4))
    assert rig.general(blocked).status == 200  # the lock is free now: the unit of work posts it


def test_a_statement_waiting_on_a_lock_does_not_hold_back_later_calls(rig: Rig) -> None:
    """One statement in flight per process, but not behind a stalled one: a call arriving while
    the statement in flight waits on a row lock gets a statement of its own."""
    with rig.db.unit_of_work() as session:
        collectors.add_collector(session, "70000000012", "ACTIVE", NOW)
    blocked = partner_call(event("70000000012"), key="k-stalled")
    later = partner_call(event(miles=9), key="k-later")
    url = rig.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> tuple[Outcome | None, Outcome | None, float]:
        def at_once(call: PartnerCall) -> Any:
            return service.execute_at_once(
                rig.writer, rig.db, rig.settings, rig.registry, call, now=lambda: NOW
            )

        first = asyncio.ensure_future(at_once(blocked))
        await asyncio.sleep(0.08)  # its statement waits on the lock, past `stalled_after`
        started = time.monotonic()
        second = await at_once(later)
        waited = time.monotonic() - started
        return await first, second, waited

    with psycopg.connect(url) as holder:  # a long transaction holds the collector's row
        holder.execute("SELECT 1 FROM collectors WHERE number = '70000000012' FOR UPDATE")
        first, second, waited = rig.loop.run_until_complete(
            asyncio.wait_for(run(), ANSWERED_WITHIN)
        )
    # Behind the stalled statement it would have waited out the rest of the lock timeout.
    assert waited < STATEMENT_LOCK_TIMEOUT_MS / 1000 - 0.08 - 0.03
    assert second is not None
    assert second.status == 200
    assert first is None  # gave up on the lock: left to the unit of work


@pytest.mark.parametrize("enabled", [True, False])
def test_the_setting_turns_the_path_on_and_off(
    dialect: str, database_factory: DatabaseFactory, enabled: bool
) -> None:
    url = database_factory.create(dialect)
    ctx = build_context(
        Settings.from_env(
            {},
            database_url=url,
            one_statement_issue=enabled,
            secret_hash_cost=10,
            secret_key=TEST_SECRET_KEY,
        )
    )
    try:
        # Off, or on SQLite: no statement pool, and every call takes the unit of work.
        assert (ctx.issue_writer is not None) == (enabled and dialect == "postgresql")
        assert (ctx.statements is None) == (ctx.issue_writer is None)
    finally:
        ctx.db.dispose()
