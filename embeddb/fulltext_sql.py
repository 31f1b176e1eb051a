"""The SQL of a column's full-text index, composed with psycopg.sql.

A column declared with ``fulltext=`` also owns the ``tsvector`` column ``<column>_fulltext``
and its GIN index ``<table>_<column>_fulltext_gin``. The worker writes a row's ``tsvector``
in the statement that stores its vector (:func:`embeddb.column_sql.store_vectors`, from the
same rendered text), so the application's writes pay nothing for it: ``to_tsvector`` costs
about 0.45 ms an abstract here, more than the rest of embeddb's trigger, and a fraction of a
percent of the worker's time per row. A row joins both legs of hybrid search when it is
embedded. Installing writes every row's ``tsvector`` at once.

The BM25 statistics are read at query time (``embeddb.query._bm25``): nothing else is kept,
so concurrent writers share no bookkeeping rows.
"""

from __future__ import annotations

from psycopg import sql

from .column_sql import render_function, table
from .spec import EmbeddingSpec


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def document(spec: EmbeddingSpec, column_id: int, row: sql.Composable) -> sql.Composable:
    """The ``tsvector`` of ``row``'s text in the column's configuration; never too long."""
    assert spec.fulltext is not None
    return sql.SQL("embeddb.fulltext_vector({}::regconfig, {}({}))").format(
        sql.Literal(spec.fulltext), render_function(column_id), row)


def add_column(spec: EmbeddingSpec) -> str:
    """The ``tsvector`` column, kept in the row (``STORAGE MAIN``) when it fits.

    BM25 reads the ``tsvector`` of every row it scores; out of line (where PostgreSQL puts an
    abstract's ~1.5 kB next to its text and vector) each read is a TOAST index lookup, and
    the text leg took 3-4x as long on SciFact. Set again on every install, so an existing
    column's rows move in as they are rewritten.
    """
    column = sql.Identifier(spec.fulltext_column)
    return _text(sql.SQL(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} tsvector, ALTER COLUMN {} SET STORAGE MAIN"
    ).format(table(spec), column, column))


def create_index(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
        sql.Identifier(spec.fulltext_index_name), table(spec),
        sql.Identifier(spec.fulltext_column)))


def fill(spec: EmbeddingSpec, column_id: int) -> str:
    """Write every row's ``tsvector`` now (installing, or a new configuration)."""
    return _text(sql.SQL("UPDATE {} AS src SET {} = {}").format(
        table(spec), sql.Identifier(spec.fulltext_column),
        document(spec, column_id, sql.Identifier("src"))))


def drop_objects(spec: EmbeddingSpec, column_id: int, drop_columns: bool) -> list[str]:
    """Everything above."""
    statements: list[sql.Composable] = [
        sql.SQL("DROP INDEX IF EXISTS {}").format(
            sql.Identifier(spec.schema, spec.fulltext_index_name)),
    ]
    if drop_columns:
        statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
            table(spec), sql.Identifier(spec.fulltext_column)))
    return [_text(s) for s in statements]
