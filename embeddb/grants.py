"""The least privileges for embeddb's roles, as GRANT statements to print or apply.

Three roles, each with what it needs and no more:

* the **owner** (migrator) runs DDL: ``embeddb migrate``, ``create_all``, ``install``,
  Alembic. It owns embeddb's schema and the tables it embeds (adding columns, triggers and
  indexes needs ownership); pgvector is created once by a superuser (it is not a trusted
  extension). Its only grant here: CREATE on the database, for schema ``embeddb``.
* the **worker** runs no DDL: it reads embeddb's catalog and queue, writes the queue, its
  heartbeat and throughput, reads each embedded table (the render function takes the whole
  row) and updates only the vector and hash columns.
* the **application** needs nothing on schema ``embeddb`` to write its tables: the triggers
  run as the owner (``SECURITY DEFINER``, ``search_path`` pinned). Search reads the column's
  model from ``embeddb.columns``, so it gets USAGE on the schema and SELECT on that one table
  (model names and templates; no row text, no queue).

Run it after installing a column on a new table: the worker's grants name each embedded table.

Example::

    from embeddb import grants
    for grant in grants(engine, worker="embedder", app="webapp"):
        print(grant.statement)
    grants(engine, worker="embedder", app="webapp", apply=True)   # as the owner
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import catalog, column_sql, grant_sql, migrate, verbatim
from .database import create_engine
from .errors import PrivilegeError, SchemaNotReady
from .privileges import WORKER_CATALOG_PRIVILEGES
from .spec import EmbeddingSpec
from .sql import queries

# PostgreSQL's warning_privilege_not_granted: "no privileges" or "not all privileges were granted"
_NOT_GRANTED = "01007"
#: What an application role needs on embeddb's tables for ``embeddb search``.
APP_CATALOG_PRIVILEGES = {"embeddb.columns": ("SELECT",)}


@dataclass(frozen=True)
class Grant:
    """One statement: for which role (``owner``, ``worker``, ``app``), and why it is needed.

    Example::

        for grant in grants(engine, worker="embeddb_worker", app="webapp"):
            print(f"{grant.statement};  -- {grant.role}: {grant.why}")
    """

    role: str
    statement: str
    why: str


def grants(bind: str | Engine | Connection, *, worker: str | None = None,
           app: str | None = None, owner: str | None = None, apply: bool = False) -> list[Grant]:
    """The statements that give ``worker``, ``app`` and ``owner`` what each needs.

    ``bind`` is a URL, an engine or a connection to the database (at embeddb's schema; raises
    :class:`~embeddb.errors.SchemaNotReady` before ``embeddb migrate``). With ``apply``, runs
    them in one transaction, as the connecting role, which must be able to grant them (the
    owner, or a superuser); where PostgreSQL only warns that it granted nothing, this raises
    :class:`~embeddb.errors.PrivilegeError` and nothing is granted.

    Example::

        grants(engine, worker="embeddb_worker", app="webapp", apply=True)
    """
    if isinstance(bind, Connection):
        return _grants(bind, worker, app, owner, apply)
    engine = create_engine(bind, poolclass=sa.pool.NullPool) if isinstance(bind, str) else bind
    try:
        with engine.begin() as conn:
            return _grants(conn, worker, app, owner, apply)
    finally:
        if engine is not bind:
            engine.dispose()


def _grants(conn: Connection, worker: str | None, app: str | None, owner: str | None,
            apply: bool) -> list[Grant]:
    if migrate.current(conn) is None:
        raise SchemaNotReady("embeddb's schema is not in this database, so there is nothing to"
                             " grant on yet; run `embeddb migrate` as the owner first")
    statements: list[Grant] = []
    if owner is not None:
        statements += owner_grants(conn, owner)
    if worker is not None:
        statements += worker_grants([entry.spec for entry in catalog.list_entries(conn)], worker)
    if app is not None:
        statements += app_grants([entry.spec for entry in catalog.list_entries(conn)], app)
    if apply:
        _apply(conn, statements)
    return statements


def _apply(conn: Connection, statements: list[Grant]) -> None:
    """Run ``statements``; PostgreSQL only warns (01007) when the role may not grant them, so
    such a warning is an error here, and the transaction is rolled back."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    refused: list[str] = []

    def on_notice(notice: psycopg.errors.Diagnostic) -> None:
        if notice.sqlstate == _NOT_GRANTED:
            refused.append(notice.message_primary or "privileges not granted")

    driver.add_notice_handler(on_notice)
    try:
        for grant in statements:
            conn.exec_driver_sql(grant.statement.replace("%", "%%"))
            if refused:
                role = conn.execute(sa.text("SELECT current_user")).scalar_one()
                raise PrivilegeError(
                    f"grants --apply: {grant.statement}: {refused[0]} (role {role} may not grant"
                    " it; run it as the role that owns embeddb's schema and the embedded tables)")
    finally:
        driver.remove_notice_handler(on_notice)


def owner_grants(conn: Connection, owner: str) -> list[Grant]:
    database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    return [Grant("owner", grant_sql.create_on_database(database, owner),
                  "create schema embeddb (embeddb migrate); it must also own each table it"
                  " embeds, and a superuser creates pgvector once")]


def worker_grants(specs: list[EmbeddingSpec], worker: str) -> list[Grant]:
    statements = [Grant("worker", grant_sql.usage_on_schema(migrate.SCHEMA, worker),
                        "name embeddb's tables")]
    statements += [Grant("worker", grant_sql.on_table(table, privileges, worker),
                         "embeddb's catalog, queue and worker bookkeeping")
                   for table, privileges in WORKER_CATALOG_PRIVILEGES.items()]
    by_table: dict[tuple[str, str], list[EmbeddingSpec]] = defaultdict(list)
    for spec in specs:
        by_table[spec.schema, spec.table].append(spec)
    for table_specs in by_table.values():
        statements.append(Grant("worker", grant_sql.select_on(table_specs[0], worker),
                                "read the rows (the render function takes the whole row)"))
        statements.append(Grant("worker", grant_sql.update_columns(table_specs, worker),
                                "store vectors and the hashes of their text"))
    statements += [Grant("worker", grant_sql.on_managed_table(
                       spec, spec.chunk_table, ("SELECT", "INSERT", "UPDATE", "DELETE"), worker),
                         "write each document's chunks")
                   for spec in specs if spec.chunking is not None]
    return statements


def app_grants(specs: list[EmbeddingSpec], app: str) -> list[Grant]:
    """What the application's role needs beyond its own rights on its tables: embeddb's
    catalog, and reading the chunk and postings tables embeddb keeps beside them."""
    return [Grant("app", grant_sql.usage_on_schema(migrate.SCHEMA, app),
                  "name embeddb.columns (writes need nothing: the triggers run as the owner)"),
            *[Grant("app", grant_sql.on_table(table, privileges, app),
                    "search reads the column's model and query prompt")
              for table, privileges in APP_CATALOG_PRIVILEGES.items()],
            *[Grant("app", grant_sql.on_managed_table(spec, spec.chunk_table, ("SELECT",), app),
                    "search a chunked column's chunks")
              for spec in specs if spec.chunking is not None],
            *[Grant("app", grant_sql.on_managed_table(spec, spec.postings_table, ("SELECT",),
                                                      app),
                    "hybrid search's BM25 leg reads the postings")
              for spec in specs if spec.fulltext is not None]]


def render(statements: list[Grant]) -> str:
    """The statements as a SQL script, each role's under a comment saying what it is for."""
    lines: list[str] = []
    for grant in statements:
        lines.append(f"-- {grant.role}: {grant.why}")
        lines.append(f"{grant.statement};")
    return "\n".join(lines)


def carry_to_next_generation(conn: Connection, live: EmbeddingSpec,
                             upcoming: EmbeddingSpec) -> None:
    """Give every role that may write ``live``'s columns (and chunk table) the same rights on
    ``upcoming``'s, the next generation a model or chunk change adds: a worker holding only
    the printed grants fills it as it fills the live one. Run by the owner, in the change's
    transaction; the rights follow the columns and tables through the swap's renames."""
    grantees = conn.execute(sa.text(queries["column_update_grantees"]), {
        "table": column_sql.qualified_table(live), "column": live.column}).scalars().all()
    for role in grantees:  # its vector and hash (the tsvector stays the live column's)
        verbatim.execute(conn, grant_sql.update_columns([replace(upcoming, fulltext=None)], role))
    if live.chunking is None or upcoming.chunking is None:
        return
    live_chunks = column_sql.qualified_name(live.schema, live.chunk_table)
    for row in conn.execute(sa.text(queries["table_grantees"]), {"table": live_chunks}):
        verbatim.execute(conn, grant_sql.on_managed_table(
            upcoming, upcoming.chunk_table, row.privileges.split(", "), row.grantee))
