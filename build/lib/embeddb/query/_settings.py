"""Planner settings for one query, without leaking into the caller's transaction.

``scoped(conn, {"hnsw.ef_search": "64", ...})`` saves the current values and sets the new ones,
transaction-locally (``set_config(..., true)``, i.e. ``SET LOCAL``), in one statement before
the query. Putting them back is deferred: the saved values are restored just before the next
statement SQLAlchemy sends on that connection in the same transaction (a listener on the
engine's ``before_cursor_execute``), and forgotten if the transaction ends first, because its
end discards transaction-local settings anyway. So a search followed by ``COMMIT`` costs one
statement more than the query, exactly what ``SET LOCAL`` written by hand costs, and any
statement that follows in the same transaction still sees the caller's own settings.

Why not a savepoint rolled back after the query: that costs four round trips, not one, and
psycopg reads the ``ROLLBACK`` tag of ``ROLLBACK TO SAVEPOINT`` as a reason to deallocate every
prepared statement of the connection, the caller's included.

Only statements sent through the raw driver connection, bypassing SQLAlchemy, between a search
and the next SQLAlchemy statement could see the search's settings.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection


@functools.lru_cache(maxsize=8)
def _save_and_set(count: int) -> sa.TextClause:
    """One row: the ``count`` settings' current values, then ``set_config`` of each.

    The materialized CTE reads every old value before any is set. One row of scalar parameters
    costs less than ``unnest`` of two arrays into a row per setting (~0.04 ms a search).
    """
    previous = ", ".join(f"current_setting(:name{i}, true) AS previous{i}" for i in range(count))
    columns = ", ".join(f"previous{i}" for i in range(count))
    sets = ", ".join(f"set_config(:name{i}, :value{i}, true)" for i in range(count))
    # only parameter placeholders are formatted in: names and values are bound
    return sa.text(f"WITH previous AS MATERIALIZED (SELECT {previous})"
                   f" SELECT {columns}, {sets} FROM previous")


# sent on the driver's cursor from inside SQLAlchemy's event, so in psycopg's own style
_RESTORE = """
SELECT set_config(s.name, s.value, true)
FROM unnest(%(names)s::text[], %(values)s::text[]) AS s(name, value)
"""
_PENDING = "embeddb.restore_settings"  # key in the pooled connection's info dict

_listening: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_lock = threading.Lock()


@contextmanager
def scoped(conn: Connection, values: Mapping[str, str]) -> Iterator[None]:
    """Run the body with ``values`` set for the current transaction only.

    One statement before the body (none when ``values`` is empty); the old values come back
    before the next statement on this connection, if the transaction lasts that long. On a
    connection in autocommit mode the body runs in a transaction of its own.
    """
    if not values:
        yield
        return
    if getattr(conn.connection.driver_connection, "autocommit", False):
        with _own_transaction(conn):
            _set(conn, values)
            yield
        return
    # our own statements must not trigger a restore of an earlier search's settings
    earlier = _live_pending(conn, conn.info.pop(_PENDING, None))
    previous = _set(conn, values)
    if earlier is not None:
        previous.update(earlier)  # the caller's values, saved by that earlier search, win
    _listen(conn.engine)
    try:
        yield
    finally:  # even after an error: if the transaction survived it, restore before going on
        conn.info[_PENDING] = (conn.get_transaction(), previous)


def _set(conn: Connection, values: Mapping[str, str]) -> dict[str, str | None]:
    parameters: dict[str, str] = {}
    for i, (name, value) in enumerate(values.items()):
        parameters[f"name{i}"] = name
        parameters[f"value{i}"] = value
    row = conn.execute(_save_and_set(len(values)), parameters).one()
    return dict(zip(values, row[:len(values)], strict=True))


@contextmanager
def _own_transaction(conn: Connection) -> Iterator[None]:
    conn.exec_driver_sql("BEGIN")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


def _live_pending(conn: Connection, pending: Any) -> dict[str, str | None] | None:
    """The values to restore, if they were saved in the transaction still running."""
    if pending is None:
        return None
    transaction, previous = pending
    current = conn.get_transaction()
    if current is None or current is not transaction or not current.is_active:
        return None  # that transaction ended, and its settings with it
    status = getattr(getattr(conn.connection.driver_connection, "info", None),
                     "transaction_status", TransactionStatus.INTRANS)
    if status != TransactionStatus.INTRANS:
        return None  # idle (it ended behind SQLAlchemy's back) or failed: nothing to restore
    return dict(previous)


def _listen(engine: sa.Engine) -> None:
    if engine in _listening:  # the usual case, answered without taking the lock
        return
    with _lock:
        if engine not in _listening:
            event.listen(engine, "before_cursor_execute", _restore_before_next_statement)
            _listening.add(engine)


def _restore_before_next_statement(conn: Connection, cursor: Any, statement: str,
                                   parameters: Any, context: Any, executemany: bool) -> None:
    previous = _live_pending(conn, conn.info.pop(_PENDING, None))
    if previous:
        cursor.execute(_RESTORE, {"names": list(previous), "values": list(previous.values())})
