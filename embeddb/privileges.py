"""The privileges embeddb's worker and ``reconcile`` need, and permission errors as messages
that name the missing ones.

PostgreSQL says ``permission denied for table pending`` without saying which privilege the
statement wanted; :func:`privilege_error` asks ``has_table_privilege`` for each one the job
needs and names those the role lacks, so one grant fixes it instead of one per attempt.
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
#: What a worker needs on an embedded table: read its rows, write the vector and hash.
WORKER_TABLE_PRIVILEGES = ("SELECT", "UPDATE")
#: What ``reconcile`` needs: read the table, add queue entries.
RECONCILE_PRIVILEGES: Mapping[str, tuple[str, ...]] = {"embeddb.pending": ("SELECT", "INSERT")}


def is_permission_error(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's ``insufficient_privilege`` (42501), however wrapped."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return getattr(orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


def worker_needs(spec: EmbeddingSpec | None = None) -> dict[str, tuple[str, ...]]:
    """The privileges a worker needs, per table; with ``spec``, on its table too."""
    needs = dict(WORKER_CATALOG_PRIVILEGES)
    if spec is not None:
        needs[column_sql.qualified_table(spec)] = WORKER_TABLE_PRIVILEGES
    return needs


def reconcile_needs(spec: EmbeddingSpec) -> dict[str, tuple[str, ...]]:
    return {column_sql.qualified_table(spec): ("SELECT",), **RECONCILE_PRIVILEGES}


def missing_privileges(conn: sa.Connection, needs: Mapping[str, Sequence[str]]) -> list[str]:
    """``["INSERT on embeddb.workers", ...]``: what the connection's role lacks of ``needs``.

    Without USAGE on schema embeddb nothing in it can even be named, so that alone is reported.
    """
    if not conn.execute(sa.text(queries["embeddb_schema_usage"])).scalar():
        return ["USAGE on schema embeddb"]
    pairs = [(table, privilege) for table, wanted in needs.items() for privilege in wanted]
    rows = conn.execute(sa.text(queries["missing_table_privileges"]), {
        "tables": [table for table, _ in pairs], "privileges": [p for _, p in pairs],
    })
    return [f"{row.privilege} on {row.table_name}" for row in rows]


def privilege_error(conn: sa.Connection, exc: BaseException | None,
                    needs: Mapping[str, Sequence[str]], doing: str) -> PrivilegeError | None:
    """A :class:`PrivilegeError` for ``exc``, naming what the role lacks of ``needs``; without
    ``exc``, None when it lacks nothing (a check before starting).

    ``conn`` must not be in the transaction ``exc`` aborted (a fresh connection, or a
    savepoint rolled back).
    """
    role = conn.execute(sa.text("SELECT current_user")).scalar_one()
    gaps = missing_privileges(conn, needs)
    if gaps:
        grant = "them" if len(gaps) > 1 else "it"
        return PrivilegeError(f"{doing}: role {role} lacks {', '.join(gaps)}; grant {grant}"
                              " (README: 'Roles and privileges')")
    if exc is None:
        return None
    return PrivilegeError(f"{doing}: role {role}: {first_line(exc)}")


