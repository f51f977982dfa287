"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collectors",
        sa.Column("number", sa.String(length=11), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("balance_miles", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_collectors")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.String(length=36), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_created", ["created_at"], unique=False)

    op.create_table(
        "partner_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_partner_clients")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "sponsors",
        sa.Column("code", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("review_threshold_miles", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_sponsors")),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("sponsor_code", sa.String(length=10), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("partner_transaction_id", sa.String(length=64), nullable=False),
        sa.Column("collector_number", sa.String(length=11), nullable=True),
        sa.Column("original_transaction_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=40), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("partner_datetime", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("response_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["original_transaction_id"],
            ["transactions.id"],
            name=op.f("fk_transactions_original_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
    )
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.create_index("ix_transactions_collector", ["collector_number"], unique=False)
        batch_op.create_index("ix_transactions_original", ["original_transaction_id"], unique=False)
        batch_op.create_index(
            "ix_transactions_sponsor_processed", ["sponsor_code", "processed_at"], unique=False
        )
        batch_op.create_index(
            "uq_transactions_accepted_partner_id",
            ["sponsor_code", "endpoint", "partner_transaction_id"],
            unique=True,
            sqlite_where=sa.text("status <> 'rejected'"),
            postgresql_where=sa.text("status <> 'rejected'"),
        )

    op.create_table(
        "issuance_lines",
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("offer_code", sa.String(length=8), nullable=False),
        sa.Column("location_code", sa.String(length=10), nullable=True),
        sa.Column("miles", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("pending_reason", sa.String(length=20), nullable=True),
        sa.Column("error_code", sa.String(length=40), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_issuance_lines_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", "line_no", name=op.f("pk_issuance_lines")),
    )
    with op.batch_alter_table("issuance_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_issuance_lines_pending",
            ["status"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

    op.create_table(
        "locations",
        sa.Column("sponsor_code", sa.String(length=10), nullable=False),
        sa.Column("code", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sponsor_code"], ["sponsors.code"], name=op.f("fk_locations_sponsor_code_sponsors")
        ),
        sa.PrimaryKeyConstraint("sponsor_code", "code", name=op.f("pk_locations")),
    )
    op.create_table(
        "offers",
        sa.Column("sponsor_code", sa.String(length=10), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sponsor_code"], ["sponsors.code"], name=op.f("fk_offers_sponsor_code_sponsors")
        ),
        sa.PrimaryKeyConstraint("sponsor_code", "code", name=op.f("pk_offers")),
    )
    op.create_table(
        "partner_client_sponsors",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("sponsor_code", sa.String(length=10), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["partner_clients.client_id"],
            name=op.f("fk_partner_client_sponsors_client_id_partner_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["sponsor_code"],
            ["sponsors.code"],
            name=op.f("fk_partner_client_sponsors_sponsor_code_sponsors"),
        ),
        sa.PrimaryKeyConstraint(
            "client_id", "sponsor_code", name=op.f("pk_partner_client_sponsors")
        ),
    )
    op.create_table(
        "ledger_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(length=36), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("account_kind", sa.String(length=10), nullable=False),
        sa.Column("account_code", sa.String(length=11), nullable=False),
        sa.Column("amount_miles", sa.BigInteger(), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id", "line_no"],
            ["issuance_lines.transaction_id", "issuance_lines.line_no"],
            name=op.f("fk_ledger_entries_transaction_id_issuance_lines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_account", ["account_kind", "account_code"], unique=False
        )
        batch_op.create_index("ix_ledger_entries_line", ["transaction_id", "line_no"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_line")
        batch_op.drop_index("ix_ledger_entries_account")

    op.drop_table("ledger_entries")
    op.drop_table("partner_client_sponsors")
    op.drop_table("offers")
    op.drop_table("locations")
    with op.batch_alter_table("issuance_lines", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_issuance_lines_pending",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

    op.drop_table("issuance_lines")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_transactions_accepted_partner_id",
            sqlite_where=sa.text("status <> 'rejected'"),
            postgresql_where=sa.text("status <> 'rejected'"),
        )
        batch_op.drop_index("ix_transactions_sponsor_processed")
        batch_op.drop_index("ix_transactions_original")
        batch_op.drop_index("ix_transactions_collector")

    op.drop_table("transactions")
    op.drop_table("sponsors")
    op.drop_table("signing_keys")
    op.drop_table("partner_clients")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_created")

    op.drop_table("idempotency_keys")
    op.drop_table("collectors")
