"""batches

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sponsor_code", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("issue_missing", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("counts_json", sa.Text(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["sponsor_code"], ["sponsors.code"], name=op.f("fk_batches_sponsor_code_sponsors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_table(
        "batch_records",
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("endpoint", sa.String(length=32), nullable=True),
        sa.Column("partner_transaction_id", sa.String(length=64), nullable=True),
        sa.Column("collector_number", sa.String(length=11), nullable=True),
        sa.Column("log_miles", sa.BigInteger(), nullable=True),
        sa.Column("program_miles", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_batch_records_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("batch_id", "seq", name=op.f("pk_batch_records")),
    )
    with op.batch_alter_table("batch_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batch_records_transaction", ["batch_id", "transaction_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("batch_records", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_records_transaction")

    op.drop_table("batch_records")
    op.drop_table("batches")
