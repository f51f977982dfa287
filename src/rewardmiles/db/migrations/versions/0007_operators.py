"""Operators: accounts, browser sessions, admin API tokens, sign-in failures, the audit log

The audit log is append-only in the database itself: a trigger refuses every UPDATE and DELETE of
its rows (dropping the table, as the downgrade does, is still possible).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = "operator_audit_log is append-only"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_sign_in_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
    )
    op.create_index("uq_operators_email_lower", "operators", [sa.text("lower(email)")], unique=True)
    op.create_table(
        "operator_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("operator_id", sa.String(length=32), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=False),
        sa.Column("source_address", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_sessions_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_sessions")),
    )
    op.create_index(
        "ix_operator_sessions_operator", "operator_sessions", ["operator_id"], unique=False
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("revoked_at", _utc(), nullable=True),
        sa.Column("last_used_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_tokens_token_hash")),
    )
    op.create_index(
        "uq_admin_tokens_unrevoked_name",
        "admin_tokens",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "operator_sign_in_failures",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_operator_sign_in_failures")),
    )
    op.create_index(
        "ix_operator_sign_in_failures_last",
        "operator_sign_in_failures",
        ["last_failure_at"],
        unique=False,
    )
    op.create_table(
        "operator_audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column("before_json", sa.Text(), nullable=True),
        sa.Column("after_json", sa.Text(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_audit_log")),
    )
    op.create_index("ix_operator_audit_log_at", "operator_audit_log", ["at"], unique=False)
    op.create_index(
        "ix_operator_audit_log_entity",
        "operator_audit_log",
        ["entity", "entity_id"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION rewardmiles_audit_log_append_only() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER operator_audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON operator_audit_log FOR EACH STATEMENT "
            "EXECUTE FUNCTION rewardmiles_audit_log_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER operator_audit_log_no_{event.lower()} BEFORE {event} "
                f"ON operator_audit_log BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER operator_audit_log_append_only ON operator_audit_log")
        op.execute("DROP FUNCTION rewardmiles_audit_log_append_only()")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER operator_audit_log_no_{event}")
    op.drop_index("ix_operator_audit_log_entity", table_name="operator_audit_log")
    op.drop_index("ix_operator_audit_log_at", table_name="operator_audit_log")
    op.drop_table("operator_audit_log")
    op.drop_index("ix_operator_sign_in_failures_last", table_name="operator_sign_in_failures")
    op.drop_table("operator_sign_in_failures")
    op.drop_index("uq_admin_tokens_unrevoked_name", table_name="admin_tokens")
    op.drop_table("admin_tokens")
    op.drop_index("ix_operator_sessions_operator", table_name="operator_sessions")
    op.drop_table("operator_sessions")
    op.drop_index("uq_operators_email_lower", table_name="operators")
    op.drop_table("operators")
