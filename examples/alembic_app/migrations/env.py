"""Alembic environment of the example application.

Nothing here is special to embeddb but ``autogenerate_plugins``: it turns on embeddb's
comparator, which Alembic has loaded through embeddb's ``alembic.plugins`` entry point. The
comparator writes ``op.create_embedding`` and friends for the ``Embedding`` declarations in
``models.py`` and keeps Alembic from reporting the vector column, its hash column and its
index as changes of their own.
"""

from __future__ import annotations

import os

from alembic import context
from models import Base
from sqlalchemy.engine import Connection

from embeddb.database import create_engine

config = context.config
# Tests hand in their own metadata (a changed model) or connection; an application would not.
target_metadata = config.attributes.get("target_metadata", Base.metadata)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(str(url))
    try:
        with engine.connect() as connection:
            run(connection)
    finally:
        engine.dispose()


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        autogenerate_plugins=["alembic.autogenerate.*", "embeddb"],
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("embeddb's operations read the database as they run: no --sql mode")
run_migrations_online()
