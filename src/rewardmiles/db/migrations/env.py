"""Alembic environment: always driven from `rewardmiles.db.migrate` with a live connection."""

from alembic import context

from rewardmiles.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
