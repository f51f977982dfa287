"""The revocation set of an API process (`auth.revocation.ClientWatch`) over a real database: a
revoked client's tokens are refused (cached ones too), others are not; the database is read by
the watch's passes only, never by a verification; the refresh interval is honoured; the last
token times are written by the passes and never moved back. And the secrets: a rotated one signs
in during its grace period only, a revoked client's not at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select

from rewardmiles.auth import service
from rewardmiles.auth.keys import KeyRing
from rewardmiles.auth.revocation import ClientWatch
from rewardmiles.auth.tokens import TokenService
from rewardmiles.db.engine import Database
from rewardmiles.db.models import PartnerClient
from rewardmiles.errors import ProblemError
from tests.conftest import TEST_BOX, DatabaseFactory
from tests.support import data
from tests.support.operators import TEST_ACTOR

COST = 10


@pytest.fixture(scope="module")
def watch_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    db = Database.from_url(database_factory.create(dialect))
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def tokens(watch_db: Database) -> TokenService:
    ring = KeyRing(watch_db, TEST_BOX)
    ring.ensure_key(datetime.now(UTC))
    return TokenService(ring, issuer="rewardmiles", audience="rm", lifetime_seconds=3600)


def _client(db: Database) -> tuple[str, str]:
    return data.new_client(db, [data.new_sponsor(db)])


def _revoke(db: Database, client_id: str) -> None:
    with db.unit_of_work() as session:
        service.revoke_client(session, client_id, datetime.now(UTC), TEST_ACTOR)


def _token(tokens: TokenService, client_id: str) -> str:
    return tokens.issue(client_id, ["X"], datetime.now(UTC)).access_token


def _refused_code(tokens: TokenService, token: str) -> str | None:
    try:
        tokens.verify(token, datetime.now(UTC))
    except ProblemError as exc:
        return exc.code
    return None


def test_a_revoked_client_is_refused_after_a_pass_and_others_are_not(
    watch_db: Database, tokens: TokenService
) -> None:
    watch = ClientWatch(watch_db, tokens, interval_seconds=60)
    revoked, _ = _client(watch_db)
    kept, _ = _client(watch_db)
    revoked_token, kept_token = _token(tokens, revoked), _token(tokens, kept)
    assert _refused_code(tokens, revoked_token) is None  # now in the verified-token cache
    _revoke(watch_db, revoked)
    # Verification reads nothing: until the watch's pass, the process does not know.
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(watch_db.engine, "before_cursor_execute", record)
    try:
        assert _refused_code(tokens, revoked_token) is None
        assert statements == []
        watch.refresh()
        assert statements  # the pass read the database
        statements.clear()
        assert _refused_code(tokens, revoked_token) == "TOKEN_REVOKED"  # the cached one
        assert _refused_code(tokens, _token(tokens, revoked)) == "TOKEN_REVOKED"  # a fresh one
        assert _refused_code(tokens, kept_token) is None
        assert statements == []
    finally:
        event.remove(watch_db.engine, "before_cursor_execute", record)


def test_the_revoking_process_refuses_at_once_even_if_a_pass_read_before_the_commit(
    watch_db: Database, tokens: TokenService
) -> None:
    watch = ClientWatch(watch_db, tokens, interval_seconds=60)
    client_id, _ = _client(watch_db)
    token = _token(tokens, client_id)
    watch.revoked_here(client_id)  # as the admin route does after its commit
    assert _refused_code(tokens, token) == "TOKEN_REVOKED"
    watch.refresh()  # the database does not say so (never committed here): still refused
    assert _refused_code(tokens, token) == "TOKEN_REVOKED"


def test_the_thread_refreshes_at_its_interval(watch_db: Database, tokens: TokenService) -> None:
    interval = 0.25
    watch = ClientWatch(watch_db, tokens, interval_seconds=interval)
    client_id, _ = _client(watch_db)
    token = _token(tokens, client_id)
    watch.start()
    try:
        time.sleep(interval * 0.5)
        assert watch.refreshes == 0  # not before the interval
        _revoke(watch_db, client_id)
        started = time.monotonic()
        while _refused_code(tokens, token) != "TOKEN_REVOKED":
            assert time.monotonic() - started < interval * 4, "not refused within the interval"
            time.sleep(0.02)
        time.sleep(interval * 8)
        assert 6 <= watch.refreshes <= 12, watch.refreshes
    finally:
        watch.stop()
    done = watch.refreshes
    time.sleep(interval * 2)
    assert watch.refreshes == done  # stopped


def _last_token_at(db: Database, client_id: str) -> datetime | None:
    with db.reader() as session:
        return session.scalar(
            select(PartnerClient.last_token_at).where(PartnerClient.client_id == client_id)
        )


def test_the_last_token_times_are_written_by_the_pass_and_never_moved_back(
    watch_db: Database, tokens: TokenService
) -> None:
    watch = ClientWatch(watch_db, tokens, interval_seconds=60)
    client_id, _ = _client(watch_db)
    later = datetime.now(UTC).replace(microsecond=0)
    watch.note_issued(client_id, later)
    assert _last_token_at(watch_db, client_id) is None  # not written by the sign-in itself
    watch.refresh()
    assert _last_token_at(watch_db, client_id) == later
    watch.note_issued(client_id, later - timedelta(seconds=5))  # another process's older one
    watch.refresh()
    assert _last_token_at(watch_db, client_id) == later


def test_a_rotated_secret_signs_in_during_its_grace_only(watch_db: Database) -> None:
    client_id, old = _client(watch_db)
    now = datetime.now(UTC)
    new = service.new_secret(secret_hash_cost=COST)
    with watch_db.unit_of_work() as session:
        service.rotate_client(session, client_id, new, now, timedelta(hours=24), TEST_ACTOR)
    with watch_db.reader() as session:
        stored = service.load_client(session, client_id)

    def signs_in(secret: str, at: datetime) -> bool:
        return service.check_secret(stored, secret, secret_hash_cost=COST, now=at) is not None

    assert signs_in(new.secret, now)
    assert signs_in(old, now + timedelta(hours=23))
    assert not signs_in(old, now + timedelta(hours=24))
    assert signs_in(new.secret, now + timedelta(hours=25))
    assert not signs_in("wrong", now)
    _revoke(watch_db, client_id)
    with watch_db.reader() as session:
        stored = service.load_client(session, client_id)
    assert not signs_in(new.secret, now)
    assert not signs_in(old, now)
