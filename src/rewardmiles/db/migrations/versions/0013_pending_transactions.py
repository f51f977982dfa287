"""Pending transactions by processing time: a partial index of the transactions that still have a
pending line (`status = 'pending'`, kept so by settlement and checked by `ledger verify`), so the
oldest pending line's age (the console's Today page, `GET /metrics`) is the index's first entry,
not a lookup of every pending line's transaction. Posted transactions are not in it: the partner
path's usual insert does not touch it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_transactions_pending",
        "transactions",
        ["processed_at"],
        unique=False,
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_pending", table_name="transactions")
