"""`rewardmiles operator …`, driven in-process against a database of this module's own: each
change is stored, audited as `cli@HOST`, and what should end (sessions, tokens) ends."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from rewardmiles.cli.main import app
from rewardmiles.db.engine import Database
from rewardmiles.db.models import AdminToken, OperatorAuditEntry, OperatorSession
from rewardmiles.operators import repository, service
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import TEST_HASH_SETTINGS, DatabaseFactory
from tests.support.operators import COST, new_email, new_session

NOW = datetime.now(UTC)
CLI_ACTOR = f"cli@{socket.gethostname()}"


@pytest.fixture(scope="module")
def cli_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    database.dispose()


def _cli(db: Database, *args: str, stdin: str | None = None) -> Result:
    env = {"REWARDMILES_DATABASE_URL": db.engine.url.render_as_string(hide_password=False)}
    return CliRunner().invoke(app, list(args), env={**env, **TEST_HASH_SETTINGS}, input=stdin)


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return " ".join(result.stdout.split())


def _failed(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return " ".join(result.stderr.split())


def _signs_in(db: Database, email: str, password: str) -> bool:
    with db.reader() as session:
        check = service.sign_in_check(
            session, email, "192.0.2.9", NOW, service.SignInPolicy(5, 20, 20, 900, COST)
        )
    return service.check_password(check, password, COST)[0]


def _audited(db: Database, email: str) -> list[tuple[str, str]]:
    with db.reader() as session:
        found = repository.operator_by_email(session, email)
        assert found is not None
        rows = session.execute(
            select(OperatorAuditEntry.actor, OperatorAuditEntry.action)
            .where(OperatorAuditEntry.entity_id == found.id)
            .order_by(OperatorAuditEntry.id)
        ).all()
    return [(actor, action) for actor, action in rows]


def _sessions(db: Database, email: str) -> int:
    with db.reader() as session:
        found = repository.operator_by_email(session, email)
        assert found is not None
        return int(
            session.execute(
                select(func.count())
                .select_from(OperatorSession)
                .where(OperatorSession.operator_id == found.id)
            ).scalar_one()
        )


def _one_time_password(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("one-time password")]
    return line.split()[-1]


def test_add_prints_a_one_time_password_that_signs_in_and_is_audited(cli_db: Database) -> None:
    email = new_email("Ana")
    result = _cli(cli_db, "operator", "add", email, "--role", "admin", "--name", "Ana Silva")
    assert f'operator {email} added (admin, "Ana Silva")' in _ok(result)
    password = _one_time_password(result.stdout)
    assert "cannot be shown again" in result.stdout
    assert _signs_in(cli_db, email.upper(), password)
    assert not _signs_in(cli_db, email, password + "x")
    assert _audited(cli_db, email) == [(CLI_ACTOR, "operator.add")]


def test_add_reads_the_password_from_stdin_and_prints_none(cli_db: Database) -> None:
    email = new_email()
    result = _cli(
        cli_db,
        "operator",
        "add",
        email,
        "--role",
        "viewer",
        "--password-stdin",
        stdin="a long enough secret\n",
    )
    _ok(result)
    assert "password" not in result.stdout
    assert _signs_in(cli_db, email, "a long enough secret")


def test_add_refuses_a_short_password_a_duplicate_and_a_bad_email(cli_db: Database) -> None:
    email = new_email()
    short = _cli(
        cli_db, "operator", "add", email, "--role", "viewer", "--password-stdin", stdin="short"
    )
    assert "12 to 1024 characters" in _failed(short, 2)
    _ok(_cli(cli_db, "operator", "add", email, "--role", "viewer"))
    again = _cli(cli_db, "operator", "add", email.upper(), "--role", "admin")
    assert "exists already" in _failed(again, 1)
    assert "not an e-mail address" in _failed(
        _cli(cli_db, "operator", "add", "nobody", "--role", "viewer"), 1
    )
    assert "'boss'" in _failed(_cli(cli_db, "operator", "add", new_email(), "--role", "boss"), 2)


def test_list_shows_every_operator_and_never_a_hash(cli_db: Database) -> None:
    email = new_email()
    _ok(_cli(cli_db, "operator", "add", email, "--role", "agent"))
    listed = json.loads(_cli(cli_db, "operator", "list", "--json").stdout)
    [mine] = [entry for entry in listed if entry["email"] == email]
    assert mine["role"] == "agent"
    assert mine["status"] == "active"
    assert mine["lastSignInAt"] is None
    assert "argon2" not in json.dumps(listed)
    assert email in _ok(_cli(cli_db, "operator", "list"))


def test_disable_ends_every_session_and_sign_in_until_enabled(cli_db: Database) -> None:
    email = new_email()
    password = _one_time_password(_cli(cli_db, "operator", "add", email, "--role", "viewer").stdout)
    new_session(cli_db, email, NOW)
    new_session(cli_db, email, NOW)
    assert f"operator {email} disabled; 2 session(s) ended" in _ok(
        _cli(cli_db, "operator", "disable", email)
    )
    assert _sessions(cli_db, email) == 0
    assert not _signs_in(cli_db, email, password)
    assert "disabled already" in _ok(_cli(cli_db, "operator", "disable", email))
    _ok(_cli(cli_db, "operator", "enable", email))
    assert _signs_in(cli_db, email, password)
    assert _audited(cli_db, email) == [
        (CLI_ACTOR, "operator.add"),
        (CLI_ACTOR, "operator.disable"),
        (CLI_ACTOR, "operator.enable"),
    ]
    assert "no operator" in _failed(_cli(cli_db, "operator", "disable", new_email()), 1)


def test_set_role_changes_the_role(cli_db: Database) -> None:
    email = new_email()
    _ok(_cli(cli_db, "operator", "add", email, "--role", "viewer"))
    assert f"operator {email}: viewer -> admin" in _ok(
        _cli(cli_db, "operator", "set-role", email, "admin")
    )
    with cli_db.reader() as session:
        found = repository.operator_by_email(session, email)
    assert found is not None
    assert found.role == "admin"
    assert _audited(cli_db, email)[-1] == (CLI_ACTOR, "operator.set_role")


def test_reset_password_replaces_it_and_ends_sessions(cli_db: Database) -> None:
    email = new_email()
    old = _one_time_password(_cli(cli_db, "operator", "add", email, "--role", "viewer").stdout)
    new_session(cli_db, email, NOW)
    result = _cli(cli_db, "operator", "reset-password", email)
    assert "password replaced; 1 session(s) ended" in _ok(result)
    new = _one_time_password(result.stdout)
    assert not _signs_in(cli_db, email, old)
    assert _signs_in(cli_db, email, new)
    _ok(
        _cli(
            cli_db,
            "operator",
            "reset-password",
            email,
            "--password-stdin",
            stdin="chosen by me, long\r\n",
        )
    )
    assert _signs_in(cli_db, email, "chosen by me, long")
    assert _audited(cli_db, email)[-1] == (CLI_ACTOR, "operator.reset_password")


def test_token_create_shows_the_token_once_and_list_and_revoke_never_do(cli_db: Database) -> None:
    name = "nightly-" + new_email().split("@")[0]
    created = json.loads(
        _ok(
            _cli(
                cli_db, "operator", "token", "create", "--name", name, "--role", "viewer", "--json"
            )
        )
    )
    token = created["token"]
    assert token.startswith("rma_")
    assert (created["name"], created["role"], created["state"]) == (name, "viewer", "active")
    assert created["createdBy"] == CLI_ACTOR
    expires = datetime.fromisoformat(created["expiresAt"]) - datetime.fromisoformat(
        created["createdAt"]
    )
    assert expires.days == 90
    with cli_db.reader() as session:
        assert service.find_token(session, token) is not None
        stored = session.execute(
            select(AdminToken.token_hash).where(AdminToken.name == name)
        ).scalar_one()
    assert token not in stored
    listed = _ok(_cli(cli_db, "operator", "token", "list"))
    assert name in listed
    assert token not in listed
    assert token not in _cli(cli_db, "operator", "token", "list", "--json").stdout
    assert f"({name}) revoked" in _ok(_cli(cli_db, "operator", "token", "revoke", name))
    [entry] = [
        t
        for t in json.loads(_cli(cli_db, "operator", "token", "list", "--json").stdout)
        if t["id"] == created["id"]
    ]
    assert entry["state"] == "revoked"
    assert "revoked already" in _failed(
        _cli(cli_db, "operator", "token", "revoke", created["id"]), 1
    )
    short = _cli(
        cli_db,
        "operator",
        "token",
        "create",
        "--name",
        name,
        "--role",
        "admin",
        "--expires-days",
        "7",
    )
    assert "token " in _ok(short)
    assert "cannot be shown again" in short.stdout
    assert "greater than or equal to" in _failed(
        _cli(
            cli_db,
            "operator",
            "token",
            "create",
            "--name",
            "x",
            "--role",
            "admin",
            "--expires-days",
            "0",
        ),
        2,
    )
    with cli_db.reader() as session:
        actions = (
            session.execute(
                select(OperatorAuditEntry.action).where(
                    OperatorAuditEntry.entity_id == created["id"]
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["admin_token.create", "admin_token.revoke"]
    assert OperatorRole(created["role"]) is OperatorRole.VIEWER
