"""SQL that changes or removes the stored vectors of an embedded column, for migrations.

Composed with psycopg.sql like :mod:`embeddb.column_sql` (whose ``table`` it shares); kept apart
because only the catalog's ``install``, ``alter`` and ``uninstall`` use it.
"""

from __future__ import annotations

from psycopg import sql

from .column_sql import column_type, table
from .spec import EmbeddingSpec


def resize_vector(spec: EmbeddingSpec) -> str:
    """Give the vector column ``spec``'s dimension; vectors of the old size cannot be kept."""
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING NULL").format(
        table(spec), sql.Identifier(spec.column), column_type(spec)).as_string(None)


def retype_vector(spec: EmbeddingSpec) -> str:
    """Store the vector column as ``spec``'s vector type (vector <-> halfvec) by a cast: same
    dimension, so the stored vectors convert and need no re-embedding. Drop its index first:
    the old operator class does not accept the new type."""
    return sql.SQL("ALTER TABLE {table} ALTER COLUMN {column} TYPE {type} USING {column}::{type}"
                   ).format(table=table(spec), column=sql.Identifier(spec.column),
                            type=column_type(spec)).as_string(None)


def rename_vector_columns(spec: EmbeddingSpec, renamed: EmbeddingSpec) -> list[str]:
    """Give ``spec``'s vector and hash columns and its index ``renamed``'s names (a generation
    swap). The index may be missing (set aside while a backlog is embedded): IF EXISTS."""
    return [
        sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
            table(spec), sql.Identifier(old), sql.Identifier(new)).as_string(None)
        for old, new in ((spec.column, renamed.column), (spec.hash_column, renamed.hash_column))
    ] + [sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
        sql.Identifier(spec.schema, spec.index_name),
        sql.Identifier(renamed.index_name)).as_string(None)]


def lock_exclusively(spec: EmbeddingSpec) -> str:
    """Wait (up to the transaction's lock_timeout) until no query reads the table, then hold it:
    a generation swap renames its columns while nothing can be halfway through a search."""
    return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table(spec)).as_string(None)
