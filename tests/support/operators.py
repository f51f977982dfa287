"""Operators, sessions and admin tokens made straight through the operators service (the code the
CLI and the sign-in route run), with the cheapest password hashes the settings allow."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from rewardmiles.db.engine import Database
from rewardmiles.operators import credentials, passwords, repository, service
from rewardmiles.operators.service import Actor, SessionPolicy
from rewardmiles.vocabulary import OperatorRole

COST = passwords.HashCost(time_cost=1, memory_kib=1024)  # tests.conftest.TEST_HASH_SETTINGS
TEST_ACTOR = Actor("tests@suite")
DEFAULT_SESSIONS = SessionPolicy(timedelta(minutes=30), timedelta(hours=12))


@dataclass(frozen=True)
class Login:
    id: str
    email: str
    password: str


def new_email(prefix: str = "op") -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.com"


def new_operator(
    db: Database,
    role: OperatorRole = OperatorRole.VIEWER,
    *,
    email: str | None = None,
    now: datetime,
) -> Login:
    password = passwords.generate_password()
    with db.unit_of_work() as session:
        view = service.add_operator(
            session,
            email if email is not None else new_email(),
            role,
            passwords.hash_password(password, COST),
            now,
            TEST_ACTOR,
        )
    return Login(view.id, view.email, password)


@dataclass(frozen=True)
class SignedIn:
    cookie: str
    csrf_token: str
    id: str  # the stored id (the cookie's digest)


def new_session(
    db: Database,
    email: str,
    now: datetime,
    *,
    address: str = "127.0.0.1",
    policy: SessionPolicy = DEFAULT_SESSIONS,
) -> SignedIn:
    """A session started at `now`, as a sign-in at `now` starts one."""
    with db.unit_of_work() as session:
        stored = repository.operator_by_email(session, email)
        assert stored is not None
        started = service.start_session(session, stored, address, now, policy)
    assert started is not None
    return SignedIn(
        started.cookie_value, started.csrf_token, credentials.digest(started.cookie_value)
    )


def new_token(
    db: Database,
    role: OperatorRole = OperatorRole.VIEWER,
    *,
    now: datetime,
    expires_days: int = 90,
    name: str | None = None,
) -> service.NewToken:
    with db.unit_of_work() as session:
        return service.create_token(
            session,
            name if name is not None else f"t-{secrets.token_hex(4)}",
            role,
            expires_days,
            now,
            TEST_ACTOR,
        )
