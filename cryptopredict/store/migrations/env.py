"""Alembic environment: runs against the connection `cryptopredict.store.migrate` hands over."""

from alembic import context

from cryptopredict.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
