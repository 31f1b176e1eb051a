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


def clear_vectors(spec: EmbeddingSpec) -> str:
    """Forget every stored vector and the text it was made from, so each row is embedded anew."""
    vector, text_hash = sql.Identifier(spec.column), sql.Identifier(spec.hash_column)
    return sql.SQL(
        "UPDATE {table} SET {vector} = NULL, {hash} = NULL"
        " WHERE {vector} IS NOT NULL OR {hash} IS NOT NULL"
    ).format(table=table(spec), vector=vector, hash=text_hash).as_string(None)

