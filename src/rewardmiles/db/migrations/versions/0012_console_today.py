"""A Transaction Day by the hour: ledger entries by posting time (a day's miles per hour for the
console's Today page, and a day's reconciliation file, read the day's entries only) and
transactions by processing time with their answer; both cover the Today page's queries. A
collector's transactions indexed with their processing time too (in place of the number alone),
so its first and last activity are read at the index's ends, not over all its transactions.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ledger_entries_posted",
        "ledger_entries",
        ["account_kind", "posted_at", "amount_miles", "transaction_id"],
        unique=False,
    )
    op.create_index(
        "ix_transactions_processed_status",
        "transactions",
        ["processed_at", "http_status"],
        unique=False,
    )
    op.drop_index("ix_transactions_collector", table_name="transactions")
    op.create_index(
        "ix_transactions_collector",
        "transactions",
        ["collector_number", "processed_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_collector", table_name="transactions")
    op.create_index("ix_transactions_collector", "transactions", ["collector_number"], unique=False)
    op.drop_index("ix_transactions_processed_status", table_name="transactions")
    op.drop_index("ix_ledger_entries_posted", table_name="ledger_entries")
