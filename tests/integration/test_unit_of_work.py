"""`Database.run_in_unit_of_work`, what the boundary runs a partner call in: each attempt in a unit
of work of its own, committed when it returns; a unique-constraint violation (the loser of a race
to insert the same key) rolls the attempt back and runs the work again, up to
`INTEGRITY_ATTEMPTS`; any other exception ends it at once.

On a database of this module's own, with real unique violations (a sponsor code inserted twice).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rewardmiles.db.engine import INTEGRITY_ATTEMPTS, Database
from rewardmiles.db.models import Sponsor
from tests.conftest import DatabaseFactory

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    database.dispose()


def _code() -> str:
    return "U" + secrets.token_hex(4).upper()


def _add(session: Session, code: str) -> None:
    session.add(Sponsor(code=code, name=code, active=True, created_at=NOW))
    session.flush()


def _stored(db: Database, codes: list[str]) -> list[str]:
    with db.reader() as session:
        return sorted(session.scalars(select(Sponsor.code).where(Sponsor.code.in_(codes))))


class Racing:
    """Work that loses a unique-constraint race on its first `losses` attempts: each attempt
    inserts a sponsor of its own, then (while losing) one whose code another unit of work took."""

    def __init__(self, db: Database, losses: int) -> None:
        self.taken = _code()
        with db.unit_of_work() as session:
            _add(session, self.taken)
        self.losses = losses
        self.attempts: list[int] = []
        self.codes: list[str] = []

    def __call__(self, session: Session, attempt: int, answer: str, *, suffix: str) -> str:
        self.attempts.append(attempt)
        code = _code()
        self.codes.append(code)
        _add(session, code)
        if len(self.attempts) <= self.losses:
            _add(session, self.taken)
        return answer + suffix


def test_work_that_wins_at_once_runs_once_and_commits(own_db: Database) -> None:
    work = Racing(own_db, losses=0)

    answer = own_db.run_in_unit_of_work(work, "an", suffix="swer")

    assert answer == "answer"
    assert work.attempts == [1]
    assert _stored(own_db, work.codes) == work.codes


def test_a_lost_race_is_rolled_back_and_run_again_until_the_last_attempt(
    own_db: Database,
) -> None:
    work = Racing(own_db, losses=INTEGRITY_ATTEMPTS - 1)

    answer = own_db.run_in_unit_of_work(work, "an", suffix="swer")

    assert answer == "answer"
    assert work.attempts == list(range(1, INTEGRITY_ATTEMPTS + 1))
    # only the attempt that returned is committed
    assert _stored(own_db, work.codes) == [work.codes[-1]]


def test_the_last_attempt_lets_its_integrity_error_through_and_stores_nothing(
    own_db: Database,
) -> None:
    work = Racing(own_db, losses=INTEGRITY_ATTEMPTS)

    with pytest.raises(IntegrityError):
        own_db.run_in_unit_of_work(work, "an", suffix="swer")

    assert work.attempts == [1, 2, 3]
    assert _stored(own_db, work.codes) == []


def test_any_other_exception_ends_the_work_at_its_first_attempt(own_db: Database) -> None:
    attempts: list[int] = []
    code = _code()

    def work(session: Session, attempt: int) -> None:
        attempts.append(attempt)
        _add(session, code)
        raise LookupError("not a race")

    with pytest.raises(LookupError, match="not a race"):
        own_db.run_in_unit_of_work(work)

    assert attempts == [1]
    assert _stored(own_db, [code]) == []
