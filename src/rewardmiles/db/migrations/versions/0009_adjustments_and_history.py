"""Adjustments of a collector's miles, and a collector's ledger history a page at a time

- `adjustments`: an operator's adjustment (signed miles, reason, note, operator, the operator's
  idempotency key and the request's fingerprint, the balance right after it).
- `ledger_entries.adjustment_id`: the adjustment an entry posts; `transaction_id` and `line_no`
  become nullable, and a check says an entry names exactly one of a line and an adjustment (the
  (transaction_id, line_no) foreign key to `issuance_lines` is unchanged: NULLs match nothing).
- `ix_ledger_entries_account` gains `id`: a collector's entries newest first, by keyset.

On SQLite the ledger table is rebuilt (batch mode); on PostgreSQL the columns are altered in place.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_SOURCE = (
    "(transaction_id IS NOT NULL AND line_no IS NOT NULL AND adjustment_id IS NULL) OR "
    "(transaction_id IS NULL AND line_no IS NULL AND adjustment_id IS NOT NULL)"
)


def upgrade() -> None:
    op.create_table(
        "adjustments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("collector_number", sa.String(length=11), nullable=False),
        sa.Column("miles", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=12), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("operator", sa.String(length=320), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collector_number"],
            ["collectors.number"],
            name=op.f("fk_adjustments_collector_number_collectors"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustments")),
    )
    op.create_index(
        "uq_adjustments_operator_key", "adjustments", ["operator", "idempotency_key"], unique=True
    )
    op.create_index("ix_adjustments_created", "adjustments", ["created_at", "id"], unique=False)
    op.create_index("ix_adjustments_collector", "adjustments", ["collector_number"], unique=False)
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("adjustment_id", sa.String(length=36), nullable=True))
        batch_op.alter_column("transaction_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.alter_column("line_no", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(
            op.f("fk_ledger_entries_adjustment_id_adjustments"),
            "adjustments",
            ["adjustment_id"],
            ["id"],
        )
        batch_op.create_check_constraint(op.f("ck_ledger_entries_one_source"), sa.text(ONE_SOURCE))
        batch_op.drop_index("ix_ledger_entries_account")
        batch_op.create_index(
            "ix_ledger_entries_account", ["account_kind", "account_code", "id"], unique=False
        )
        batch_op.create_index("ix_ledger_entries_adjustment", ["adjustment_id"], unique=False)


def downgrade() -> None:
    # Adjustments' entries have no line: they go with the adjustments (balances keep them).
    op.execute("DELETE FROM ledger_entries WHERE adjustment_id IS NOT NULL")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_adjustment")
        batch_op.drop_index("ix_ledger_entries_account")
        batch_op.create_index(
            "ix_ledger_entries_account", ["account_kind", "account_code"], unique=False
        )
        batch_op.drop_constraint(op.f("ck_ledger_entries_one_source"), type_="check")
        batch_op.drop_constraint(
            op.f("fk_ledger_entries_adjustment_id_adjustments"), type_="foreignkey"
        )
        batch_op.alter_column("line_no", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("transaction_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.drop_column("adjustment_id")
    op.drop_index("ix_adjustments_collector", table_name="adjustments")
    op.drop_index("ix_adjustments_created", table_name="adjustments")
    op.drop_index("uq_adjustments_operator_key", table_name="adjustments")
    op.drop_table("adjustments")
