"""The Alembic migrations create exactly the models' schema, on every dialect."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from rewardmiles.db import migrate
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Base
from tests.conftest import PG_ADMIN_URL, DatabaseFactory


@pytest.fixture
def empty_db(dialect: str, tmp_path: Path) -> Iterator[Database]:
    """A database with no schema at all (the factory's databases come migrated)."""
    name = f"rm_test_empty_{secrets.token_hex(4)}"
    if dialect == "sqlite":
        database = Database.from_url(f"sqlite:///{tmp_path / (name + '.db')}")
        yield database
        database.dispose()
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database.from_url(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
    try:
        yield database
    finally:
        database.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _schema_diff(database: Database) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_migrations_create_exactly_the_models_schema(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    database = Database.from_url(database_factory.create(dialect))
    try:
        assert _schema_diff(database) == []
        tables = set(inspect(database.engine).get_table_names())
    finally:
        database.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_schema_diff_is_not_blind(empty_db: Database) -> None:
    """The comparison does see differences: every table when empty, a single missing index."""
    diff = _schema_diff(empty_db)
    added = {op[1].name for op in diff if isinstance(op, tuple) and op[0] == "add_table"}
    assert added == set(Base.metadata.tables)

    migrate.upgrade(empty_db.engine)
    with empty_db.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_ledger_entries_account"))
    diff = _schema_diff(empty_db)
    described = [(op[0], op[1].name) if isinstance(op, tuple) else op for op in diff]
    assert described == [("add_index", "ix_ledger_entries_account")]


def test_is_current_false_on_an_empty_database_and_true_after_upgrade(empty_db: Database) -> None:
    assert migrate.current_revision(empty_db.engine) is None
    assert migrate.is_current(empty_db.engine) is False
    migrate.upgrade(empty_db.engine)
    assert migrate.current_revision(empty_db.engine) == migrate.head_revision()
    assert migrate.is_current(empty_db.engine) is True
    assert _schema_diff(empty_db) == []


def test_upgrade_twice_is_a_no_op(empty_db: Database) -> None:
    migrate.upgrade(empty_db.engine)
    migrate.upgrade(empty_db.engine)
    assert migrate.is_current(empty_db.engine) is True


def test_downgrade_to_base_removes_every_table(empty_db: Database) -> None:
    migrate.upgrade(empty_db.engine)
    cfg = migrate._config()
    with empty_db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert migrate.is_current(empty_db.engine) is False
    assert set(inspect(empty_db.engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(empty_db.engine)
    assert _schema_diff(empty_db) == []


def test_head_is_a_single_revision() -> None:
    head = migrate.head_revision()
    assert head is not None
    assert ScriptDirectory.from_config(migrate._config()).get_heads() == [head]


def test_webhook_secrets_widen_for_encryption_with_deliveries_in_place(empty_db: Database) -> None:
    """0006 widens `webhooks.secret` for encrypted values (123 characters) on a database that
    already has webhooks and deliveries pointing at them (SQLite rebuilds the table)."""
    migrate.upgrade(empty_db.engine, "0005")
    now = "2026-11-30 12:00:00+00:00"
    with empty_db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sponsors (code, name, active, created_at) "
                "VALUES ('MIGR', 'Migration', true, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO webhooks (id, sponsor_code, url, secret, active, created_at) "
                "VALUES ('w1', 'MIGR', 'https://example.invalid/', :secret, true, :now)"
            ),
            {"secret": "whsec_" + "s" * 43, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_type, transaction_id, "
                "payload_json, status, attempts, next_attempt_at, created_at) VALUES "
                "('d1', 'w1', 'transaction.settled', 't1', '{}', 'pending', 0, :now, :now)"
            ),
            {"now": now},
        )
    migrate.upgrade(empty_db.engine)
    sealed = "rmenc1:0123456789ab:" + "x" * 103
    with empty_db.engine.begin() as conn:
        conn.execute(text("UPDATE webhooks SET secret = :s WHERE id = 'w1'"), {"s": sealed})
        assert conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 1
        assert conn.execute(text("SELECT secret FROM webhooks")).scalar_one() == sealed
    assert _schema_diff(empty_db) == []


def test_downgrade_below_0006_refuses_while_webhook_secrets_are_encrypted(
    empty_db: Database,
) -> None:
    """The previous version reads no encrypted secret, and its 100-character column cannot hold
    one (123 characters): 0006's downgrade refuses with a message saying so, changing nothing;
    with the secrets in clear it goes through."""
    migrate.upgrade(empty_db.engine)
    now = "2026-11-30 12:00:00+00:00"
    sealed = "rmenc1:0123456789ab:" + "x" * 103
    with empty_db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sponsors (code, name, active, created_at) "
                "VALUES ('MIGR', 'Migration', true, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO webhooks (id, sponsor_code, url, secret, active, created_at) "
                "VALUES ('w1', 'MIGR', 'https://example.invalid/', :secret, true, :now)"
            ),
            {"secret": sealed, "now": now},
        )
    cfg = migrate._config()

    def downgrade_in_one_transaction() -> None:
        with empty_db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005")

    # The refusal rolls the whole downgrade back, the later revisions' steps (0007's) included.
    with pytest.raises(RuntimeError) as refused:
        downgrade_in_one_transaction()
    message = str(refused.value)
    assert "1 webhook secret" in message
    assert "encrypted" in message
    assert "backup" in message
    assert migrate.current_revision(empty_db.engine) == migrate.head_revision()
    with empty_db.engine.begin() as conn:
        assert conn.execute(text("SELECT secret FROM webhooks")).scalar_one() == sealed
        conn.execute(text("UPDATE webhooks SET secret = :s"), {"s": "whsec_" + "s" * 43})
    with empty_db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert migrate.current_revision(empty_db.engine) == "0005"
