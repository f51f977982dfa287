"""The support desk's look-ups: partner requests that failed (by request id), and the indexes
that the transaction search and the audit log's pages read through

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("field", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_failures")),
    )
    op.create_index("ix_request_failures_request", "request_failures", ["request_id"], unique=False)
    op.create_index("ix_request_failures_at", "request_failures", ["at"], unique=False)
    # Transaction search, newest first: every page through (processed_at, id).
    op.create_index(
        "ix_transactions_processed", "transactions", ["processed_at", "id"], unique=False
    )
    op.create_index(
        "ix_transactions_partner_id", "transactions", ["partner_transaction_id"], unique=False
    )
    # The audit log's pages by entity or by actor, newest first (by id).
    op.create_index(
        "ix_operator_audit_log_entity_seq", "operator_audit_log", ["entity", "id"], unique=False
    )
    op.create_index(
        "ix_operator_audit_log_actor_seq", "operator_audit_log", ["actor", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_operator_audit_log_actor_seq", table_name="operator_audit_log")
    op.drop_index("ix_operator_audit_log_entity_seq", table_name="operator_audit_log")
    op.drop_index("ix_transactions_partner_id", table_name="transactions")
    op.drop_index("ix_transactions_processed", table_name="transactions")
    op.drop_index("ix_request_failures_at", table_name="request_failures")
    op.drop_index("ix_request_failures_request", table_name="request_failures")
    op.drop_table("request_failures")
