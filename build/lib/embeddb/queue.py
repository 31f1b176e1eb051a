"""The queue as Python functions: what ``embeddb status``, ``retry`` and ``reconcile`` do.

Each takes an engine or a connection; with an engine it runs in a transaction of its own,
with a connection it runs in the caller's (and commits nothing).

Example::

    import embeddb.queue

    report = embeddb.queue.status(engine)
    for column in report.columns:
        print(column["table_name"], column["pending"], column["parked"])
    embeddb.queue.retry(engine, Ticket.embedding)       # requeue its parked rows
    embeddb.queue.reconcile(engine)                      # queue every missing or stale vector
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import catalog, chunk_sql, column_sql, verbatim
from .catalog import CatalogEntry
from .errors import PrivilegeError, first_line
from .privileges import is_permission_error
from .sql import queries


@dataclass(frozen=True)
class QueueStatus:
    """What ``embeddb status`` shows: one dict per embedded column, one per live worker.

    A column's keys: ``table_schema``, ``table_name``, ``column_name``, ``pending``,
    ``in_flight``, ``parked``, ``lag_seconds``, ``rows_per_second`` (over 5 minutes), the model
    (``model_name``, ``model_fingerprint``, ``dimensions``), ``fault`` / ``fault_since`` /
    ``fault_retry_seconds`` when the column is failing, ``parked_reason`` (the latest), and for
    a chunked column ``documents`` and ``chunks``. A worker's: ``worker_id``, ``state``
    (``running``, ``idle``, ``stopped``, or ``gone`` once its heartbeat is overdue),
    ``rows_embedded``, ``heartbeat_age_seconds``.
    """

    columns: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)


def status(bind: Engine | Connection) -> QueueStatus:
    """The queue's state per column and the workers seen in the last hour.

    A database without embeddb's schema has no columns and no workers.
    """
    with _connection(bind) as conn:
        if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
            return QueueStatus()
        columns = [dict(row._mapping) for row in conn.execute(sa.text(queries["status"]))]
        workers = [dict(row._mapping) for row in conn.execute(sa.text(queries["workers"]))]
        chunked = {e.id: e for e in catalog.list_entries(conn) if e.spec.chunking is not None}
        for row in columns:
            entry = chunked.get(row["id"])
            if entry is not None:
                counts = verbatim.execute(conn, chunk_sql.count_chunks(entry.spec)).one()
                row["documents"], row["chunks"] = counts.documents, counts.chunks
    return QueueStatus(columns, workers)


def retry(bind: Engine | Connection, column: CatalogEntry | None = None) -> int:
    """Requeue the parked rows of ``column`` (all columns when None); returns how many.

    Their attempts start again from zero, and the workers are woken.
    """
    with _connection(bind, begin=True) as conn:
        column_id = column.id if column is not None else None
        count = conn.execute(sa.text(queries["retry_parked"]), {"column_id": column_id}).rowcount
        conn.execute(sa.text("SELECT pg_notify(:channel, 'retry')"),
                     {"channel": column_sql.NOTIFY_CHANNEL})
    return int(count)


def reconcile(bind: Engine | Connection, column: CatalogEntry | None = None) -> dict[str, int]:
    """Queue every row whose vector is missing or stale, rebuilding the pending set from the
    tables themselves (how a lost queue entry heals); returns rows queued per column.

    Raises :class:`~embeddb.errors.PrivilegeError` naming what the role lacks.
    """
    with _connection(bind, begin=True) as conn:
        if column is not None:
            entries = [column]
        else:
            try:
                entries = catalog.list_entries(conn)
            except sa.exc.ProgrammingError as exc:
                if not is_permission_error(exc):
                    raise
                raise PrivilegeError(
                    f"reconcile: cannot read embeddb's catalog: {first_line(exc)} (the role"
                    " needs USAGE on schema embeddb and SELECT on embeddb.columns)") from exc
        return {entry.spec.qualified_column: catalog.reconcile(conn, entry) for entry in entries}


@contextmanager
def _connection(bind: Engine | Connection, begin: bool = False) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    with (bind.begin() if begin else bind.connect()) as conn:
        yield conn


__all__ = ["QueueStatus", "reconcile", "retry", "status"]
