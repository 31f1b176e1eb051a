"""The queue as Python functions: what ``embeddb status``, ``retry`` and ``reconcile`` do,
and the worker's side of it (claim, complete, release, fail, park, heartbeat). This module is
the only caller of the queue's statements in ``sql/queries.sql``; the worker orchestrates.

``status``, ``retry`` and ``reconcile`` take an engine or a connection; with an engine they run
in a transaction of their own, with a connection in the caller's (and commit nothing). The
worker's functions take a connection and run in the caller's transaction.

Example::

    import embeddb.queue

    report = embeddb.queue.status(engine)
    for column in report.columns:
        print(column["table_name"], column["pending"], column["parked"])
    embeddb.queue.retry(engine, Ticket.embedding)       # requeue its parked rows
    embeddb.queue.reconcile(engine)                      # queue every missing or stale vector
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import catalog, chunk_sql, column_sql, verbatim
from .catalog import CatalogEntry
from .embedders import shown_backend
from .errors import PrivilegeError, first_line
from .privileges import is_permission_error
from .sql import queries


@dataclass(frozen=True)
class QueueStatus:
    """What ``embeddb status`` shows: one dict per embedded column, one per live worker.

    A column's keys: ``table_schema``, ``table_name``, ``column_name``, ``pending``,
    ``in_flight``, ``parked``, ``lag_seconds``, ``rows_per_second`` (over 5 minutes), the model
    (``model_name``, ``model_fingerprint``, ``dimensions``), ``backend`` (what runs a local
    model: ``torch``, ``onnx``, ``openvino``, ``onnx-int8``; None for an HTTP one),
    ``fault`` / ``fault_since`` / ``fault_retry_seconds`` when the column is failing,
    ``parked_reason`` (the latest), and for a chunked column ``documents`` and ``chunks``.
    A worker's: ``worker_id``, ``state`` (``running``, ``idle``, ``stopped``, or ``gone`` once
    its heartbeat is overdue), ``rows_embedded``, ``heartbeat_age_seconds``.
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
            row["backend"] = shown_backend(row["model_name"], row["backend"])
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
        for entry in entries:  # what waits in the inbox is queued already: not counted again
            _expand_all(conn, entry)
        return {entry.spec.qualified_column: catalog.reconcile(conn, entry) for entry in entries}


def _expand_all(conn: Connection, entry: CatalogEntry) -> None:
    """Expand every inbox entry of ``entry``; a role without the rights leaves them (and
    reconcile then queues their rows itself, which is harmless)."""
    try:
        with conn.begin_nested():
            while _run(conn, "inbox_has_entries", column_id=entry.id).scalar():
                expand_inbox(conn, entry, lock_timeout=None)
    except sa.exc.ProgrammingError as exc:
        if not is_permission_error(exc):
            raise


# --- the worker's side --------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A claimed batch: the keys now held under the lease, the rows found for them (row_key,
    text, hash), and, when some were not found and row-level security may hide them from this
    role, the reason to park those with."""

    keys: list[Any]
    rows: list[Any]
    hidden_by: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed row is retried: exponential backoff, parked after ``max_attempts``."""

    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float


#: Inbox entries expanded per transaction (each holds up to 10,000 keys of a bulk INSERT).
INBOX_ENTRIES_PER_EXPANSION = 10
# An expansion that would wait for a lock gives up quickly and is tried again at the next
# claim: the worker's own write of the previous batch, or another worker, holds the entries.
_EXPANSION_LOCK_TIMEOUT = "200ms"


def expand_inbox(conn: Connection, entry: CatalogEntry,
                 limit: int = INBOX_ENTRIES_PER_EXPANSION,
                 lock_timeout: str | None = _EXPANSION_LOCK_TIMEOUT) -> int:
    """Queue the rows of ``entry``'s inbox entries (bulk INSERTs) in embeddb.pending, deleting
    the entries in the same statement; returns how many rows it queued.

    Rows deleted since, or that need no vector, are not queued. Run it in a transaction of its
    own: until it commits, the entries stay in the inbox, so a crash loses nothing. With a
    ``lock_timeout`` (for the rest of the transaction) it gives up rather than wait long.
    """
    if not _run(conn, "inbox_has_entries", column_id=entry.id).scalar():
        return 0
    hidden = _run(conn, "row_security_active",
                  table=column_sql.qualified_table(entry.spec)).one().active
    if lock_timeout is not None:
        _run(conn, "set_lock_timeout", timeout=lock_timeout)
    statement = column_sql.expand_inbox(entry.spec, entry.id, keep_unseen=bool(hidden))
    return int(conn.exec_driver_sql(statement, {"limit": limit}).rowcount)


def backlog(conn: Connection, entry: CatalogEntry) -> int:
    """Rows of ``entry`` waiting to be embedded: queue entries not parked, and keys in the
    inbox (those count as none for a role that may not read it, as one granted before 0012)."""
    waiting = int(_run(conn, "column_backlog", column_id=entry.id).scalar_one())
    try:
        with conn.begin_nested():
            return waiting + int(_run(conn, "inbox_backlog", column_id=entry.id).scalar_one())
    except sa.exc.ProgrammingError as exc:
        if not is_permission_error(exc):
            raise
        return waiting


def claim(conn: Connection, entry: CatalogEntry, token: uuid.UUID, worker_id: str, limit: int,
          lease_seconds: float) -> Claim:
    """Take up to ``limit`` ready rows of ``entry`` under a lease and read their text."""
    keys = [row.row_key for row in _run(conn, "claim", column_id=entry.id, limit=limit,
                                        token=token, worker_id=worker_id,
                                        lease_seconds=lease_seconds)]
    if not keys:
        return Claim([], [])
    rows = list(conn.exec_driver_sql(column_sql.fetch_texts(entry.spec, entry.id),
                                     {"keys": json.dumps(keys)}).all())
    hidden_by = _hidden_by(conn, entry) if len(rows) < len(keys) else None
    return Claim(keys, rows, hidden_by)


def _hidden_by(conn: Connection, entry: CatalogEntry) -> str | None:
    """Why rows claimed but not found may be hidden from us (row-level security), or None."""
    check = _run(conn, "row_security_active", table=column_sql.qualified_table(entry.spec)).one()
    if not check.active:
        return None
    return (f"row-level security on {check.table_name} hides this row from role {check.role};"
            " run the worker as a role with BYPASSRLS (or as the table's owner without FORCE"
            " ROW LEVEL SECURITY), then `embeddb retry`")


def store_vectors(conn: Connection, entry: CatalogEntry,
                  items: Sequence[tuple[Any, Any, Any]]) -> list[Any]:
    """Write (key, vector or None, text hash) items, guarded: only rows whose text is still
    the text embedded are written. Returns the keys written."""
    if not items:
        return []
    params = {"keys": [json.dumps(key) for key, _, _ in items],
              "vectors": [vector for _, vector, _ in items],
              "hashes": [text_hash for _, _, text_hash in items]}
    result = conn.exec_driver_sql(column_sql.store_vectors(entry.spec, entry.id), params)
    return [row.row_key for row in result]


def complete(conn: Connection, entry: CatalogEntry, token: uuid.UUID, keys: Sequence[Any]) -> None:
    """Forget rows whose vector was stored (or whose row is gone), if still held by ``token``."""
    _run(conn, "complete", column_id=entry.id, token=token, keys=_keys_json(keys))


def release(conn: Connection, entry: CatalogEntry, token: uuid.UUID, keys: Sequence[Any]) -> None:
    """Hand rows back without counting an attempt (their text changed, or the model is down)."""
    _run(conn, "release", column_id=entry.id, token=token, keys=_keys_json(keys))


def fail(conn: Connection, entry: CatalogEntry, token: uuid.UUID,
         failures: Sequence[dict[str, Any]], policy: RetryPolicy) -> None:
    """Count a failed attempt for each ``{"row_key": ..., "error": ...}``; back off or park."""
    _run(conn, "fail", column_id=entry.id, token=token, failures=json.dumps(list(failures)),
         max_attempts=policy.max_attempts, backoff_seconds=policy.backoff_seconds,
         backoff_max_seconds=policy.backoff_max_seconds)


def park(conn: Connection, entry: CatalogEntry, token: uuid.UUID, keys: Sequence[Any],
         reason: str) -> None:
    """Set rows aside at once with a reason no retry would change; ``retry`` brings them back."""
    _run(conn, "park", column_id=entry.id, token=token, keys=_keys_json(keys), reason=reason)


def release_column(conn: Connection, entry: CatalogEntry, worker_id: str) -> None:
    """Hand back every claim ``worker_id`` holds on ``entry`` (its column failed)."""
    _run(conn, "release_column_claims", column_id=entry.id, worker_id=worker_id)


def release_worker(conn: Connection, worker_id: str) -> None:
    """Hand back every claim ``worker_id`` holds (it is stopping)."""
    _run(conn, "release_worker_claims", worker_id=worker_id)


def record_throughput(conn: Connection, entry: CatalogEntry, rows: int) -> None:
    """Count ``rows`` stored this minute, for ``status``'s rows per second."""
    _run(conn, "record_throughput", column_id=entry.id, rows=rows)


def prune_throughput(conn: Connection) -> None:
    """Forget throughput counts older than a day."""
    _run(conn, "prune_throughput")


def record_fault(conn: Connection, entry: CatalogEntry, reason: str | None,
                 retry_seconds: float = 0.0) -> None:
    """Show ``entry``'s fault (or, with None, its end) in embeddb.columns, for ``status``."""
    if reason is None:
        _run(conn, "clear_fault", column_id=entry.id)
    else:
        _run(conn, "record_fault", column_id=entry.id, fault=reason, retry_seconds=retry_seconds)


def heartbeat(conn: Connection, worker_id: str, *, hostname: str, pid: int, rows_embedded: int,
              state: str, stale_after_seconds: float) -> None:
    """Say ``worker_id`` is alive (``state``: running, idle or stopped)."""
    _run(conn, "heartbeat", worker_id=worker_id, hostname=hostname, pid=pid,
         rows_embedded=rows_embedded, state=state, stale_after_seconds=stale_after_seconds)


def _run(conn: Connection, name: str, **params: Any) -> sa.CursorResult[Any]:
    return conn.execute(sa.text(queries[name]), params)


def _keys_json(keys: Sequence[Any]) -> str:
    return json.dumps(list(keys))


@contextmanager
def _connection(bind: Engine | Connection, begin: bool = False) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    with (bind.begin() if begin else bind.connect()) as conn:
        yield conn


__all__ = ["QueueStatus", "reconcile", "retry", "status"]
