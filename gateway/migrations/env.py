"""Alembic environment: runs migrations on the gateway's database.

On PostgreSQL an advisory lock serialises replicas that start at the same moment,
so only one applies a migration and the others find it done.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

MIGRATION_LOCK_ID = 0x6A657474  # "jett"

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    is_postgres = connection.dialect.name == "postgresql"
    if is_postgres:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
    try:
        context.configure(connection=connection, target_metadata=None, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if is_postgres:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
engine.dispose()
