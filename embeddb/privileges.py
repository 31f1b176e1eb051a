"""The privileges embeddb's worker and ``reconcile`` need, and permission errors as messages
that name the missing ones.

PostgreSQL says ``permission denied for table pending`` without saying which privilege the
statement wanted; :func:`privilege_error` asks ``has_table_privilege`` (and, for the columns
the worker writes, ``has_column_privilege``, which a column grant satisfies) for each one the
job needs and names those the role lacks, so one grant fixes it instead of one per attempt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from . import column_sql
from .errors import PrivilegeError, first_line
from .spec import EmbeddingSpec
from .sql import queries

INSUFFICIENT_PRIVILEGE = "42501"

#: What a worker needs on embeddb's own tables (besides USAGE on schema embeddb).
WORKER_CATALOG_PRIVILEGES: Mapping[str, tuple[str, ...]] = {
    "embeddb.alembic_version": ("SELECT",),
    "embeddb.columns": ("SELECT", "UPDATE"),
    "embeddb.pending": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "embeddb.inbox": ("SELECT", "UPDATE", "DELETE"),  # UPDATE: FOR UPDATE SKIP LOCKED
    "embeddb.inbox_ranges": ("SELECT", "UPDATE", "DELETE"),
    "embeddb.throughput": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "embeddb.workers": ("SELECT", "INSERT", "UPDATE"),
    "embeddb.worker_compatibility": ("SELECT",),
}
#: What a worker needs on an embedded table as a whole: read its rows (it writes only some
#: columns: :func:`worker_column_needs`).
WORKER_TABLE_PRIVILEGES = ("SELECT",)
#: What a worker needs on a chunked column's chunk table: it replaces a document's chunks.
WORKER_CHUNK_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: What ``reconcile`` needs: read the table, add queue entries.
RECONCILE_PRIVILEGES: Mapping[str, tuple[str, ...]] = {"embeddb.pending": ("SELECT", "INSERT")}


def is_permission_error(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's ``insufficient_privilege`` (42501), however wrapped."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return getattr(orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


def worker_needs(spec: EmbeddingSpec | None = None) -> dict[str, tuple[str, ...]]:
    """The table privileges a worker needs, per table; with ``spec``, on its tables too (the
    column-level UPDATE it needs there is :func:`worker_column_needs`)."""
    needs = dict(WORKER_CATALOG_PRIVILEGES)
    if spec is not None:
        needs[column_sql.qualified_table(spec)] = WORKER_TABLE_PRIVILEGES
        if spec.chunking is not None:
            needs[column_sql.qualified_name(spec.schema, spec.chunk_table)] = (
                WORKER_CHUNK_PRIVILEGES)
    return needs


def worker_column_needs(spec: EmbeddingSpec) -> dict[str, dict[str, tuple[str, ...]]]:
    """``{table: {column: ("UPDATE",)}}``: the columns the worker writes in ``spec``'s table,
    which a column grant (``embeddb grants``) gives as well as a table one."""
    return {column_sql.qualified_table(spec):
            {column: ("UPDATE",) for column in spec.written_columns}}


def reconcile_needs(spec: EmbeddingSpec) -> dict[str, tuple[str, ...]]:
    return {column_sql.qualified_table(spec): ("SELECT",), **RECONCILE_PRIVILEGES}


def missing_privileges(conn: sa.Connection, needs: Mapping[str, Sequence[str]],
                       column_needs: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                       ) -> list[str]:
    """``["INSERT on embeddb.workers", "UPDATE (embedding) on public.docs", ...]``: what the
    connection's role lacks of ``needs`` (per table) and ``column_needs`` (per table, per
    column; a table-wide grant covers them too).

    Without USAGE on schema embeddb nothing in it can even be named, so that alone is reported.
    """
    if not conn.execute(sa.text(queries["embeddb_schema_usage"])).scalar():
        return ["USAGE on schema embeddb"]
    pairs = [(table, privilege) for table, wanted in needs.items() for privilege in wanted]
    rows = conn.execute(sa.text(queries["missing_table_privileges"]), {
        "tables": [table for table, _ in pairs], "privileges": [p for _, p in pairs],
    })
    gaps = [f"{row.privilege} on {row.table_name}" for row in rows]
    triples = [(table, column, privilege) for table, columns in (column_needs or {}).items()
               for column, wanted in columns.items() for privilege in wanted]
    if triples:
        rows = conn.execute(sa.text(queries["missing_column_privileges"]), {
            "tables": [t for t, _, _ in triples], "columns": [c for _, c, _ in triples],
            "privileges": [p for _, _, p in triples],
        })
        lacking: dict[tuple[str, str], list[str]] = {}
        for row in rows:
            lacking.setdefault((row.table_name, row.privilege), []).append(row.column_name)
        gaps += [f"{privilege} ({', '.join(columns)}) on {table}"
                 for (table, privilege), columns in lacking.items()]
    return gaps


def privilege_error(conn: sa.Connection, exc: BaseException | None,
                    needs: Mapping[str, Sequence[str]], doing: str,
                    column_needs: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                    ) -> PrivilegeError | None:
    """A :class:`PrivilegeError` for ``exc``, naming what the role lacks of ``needs`` and
    ``column_needs`` (see :func:`missing_privileges`); without ``exc``, None when it lacks
    nothing (a check before starting). A role that lacks none of them and does not own the
    tables of ``column_needs`` is told that the step it was refused is the owner's (building an
    index, renaming a column): PostgreSQL reports both with the same SQLSTATE.

    ``conn`` must not be in the transaction ``exc`` aborted (a fresh connection, or a
    savepoint rolled back).
    """
    role = conn.execute(sa.text("SELECT current_user")).scalar_one()
    gaps = missing_privileges(conn, needs, column_needs)
    if gaps:
        grant = "them" if len(gaps) > 1 else "it"
        return PrivilegeError(f"{doing}: role {role} lacks {', '.join(gaps)}; grant {grant}"
                              " (README: 'Roles and privileges')")
    if exc is None:
        return None
    reason = first_line(exc)
    if any(conn.execute(sa.text(queries["owns_table"]), {"qualified_table": table}).scalar()
           is False for table in column_needs or {}):  # a table gone is not an owner's matter
        return PrivilegeError(
            f"{doing}: role {role} is not the owner ({reason}): this step is DDL that only"
            " the table's owner may run (building or setting aside an HNSW index, swapping in"
            " a model change); run `embeddb worker --once` as the owner to finish it (README:"
            " 'Roles and privileges')")
    return PrivilegeError(f"{doing}: role {role}: {reason}")
