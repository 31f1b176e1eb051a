"""SQL for :func:`embeddb.import_vectors`, composed with :mod:`psycopg.sql` (it names the
user's table and columns). Every statement works on the session's temporary table
:data:`STAGING`, which the import fills by binary COPY."""

from __future__ import annotations

from psycopg import sql

from .column_sql import _key_object, _source_hash, _text, render_function, table
from .spec import EmbeddingSpec

STAGING = "embeddb_import"
_ROW = "src"


def _keys(spec: EmbeddingSpec) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, spec.key_columns))


def _same_key(spec: EmbeddingSpec) -> sql.Composable:
    """Table row ``t`` and staged row ``src`` have the same key (the staging table has the
    key columns' types, so the primary key's index serves it)."""
    return sql.SQL(" AND ").join(
        sql.SQL("t.{0} = {1}.{0}").format(sql.Identifier(key), sql.Identifier(_ROW))
        for key in spec.key_columns)


def create_staging(spec: EmbeddingSpec) -> str:
    """A temporary table with the key columns' types and the vector column, dropped at commit."""
    return _text(sql.SQL(
        "CREATE TEMP TABLE {staging} ON COMMIT DROP AS"
        " SELECT {keys}, NULL::{vector_type}({dims}) AS vector FROM {table} WITH NO DATA"
    ).format(staging=sql.Identifier(STAGING), keys=_keys(spec), table=table(spec),
             vector_type=sql.SQL(spec.vector_type), dims=sql.Literal(spec.dimensions)))


def staging_types() -> str:
    """The staging table's column types, in order, without modifiers (COPY's set_types)."""
    return _text(sql.SQL(
        "SELECT atttypid::regtype::text FROM pg_attribute"
        " WHERE attrelid = {staging}::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ).format(staging=sql.Literal(STAGING)))


def copy_staging(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL("COPY {staging} ({keys}, vector) FROM STDIN WITH (FORMAT BINARY)").format(
        staging=sql.Identifier(STAGING), keys=_keys(spec)))


def unknown_keys(spec: EmbeddingSpec) -> str:
    """Up to 5 imported keys with no row in the table."""
    return _text(sql.SQL(
        "SELECT {key} AS row_key FROM {staging} AS {row} WHERE NOT EXISTS"
        " (SELECT 1 FROM {table} AS t WHERE {match}) LIMIT 5"
    ).format(key=_key_object(spec, _ROW), staging=sql.Identifier(STAGING),
             row=sql.Identifier(_ROW), table=table(spec), match=_same_key(spec)))


def duplicate_keys(spec: EmbeddingSpec) -> str:
    """Up to 5 keys imported more than once."""
    return _text(sql.SQL(
        "SELECT {key} AS row_key FROM {staging} AS {row} GROUP BY 1 HAVING count(*) > 1 LIMIT 5"
    ).format(key=_key_object(spec, _ROW), staging=sql.Identifier(STAGING),
             row=sql.Identifier(_ROW)))


def sample(spec: EmbeddingSpec, column_id: int) -> str:
    """``limit`` random imported rows that have text: key, text, imported vector (as
    ``real[]``). They are drawn from ``draw`` random staged rows (all when NULL), so that only
    those are joined and rendered."""
    return _text(sql.SQL(
        "SELECT {key} AS row_key, {render}(t) AS text, {row}.vector::real[] AS vector"
        " FROM (SELECT * FROM {staging} ORDER BY random() LIMIT %(draw)s) AS {row}"
        " JOIN {table} AS t ON {match} WHERE {render}(t) IS NOT NULL LIMIT %(limit)s"
    ).format(key=_key_object(spec, _ROW), render=render_function(column_id),
             staging=sql.Identifier(STAGING), row=sql.Identifier(_ROW), table=table(spec),
             match=_same_key(spec)))


def store(spec: EmbeddingSpec, column_id: int) -> str:
    """Write the imported vectors with the hash of each row's current text: current now."""
    return _text(sql.SQL(
        "UPDATE {table} AS t SET {column} = {row}.vector, {hash_column} = {hash}"
        " FROM {staging} AS {row} WHERE {match}"
    ).format(table=table(spec), column=sql.Identifier(spec.column), row=sql.Identifier(_ROW),
             hash_column=sql.Identifier(spec.hash_column),
             hash=_source_hash(column_id, sql.Identifier("t")),
             staging=sql.Identifier(STAGING), match=_same_key(spec)))


def forget_pending(spec: EmbeddingSpec, column_id: int) -> str:
    """Unclaimed queue entries of the imported rows: nothing left for the worker to do."""
    return _text(sql.SQL(
        "DELETE FROM embeddb.pending AS p USING {staging} AS {row}"
        " WHERE p.column_id = {id} AND p.claim_token IS NULL AND p.row_key = {key}"
    ).format(id=sql.Literal(column_id), key=_key_object(spec, _ROW),
             staging=sql.Identifier(STAGING), row=sql.Identifier(_ROW)))
