"""Every SQL statement about a chunked column's chunk table, composed with psycopg.sql.

A chunked column (catalog id N) of ``<table>`` owns, besides what :mod:`embeddb.column_sql`
makes for every embedded column:

* the table ``<table>_<column>_chunks`` in the parent's schema: the parent's key columns,
  ``chunk_no``, ``char_start`` and ``char_end`` (the chunk's span in the rendered text),
  ``text``, ``embedding`` and ``text_hash`` (md5 of ``text``), keyed by (parent key, chunk_no);
* its HNSW index ``<table>_<column>_chunks_hnsw``;
* ``embeddb.chunks_gone_N()`` and the triggers ``embeddb_<column>_cdel|cupd|ctrunc`` on the
  parent, which remove a row's chunks when it is deleted or truncated, and move them to its new key
  (a foreign key would refuse the parent's TRUNCATE).
"""

from __future__ import annotations

from psycopg import sql

from .column_sql import column_type, table
from .spec import EmbeddingSpec

#: The chunk table's own columns, after the parent's key columns.
CHUNK_COLUMNS = ("chunk_no", "char_start", "char_end", "text", "embedding", "text_hash")
_CHUNK = "c"


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def chunk_table(spec: EmbeddingSpec) -> sql.Identifier:
    return sql.Identifier(spec.schema, spec.chunk_table)


def qualified_chunk_table(spec: EmbeddingSpec) -> str:
    return _text(chunk_table(spec))


def cleanup_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"chunks_gone_{column_id}")


def trigger_names(spec: EmbeddingSpec) -> dict[str, str]:
    return {event: f"{spec.trigger_prefix}_{event}" for event in ("cdel", "cupd", "ctrunc")}


def _keys(spec: EmbeddingSpec) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, spec.key_columns))


def _key_matches(spec: EmbeddingSpec, key_json: sql.Composable) -> sql.Composable:
    """``c`` is a chunk of the parent row named by the jsonb ``key_json``."""
    record = sql.SQL("(jsonb_populate_record(NULL::{}, {}))").format(table(spec), key_json)
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}.{}").format(sql.Identifier(_CHUNK, key), record, sql.Identifier(key))
        for key in spec.key_columns
    )


# --- install -------------------------------------------------------------------------------


def create_table(spec: EmbeddingSpec, key_types: dict[str, str]) -> str:
    """The chunk table; ``key_types`` are the parent's key columns' types (``format_type``)."""
    keys = [sql.SQL("{} {} NOT NULL").format(sql.Identifier(name), sql.SQL(key_types[name]))
            for name in spec.key_columns]
    return _text(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ({keys},"
        " chunk_no integer NOT NULL, char_start integer NOT NULL, char_end integer NOT NULL,"
        " text text NOT NULL, embedding {vector} NOT NULL, text_hash uuid NOT NULL,"
        " PRIMARY KEY ({key_list}, chunk_no))"
    ).format(table=chunk_table(spec), keys=sql.SQL(", ").join(keys), vector=column_type(spec),
             key_list=_keys(spec)))


def create_index(spec: EmbeddingSpec, *, concurrently: bool = False) -> str | None:
    """The chunk table's HNSW index; ``concurrently`` builds it without blocking writes."""
    if spec.index is None:
        return None
    return _text(sql.SQL(
        "CREATE INDEX {}IF NOT EXISTS {} ON {} USING hnsw (embedding {})"
        " WITH (m = {}, ef_construction = {})"
    ).format(sql.SQL("CONCURRENTLY " if concurrently else ""),
             sql.Identifier(spec.chunk_index_name), chunk_table(spec),
             sql.SQL(spec.distance.opclass(spec.vector_type)),
             sql.Literal(spec.index.m), sql.Literal(spec.index.ef_construction)))


def qualified_index(spec: EmbeddingSpec) -> str:
    return _text(sql.Identifier(spec.schema, spec.chunk_index_name))


def drop_index(spec: EmbeddingSpec, *, concurrently: bool = False) -> str:
    return _text(sql.SQL("DROP INDEX {}IF EXISTS {}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""),
        sql.Identifier(spec.schema, spec.chunk_index_name)))


def create_cleanup_function(spec: EmbeddingSpec, column_id: int) -> str:
    old_key = sql.SQL(" AND ").join(
        sql.SQL("{} = OLD.{}").format(sql.Identifier(_CHUNK, key), sql.Identifier(key))
        for key in spec.key_columns)
    new_key = sql.SQL(", ").join(
        sql.SQL("{} = NEW.{}").format(sql.Identifier(key), sql.Identifier(key))
        for key in spec.key_columns)
    # A new key keeps its chunks (they belong to the text, which the key does not change).
    body = sql.SQL("""
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE {chunks};
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE {chunks} AS c SET {new_key} WHERE {old_key};
    ELSE
        DELETE FROM {chunks} AS c WHERE {old_key};
    END IF;
    RETURN NULL;
END
""").format(chunks=chunk_table(spec), old_key=old_key, new_key=new_key)
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}"
    ).format(cleanup_function(column_id), sql.Literal(_text(body))))


def create_cleanup_triggers(spec: EmbeddingSpec, column_id: int) -> list[str]:
    names = trigger_names(spec)
    function = cleanup_function(column_id)
    key_changed = sql.SQL(" OR ").join(
        sql.SQL("OLD.{0} IS DISTINCT FROM NEW.{0}").format(sql.Identifier(key))
        for key in spec.key_columns)
    statements = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table(spec))
        for name in names.values()
    ]
    statements += [
        sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["cdel"]), table(spec), function),
        sql.SQL("CREATE TRIGGER {} AFTER UPDATE OF {} ON {} FOR EACH ROW WHEN ({})"
                " EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["cupd"]), _keys(spec), table(spec), key_changed, function),
        sql.SQL("CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT"
                " EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["ctrunc"]), table(spec), function),
    ]
    return [_text(s) for s in statements]


def drop_objects(spec: EmbeddingSpec, column_id: int) -> list[str]:
    """The cleanup triggers and function, and the chunk table with its index."""
    statements = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table(spec))
        for name in trigger_names(spec).values()
    ]
    statements += [
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(cleanup_function(column_id)),
        sql.SQL("DROP TABLE IF EXISTS {}").format(chunk_table(spec)),
    ]
    return [_text(s) for s in statements]


def rename(old: EmbeddingSpec, new: EmbeddingSpec) -> list[str]:
    """Give ``old``'s chunk table and its index ``new``'s names (a generation swap)."""
    return [_text(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                chunk_table(old), sql.Identifier(new.chunk_table))),
            _text(sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                sql.Identifier(old.schema, old.chunk_index_name),
                sql.Identifier(new.chunk_index_name)))]


def clear_source_hashes(spec: EmbeddingSpec) -> str:
    """Mark every row's chunks out of date (new chunk settings) and keep them meanwhile."""
    return _text(sql.SQL("UPDATE {} SET {} = NULL WHERE {} IS NOT NULL").format(
        table(spec), sql.Identifier(spec.hash_column), sql.Identifier(spec.hash_column)))


def truncate(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL("TRUNCATE {}").format(chunk_table(spec)))


def count_chunks(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL(
        "SELECT count(*) AS chunks, count(DISTINCT ({})) AS documents FROM {}"
    ).format(_keys(spec), chunk_table(spec)))


# --- worker --------------------------------------------------------------------------------


def fetch_chunks(spec: EmbeddingSpec) -> str:
    """The stored chunks of the claimed rows. Params: keys (JSON array). Vectors in binary."""
    return _text(sql.SQL(
        "SELECT k.row_key, c.chunk_no, c.text_hash, c.embedding"
        " FROM jsonb_array_elements(%(keys)s::jsonb) AS k(row_key)"
        " JOIN {chunks} AS c ON {match}"
    ).format(chunks=chunk_table(spec), match=_key_matches(spec, sql.SQL("k.row_key"))))


def delete_extra_chunks(spec: EmbeddingSpec) -> str:
    """Drop chunks past each document's new count. Params: keys (jsonb[]), counts (int[])."""
    return _text(sql.SQL(
        "DELETE FROM {chunks} AS c USING unnest(%(keys)s::jsonb[], %(counts)s::int[])"
        " AS d(row_key, n) WHERE {match} AND c.chunk_no >= d.n"
    ).format(chunks=chunk_table(spec), match=_key_matches(spec, sql.SQL("d.row_key"))))


def upsert_chunks(spec: EmbeddingSpec) -> str:
    """Write chunks whose text or span changed; an unchanged chunk is not touched.

    Params (arrays of one length): keys (jsonb[]), numbers, starts, ends (int[]), texts (text[]),
    vectors (``%(vectors)b``, binary), hashes (uuid[]).
    """
    record = sql.SQL("(jsonb_populate_record(NULL::{}, v.row_key))").format(table(spec))
    key_values = sql.SQL(", ").join(
        sql.SQL("{}.{}").format(record, sql.Identifier(key)) for key in spec.key_columns)
    return _text(sql.SQL(
        "INSERT INTO {chunks} AS c ({keys}, chunk_no, char_start, char_end, text, embedding,"
        " text_hash)"
        " SELECT {key_values}, v.chunk_no, v.char_start, v.char_end, v.text, v.embedding, v.hash"
        " FROM unnest(%(keys)s::jsonb[], %(numbers)s::int[], %(starts)s::int[], %(ends)s::int[],"
        " %(texts)s::text[], %(vectors)b::{vector_type}[], %(hashes)s::uuid[])"
        " AS v(row_key, chunk_no, char_start, char_end, text, embedding, hash)"
        " ON CONFLICT ({keys}, chunk_no) DO UPDATE SET char_start = EXCLUDED.char_start,"
        " char_end = EXCLUDED.char_end, text = EXCLUDED.text, embedding = EXCLUDED.embedding,"
        " text_hash = EXCLUDED.text_hash"
        " WHERE (c.text_hash, c.char_start, c.char_end)"
        " IS DISTINCT FROM (EXCLUDED.text_hash, EXCLUDED.char_start, EXCLUDED.char_end)"
    ).format(chunks=chunk_table(spec), keys=_keys(spec), key_values=key_values,
             vector_type=sql.SQL(spec.vector_type)))
