"""webhooks.secret holds an encrypted value (`rmenc1:KEYID:...`, 123 characters): 255 wide

Nothing is encrypted here (a migration has no key): values stored in clear stay readable and are
encrypted by the first start or `rewardmiles secrets rekey`. The downgrade refuses while any
webhook secret is stored encrypted (the previous version cannot read it, and 123 characters do
not fit its 100-character column).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column(
            "secret",
            existing_type=sa.String(length=100),
            type_=sa.String(length=255),
            existing_nullable=False,
        )


def downgrade() -> None:
    # The previous version reads no encrypted secret, and a sealed one (123 characters) does not
    # fit its 100-character column (PostgreSQL would refuse with a bare "value too long"; SQLite
    # would keep it, and the previous version would sign with the ciphertext).
    sealed = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM webhooks WHERE secret LIKE 'rmenc1:%'"))
        .scalar_one()
    )
    if sealed:
        secrets = "secret is" if sealed == 1 else "secrets are"
        raise RuntimeError(
            f"cannot downgrade below 0006: {sealed} webhook {secrets} stored encrypted "
            "(rmenc1:...), which the previous version cannot read (nor encrypted signing keys) "
            "and its 100-character webhooks.secret cannot hold. Restore the backup taken before "
            "the upgrade instead"
        )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column(
            "secret",
            existing_type=sa.String(length=255),
            type_=sa.String(length=100),
            existing_nullable=False,
        )
