"""Partner clients' lifecycle: a name, revocation, secret rotation with a grace period, and the
time the client was last issued a token

`revoked_at` is what every API process reads every few seconds (the revoked clients, through
`ix_partner_clients_revoked_at`) to refuse their tokens; `previous_secret_hash` is the secret a
rotation replaced, accepted at `/oauth/token` until `previous_secret_until`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("partner_clients") as batch:
        batch.add_column(sa.Column("name", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("previous_secret_hash", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", _utc(), nullable=True))
        batch.add_column(sa.Column("rotated_at", _utc(), nullable=True))
        batch.add_column(sa.Column("revoked_at", _utc(), nullable=True))
        batch.add_column(sa.Column("last_token_at", _utc(), nullable=True))
        batch.create_index("ix_partner_clients_revoked_at", ["revoked_at"])


def downgrade() -> None:
    with op.batch_alter_table("partner_clients") as batch:
        batch.drop_index("ix_partner_clients_revoked_at")
        for column in (
            "last_token_at",
            "revoked_at",
            "rotated_at",
            "previous_secret_until",
            "previous_secret_hash",
            "name",
        ):
            batch.drop_column(column)
