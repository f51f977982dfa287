"""program calculated offers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule_json", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("offer_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("location_codes_json", sa.Text(), nullable=True))

    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calculation_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_column("calculation_json")

    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_column("location_codes_json")
        batch_op.drop_column("offer_id")
        batch_op.drop_column("rule_json")
