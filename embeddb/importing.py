"""Loading vectors computed elsewhere into an embedded column, checked against its model."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa

from . import backfill, catalog, column_sql, import_sql, verbatim
from .embedders import load_embedder
from .errors import EmbeddbError, first_line
from .privileges import is_permission_error
from .query._query_vectors import column_entry
from .spec import EmbeddingSpec
from .sql import queries

log = logging.getLogger(__name__)

#: An import of at least this many rows and this share of its table sets the HNSW index aside
#: (the worker's defaults for a backlog, :class:`embeddb.worker.WorkerConfig`).
SET_ASIDE_ROWS = 1_000
SET_ASIDE_SHARE = 0.5


class ImportRefused(EmbeddbError):
    """Imported vectors do not belong to the column (another model, unknown or repeated rows);
    nothing was written.

    Example::

        try:
            import_vectors(engine, Ticket.embedding, rows)
        except ImportRefused as exc:
            print(exc)              # names the rows and what was wrong with them
    """


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_vectors` did.

    Example::

        result = import_vectors(engine, Ticket.embedding, zip(ids, vectors))
        print(result)
    """

    rows: int  #: rows whose vector was written
    checked: int  #: rows re-encoded by the column's model to check the import
    min_cosine: float | None  #: the lowest cosine between an imported and a re-encoded vector
    index_rebuilt: bool = False  #: the HNSW index was set aside for the writes and built again


def import_vectors(
    bind: sa.Engine | sa.Connection,
    column: Any,
    rows: Iterable[tuple[Any, Sequence[float] | np.ndarray[Any, Any]]],
    *,
    check: int = 8,
    min_cosine: float = 0.99,
    set_index_aside: bool | None = None,
    index_build_memory: str = "512MB",
) -> ImportResult:
    """Bulk-load precomputed vectors for existing rows, marked current so the worker skips them.

    ``rows`` yields ``(key, vector)``: the primary key (a value, or a tuple for a composite
    key, in primary-key column order) and a vector of the column's dimension. They are COPYed
    (binary) into a temporary table and written by one UPDATE; meanwhile ``check`` random rows
    are re-encoded with the column's own model (in a thread, loading the model if this process
    has not) and compared. A cosine below ``min_cosine``, a key with no row or a key given
    twice raises :class:`ImportRefused` naming the rows, and nothing is written (the keys are
    looked at only when the UPDATE missed rows; the verdict of the check is awaited before the
    transaction ends). Each written row gets the hash of its current text, so the worker
    leaves it alone; a row whose text changes later is re-embedded as usual. One transaction.

    Writing a vector into an HNSW-indexed row costs milliseconds (it enters the graph), so an
    import of at least :data:`SET_ASIDE_ROWS` rows and :data:`SET_ASIDE_SHARE` of the table
    (``set_index_aside=None``; ``True``/``False`` decide it outright) drops the index, writes
    the vectors, and builds the index again with ``index_build_memory`` of
    ``maintenance_work_mem``, all in the import's transaction: a failure anywhere leaves the
    column and its index as they were. Meanwhile the table is locked (``DROP INDEX`` takes an
    ACCESS EXCLUSIVE lock), searches and writes wait. A partitioned table, or an index the
    role may not drop, keeps its index in place. The worker recalibrates the new index's
    search when it is next idle.

    Example::

        embeddb.import_vectors(engine, Ticket.embedding, zip(ids, vectors))
    """
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            return import_vectors(conn, column, rows, check=check, min_cosine=min_cosine,
                                  set_index_aside=set_index_aside,
                                  index_build_memory=index_build_memory)
    entry = column_entry(bind, column)
    spec = entry.spec
    with bind.begin_nested():
        bind.exec_driver_sql(import_sql.create_staging(spec))
        types = list(bind.exec_driver_sql(import_sql.staging_types()).scalars())
        driver = bind.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        staged = _copy(driver, import_sql.copy_staging(spec), types, rows, spec)
        sample = _draw_sample(bind, entry, check, staged)
        # the sample is re-encoded (the model loaded first if need be) in a thread while the
        # database writes; its verdict is awaited before the commit, and a refusal then
        # rolls the savepoint back like any failure
        with ThreadPoolExecutor(1, thread_name_prefix="embeddb-import-check") as pool:
            verdict = pool.submit(_compare, entry, sample, min_cosine)
            aside = _set_index_aside(bind, entry, staged, set_index_aside)
            written = int(verbatim.execute(bind, import_sql.store(spec, entry.id)).rowcount)
            # each key names one row, so every staged row was written, once, unless some key
            # has no row or came twice: only then are the keys looked at (the savepoint undoes
            # the write), which spares an import that is right two passes over its keys
            if written != staged:
                _refuse_bad_keys(bind, entry, written, staged)
            bind.exec_driver_sql(import_sql.forget_pending(spec, entry.id))
            bind.exec_driver_sql(f"DROP TABLE {import_sql.STAGING}")
            if aside:
                _build_index(bind, spec, index_build_memory)
            checked, lowest = verdict.result()
    return ImportResult(written, checked, lowest, aside)


def _set_index_aside(conn: sa.Connection, entry: catalog.CatalogEntry, staged: int,
                     wanted: bool | None) -> bool:
    """Drop the column's index inside the import's transaction if the import is worth it;
    True if dropped (the caller builds it again before the transaction ends)."""
    spec = entry.spec
    if spec.index is None or wanted is False:
        return False
    if wanted is None:
        table_rows = backfill.count_table_rows(conn, entry, deciding=staged / SET_ASIDE_SHARE)
        if not backfill.worth_setting_aside(staged, table_rows, SET_ASIDE_ROWS,
                                            SET_ASIDE_SHARE):
            return False
    if backfill.is_partitioned(conn, entry):
        return False  # one build over every partition: see embeddb.backfill's docstring
    # the worker's lock for setting an index aside or building it again: if a worker holds
    # it, or the index is aside already (the worker builds it when the backlog is done), skip
    deferred = conn.execute(sa.text(queries["lock_column_for_index"]),
                            {"column_id": entry.id}).scalar()
    if deferred is None or deferred:
        return False
    if conn.execute(sa.text(queries["index_is_invalid"]),
                    {"qualified_index": column_sql.qualified_index(spec)}).scalar() is None:
        return False  # no index to set aside (dropped by hand): the import creates none
    try:
        with conn.begin_nested():
            verbatim.execute(conn, column_sql.drop_index(spec))
    except sa.exc.ProgrammingError as exc:
        if not is_permission_error(exc):
            raise
        log.info("%s: importing with the HNSW index in place: %s", spec.qualified_column,
                 first_line(exc))
        return False
    return True


def _build_index(conn: sa.Connection, spec: EmbeddingSpec, memory: str) -> None:
    statement = column_sql.create_index(spec)
    assert statement is not None
    # local to the transaction: the build's graph fits in memory while it grows
    conn.execute(sa.text("SELECT set_config('maintenance_work_mem', :memory, true)"),
                 {"memory": memory})
    verbatim.execute(conn, statement)


def _copy(driver: psycopg.Connection[Any], statement: str, types: list[str],
          rows: Iterable[tuple[Any, Any]], spec: EmbeddingSpec) -> int:
    """COPY ``rows`` into the staging table; how many."""
    key_count = len(spec.key_columns)
    # the vector goes out in pgvector's binary form (dimension, 0, big-endian floats), made
    # here by numpy and sent as bytes: pgvector's dumper builds a Vector object per row
    header = struct.pack(">HH", spec.dimensions, 0)
    wire = np.dtype(">f2" if spec.vector_type == "halfvec" else ">f4")
    written = 0
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types([*types[:-1], "bytea"])
        for key, vector in rows:
            keys = key if isinstance(key, tuple) else (key,)
            if len(keys) != key_count:
                raise ImportRefused(f"key {key!r} has {len(keys)} parts, the table's has"
                                    f" {key_count}")
            array = np.asarray(vector, dtype=wire)
            if array.shape != (spec.dimensions,):
                raise ImportRefused(
                    f"import into {spec.qualified_column} refused, nothing written: the vector"
                    f" of key {key!r} has shape {array.shape}, the column holds"
                    f" {spec.dimensions} dimensions")
            copy.write_row((*keys, header + array.tobytes()))
            written += 1
    return written


def _refuse_bad_keys(conn: sa.Connection, entry: catalog.CatalogEntry, written: int,
                     staged: int) -> None:
    """Raise :class:`ImportRefused` naming the keys that made the write miss rows."""
    name, where = entry.spec.qualified_column, entry.spec.qualified_table
    for statement, problem in ((import_sql.unknown_keys(entry.spec), f"no row in {where}"),
                               (import_sql.duplicate_keys(entry.spec), "given more than once")):
        keys = [json.dumps(row.row_key) for row in conn.exec_driver_sql(statement)]
        if keys:
            raise ImportRefused(f"import into {name} refused, nothing written: {problem}:"
                                f" {', '.join(keys)}")
    raise ImportRefused(f"import into {name} refused, nothing written: {staged} rows given but"
                        f" {written} updated (does a trigger on {where} skip updates?)")


def _draw_sample(conn: sa.Connection, entry: catalog.CatalogEntry, check: int,
                 staged: int) -> list[sa.Row[Any]]:
    """Up to ``check`` random staged rows that have text, with their text and vector."""
    if check <= 0:
        return []
    # drawn from a few times as many random staged rows, so only those are joined and
    # rendered; from all of them when too few of those have text
    sample = conn.exec_driver_sql(import_sql.sample(entry.spec, entry.id),
                                  {"limit": check, "draw": check * 4}).all()
    if len(sample) < check and staged > check * 4:
        sample = conn.exec_driver_sql(import_sql.sample(entry.spec, entry.id),
                                      {"limit": check, "draw": None}).all()
    return list(sample)


def _compare(entry: catalog.CatalogEntry, sample: list[sa.Row[Any]],
             min_cosine: float) -> tuple[int, float | None]:
    """Re-encode ``sample`` with the column's model: (rows checked, lowest cosine), or
    :class:`ImportRefused` naming the rows that disagree. Touches no connection."""
    if not sample:
        return 0, None
    spec = entry.spec
    embedder = load_embedder(spec.model, spec.encode, spec.dimensions)
    catalog.check_model(entry, embedder.identity)
    fresh = embedder.embed_documents([row.text for row in sample])
    imported = np.array([row.vector for row in sample], dtype=np.float32)
    cosines = (imported * fresh).sum(axis=1) / np.maximum(
        np.linalg.norm(imported, axis=1) * np.linalg.norm(fresh, axis=1), 1e-12)
    bad = [f"{json.dumps(row.row_key)} (cosine {c:.3f})"
           for row, c in zip(sample, cosines, strict=True) if c < min_cosine]
    if bad:
        raise ImportRefused(
            f"import into {spec.qualified_column} refused, nothing written: re-encoding"
            f" {len(sample)} rows with {spec.model} disagrees with the imported vectors of"
            f" {', '.join(bad)} (at least {min_cosine} needed); were they made by another model"
            " or from other text?")
    return len(sample), float(cosines.min())
