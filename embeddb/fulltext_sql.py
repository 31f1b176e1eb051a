"""The SQL of a column's full-text index, composed with psycopg.sql.

A column declared with ``fulltext=`` (catalog id N) also owns:

* the ``tsvector`` column ``<column>_fulltext`` and its GIN index
  ``<table>_<column>_fulltext_gin``; the row trigger ``embeddb_<column>_fts_doc`` (BEFORE
  INSERT or UPDATE of a source column, function ``embeddb.fulltext_document_N()``) sets it to
  ``embeddb.fulltext_vector(config, embeddb.render_N(row))``, so the text leg is current
  the moment a row is written, before the worker has embedded it;
* nothing else: the BM25 statistics are read at query time (``embeddb.query._bm25``), so a
  write pays for its own row's ``tsvector`` and GIN entries only, and concurrent writers
  share no bookkeeping rows.
"""

from __future__ import annotations

from psycopg import sql

from .column_sql import render_function, table
from .spec import EmbeddingSpec


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def document_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"fulltext_document_{column_id}")


def document(spec: EmbeddingSpec, column_id: int, row: sql.Composable) -> sql.Composable:
    """The ``tsvector`` of ``row``'s text in the column's configuration; never too long."""
    assert spec.fulltext is not None
    return sql.SQL("embeddb.fulltext_vector({}::regconfig, {}({}))").format(
        sql.Literal(spec.fulltext), render_function(column_id), row)


def add_column(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} tsvector").format(
        table(spec), sql.Identifier(spec.fulltext_column)))


def create_index(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
        sql.Identifier(spec.fulltext_index_name), table(spec),
        sql.Identifier(spec.fulltext_column)))


def fill(spec: EmbeddingSpec, column_id: int) -> str:
    """Write every row's ``tsvector`` now (installing, or a new configuration)."""
    return _text(sql.SQL("UPDATE {} AS src SET {} = {}").format(
        table(spec), sql.Identifier(spec.fulltext_column),
        document(spec, column_id, sql.Identifier("src"))))


def create_document_function(spec: EmbeddingSpec, column_id: int) -> str:
    body = sql.SQL("BEGIN NEW.{} := {}; RETURN NEW; END").format(
        sql.Identifier(spec.fulltext_column), document(spec, column_id, sql.SQL("NEW")))
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}"
    ).format(document_function(column_id), sql.Literal(_text(body))))


def trigger_name(spec: EmbeddingSpec) -> str:
    return f"{spec.fulltext_trigger_prefix}_doc"


def create_triggers(spec: EmbeddingSpec, column_id: int) -> list[str]:
    """The row trigger writing the ``tsvector`` (dropped first: the source columns may differ)."""
    name = sql.Identifier(trigger_name(spec))
    return [_text(s) for s in (
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(name, table(spec)),
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OF {} ON {} FOR EACH ROW"
            " EXECUTE FUNCTION {}()"
        ).format(name, sql.SQL(", ").join(map(sql.Identifier, spec.template.columns)),
                 table(spec), document_function(column_id)),
    )]


def drop_objects(spec: EmbeddingSpec, column_id: int, drop_columns: bool) -> list[str]:
    """Everything above."""
    statements: list[sql.Composable] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(trigger_name(spec)), table(spec)),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(document_function(column_id)),
        sql.SQL("DROP INDEX IF EXISTS {}").format(
            sql.Identifier(spec.schema, spec.fulltext_index_name)),
    ]
    if drop_columns:
        statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
            table(spec), sql.Identifier(spec.fulltext_column)))
    return [_text(s) for s in statements]
