"""Alembic's way into embeddb's schema revisions, for the ``alembic`` command line.

embeddb itself applies these revisions with :mod:`embeddb.migrate`; this environment does the
same through Alembic: the same version table (``embeddb.alembic_version``), the same advisory
lock, and at base the ``embeddb`` schema is dropped. The database is the connection in
``config.attributes["connection"]``, else ``-x url=...``, else ``$EMBEDDB_DATABASE_URL`` or the
embedded server.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from embeddb import migrate
from embeddb.database import create_engine, database_url
from embeddb.sql import queries


def run(connection: Connection) -> None:
    connection.execute(sa.text(queries["lock_catalog"]))
    connection.execute(sa.text(queries["create_catalog_schema"]))
    context.configure(
        connection=connection,
        version_table=migrate.VERSION_TABLE,
        version_table_schema=migrate.SCHEMA,
    )
    with context.begin_transaction():
        context.run_migrations()
    if not context.get_context().get_current_heads():
        connection.execute(sa.text(queries["drop_catalog_version_table"]))
        connection.execute(sa.text(queries["drop_catalog_schema"]))


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("embeddb's migrations run against a database; --sql is not supported")
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        run(given)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = create_engine(database_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            run(connection)
    finally:
        engine.dispose()


main()
