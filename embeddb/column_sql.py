"""Every SQL statement that names a user's table or column, composed with psycopg.sql.

Each embedded column (catalog id N) owns these database objects, all visible with psql:

* ``embeddb.render_N(row)``: the column's text for a row (NULL when there is nothing to embed);
* ``embeddb.enqueue_N()``: the trigger function that marks a row pending and NOTIFYs;
* triggers ``embeddb_<column>_ins|upd|del|trunc`` on the table;
* the HNSW index ``<table>_<column>_hnsw``;
* the vector column and ``<column>_source_hash``, the md5 of the text its vector was made from.

Statements for the worker use psycopg's ``%(name)s`` placeholders and run through
``exec_driver_sql`` with parameters, so a ``%`` in a name is doubled there; the others carry no
parameters and run through :func:`embeddb.verbatim.execute`, which sends them as written.
"""

from __future__ import annotations

from psycopg import sql

from .rendering import RenderContext
from .spec import EmbeddingSpec

NOTIFY_CHANNEL = "embeddb"
_ROW = "src"


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def _with_parameters(composable: sql.Composable) -> str:
    """The statement for a driver that reads ``%`` as a placeholder: each ``%`` in a name or
    literal is doubled, while the placeholders written into the SQL text stay as they are."""
    if isinstance(composable, sql.Composed):
        return "".join(_with_parameters(part) for part in composable)
    text = composable.as_string(None)
    if isinstance(composable, (sql.SQL, sql.Placeholder)):
        return text
    return text.replace("%", "%%")


def listen() -> sql.Composed:
    """``LISTEN`` on the channel every enqueue trigger notifies."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL))


def table(spec: EmbeddingSpec) -> sql.Identifier:
    return sql.Identifier(spec.schema, spec.table)


def qualified_table(spec: EmbeddingSpec) -> str:
    return _text(table(spec))


def qualified_name(schema: str | None, name: str) -> str:
    """``"schema"."name"`` quoted, or just ``"name"`` (found on the search path)."""
    return _text(sql.Identifier(*([schema] if schema else []), name))


def count_rows(spec: EmbeddingSpec) -> str:
    return _text(sql.SQL("SELECT count(*) FROM {}").format(table(spec)))


def render_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"render_{column_id}")


def enqueue_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"enqueue_{column_id}")


# The only vector types a spec may name (checked when it is made): SQL built from constants.
_VECTOR_TYPES = {"vector": sql.SQL("vector"), "halfvec": sql.SQL("halfvec")}


# pgvector's distance operators, by distance: SQL from constants.
_DISTANCE_OPERATORS = {"cosine": sql.SQL("<=>"), "inner_product": sql.SQL("<#>"),
                       "l2": sql.SQL("<->")}


def distance_operator(spec: EmbeddingSpec) -> sql.Composable:
    """``<=>``, ``<#>`` or ``<->``: the column's distance as pgvector's operator."""
    return _DISTANCE_OPERATORS[spec.distance.value]


def vector_type(spec: EmbeddingSpec) -> sql.Composable:
    """``vector`` or ``halfvec``: the column's element type, for casts of arrays."""
    return _VECTOR_TYPES[spec.vector_type]


def column_type(spec: EmbeddingSpec) -> sql.Composable:
    """``vector(384)``: the vector column's type."""
    return sql.SQL("{}({})").format(vector_type(spec), sql.Literal(int(spec.dimensions)))


def drop_vector_columns(spec: EmbeddingSpec) -> str:
    """Drop the vector and hash columns (a no-op for those already gone)."""
    return _text(sql.SQL(
        "ALTER TABLE {} DROP COLUMN IF EXISTS {}, DROP COLUMN IF EXISTS {}"
    ).format(table(spec), sql.Identifier(spec.column), sql.Identifier(spec.hash_column)))


def _key_object(spec: EmbeddingSpec, row: str) -> sql.Composable:
    """``jsonb_build_object('id', row.id, ...)``: how a row is named in embeddb.pending."""
    pairs = [
        sql.SQL("{}, {}").format(sql.Literal(key), sql.Identifier(row, key))
        for key in spec.key_columns
    ]
    return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs))


def _key_matches(spec: EmbeddingSpec, row: str, key_json: sql.Composable) -> sql.Composable:
    """The condition that ``row`` is the row named by the jsonb ``key_json``, index-friendly."""
    record = sql.SQL("(jsonb_populate_record(NULL::{}, {}))").format(table(spec), key_json)
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}.{}").format(sql.Identifier(row, key), record, sql.Identifier(key))
        for key in spec.key_columns
    )


def _source_hash(column_id: int, row: sql.Composable) -> sql.Composable:
    return sql.SQL("md5({}({}))::uuid").format(render_function(column_id), row)


# --- install -------------------------------------------------------------------------------


def add_columns(spec: EmbeddingSpec) -> list[str]:
    """Add the vector and hash columns to an existing table (a no-op when they exist)."""
    return [
        _text(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            table(spec), sql.Identifier(spec.column), column_type(spec))),
        _text(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} uuid").format(
            table(spec), sql.Identifier(spec.hash_column))),
    ]


def create_render_function(spec: EmbeddingSpec, column_id: int, context: RenderContext) -> str:
    """``embeddb.render_N(row)``; ``context`` says whether it pins the session's settings."""
    body = sql.SQL("SELECT {}").format(spec.template.sql_expression("r", context.blanks))
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}(r {}) RETURNS text"
        " LANGUAGE sql STABLE PARALLEL SAFE{} AS {}"
    ).format(render_function(column_id), table(spec), context.function_options(),
             sql.Literal(_text(body))))


# The transition tables of the statement-level INSERT and DELETE triggers, as enqueue_N reads them.
INSERTED_ROWS = "embeddb_inserted"
DELETED_ROWS = "embeddb_deleted"
# An INSERT of at least this many rows leaves one embeddb.inbox entry holding their keys, which
# the worker expands into queue entries; smaller ones queue their rows in embeddb.pending at
# once, where workers from before revision 0012 (which never read the inbox) find them too.
INBOX_MIN_ROWS = 100


def _needs_vector(column_id: int, spec: EmbeddingSpec, row: str) -> sql.Composable:
    """Whether ``row`` needs a (new) vector: it has text, and its stored hash is not that
    text's. A row without a stored hash (a fresh one) needs no md5 to tell."""
    text = sql.SQL("{}({})").format(render_function(column_id), sql.Identifier(row))
    stored = sql.Identifier(row, spec.hash_column)
    return sql.SQL(
        "CASE WHEN {stored} IS NULL THEN {text} IS NOT NULL"
        " ELSE {stored} IS DISTINCT FROM md5({text})::uuid END"
    ).format(stored=stored, text=text)


def _may_need_vector(column_id: int, spec: EmbeddingSpec, row: str) -> sql.Composable:
    """Whether ``row`` may need a vector, told without rendering a fresh row (no stored hash):
    a row copied with the vector of its text is left out (no inbox key for an import)."""
    stored = sql.Identifier(row, spec.hash_column)
    return sql.SQL("{stored} IS NULL OR {stored} IS DISTINCT FROM {current}").format(
        stored=stored, current=_source_hash(column_id, sql.Identifier(row)))


def create_enqueue_function(spec: EmbeddingSpec, column_id: int, *, inbox: bool = True,
                            ranges: bool = True) -> str:
    """``embeddb.enqueue_N()``, the function behind every trigger of the column.

    Fired per statement (INSERT and DELETE on a plain table), it reads the statement's
    transition table and changes the queue in one statement with one NOTIFY; fired per row
    (UPDATE of a source or key column, and every write to a partitioned table, whose
    partitions get row triggers but no statement triggers), it handles the one row.

    With ``inbox`` (revision 0012 on), an INSERT of :data:`INBOX_MIN_ROWS` rows or more adds
    one ``embeddb.inbox`` entry with their keys instead of a queue entry per row: no render,
    no md5 and no index probe per row on the application's side; the worker expands it
    (:func:`expand_inbox`), checking each row then. With ``ranges`` too (revision 0016 on),
    such an INSERT of fresh rows whose key is one integer column without gaps (ids from a
    sequence, or a COPY of 1..n) adds only its first and last key to ``embeddb.inbox_ranges``:
    the statement's rows are read once, for a count, a minimum and a maximum.
    """
    key_changed = sql.SQL(" OR ").join(
        sql.SQL("OLD.{0} IS DISTINCT FROM NEW.{0}").format(sql.Identifier(key))
        for key in spec.key_columns
    )
    body = sql.SQL("""
DECLARE
    arrived_rows bigint;
    hashed_rows bigint;
    lowest_key bigint;
    highest_key bigint;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM embeddb.pending AS p USING {deleted} AS gone
            WHERE p.column_id = {column_id} AND p.row_key = {gone_key};
            RETURN NULL;
        END IF;
        -- The statement's rows, read once: how many, how many came with a stored hash (copied
        -- with their vectors), and the span of an integer key.
        SELECT count(*), count(arrived.{hash_column}), {span}
        INTO arrived_rows, hashed_rows, lowest_key, highest_key
        FROM {inserted} AS arrived;
        IF arrived_rows = 0 THEN
            RETURN NULL;
        END IF;
{bulk}
        -- One entry per row however many writes; new text earns a failed row a fresh start.
        INSERT INTO embeddb.pending AS p (column_id, row_key)
        SELECT {column_id}, {arrived_key} FROM {inserted} AS arrived WHERE {needs_vector}
        ON CONFLICT (column_id, row_key) DO UPDATE
            SET attempts = 0, run_after = now(), last_error = NULL, parked_at = NULL
            WHERE p.attempts > 0 OR p.parked_at IS NOT NULL;
        {end_bulk}
        IF FOUND THEN
            PERFORM pg_notify({channel}, {column_text});
        END IF;
        -- Rows copied with their vectors void what an earlier row of their key left queued;
        -- fresh rows (no stored hash, the common case) need not look.
        IF hashed_rows > 0 THEN
            DELETE FROM embeddb.pending AS p USING {inserted} AS arrived
            WHERE p.column_id = {column_id} AND p.row_key = {arrived_key}
              AND p.claim_token IS NULL AND arrived.{hash_column} = {arrived_hash};
        END IF;
        RETURN NULL;
    END IF;
    -- A deleted row, or the old key of a row whose key changed, has nothing left to embed.
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({key_changed})) THEN
        DELETE FROM embeddb.pending
        WHERE column_id = {column_id} AND row_key = {old_key};
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN NULL;
    END IF;
    -- The stored vector already belongs to this text (a row copied with its vector, or a
    -- change undone before the worker got to it): nothing to do.
    IF NEW.{hash_column} IS NOT DISTINCT FROM {new_hash} THEN
        DELETE FROM embeddb.pending
        WHERE column_id = {column_id} AND row_key = {new_key} AND claim_token IS NULL;
        RETURN NULL;
    END IF;
    INSERT INTO embeddb.pending AS p (column_id, row_key)
    VALUES ({column_id}, {new_key})
    ON CONFLICT (column_id, row_key) DO UPDATE
        SET attempts = 0, run_after = now(), last_error = NULL, parked_at = NULL
        WHERE p.attempts > 0 OR p.parked_at IS NOT NULL;
    PERFORM pg_notify({channel}, {column_text});
    RETURN NULL;
END
""").format(
        span=_key_span(spec, "arrived") if inbox and ranges else sql.SQL("NULL, NULL"),
        bulk=sql.SQL("        IF " + (_RANGE_INSERT if ranges else "") + _INBOX_INSERT
                     if inbox else "").format(
            column_id=sql.Literal(column_id), arrived_key=_key_object(spec, "arrived"),
            inserted=sql.Identifier(INSERTED_ROWS), min_rows=sql.Literal(INBOX_MIN_ROWS),
            max_rows=sql.Literal(INBOX_MAX_ROWS),
            may_need_vector=_may_need_vector(column_id, spec, "arrived")),
        end_bulk=sql.SQL("END IF;" if inbox else ""),
        key_changed=key_changed,
        column_id=sql.Literal(column_id),
        column_text=sql.Literal(str(column_id)),
        channel=sql.Literal(NOTIFY_CHANNEL),
        old_key=_key_object(spec, "old"),
        new_key=_key_object(spec, "new"),
        hash_column=sql.Identifier(spec.hash_column),
        new_hash=_source_hash(column_id, sql.SQL("NEW")),
        # plpgsql's NEW and OLD would clash with a table alias of the same name
        gone_key=_key_object(spec, "gone"),
        arrived_key=_key_object(spec, "arrived"),
        arrived_hash=_source_hash(column_id, sql.Identifier("arrived")),
        needs_vector=_needs_vector(column_id, spec, "arrived"),
        inserted=sql.Identifier(INSERTED_ROWS),
        deleted=sql.Identifier(DELETED_ROWS),
    )
    # As its owner (the installer), with a pinned search_path: a role that may write the table
    # needs no rights on schema embeddb, and gets none over other tables' queue entries.
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
        " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {}"
    ).format(enqueue_function(column_id), sql.Literal(_text(body))))


def _key_span(spec: EmbeddingSpec, row: str) -> sql.Composable:
    """``min(...), max(...)`` of the key, as bigint, or NULLs when it is not one integer column.

    ``embeddb.integer_key`` (revision 0016) is the key itself for smallint, integer and bigint
    and NULL for any other type, so the function stays valid if the key's type is changed.
    """
    if len(spec.key_columns) != 1:
        return sql.SQL("NULL, NULL")
    key = sql.SQL("embeddb.integer_key({})").format(sql.Identifier(row, spec.key_columns[0]))
    return sql.SQL("min({0}), max({0})").format(key)


# An inbox entry holds at most this many keys: a huge COPY stays far below jsonb's size limit,
# and the worker expands it in pieces that fit its statement timeout.
INBOX_MAX_ROWS = 10_000

# Fresh rows whose integer keys have no gaps: first and last key are all there is to say, one
# embeddb.inbox_ranges entry per INBOX_MAX_ROWS of them. The keys are distinct (a key names
# one row), so count = last - first + 1 means every key between is one of the statement's.
_RANGE_INSERT = """arrived_rows >= {min_rows} AND hashed_rows = 0
           AND highest_key::numeric - lowest_key = arrived_rows - 1 THEN
            INSERT INTO embeddb.inbox_ranges (column_id, rows, first_key, last_key)
            SELECT {column_id}, span.last_key - span.first_key + 1, span.first_key,
                   span.last_key
            FROM (SELECT s AS first_key,
                         CASE WHEN highest_key - s < {max_rows} THEN highest_key
                              ELSE s + ({max_rows} - 1) END AS last_key
                  FROM generate_series(lowest_key, highest_key, {max_rows}) AS s) AS span;
        ELSIF """

# Many rows: their keys in inbox entries (nothing per row but the key); else the per-row path.
_INBOX_INSERT = """arrived_rows >= {min_rows} THEN
            INSERT INTO embeddb.inbox (column_id, rows, keys)
            SELECT {column_id}, count(*), jsonb_agg(numbered.row_key)
            FROM (SELECT {arrived_key} AS row_key, row_number() OVER () AS n
                  FROM {inserted} AS arrived WHERE {may_need_vector}) AS numbered
            GROUP BY (numbered.n - 1) / {max_rows};
        ELSE"""


def expand_inbox(spec: EmbeddingSpec, column_id: int, *, keep_unseen: bool) -> str:
    """Turn up to ``%(limit)s`` inbox entries of the column, and as many key ranges, into queue
    entries, in one statement: the entries are deleted and their rows queued together, or
    neither.

    A key whose row is gone (deleted since), or whose stored vector is already that text's,
    or whose text is empty, is dropped, as the per-row trigger would have. ``keep_unseen``
    (row-level security hides rows from this role) queues keys whose row is not found anyway,
    so that the claim can park them with the reason instead of forgetting them. Keys are
    inserted in order, so two workers expanding overlapping entries cannot deadlock.
    """
    first_key = sql.Identifier(_ROW, spec.key_columns[0])
    condition = _needs_vector(column_id, spec, _ROW)
    if keep_unseen:
        condition = sql.SQL("{} IS NULL OR {}").format(first_key, condition)
    # only a key of one integer column is ever written as a range (see _key_span)
    ranged = sql.SQL("") if len(spec.key_columns) != 1 else sql.SQL("""
), spans AS (
    DELETE FROM embeddb.inbox_ranges
    WHERE id IN (SELECT id FROM embeddb.inbox_ranges WHERE column_id = {column_id}
                 ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING first_key, last_key, enqueued_at""").format(column_id=sql.Literal(column_id))
    ranged_keys = sql.SQL("") if len(spec.key_columns) != 1 else sql.SQL("""
        UNION ALL
        SELECT jsonb_build_object({key}, k), spans.enqueued_at
        FROM spans, generate_series(spans.first_key, spans.last_key) AS k""").format(
        key=sql.Literal(spec.key_columns[0]))
    return _with_parameters(sql.SQL("""
WITH taken AS (
    DELETE FROM embeddb.inbox
    WHERE id IN (SELECT id FROM embeddb.inbox WHERE column_id = {column_id}
                 ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING keys, enqueued_at{ranged}
), arrived AS (
    SELECT k.row_key, min(k.enqueued_at) AS enqueued_at
    FROM (
        SELECT k.row_key, taken.enqueued_at
        FROM taken, jsonb_array_elements(taken.keys) AS k(row_key){ranged_keys}
    ) AS k(row_key, enqueued_at)
    GROUP BY k.row_key
)
INSERT INTO embeddb.pending AS p (column_id, row_key, enqueued_at)
SELECT {column_id}, a.row_key, a.enqueued_at
FROM arrived AS a {join} {table} AS {row} ON {match}
WHERE {condition}
ORDER BY a.row_key
ON CONFLICT (column_id, row_key) DO UPDATE
    SET attempts = 0, run_after = now(), last_error = NULL, parked_at = NULL
    WHERE p.attempts > 0 OR p.parked_at IS NOT NULL""").format(
        column_id=sql.Literal(column_id), table=table(spec), row=sql.Identifier(_ROW),
        ranged=ranged, ranged_keys=ranged_keys,
        join=sql.SQL("LEFT JOIN" if keep_unseen else "JOIN"),
        match=_key_matches(spec, _ROW, sql.SQL("a.row_key")), condition=condition,
    ))


def trigger_names(spec: EmbeddingSpec) -> dict[str, str]:
    return {event: f"{spec.trigger_prefix}_{event}" for event in ("ins", "upd", "del", "trunc")}


def create_triggers(spec: EmbeddingSpec, column_id: int, *, partitioned: bool) -> list[str]:
    """The column's four triggers (re-created). INSERT and DELETE fire once per statement with
    a transition table, except on a ``partitioned`` table: a statement trigger on the parent
    misses rows written straight into a partition, while its row triggers are cloned onto
    every partition, present and future."""
    names = trigger_names(spec)
    watched = list(dict.fromkeys([*spec.template.columns, *spec.key_columns]))
    changed = sql.SQL(" OR ").join(
        sql.SQL("OLD.{0} IS DISTINCT FROM NEW.{0}").format(sql.Identifier(c)) for c in watched
    )
    function = enqueue_function(column_id)

    def per_statement(event: str, transition: str) -> sql.Composable:
        if partitioned:
            return sql.SQL("FOR EACH ROW")
        return sql.SQL("REFERENCING {} TABLE AS {} FOR EACH STATEMENT").format(
            sql.SQL(transition), sql.Identifier(INSERTED_ROWS if event == "ins" else DELETED_ROWS))

    statements = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table(spec))
        for name in names.values()
    ]
    statements += [
        sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} {} EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["ins"]), table(spec), per_statement("ins", "NEW"), function),
        # Only an update of a column the text is made of (or of the key) can need a new vector;
        # a column list rules out transition tables, and lets other updates skip the trigger.
        sql.SQL(
            "CREATE TRIGGER {} AFTER UPDATE OF {} ON {} FOR EACH ROW WHEN ({})"
            " EXECUTE FUNCTION {}()"
        ).format(
            sql.Identifier(names["upd"]), sql.SQL(", ").join(map(sql.Identifier, watched)),
            table(spec), changed, function),
        sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} {} EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["del"]), table(spec), per_statement("del", "OLD"), function),
        sql.SQL(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT"
            " EXECUTE FUNCTION embeddb.forget_truncated({})"
        ).format(sql.Identifier(names["trunc"]), table(spec), sql.Literal(str(column_id))),
    ]
    return [_text(s) for s in statements]


def indexed_expression(spec: EmbeddingSpec, column: sql.Composable) -> sql.Composable:
    """What the HNSW index holds for ``column``: the column itself, or its quantised form
    (``(column::halfvec(384))``, ``(binary_quantize(column)::bit(384))``). A search must order
    by the same expression for PostgreSQL to use the index."""
    quantize = spec.index.quantize if spec.index is not None else None
    dimensions = sql.Literal(int(spec.dimensions))
    if quantize == "halfvec":
        return sql.SQL("({}::halfvec({}))").format(column, dimensions)
    if quantize == "binary":
        return sql.SQL("(binary_quantize({})::bit({}))").format(column, dimensions)
    return column


def create_index(spec: EmbeddingSpec, *, concurrently: bool = False) -> str | None:
    """The HNSW index; ``concurrently`` builds it without blocking writes (no transaction)."""
    if spec.index is None:
        return None
    return _text(sql.SQL(
        "CREATE INDEX {}IF NOT EXISTS {} ON {} USING hnsw ({} {})"
        " WITH (m = {}, ef_construction = {})"
    ).format(
        sql.SQL("CONCURRENTLY " if concurrently else ""),
        sql.Identifier(spec.index_name), table(spec),
        indexed_expression(spec, sql.Identifier(spec.column)),
        sql.SQL(spec.index_opclass),
        sql.Literal(spec.index.m), sql.Literal(spec.index.ef_construction),
    ))


def qualified_index(spec: EmbeddingSpec) -> str:
    return _text(sql.Identifier(spec.schema, spec.index_name))


def drop_index(spec: EmbeddingSpec, *, concurrently: bool = False) -> str:
    return _text(sql.SQL("DROP INDEX {}IF EXISTS {}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""),
        sql.Identifier(spec.schema, spec.index_name)))


def enqueue_stale_rows(spec: EmbeddingSpec, column_id: int) -> str:
    """Mark pending every row whose stored vector is missing or was made from other text.

    This rebuilds the pending set from table state: how ``reconcile`` heals a lost entry.
    """
    return _text(sql.SQL(
        "INSERT INTO embeddb.pending (column_id, row_key) SELECT {}, {} FROM {} AS {}"
        " WHERE {} IS DISTINCT FROM {} ON CONFLICT DO NOTHING"
    ).format(
        sql.Literal(column_id), _key_object(spec, _ROW), table(spec), sql.Identifier(_ROW),
        sql.Identifier(_ROW, spec.hash_column), _source_hash(column_id, sql.Identifier(_ROW)),
    ))


def count_unqueued_stale_rows(spec: EmbeddingSpec, column_id: int) -> str:
    """How many rows ``reconcile`` would queue: a missing or stale vector and no pending entry.

    Counts at most ``%(limit)s`` of them, so a huge table with many stale rows stops early.
    """
    return _text(sql.SQL(
        "SELECT count(*) FROM (SELECT 1 FROM {table} AS {row}"
        " WHERE {stored} IS DISTINCT FROM {current} AND NOT EXISTS ("
        "SELECT 1 FROM embeddb.pending AS p WHERE p.column_id = {column_id}"
        " AND p.row_key = {key}) LIMIT %(limit)s) AS stale"
    ).format(
        table=table(spec), row=sql.Identifier(_ROW), column_id=sql.Literal(column_id),
        stored=sql.Identifier(_ROW, spec.hash_column),
        current=_source_hash(column_id, sql.Identifier(_ROW)), key=_key_object(spec, _ROW),
    ))


def drop_trigger(name: str, on_table: str) -> str:
    """``DROP TRIGGER``; ``on_table`` is already quoted (as ``regclass::text`` gives it)."""
    return _text(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(name), sql.SQL(on_table)))


def drop_objects(spec: EmbeddingSpec, column_id: int, drop_columns: bool) -> list[str]:
    statements: list[sql.Composable] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table(spec))
        for name in trigger_names(spec).values()
    ]
    statements += [
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(enqueue_function(column_id)),
        sql.SQL("DROP FUNCTION IF EXISTS {}({})").format(render_function(column_id), table(spec)),
    ]
    texts = [_text(s) for s in statements] + [drop_index(spec)]
    return [*texts, drop_vector_columns(spec)] if drop_columns else texts


# --- worker --------------------------------------------------------------------------------


def fetch_texts(spec: EmbeddingSpec, column_id: int) -> str:
    """Text and its hash for each claimed key that still exists. Params: keys (JSON array)."""
    return _with_parameters(sql.SQL(
        "SELECT k.row_key, {render}({row}) AS text, {hash} AS hash"
        " FROM jsonb_array_elements(%(keys)s::jsonb) AS k(row_key)"
        " JOIN {table} AS {row} ON {match}"
    ).format(
        render=render_function(column_id), row=sql.Identifier(_ROW),
        hash=_source_hash(column_id, sql.Identifier(_ROW)), table=table(spec),
        match=_key_matches(spec, _ROW, sql.SQL("k.row_key")),
    ))


def store_vectors(spec: EmbeddingSpec, column_id: int) -> str:
    """Write vectors, guarded: a row whose text changed since it was read is left alone.

    Params: keys (jsonb[] as text), vectors (numpy arrays or None to clear, sent in binary:
    ``%(vectors)b``), hashes (uuid[]).
    Returns the keys that were written.
    """
    return _with_parameters(sql.SQL(
        "UPDATE {table} AS {row} SET {column} = v.vector, {hash_column} = v.hash{fulltext}"
        " FROM unnest(%(keys)s::jsonb[], %(vectors)b::{vector_type}[], %(hashes)s::uuid[])"
        " AS v(row_key, vector, hash)"
        " WHERE {match} AND {current_hash} IS NOT DISTINCT FROM v.hash"
        " RETURNING v.row_key"
    ).format(
        table=table(spec), row=sql.Identifier(_ROW), column=sql.Identifier(spec.column),
        hash_column=sql.Identifier(spec.hash_column),
        vector_type=vector_type(spec),
        match=_key_matches(spec, _ROW, sql.SQL("v.row_key")),
        current_hash=_source_hash(column_id, sql.Identifier(_ROW)),
        fulltext=_fulltext_assignment(spec, column_id),
    ))


def _fulltext_assignment(spec: EmbeddingSpec, column_id: int) -> sql.Composable:
    """``, <column>_fulltext = ...``: the text leg is written with the vector (if declared)."""
    if spec.fulltext is None:
        return sql.SQL("")
    from . import fulltext_sql  # it builds on this module

    return sql.SQL(", {} = {}").format(
        sql.Identifier(spec.fulltext_column),
        fulltext_sql.document(spec, column_id, sql.Identifier(_ROW)))


def sample_texts(spec: EmbeddingSpec, column_id: int) -> str:
    """A random sample of the column's texts, for measuring the model. Params: limit."""
    return _with_parameters(sql.SQL(
        "SELECT {}({}) AS text FROM {} AS {} WHERE {}({}) IS NOT NULL"
        " ORDER BY random() LIMIT %(limit)s"
    ).format(
        render_function(column_id), sql.Identifier(_ROW), table(spec), sql.Identifier(_ROW),
        render_function(column_id), sql.Identifier(_ROW),
    ))


def all_texts(spec: EmbeddingSpec, column_id: int) -> str:
    """The text of every row that has one (for ``embeddb estimate``)."""
    return _text(sql.SQL(
        "SELECT {render}({row}) AS text FROM {table} AS {row} WHERE {render}({row}) IS NOT NULL"
    ).format(render=render_function(column_id), row=sql.Identifier(_ROW), table=table(spec)))
