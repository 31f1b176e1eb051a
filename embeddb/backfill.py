"""Large backlogs: set a column's HNSW index aside while they are embedded, then rebuild it.

Keeping an HNSW index up to date costs about a millisecond of database CPU per stored vector
(measured here: ~800 rows/s with the index against ~35,000 without), which competes with the
model for the same cores, while building it from scratch costs ~0.2 ms per row of the table
(5,000 rows of 384 dimensions: 6.5 s row by row, 1.0 s as one build). So when a backlog is a
large share of its table, such as the first backfill or a re-embedding after a model change,
building the index once at the end is far cheaper. A chunked column's chunk index (several
vectors per row) is set aside and rebuilt with it. A backlog that is a small share of a big
table keeps the index: a rebuild would cost more, and searches on the rows already embedded
would lose their index meanwhile (they stay exact, but an exact scan of a big table is slow).

Only one worker sets an index aside or rebuilds it (a row lock on the catalog row, then an
advisory lock for the build); the build is CONCURRENTLY, so the application keeps writing.

Two cases keep the index in place whatever the backlog:

* a partitioned table: its index is a tree of one index per partition, which PostgreSQL cannot
  build CONCURRENTLY in one statement. Building each partition's index concurrently and
  attaching it would work, but leaves the parent's index invalid until the last partition is
  done, with more ways to stop half-way; partitioned tables are also the big ones, where a
  backlog is rarely most of the table. Kept in place, every row is indexed as it is stored.
* a role that may not drop the index (it belongs to another role): the worker embeds with the
  index in place rather than not at all (:class:`CannotSetAside`).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import calibration, chunk_sql, column_sql, queue, verbatim
from .catalog import CatalogEntry
from .errors import EmbeddbError, first_line
from .privileges import is_permission_error
from .sql import queries

log = logging.getLogger(__name__)


class CannotSetAside(EmbeddbError):
    """The worker's role may not drop the column's index; the backlog is embedded with it."""


def worth_setting_aside(backlog: int, table_rows: float, min_backlog: int,
                        min_share: float) -> bool:
    """Whether embedding ``backlog`` rows of a ``table_rows``-row table should be done with the
    index aside: at least ``min_backlog`` rows (0: never) and ``min_share`` of the table."""
    return 0 < min_backlog <= backlog and backlog >= min_share * table_rows


def set_index_aside(engine: Engine, entry: CatalogEntry, min_backlog: int,
                    min_share: float) -> bool:
    """Drop the column's index if the pending rows are worth it (:func:`worth_setting_aside`);
    True if dropped."""
    if entry.spec.index is None or min_backlog <= 0:
        return False
    params = {"column_id": entry.id}
    with engine.begin() as conn:
        deferred = conn.execute(sa.text(queries["lock_column_for_index"]), params).scalar()
        if deferred is None or deferred:  # another worker holds it, or it is already aside
            return False
        backlog = queue.backlog(conn, entry)
        if backlog < min_backlog:
            return False
        if is_partitioned(conn, entry):
            return False  # see the module's docstring
        table_rows = count_table_rows(conn, entry, deciding=backlog / max(min_share, 1e-9))
        if not worth_setting_aside(backlog, table_rows, min_backlog, min_share):
            return False
        try:
            with conn.begin_nested():
                verbatim.execute(conn, column_sql.drop_index(entry.spec))
                if entry.spec.chunking is not None:  # its chunks' index, several per row
                    verbatim.execute(conn, chunk_sql.drop_index(entry.spec))
        except sa.exc.ProgrammingError as exc:
            if not is_permission_error(exc):
                raise
            raise CannotSetAside(
                f"{entry.spec.qualified_column}: {backlog} rows pending, embedded with the HNSW"
                f" index in place: {first_line(exc)} (the index's owner may set it aside)"
            ) from exc
        conn.execute(sa.text(queries["set_index_deferred"]), {**params, "deferred": True})
    log.info("%s: %d rows pending; HNSW index set aside until they are embedded",
             entry.spec.qualified_column, backlog)
    return True


def is_partitioned(conn: sa.Connection, entry: CatalogEntry) -> bool:
    return bool(conn.execute(sa.text(queries["table_is_partitioned"]),
                             {"table": column_sql.qualified_table(entry.spec)}).scalar())


def count_table_rows(conn: sa.Connection, entry: CatalogEntry, deciding: float) -> float:
    """The table's row count: the planner's estimate when it is far above ``deciding`` (the
    count at which the answer would change), else counted, since a table filled after its
    last ANALYZE has no estimate or a stale one."""
    estimate = float(conn.execute(sa.text(queries["table_row_estimate"]),
                                  {"table": column_sql.qualified_table(entry.spec)}).scalar_one())
    if estimate > 2 * deciding:
        return estimate
    return float(verbatim.execute(conn, column_sql.count_rows(entry.spec)).scalar_one())


def rebuild_index(engine: Engine, entry: CatalogEntry, memory: str) -> bool:
    """Build the index again once nothing is pending; True if this call built it."""
    if entry.spec.index is None:
        return False
    params = {"column_id": entry.id}
    with engine.connect() as conn:
        if not conn.execute(sa.text(queries["index_is_deferred"]), params).scalar():
            return False
        if queue.backlog(conn, entry) > 0:
            return False  # other workers are still at it; the last one to finish builds
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(sa.text(queries["try_index_build_lock"]), params).scalar():
            return False
        try:
            built = _build(conn, entry, memory)
        finally:
            conn.execute(sa.text(queries["index_build_unlock"]), params)
            conn.exec_driver_sql("RESET statement_timeout; RESET maintenance_work_mem")
    if built:  # a new graph has a recall of its own: measure it before searches rely on it
        calibration.calibrate_quietly(engine, entry)
    return True


def _build(conn: sa.Connection, entry: CatalogEntry, memory: str) -> bool:
    spec, params = entry.spec, {"column_id": entry.id}
    if not conn.execute(sa.text(queries["index_is_deferred"]), params).scalar():
        return False  # built by another worker between our checks
    # A partitioned table's index cannot be built CONCURRENTLY: built in place, it blocks
    # writes meanwhile. Only an index set aside by an older embeddb is rebuilt so.
    concurrently = not is_partitioned(conn, entry)
    statement = column_sql.create_index(spec, concurrently=concurrently)
    assert statement is not None
    # a build takes minutes on a big table; give it memory so the graph fits while it grows
    conn.exec_driver_sql("SET statement_timeout = 0")
    conn.execute(sa.text("SELECT set_config('maintenance_work_mem', :memory, false)"),
                 {"memory": memory})
    builds = [(column_sql.qualified_index(spec), statement,
               column_sql.drop_index(spec, concurrently=concurrently))]
    if spec.chunking is not None:
        chunk_index = chunk_sql.create_index(spec, concurrently=concurrently)
        assert chunk_index is not None
        builds.append((chunk_sql.qualified_index(spec), chunk_index,
                       chunk_sql.drop_index(spec, concurrently=concurrently)))
    log.info("%s: building the HNSW index", spec.qualified_column)
    for qualified_index, create, drop in builds:
        invalid = conn.execute(sa.text(queries["index_is_invalid"]),
                               {"qualified_index": qualified_index}).scalar()
        if invalid:  # left behind by a build that was interrupted
            verbatim.execute(conn, drop)
        verbatim.execute(conn, create)
    conn.execute(sa.text(queries["set_index_deferred"]), {**params, "deferred": False})
    log.info("%s: HNSW index built", spec.qualified_column)
    return True
