"""The operators service on the real database, both dialects: accounts and the audit log, admin
tokens, sessions and their timeouts, and the throttling of failed sign-ins — each at instants
the test chooses."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import (
    AdminToken,
    Operator,
    OperatorAuditEntry,
    OperatorSession,
    SignInFailures,
)
from rewardmiles.operators import credentials, passwords, repository, service
from rewardmiles.operators.service import (
    AdminTokenError,
    OperatorAccountError,
    SessionPolicy,
    SignInPolicy,
)
from rewardmiles.settlement.worker import Worker
from rewardmiles.vocabulary import OperatorRole, OperatorStatus
from tests.conftest import DatabaseFactory
from tests.support.operators import (
    COST,
    TEST_ACTOR,
    new_email,
    new_operator,
    new_session,
    new_token,
)

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
SESSIONS = SessionPolicy(timedelta(minutes=30), timedelta(hours=12))
THROTTLE = SignInPolicy(
    failures_allowed=3,
    address_failures_allowed=6,
    account_failures_alarm=8,
    lockout_max_seconds=60,
    cost=COST,
)


def _audit(
    db: Database, entity_id: str
) -> list[tuple[str, str, str | None, str | None, str | None]]:
    with db.reader() as session:
        rows = session.execute(
            select(
                OperatorAuditEntry.actor,
                OperatorAuditEntry.action,
                OperatorAuditEntry.before_json,
                OperatorAuditEntry.after_json,
                OperatorAuditEntry.note,
            )
            .where(OperatorAuditEntry.entity_id == entity_id)
            .order_by(OperatorAuditEntry.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _sessions_of(db: Database, operator_id: str) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(OperatorSession)
                .where(OperatorSession.operator_id == operator_id)
            ).scalar_one()
        )


# --------------------------------------------------------------------------- accounts


def test_an_added_operator_is_audited_without_its_password(db: Database) -> None:
    email = new_email("Ana")
    login = new_operator(db, OperatorRole.ADMIN, email=email, now=T0)
    with db.reader() as session:
        stored = repository.operator_by_email(session, email.upper())
    assert stored is not None
    assert stored.id == login.id
    assert stored.email == email  # kept as given; found whatever the case
    assert stored.password_hash.startswith("$argon2id$")
    assert login.password not in stored.password_hash
    [(actor, action, before, after, note)] = _audit(db, login.id)
    assert (actor, action, before, note) == ("tests@suite", "operator.add", None, None)
    assert json.loads(after or "") == {
        "email": email,
        "displayName": email.split("@")[0],
        "role": "admin",
        "status": "active",
    }


def test_an_email_is_taken_whatever_its_case_by_the_service_and_by_the_database(
    db: Database,
) -> None:
    email = new_email()
    new_operator(db, email=email, now=T0)
    with pytest.raises(OperatorAccountError, match="exists already"):
        new_operator(db, email=email.upper(), now=T0)
    with pytest.raises(IntegrityError), db.unit_of_work() as session:
        session.execute(
            insert(Operator).values(
                id=secrets.token_hex(16),
                email=email.swapcase(),
                display_name="x",
                role="viewer",
                status="active",
                password_hash="x",
                created_at=T0,
            )
        )


@pytest.mark.parametrize(
    "email",
    ["", "no-at-sign", "a@b", "a b@example.com", "é@example.com", "a@-x.com", "x" * 250 + "@e.co"],
)
def test_a_malformed_email_is_refused(db: Database, email: str) -> None:
    with pytest.raises(OperatorAccountError, match="not an e-mail address"):
        new_operator(db, email=email, now=T0)


def test_disabling_ends_every_session_and_is_audited_once(db: Database) -> None:
    login = new_operator(db, now=T0)
    new_session(db, login.email, T0)
    new_session(db, login.email, T0 + timedelta(minutes=1))
    assert _sessions_of(db, login.id) == 2
    with db.unit_of_work() as session:
        changed = service.set_status(
            session, login.email, OperatorStatus.DISABLED, T0 + timedelta(minutes=2), TEST_ACTOR
        )
    assert changed is not None
    view, ended = changed
    assert (view.status, ended) == (OperatorStatus.DISABLED, 2)
    assert _sessions_of(db, login.id) == 0
    with db.unit_of_work() as session:
        again = service.set_status(session, login.email, OperatorStatus.DISABLED, T0, TEST_ACTOR)
    assert again is None
    actions = [(a, b, c, n) for _, a, b, c, n in _audit(db, login.id)]
    assert actions[1:] == [
        ("operator.disable", '{"status":"active"}', '{"status":"disabled"}', "2 session(s) ended")
    ]


def test_a_role_change_and_a_password_reset_are_audited_and_the_reset_ends_sessions(
    db: Database,
) -> None:
    login = new_operator(db, now=T0)
    new_session(db, login.email, T0)
    with db.unit_of_work() as session:
        before, view = service.set_role(session, login.email, OperatorRole.AGENT, T0, TEST_ACTOR)
        same, _ = service.set_role(session, login.email, OperatorRole.AGENT, T0, TEST_ACTOR)
    assert (before, view.role, same) == (
        OperatorRole.VIEWER,
        OperatorRole.AGENT,
        OperatorRole.AGENT,
    )
    new_hash = passwords.hash_password("another long password", COST)
    with db.unit_of_work() as session:
        _, ended = service.reset_password(session, login.email, new_hash, T0, TEST_ACTOR)
    assert ended == 1
    assert _sessions_of(db, login.id) == 0
    with db.reader() as session:
        stored = repository.operator_by_email(session, login.email)
    assert stored is not None
    assert stored.password_hash == new_hash
    actions = [(a, b, c) for _, a, b, c, _ in _audit(db, login.id)]
    assert actions[1:] == [
        ("operator.set_role", '{"role":"viewer"}', '{"role":"agent"}'),
        ("operator.reset_password", None, None),
    ]
    with pytest.raises(OperatorAccountError, match="no operator"), db.unit_of_work() as session:
        service.set_role(session, new_email(), OperatorRole.ADMIN, T0, TEST_ACTOR)


def test_the_audit_log_refuses_updates_and_deletes(db: Database) -> None:
    login = new_operator(db, now=T0)
    for statement in (
        update(OperatorAuditEntry)
        .where(OperatorAuditEntry.entity_id == login.id)
        .values(actor="someone-else"),
        delete(OperatorAuditEntry).where(OperatorAuditEntry.entity_id == login.id),
    ):
        with pytest.raises(DBAPIError, match="append-only"), db.unit_of_work() as session:
            session.execute(statement)
    assert [a for a, *_ in _audit(db, login.id)] == ["tests@suite"]


# --------------------------------------------------------------------------- admin tokens


def test_a_token_is_stored_only_as_its_digest_and_judged_by_it(db: Database) -> None:
    new = new_token(db, OperatorRole.AGENT, now=T0)
    assert new.token.startswith("rma_")
    with db.reader() as session:
        stored_hash = session.execute(
            select(AdminToken.token_hash).where(AdminToken.id == new.view.id)
        ).scalar_one()
        found = service.find_token(session, new.token)
        assert service.find_token(session, new.token + "x") is None
    assert stored_hash == credentials.digest(new.token)
    assert new.token not in stored_hash
    verdict = service.judge_token(found, T0 + timedelta(days=1))
    assert verdict.caller is not None
    assert (verdict.caller.role, verdict.caller.actor) == (
        OperatorRole.AGENT,
        f"token:{new.view.name}",
    )
    assert verdict.touch  # never used yet
    with db.unit_of_work() as session:
        service.touch_token(session, new.view.id, T0 + timedelta(days=1))
    with db.reader() as session:
        used = service.find_token(session, new.token)
    assert not service.judge_token(used, T0 + timedelta(days=1, seconds=59)).touch
    assert service.judge_token(used, T0 + timedelta(days=1, seconds=60)).touch


def test_a_token_expires_at_its_instant(db: Database) -> None:
    new = new_token(db, now=T0, expires_days=1)
    with db.reader() as session:
        found = service.find_token(session, new.token)
    assert service.judge_token(found, T0 + timedelta(days=1, microseconds=-1)).caller is not None
    expired = service.judge_token(found, T0 + timedelta(days=1))
    assert expired.caller is None
    assert expired.expired


def test_a_token_is_revoked_by_name_or_id_once_and_its_name_is_free_again(db: Database) -> None:
    first = new_token(db, now=T0)
    name = first.view.name
    with pytest.raises(AdminTokenError, match="exists"):
        new_token(db, now=T0, name=name)
    with db.unit_of_work() as session:
        revoked = service.revoke_token(session, name, T0, TEST_ACTOR)
    assert revoked.id == first.view.id
    with db.reader() as session:
        verdict = service.judge_token(service.find_token(session, first.token), T0)
    assert verdict.caller is None
    assert not verdict.expired
    second = new_token(db, now=T0, name=name)  # the name of a revoked token may be reused
    with pytest.raises(AdminTokenError, match="revoked already"), db.unit_of_work() as session:
        service.revoke_token(session, first.view.id, T0, TEST_ACTOR)
    with db.unit_of_work() as session:
        assert service.revoke_token(session, second.view.id, T0, TEST_ACTOR).id == second.view.id
    with pytest.raises(AdminTokenError, match="no admin token"), db.unit_of_work() as session:
        service.revoke_token(session, name, T0, TEST_ACTOR)
    assert [action for _, action, *_ in _audit(db, first.view.id)] == [
        "admin_token.create",
        "admin_token.revoke",
    ]


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 65, "é"])
def test_a_bad_token_name_or_lifetime_is_refused(db: Database, name: str) -> None:
    with pytest.raises(AdminTokenError, match="token name"):
        new_token(db, now=T0, name=name)
    for days in (0, 3651):
        with pytest.raises(AdminTokenError, match="expires after"):
            new_token(db, now=T0, expires_days=days)


# --------------------------------------------------------------------------- sessions


def _judge(db: Database, cookie: str, now: datetime) -> service.Verdict:
    with db.reader() as session:
        return service.judge_session(service.find_session(session, cookie), now, SESSIONS)


def test_a_session_idles_out_after_30_minutes_without_a_request(db: Database) -> None:
    login = new_operator(db, now=T0)
    signed = new_session(db, login.email, T0)
    alive = _judge(db, signed.cookie, T0 + timedelta(minutes=30, microseconds=-1))
    assert alive.caller is not None
    assert alive.caller.email == login.email
    assert alive.caller.csrf_token == signed.csrf_token
    assert alive.touch
    ended = _judge(db, signed.cookie, T0 + timedelta(minutes=30))
    assert ended.caller is None
    assert ended.expired


def test_each_request_moves_the_idle_timeout_but_not_the_absolute_one(db: Database) -> None:
    login = new_operator(db, now=T0)
    signed = new_session(db, login.email, T0)
    moment = T0
    while moment + timedelta(minutes=29) < T0 + timedelta(hours=12):
        moment += timedelta(minutes=29)
        verdict = _judge(db, signed.cookie, moment)
        assert verdict.caller is not None, moment
        with db.unit_of_work() as session:
            service.touch_session(session, signed.id, moment)
    assert _judge(db, signed.cookie, T0 + timedelta(hours=12, microseconds=-1)).caller is not None
    assert _judge(db, signed.cookie, T0 + timedelta(hours=12)).expired


def test_every_sign_in_is_a_new_session_and_the_browsers_old_one_ends(db: Database) -> None:
    login = new_operator(db, now=T0)
    first = new_session(db, login.email, T0)
    second = new_session(db, login.email, T0)
    assert first.cookie != second.cookie
    assert first.id != second.id
    with db.unit_of_work() as session:
        stored = repository.operator_by_email(session, login.email)
        assert stored is not None
        third = service.start_session(
            session, stored, "127.0.0.1", T0, SESSIONS, replaces=second.cookie
        )
    assert third is not None
    assert _judge(db, second.cookie, T0).caller is None  # replaced
    assert _judge(db, first.cookie, T0).caller is not None  # another browser's
    assert _judge(db, third.cookie_value, T0).caller is not None


def test_a_sign_in_clears_the_operators_ended_sessions(db: Database) -> None:
    login = new_operator(db, now=T0)
    new_session(db, login.email, T0)
    new_session(db, login.email, T0 + timedelta(minutes=20))
    new_session(db, login.email, T0 + timedelta(minutes=45))
    assert _sessions_of(db, login.id) == 2  # the first idled out at 30 min, cleared at 45


def test_a_session_is_not_started_when_the_operator_changed_during_the_check(
    db: Database,
) -> None:
    login = new_operator(db, now=T0)
    with db.reader() as session:
        checked = repository.operator_by_email(session, login.email)
    assert checked is not None
    new_hash = passwords.hash_password("a freshly reset password", COST)
    with db.unit_of_work() as session:
        service.reset_password(session, login.email, new_hash, T0, TEST_ACTOR)
        assert service.start_session(session, checked, "127.0.0.1", T0, SESSIONS) is None
    with db.reader() as session:
        current = repository.operator_by_email(session, login.email)
    assert current is not None
    with db.unit_of_work() as session:
        service.set_status(session, login.email, OperatorStatus.DISABLED, T0, TEST_ACTOR)
        assert service.start_session(session, current, "127.0.0.1", T0, SESSIONS) is None
    assert _sessions_of(db, login.id) == 0


def test_a_disabled_operators_session_is_refused_even_if_its_row_remained(db: Database) -> None:
    login = new_operator(db, now=T0)
    signed = new_session(db, login.email, T0)
    with db.unit_of_work() as session:
        session.execute(update(Operator).where(Operator.id == login.id).values(status="disabled"))
    verdict = _judge(db, signed.cookie, T0)
    assert verdict.caller is None
    assert not verdict.expired


# --------------------------------------------------------------------------- sign-in


def _check(db: Database, email: str, address: str, now: datetime) -> service.SignInCheck:
    with db.reader() as session:
        return service.sign_in_check(session, email, address, now, THROTTLE)


def _fail(db: Database, email: str, address: str, now: datetime, times: int = 1) -> None:
    for _ in range(times):
        with db.unit_of_work() as session:
            service.record_failed_sign_in(session, email, address, now, THROTTLE)


def _address() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}:{secrets.token_hex(3)}"


def test_the_password_check_accepts_only_the_right_password_of_an_active_operator(
    db: Database,
) -> None:
    login = new_operator(db, now=T0)
    check = _check(db, login.email.upper(), _address(), T0)
    assert check.operator is not None
    assert check.retry_after_seconds == 0
    assert service.check_password(check, login.password, COST) == (True, None)
    assert service.check_password(check, login.password + "x", COST) == (False, None)
    unknown = _check(db, new_email(), _address(), T0)
    assert unknown.operator is None
    assert service.check_password(unknown, login.password, COST) == (False, None)
    with db.unit_of_work() as session:
        service.set_status(session, login.email, OperatorStatus.DISABLED, T0, TEST_ACTOR)
    disabled = _check(db, login.email, _address(), T0)
    assert service.check_password(disabled, login.password, COST) == (False, None)


def test_a_hash_made_with_other_parameters_is_replaced_at_sign_in(db: Database) -> None:
    login = new_operator(db, now=T0)
    check = _check(db, login.email, _address(), T0)
    stronger = passwords.HashCost(time_cost=2, memory_kib=2048)
    matched, rehash = service.check_password(check, login.password, stronger)
    assert matched
    assert rehash is not None
    assert "m=2048,t=2" in rehash
    assert check.operator is not None
    with db.unit_of_work() as session:
        service.start_session(session, check.operator, "x", T0, SESSIONS, rehash=rehash)
    with db.reader() as session:
        stored = repository.operator_by_email(session, login.email)
    assert stored is not None
    assert stored.password_hash == rehash
    assert stored.last_sign_in_at == T0


def test_an_account_and_address_pair_is_locked_out_after_its_failures_doubling_to_the_cap(
    db: Database,
) -> None:
    login = new_operator(db, now=T0)
    address = _address()
    _fail(db, login.email, address, T0, times=2)
    assert _check(db, login.email, address, T0).retry_after_seconds == 0
    _fail(db, login.email, address, T0)  # the third: allowed 3, then 2 s
    assert _check(db, login.email, address, T0).retry_after_seconds == 2
    assert _check(db, login.email, address, T0 + timedelta(seconds=2)).retry_after_seconds == 0
    # The same address for another account is not locked out (its own count is 3 of 6).
    assert _check(db, new_email(), address, T0).retry_after_seconds == 0
    waits = []
    for _ in range(6):
        _fail(db, login.email, address, T0)
        waits.append(_check(db, login.email, address, T0).retry_after_seconds)
    assert waits == [4, 8, 16, 32, 60, 60]
    # The account from another address is not locked out.
    assert _check(db, login.email, _address(), T0).retry_after_seconds == 0


def test_failures_are_forgotten_an_hour_after_the_last_one(db: Database) -> None:
    kept, forgotten = new_email(), new_email()
    here, there = _address(), _address()  # apart, so that no other count is shared
    _fail(db, kept, here, T0, times=3)
    _fail(db, forgotten, there, T0, times=3)
    memory = THROTTLE.memory
    assert memory == timedelta(hours=1)
    _fail(db, kept, here, T0 + memory)  # the fourth: twice the first wait
    assert _check(db, kept, here, T0 + memory).retry_after_seconds == 4
    after = T0 + memory + timedelta(microseconds=1)
    _fail(db, forgotten, there, after)  # the first again
    assert _check(db, forgotten, there, after).retry_after_seconds == 0
    pair = service.failure_keys(forgotten, there)[0]
    with db.reader() as session:
        assert repository.failure_counts(session, [pair], since=T0)[pair].failures == 1


def test_an_address_is_locked_out_after_failures_on_any_accounts(db: Database) -> None:
    address = _address()
    for _ in range(6):
        _fail(db, new_email(), address, T0)
    login = new_operator(db, now=T0)
    assert _check(db, login.email, address, T0).retry_after_seconds == 2
    assert _check(db, login.email, _address(), T0).retry_after_seconds == 0


def test_an_account_under_attack_gives_each_failing_address_one_try_and_others_all(
    db: Database,
) -> None:
    login = new_operator(db, now=T0)
    for _ in range(8):  # the alarm: 8 failures, each from an address of its own
        _fail(db, login.email, _address(), T0)
    guesser = _address()
    assert _check(db, login.email, guesser, T0).retry_after_seconds == 0
    _fail(db, login.email, guesser, T0)
    assert _check(db, login.email, guesser, T0).retry_after_seconds == 2
    # The operator, from an address that has not failed, is not locked out.
    assert _check(db, login.email, _address(), T0).retry_after_seconds == 0


def test_a_success_forgets_the_pairs_failures_but_not_the_addresss(db: Database) -> None:
    login = new_operator(db, now=T0)
    address = _address()
    _fail(db, login.email, address, T0, times=2)
    _fail(db, new_email(), address, T0, times=3)
    check = _check(db, login.email, address, T0)
    assert check.operator is not None
    with db.unit_of_work() as session:
        service.start_session(session, check.operator, address, T0, SESSIONS)
    pair, address_key, _ = service.failure_keys(login.email, address)
    with db.reader() as session:
        counts = repository.failure_counts(session, [pair, address_key], since=T0)
    assert pair not in counts
    assert counts[address_key].failures == 5


def test_failure_counts_keep_no_email_in_clear(db: Database) -> None:
    email = "nul\x00and-a-password-typed-here@example.com"
    _fail(db, email, "192.0.2.1", T0)
    with db.reader() as session:
        keys = session.execute(
            select(SignInFailures.key).where(SignInFailures.last_failure_at == T0)
        ).scalars()
        assert not any("password" in key for key in keys)


def test_the_last_active_admin_is_neither_disabled_nor_demoted(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    """Counted over the whole database: a database of its own."""
    own = Database.from_url(database_factory.create(dialect))
    try:
        first = new_operator(own, OperatorRole.ADMIN, now=T0)
        viewer = new_operator(own, OperatorRole.VIEWER, now=T0)
        with (
            own.unit_of_work() as session,
            pytest.raises(service.OperatorAccountError, match="last active admin"),
        ):
            service.set_status(session, first.email, OperatorStatus.DISABLED, T0, TEST_ACTOR)
        with (
            own.unit_of_work() as session,
            pytest.raises(service.OperatorAccountError, match="last active admin"),
        ):
            service.set_role(session, first.email, OperatorRole.AGENT, T0, TEST_ACTOR)
        # Another operator's changes are not held back, nor an admin's role kept as admin.
        with own.unit_of_work() as session:
            service.set_status(session, viewer.email, OperatorStatus.DISABLED, T0, TEST_ACTOR)
            service.set_role(session, first.email, OperatorRole.ADMIN, T0, TEST_ACTOR)
        second = new_operator(own, OperatorRole.ADMIN, now=T0)
        with own.unit_of_work() as session:
            service.set_status(session, first.email, OperatorStatus.DISABLED, T0, TEST_ACTOR)
        with (
            own.unit_of_work() as session,
            pytest.raises(service.OperatorAccountError, match="last active admin"),
        ):
            service.set_role(session, second.email, OperatorRole.VIEWER, T0, TEST_ACTOR)
        # A disabled admin does not count; enabled again, it does.
        with own.unit_of_work() as session:
            service.set_status(session, first.email, OperatorStatus.ACTIVE, T0, TEST_ACTOR)
            service.set_role(session, second.email, OperatorRole.VIEWER, T0, TEST_ACTOR)
        with own.reader() as session:
            roles = {v.email: (v.role, v.status) for v in service.list_operators(session)}
        assert roles[second.email] == (OperatorRole.VIEWER, OperatorStatus.ACTIVE)
        assert roles[first.email] == (OperatorRole.ADMIN, OperatorStatus.ACTIVE)
    finally:
        own.dispose()


def test_the_worker_purges_sessions_the_timeouts_ended_and_forgotten_failures(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    """Every operator's sessions, in a database of its own: the purge is database-wide."""
    own = Database.from_url(database_factory.create(dialect))
    settings = Settings()  # 30 min idle, 12 h absolute, failures remembered an hour
    try:
        login = new_operator(own, now=T0)
        other = new_operator(own, now=T0)
        idle = new_session(own, login.email, T0)  # idles out at T0 + 30 min
        old = new_session(own, other.email, T0 - timedelta(hours=11))  # ends at T0 + 1 h
        fresh = new_session(own, login.email, T0 + timedelta(minutes=5))
        with own.unit_of_work() as session:
            service.touch_session(session, old.id, T0 + timedelta(minutes=30))
            service.record_failed_sign_in(
                session, login.email, "10.0.0.9", T0, service.SignInPolicy.of(settings)
            )

        def purge(at: datetime) -> int:
            return Worker(own, settings, now=lambda: at).purge_operator_sessions()

        def failures() -> int:
            with own.reader() as session:
                return int(session.scalar(select(func.count()).select_from(SignInFailures)) or 0)

        now = T0 + timedelta(minutes=31)
        assert purge(now) == 1  # the idle one only
        assert _sessions_of(own, login.id) == 1
        assert _judge(own, idle.cookie, now).caller is None
        assert _judge(own, fresh.cookie, now).caller is not None
        assert _judge(own, old.cookie, now).caller is not None
        assert failures() == 3  # account and address, address, account
        later = T0 + timedelta(hours=1, minutes=1)
        assert purge(later) == 2  # the old one by its absolute timeout, the fresh one idle
        assert failures() == 0
        assert purge(later) == 0
    finally:
        own.dispose()
