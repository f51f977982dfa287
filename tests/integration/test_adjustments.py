"""Operators' adjustments (`collectors.adjustments.adjust`, `ledger.post_adjustment`) and how
`ledger verify` checks them, on every dialect. Tampering happens on databases of their own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, insert, inspect, select, update

from rewardmiles import ledger, limits
from rewardmiles.collectors import adjustments
from rewardmiles.collectors.adjustments import AdjustmentError, AdjustmentRequest
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Adjustment, Collector, LedgerEntry, OperatorAuditEntry
from rewardmiles.ledger.verify import VerifyReport, verify
from rewardmiles.operators.service import Actor
from rewardmiles.vocabulary import NegativeBalancePolicy, OperatorRole
from tests.conftest import DatabaseFactory
from tests.support import data

ALLOW = Settings()
REJECT = Settings(negative_balance_policy=NegativeBalancePolicy.REJECT)


def _request(
    number: str,
    miles: int,
    reason: str = "GOODWILL",
    note: str = "late flight",
    *,
    key: str | None = None,
) -> AdjustmentRequest:
    return AdjustmentRequest(number, miles, reason, note, key or str(uuid.uuid4()))


def _adjust(
    db: Database,
    request: AdjustmentRequest,
    *,
    role: OperatorRole = OperatorRole.ADMIN,
    settings: Settings = ALLOW,
    actor: str = "agent@example.com",
) -> adjustments.AdjustmentOutcome:
    with db.unit_of_work() as session:
        return adjustments.adjust(
            session,
            request,
            actor=Actor(actor, "req-1"),
            role=role,
            settings=settings,
            now=data.now(),
        )


def _refused(db: Database, request: AdjustmentRequest, **kwargs: object) -> AdjustmentError:
    with pytest.raises(AdjustmentError) as caught:
        _adjust(db, request, **kwargs)  # type: ignore[arg-type]
    return caught.value


def _pair(db: Database, adjustment_id: str) -> list[tuple[str, str, int]]:
    with db.reader() as session:
        rows = session.execute(
            select(LedgerEntry.account_kind, LedgerEntry.account_code, LedgerEntry.amount_miles)
            .where(LedgerEntry.adjustment_id == adjustment_id)
            .order_by(LedgerEntry.account_kind)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _audit(
    db: Database, number: str
) -> list[tuple[str, str, str | None, str | None, str | None, str | None]]:
    with db.reader() as session:
        rows = session.execute(
            select(
                OperatorAuditEntry.actor,
                OperatorAuditEntry.action,
                OperatorAuditEntry.note,
                OperatorAuditEntry.request_id,
                OperatorAuditEntry.before_json,
                OperatorAuditEntry.after_json,
            )
            .where(OperatorAuditEntry.entity == "collector", OperatorAuditEntry.entity_id == number)
            .order_by(OperatorAuditEntry.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


# --------------------------------------------------------------------------- posting


def test_a_credit_posts_one_pair_against_the_program_account_and_is_audited(db: Database) -> None:
    number = data.new_collector(db)
    made = _adjust(db, _request(number, 250, note="goodwill for the delay")).adjustment
    assert (made.collector_number, made.miles, made.reason, made.balance_after) == (
        number,
        250,
        "GOODWILL",
        250,
    )
    assert made.operator == "agent@example.com"
    assert _pair(db, made.id) == [("collector", number, 250), ("program", "ADJUSTMENTS", -250)]
    assert data.balance(db, number) == 250
    [(actor, action, note, request_id, before, after)] = _audit(db, number)
    assert (actor, action, note, request_id) == (
        "agent@example.com",
        "collector.adjust",
        "goodwill for the delay",
        "req-1",
    )
    assert json.loads(before or "") == {"balance": 0}
    assert json.loads(after or "") == {
        "adjustmentId": made.id,
        "balance": 250,
        "miles": 250,
        "reason": "GOODWILL",
    }


def test_a_debit_moves_the_balance_down_and_reports_it(db: Database) -> None:
    number = data.new_collector(db)
    _adjust(db, _request(number, 100))
    made = _adjust(db, _request(number, -40, "CORRECTION")).adjustment
    assert made.balance_after == 60
    assert _pair(db, made.id) == [("collector", number, -40), ("program", "ADJUSTMENTS", 40)]
    assert data.balance(db, number) == 60


def _post_with_a_stale_account(db: Database, number: str) -> None:
    ident = str(uuid.uuid4())
    with db.unit_of_work() as session:
        account = ledger.lock_collector(session, number)
        assert account is not None
        session.execute(
            insert(Adjustment).values(
                id=ident,
                collector_number=number,
                miles=5,
                reason="GOODWILL",
                note="n",
                operator="t",
                idempotency_key=ident,
                fingerprint="0" * 64,
                balance_after=5,
                created_at=data.now(),
            )
        )
        stale = ledger.CollectorAccount(number, account.status, account.balance_miles + 1)
        ledger.post_adjustment(session, stale, ident, 5, posted_at=data.now())


def test_post_adjustment_refuses_zero_miles_and_a_balance_moved_without_the_lock(
    db: Database,
) -> None:
    number = data.new_collector(db)
    with pytest.raises(ledger.LedgerInvariantError) as refused:
        ledger.service.adjustment_rows(number, "x", 0, posted_at=data.now())
    assert str(refused.value) == "an adjustment must move a non-zero amount"
    assert len(ledger.service.adjustment_rows(number, "x", -1, posted_at=data.now())) == 2
    with pytest.raises(ledger.LedgerInvariantError) as moved:
        _post_with_a_stale_account(db, number)
    # The stale account says 1, the adjustment adds 5: 6 expected, the row holds 0 + 5.
    assert str(moved.value) == (
        f"balance of collector {number} changed without its lock (expected 6, found 5)"
    )
    assert data.balance(db, number) == 0  # rolled back whole


def test_post_adjustment_returns_the_new_account_state(db: Database) -> None:
    number = data.new_collector(db, "ON_HOLD")
    made = _adjust(db, _request(number, -3, "FRAUD")).adjustment
    with db.unit_of_work() as session:
        account = ledger.lock_collector(session, number)
        assert account == ledger.CollectorAccount(number, "ON_HOLD", -3)
    assert made.balance_after == -3
    with db.unit_of_work() as session:
        account = ledger.lock_collector(session, number)
        assert account is not None
        ident = str(uuid.uuid4())
        session.execute(
            insert(Adjustment).values(
                id=ident,
                collector_number=number,
                miles=10,
                reason="CORRECTION",
                note="n",
                operator="t",
                idempotency_key=ident,
                fingerprint="0" * 64,
                balance_after=7,
                created_at=data.now(),
            )
        )
        after = ledger.post_adjustment(session, account, ident, 10, posted_at=data.now())
    assert after == ledger.CollectorAccount(number, "ON_HOLD", 7)
    assert data.balance(db, number) == 7


# --------------------------------------------------------------------------- idempotency


def test_the_same_key_and_request_replay_the_adjustment_once_made(db: Database) -> None:
    number = data.new_collector(db)
    request = _request(number, 70, key="k-" + uuid.uuid4().hex)
    first = _adjust(db, request)
    again = _adjust(db, request)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.adjustment == first.adjustment
    assert data.balance(db, number) == 70
    assert len(_audit(db, number)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"miles": 71},
        {"reason": "CORRECTION"},
        {"note": "another note"},
        {"collector": True},
    ],
    ids=lambda c: next(iter(c)),
)
def test_the_same_key_with_another_request_is_refused(
    db: Database, change: dict[str, object]
) -> None:
    number = data.new_collector(db)
    key = "k-" + uuid.uuid4().hex
    _adjust(db, _request(number, 70, key=key))
    other = _request(
        data.new_collector(db) if change.get("collector") else number,
        int(change.get("miles", 70)),  # type: ignore[call-overload]
        str(change.get("reason", "GOODWILL")),
        str(change.get("note", "late flight")),
        key=key,
    )
    refused = _refused(db, other)
    assert (refused.code, refused.field) == ("IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert data.balance(db, number) == 70


def test_a_key_belongs_to_its_operator(db: Database) -> None:
    number = data.new_collector(db)
    key = "k-" + uuid.uuid4().hex
    one = _adjust(db, _request(number, 5, key=key), actor="one@example.com")
    two = _adjust(db, _request(number, 5, key=key), actor="two@example.com")
    assert not two.replayed
    assert two.adjustment.id != one.adjustment.id
    assert data.balance(db, number) == 10


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize("miles", [1000, -1000, 1, -1])
def test_an_agent_may_adjust_up_to_the_limit(db: Database, miles: int) -> None:
    number = data.new_collector(db)
    made = _adjust(db, _request(number, miles), role=OperatorRole.AGENT).adjustment
    assert made.balance_after == miles


@pytest.mark.parametrize("miles", [1001, -1001])
def test_above_the_limit_needs_an_admin(db: Database, miles: int) -> None:
    number = data.new_collector(db)
    refused = _refused(db, _request(number, miles), role=OperatorRole.AGENT)
    assert refused.code == "ADMIN_FORBIDDEN"
    assert data.balance(db, number) == 0
    assert _adjust(db, _request(number, miles), role=OperatorRole.ADMIN).adjustment.miles == miles


def test_the_agents_limit_is_a_setting(db: Database) -> None:
    number = data.new_collector(db)
    settings = Settings(adjustment_agent_limit_miles=10)
    assert _adjust(db, _request(number, 10), role=OperatorRole.AGENT, settings=settings)
    refused = _refused(db, _request(number, 11), role=OperatorRole.AGENT, settings=settings)
    assert refused.code == "ADMIN_FORBIDDEN"


def test_a_viewer_may_not_adjust_at_all(db: Database) -> None:
    number = data.new_collector(db)
    refused = _refused(db, _request(number, 1), role=OperatorRole.VIEWER)
    assert refused.code == "ADMIN_FORBIDDEN"


def test_a_debit_may_empty_the_balance_but_not_go_below_under_reject(db: Database) -> None:
    number = data.new_collector(db)
    _adjust(db, _request(number, 50))
    refused = _refused(db, _request(number, -51, "CORRECTION"), settings=REJECT)
    assert (refused.code, refused.field) == ("INSUFFICIENT_BALANCE", "miles")
    assert data.balance(db, number) == 50
    assert _adjust(db, _request(number, -50, "CORRECTION"), settings=REJECT).adjustment
    assert data.balance(db, number) == 0


def test_a_credit_is_never_refused_for_the_balance(db: Database) -> None:
    number = data.new_collector(db)
    _adjust(db, _request(number, -20, "CORRECTION"))  # allowed under the default policy
    assert data.balance(db, number) == -20
    made = _adjust(db, _request(number, 5), settings=REJECT).adjustment
    assert made.balance_after == -15


def test_unknown_collector_is_not_found(db: Database) -> None:
    refused = _refused(db, _request(data.unknown_collector(), 5))
    assert refused.code == "NOT_FOUND"


@pytest.mark.parametrize("status", ["ON_HOLD", "CLOSED"])
def test_an_inactive_collector_takes_only_fraud_and_correction(db: Database, status: str) -> None:
    number = data.new_collector(db, status)
    for reason in ("GOODWILL", "MIGRATION"):
        refused = _refused(db, _request(number, 5, reason))
        assert (refused.code, refused.field) == ("ADJUSTMENT_COLLECTOR_INACTIVE", "reason")
    assert _adjust(db, _request(number, -5, "FRAUD")).adjustment.balance_after == -5
    assert _adjust(db, _request(number, 5, "CORRECTION")).adjustment.balance_after == 0


@pytest.mark.parametrize(
    ("miles", "reason", "note", "field"),
    [
        (0, "GOODWILL", "n", "miles"),
        (limits.adjustment_miles_max + 1, "GOODWILL", "n", "miles"),
        (-limits.adjustment_miles_max - 1, "GOODWILL", "n", "miles"),
        (True, "GOODWILL", "n", "miles"),
        (5, "goodwill", "n", "reason"),
        (5, "BONUS", "n", "reason"),
        (5, "GOODWILL", "", "note"),
        (5, "GOODWILL", "   ", "note"),
        (5, "GOODWILL", "x" * (limits.adjustment_note_chars_max + 1), "note"),
    ],
)
def test_a_malformed_request_is_refused_with_its_field(
    db: Database, miles: int, reason: str, note: str, field: str
) -> None:
    number = data.new_collector(db)
    refused = _refused(db, AdjustmentRequest(number, miles, reason, note, "k"))
    assert (refused.code, refused.field) == ("FIELD_INVALID", field)
    assert data.balance(db, number) == 0


def test_the_largest_amount_and_note_are_taken(db: Database) -> None:
    number = data.new_collector(db)
    note = "x" * limits.adjustment_note_chars_max
    made = _adjust(db, _request(number, limits.adjustment_miles_max, "MIGRATION", note)).adjustment
    assert (made.miles, made.note) == (limits.adjustment_miles_max, note)


def test_list_adjustments_pages_by_keyset_and_filters(db: Database) -> None:
    number = data.new_collector(db)
    actor = f"lister-{uuid.uuid4().hex}@example.com"
    made = [_adjust(db, _request(number, i + 1), actor=actor).adjustment for i in range(5)]
    seen = []
    after = None
    with db.reader() as session:
        while True:
            page = adjustments.list_adjustments(session, None, None, actor, after, 2)
            seen += page
            if len(page) < 2:
                break
            after = (page[-1].created_at, page[-1].id)
    assert sorted(a.id for a in seen) == sorted(a.id for a in made)
    assert [(a.created_at, a.id) for a in seen] == sorted((a.created_at, a.id) for a in seen)
    with db.reader() as session:
        later = adjustments.list_adjustments(session, data.now(), None, actor, None, 10)
    assert later == []


# --------------------------------------------------------------------------- verify


@pytest.fixture
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    database.dispose()


def _verify(db: Database) -> VerifyReport:
    with db.snapshot_reader() as session:
        return verify(session)


def _books(db: Database) -> tuple[str, str]:
    number = data.new_collector(db)
    _adjust(db, _request(number, 40))
    made = _adjust(db, _request(number, -15, "CORRECTION")).adjustment
    report = _verify(db)
    assert report.problems == []
    assert (report.entries, report.total_miles) == (4, 0)
    return number, made.id


def test_verify_detects_a_tampered_collector_entry_of_an_adjustment(own_db: Database) -> None:
    number, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == "collector")
            .values(amount_miles=-16)
        )
        session.execute(
            update(Collector).where(Collector.number == number).values(balance_miles=24)
        )
    problems = _verify(own_db).problems
    assert "all entries sum to -1, not 0" in problems
    assert (
        f"adjustment {ident}: collector entry does not match the adjustment's account or miles"
        in problems
    )


def test_verify_detects_a_pair_rewritten_together(own_db: Database) -> None:
    """Both entries and the balance moved alike still disagree with the adjustment's miles."""
    number, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        for kind, amount in (("collector", -150), ("program", 150)):
            session.execute(
                update(LedgerEntry)
                .where(LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == kind)
                .values(amount_miles=amount)
            )
        session.execute(
            update(Collector).where(Collector.number == number).values(balance_miles=-110)
        )
    problems = _verify(own_db).problems
    assert problems == [
        f"adjustment {ident}: collector entry does not match the adjustment's account or miles",
        f"adjustment {ident}: program entry does not match the adjustment's account or miles",
    ]


def test_verify_detects_a_collector_entry_moved_to_another_collector(own_db: Database) -> None:
    number, ident = _books(own_db)
    other = data.new_collector(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == "collector")
            .values(account_code=other)
        )
        for n, b in ((number, 40), (other, -15)):
            session.execute(update(Collector).where(Collector.number == n).values(balance_miles=b))
    assert _verify(own_db).problems == [
        f"adjustment {ident}: collector entry does not match the adjustment's account or miles"
    ]


def test_verify_detects_a_third_entry_on_an_adjustment(own_db: Database) -> None:
    """A sponsor entry added to a balanced pair (and its sum kept zero): three entries."""
    _, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            insert(LedgerEntry).values(
                adjustment_id=ident,
                account_kind="sponsor",
                account_code="ANY",
                amount_miles=0,
                posted_at=data.now(),
            )
        )
    assert _verify(own_db).problems == [
        f"adjustment {ident}: sponsor entry does not match the adjustment's account or miles",
        f"adjustment {ident}: not one collector entry and one program entry",
    ]


def test_verify_detects_a_program_entry_on_another_account(own_db: Database) -> None:
    _, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == "program")
            .values(account_code="ELSEWHERE")
        )
    assert _verify(own_db).problems == [
        f"adjustment {ident}: program entry does not match the adjustment's account or miles"
    ]


def test_verify_detects_a_missing_and_an_extra_entry(own_db: Database) -> None:
    _, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            delete(LedgerEntry).where(
                LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == "program"
            )
        )
    problems = _verify(own_db).problems
    assert "all entries sum to -15, not 0" in problems
    assert f"adjustment {ident}: not one collector entry and one program entry" in problems
    with own_db.unit_of_work() as session:
        for kind, code in (("program", "ADJUSTMENTS"), ("program", "ADJUSTMENTS")):
            session.execute(
                insert(LedgerEntry).values(
                    adjustment_id=ident,
                    account_kind=kind,
                    account_code=code,
                    amount_miles=15,
                    posted_at=data.now(),
                )
            )
    problems = _verify(own_db).problems
    assert f"adjustment {ident}: not one collector entry and one program entry" in problems


def test_verify_detects_an_adjustment_without_entries(own_db: Database) -> None:
    number = data.new_collector(own_db)
    ident = str(uuid.uuid4())
    with own_db.unit_of_work() as session:
        session.execute(
            insert(Adjustment).values(
                id=ident,
                collector_number=number,
                miles=5,
                reason="GOODWILL",
                note="n",
                operator="t",
                idempotency_key=ident,
                fingerprint="0" * 64,
                balance_after=5,
                created_at=data.now(),
            )
        )
    assert _verify(own_db).problems == [
        f"adjustment {ident}: not one collector entry and one program entry"
    ]


def test_verify_detects_an_entry_of_an_unknown_kind_on_an_adjustment(own_db: Database) -> None:
    _, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == "program")
            .values(account_kind="sponsor")
        )
    problems = _verify(own_db).problems
    assert (
        f"adjustment {ident}: sponsor entry does not match the adjustment's account or miles"
        in problems
    )
    assert f"adjustment {ident}: not one collector entry and one program entry" in problems


def test_an_entry_names_exactly_one_of_a_line_and_an_adjustment(own_db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    _books(own_db)
    with pytest.raises(IntegrityError), own_db.unit_of_work() as session:
        session.execute(
            insert(LedgerEntry).values(
                account_kind="program",
                account_code="ADJUSTMENTS",
                amount_miles=1,
                posted_at=data.now(),
            )
        )
    assert _verify(own_db).ok


def test_the_same_key_sent_twice_at_once_makes_one_adjustment(db: Database) -> None:
    """Two units of work with one key: the collector's lock orders them; on PostgreSQL the
    second, which looked the key up before the first committed, loses the unique index and runs
    again (`run_in_unit_of_work`), then replays the first."""
    from concurrent.futures import ThreadPoolExecutor

    number = data.new_collector(db)
    request = _request(number, 9, key="race-" + uuid.uuid4().hex)

    def send(session: object, attempt: int) -> adjustments.AdjustmentOutcome:
        return adjustments.adjust(
            session,  # type: ignore[arg-type]
            request,
            actor=Actor("racer@example.com"),
            role=OperatorRole.AGENT,
            settings=ALLOW,
            now=data.now(),
        )

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: db.run_in_unit_of_work(send), range(2)))
    assert sorted(o.replayed for o in outcomes) == [False, True]
    assert outcomes[0].adjustment == outcomes[1].adjustment
    assert data.balance(db, number) == 9
    assert len(_audit(db, number)) == 1


def _insert_adjustment(session: object, ident: str, number: str, miles: int) -> None:
    session.execute(  # type: ignore[attr-defined]
        insert(Adjustment).values(
            id=ident,
            collector_number=number,
            miles=miles,
            reason="GOODWILL",
            note="n",
            operator="t",
            idempotency_key=ident,
            fingerprint="0" * 64,
            balance_after=0,
            created_at=data.now(),
        )
    )


def test_verify_lists_the_first_wrong_adjustment_entries_in_entry_order(
    own_db: Database,
) -> None:
    """More wrong entries than are shown: the first ones written, in the order written, however
    the adjustments' ids sort (here the reverse of it)."""
    number = data.new_collector(own_db)
    shown = limits.verify_problems_shown_max
    idents = [f"{999 - i:03d}-adjustment" for i in range(shown + 2)]  # descending ids
    with own_db.unit_of_work() as session:
        for ident in idents:
            _insert_adjustment(session, ident, number, 3)
            for kind, code, amount in (("collector", number, 3), ("program", "ELSEWHERE", -3)):
                session.execute(
                    insert(LedgerEntry).values(
                        adjustment_id=ident,
                        account_kind=kind,
                        account_code=code,
                        amount_miles=amount,
                        posted_at=data.now(),
                    )
                )
    wrong = [p for p in _verify(own_db).problems if p.endswith("account or miles")]
    assert wrong == [
        f"adjustment {ident}: program entry does not match the adjustment's account or miles"
        for ident in idents[:shown]
    ]


def test_verify_lists_the_first_lopsided_adjustments_in_id_order(own_db: Database) -> None:
    number = data.new_collector(own_db)
    shown = limits.verify_problems_shown_max
    idents = [f"{999 - i:03d}-adjustment" for i in range(shown + 2)]  # written in reverse order
    with own_db.unit_of_work() as session:
        for ident in idents:
            _insert_adjustment(session, ident, number, 3)
    lopsided = [p for p in _verify(own_db).problems if p.endswith("one program entry")]
    assert lopsided == [
        f"adjustment {ident}: not one collector entry and one program entry"
        for ident in sorted(idents)[:shown]
    ]


def test_verify_detects_an_entry_naming_an_adjustment_that_does_not_exist(
    own_db: Database,
) -> None:
    """The foreign key forbids it; a database edited without it (SQLite's own shell keeps foreign
    keys off, a PostgreSQL restore may drop them) can still hold one, and verify says so."""
    _books(own_db)
    with own_db.engine.connect() as conn:
        raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, or it is ignored
        else:
            (name,) = [
                fk["name"]
                for fk in inspect(conn).get_foreign_keys("ledger_entries")
                if fk["referred_table"] == "adjustments"
            ]
            conn.exec_driver_sql(f'ALTER TABLE ledger_entries DROP CONSTRAINT "{name}"')
        conn.execute(
            insert(LedgerEntry).values(
                adjustment_id="ghost",
                account_kind="program",
                account_code="ADJUSTMENTS",
                amount_miles=0,
                posted_at=data.now(),
            )
        )
        conn.commit()
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
    assert _verify(own_db).problems == [
        "adjustment ghost: program entry does not match the adjustment's account or miles"
    ]


def test_verify_detects_an_adjustment_whose_collector_entry_became_another_kind(
    own_db: Database,
) -> None:
    """Its pair is then one program entry and one of another kind: no collector entry."""
    _, ident = _books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.adjustment_id == ident, LedgerEntry.account_kind == "collector")
            .values(account_kind="sponsor")
        )
    problems = [p for p in _verify(own_db).problems if p.startswith("adjustment ")]
    assert problems == [
        f"adjustment {ident}: sponsor entry does not match the adjustment's account or miles",
        f"adjustment {ident}: not one collector entry and one program entry",
    ]
