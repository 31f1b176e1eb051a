"""The SQL of a column's full-text index, composed with psycopg.sql.

A column declared with ``fulltext=`` also owns the ``tsvector`` column ``<column>_fulltext``
and its GIN index ``<table>_<column>_fulltext_gin``. The worker writes a row's ``tsvector``
in the statement that stores its vector (:func:`embeddb.column_sql.store_vectors`, from the
same rendered text), so the application's writes pay nothing for it: ``to_tsvector`` costs
about 0.45 ms an abstract here, more than the rest of embeddb's trigger, and a fraction of a
percent of the worker's time per row. A row joins both legs of hybrid search when it is
embedded. Installing writes every row's ``tsvector`` at once.

BM25 reads the column's *postings*, the table ``<table>_<column>_postings`` in the parent's
schema: one row per lexeme of each row's ``tsvector`` with the row's key, the lexeme's number
of positions (``tf``) and the ``tsvector``'s number of lexemes (``doc_length``), keyed by
(lexeme, row key) and carrying ``tf`` and ``doc_length`` in that index, so a query reads the
postings of its lexemes by an index-only scan and never a ``tsvector``. The trigger function
``embeddb.postings_N()`` keeps them in step with the ``tsvector`` whoever writes it (the worker,
an install's fill): the triggers ``embeddb_<column>_pins|pupd|pdel|ptrunc`` on the parent fire
only when a row's ``tsvector`` or key changes, the row is deleted, or the table truncated, so
an application's INSERT, COPY or UPDATE of other columns pays one ``WHEN`` test per row.
Postings are per row: concurrent writers share no bookkeeping rows. N and the average length
are read at query time (``embeddb.query._bm25``).
"""

from __future__ import annotations

from psycopg import sql

from .column_sql import render_function, table
from .spec import EmbeddingSpec

#: The postings table's own columns, after the parent's key columns.
POSTINGS_COLUMNS = ("lexeme", "tf", "doc_length")


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


def postings_table(spec: EmbeddingSpec) -> sql.Identifier:
    return sql.Identifier(spec.schema, spec.postings_table)


def qualified_postings_table(spec: EmbeddingSpec) -> str:
    return _text(postings_table(spec))


def postings_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"postings_{column_id}")


def postings_triggers(spec: EmbeddingSpec) -> dict[str, str]:
    return {event: f"{spec.trigger_prefix}_{event}" for event in ("pins", "pupd", "pdel", "ptrunc")}


def _keys(spec: EmbeddingSpec) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, spec.key_columns))


def create_postings(spec: EmbeddingSpec, key_types: dict[str, str]) -> str:
    """The postings table; ``key_types`` are the parent's key columns' types (``format_type``).

    The primary key (lexeme first) carries ``tf`` and ``doc_length``: a query's scan of a
    lexeme's postings is index-only, and a row's postings are found by its lexemes and key.
    """
    keys = [sql.SQL("{} {} NOT NULL").format(sql.Identifier(name), sql.SQL(key_types[name]))
            for name in spec.key_columns]
    return _text(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ({keys}, lexeme text NOT NULL,"
        " tf integer NOT NULL, doc_length integer NOT NULL,"
        " PRIMARY KEY (lexeme, {key_list}) INCLUDE (tf, doc_length))"
    ).format(table=postings_table(spec), keys=sql.SQL(", ").join(keys), key_list=_keys(spec)))


def _postings_of(spec: EmbeddingSpec, row: str, source: sql.Composable | None = None
                 ) -> sql.Composable:
    """The postings of ``row`` (``NEW``; or the alias of ``source``, each of its rows) as a
    ``SELECT``."""
    document = sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(spec.fulltext_column))
    keys = sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(key))
                              for key in spec.key_columns)
    # a stripped tsvector has no positions: its lexemes count once
    return sql.SQL(
        "SELECT {keys}, u.lexeme, greatest(coalesce(cardinality(u.positions), 0), 1),"
        " length({document}) FROM {source}unnest({document}) AS u"
    ).format(keys=keys, document=document,
             source=sql.SQL("") if source is None else sql.SQL("{}, ").format(source))


def fill_postings(spec: EmbeddingSpec) -> list[str]:
    """Every row's postings written afresh from its ``tsvector`` (installing, upgrading)."""
    return [_text(sql.SQL("TRUNCATE {}").format(postings_table(spec))),
            _text(sql.SQL("INSERT INTO {} ({}, lexeme, tf, doc_length) {}").format(
                postings_table(spec), _keys(spec),
                _postings_of(spec, "src", sql.SQL("{} AS src").format(table(spec)))))]


def create_postings_function(spec: EmbeddingSpec, column_id: int) -> str:
    """``embeddb.postings_N()``: a row's old postings out, its new ones in; TRUNCATE empties."""
    old_key = sql.SQL(" AND ").join(
        sql.SQL("p.{0} = OLD.{0}").format(sql.Identifier(key)) for key in spec.key_columns)
    document = sql.Identifier(spec.fulltext_column)
    body = sql.SQL("""
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE {postings};
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.{document} IS NOT NULL THEN
        DELETE FROM {postings} AS p
        WHERE p.lexeme = ANY (tsvector_to_array(OLD.{document})) AND {old_key};
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.{document} IS NOT NULL THEN
        INSERT INTO {postings} ({keys}, lexeme, tf, doc_length) {new_postings};
    END IF;
    RETURN NULL;
END
""").format(postings=postings_table(spec), document=document, old_key=old_key,
            keys=_keys(spec), new_postings=_postings_of(spec, "NEW"))
    # As its owner, with a pinned search_path (every name above is qualified): the worker,
    # which may update only the vector, hash and tsvector columns, and an application that
    # deletes rows need no rights on the postings table.
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
        " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {}"
    ).format(postings_function(column_id), sql.Literal(_text(body))))


def drop_postings_triggers(spec: EmbeddingSpec) -> list[str]:
    return [_text(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(name), table(spec))) for name in postings_triggers(spec).values()]


def create_postings_triggers(spec: EmbeddingSpec, column_id: int) -> list[str]:
    """The triggers of :func:`create_postings_function`: each fires only for a change of a
    row's ``tsvector`` or key, a delete of a row with one, or a TRUNCATE."""
    names = postings_triggers(spec)
    function = postings_function(column_id)
    document = sql.Identifier(spec.fulltext_column)
    changed = sql.SQL(" OR ").join(
        sql.SQL("OLD.{0} IS DISTINCT FROM NEW.{0}").format(sql.Identifier(column))
        for column in (spec.fulltext_column, *spec.key_columns))
    watched = sql.SQL(", ").join(map(sql.Identifier, (spec.fulltext_column, *spec.key_columns)))
    statements = [
        sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH ROW WHEN (NEW.{} IS NOT NULL)"
                " EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["pins"]), table(spec), document, function),
        sql.SQL("CREATE TRIGGER {} AFTER UPDATE OF {} ON {} FOR EACH ROW WHEN ({})"
                " EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["pupd"]), watched, table(spec), changed, function),
        sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} FOR EACH ROW WHEN (OLD.{} IS NOT NULL)"
                " EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["pdel"]), table(spec), document, function),
        sql.SQL("CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT"
                " EXECUTE FUNCTION {}()").format(
            sql.Identifier(names["ptrunc"]), table(spec), function),
    ]
    return [*drop_postings_triggers(spec), *(_text(s) for s in statements)]


def drop_postings(spec: EmbeddingSpec, column_id: int) -> list[str]:
    """The postings' triggers, function and table."""
    return [*drop_postings_triggers(spec),
            _text(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(postings_function(column_id))),
            _text(sql.SQL("DROP TABLE IF EXISTS {}").format(postings_table(spec)))]


def drop_objects(spec: EmbeddingSpec, column_id: int, drop_columns: bool) -> list[str]:
    """Everything above."""
    statements: list[sql.Composable] = [
        sql.SQL("DROP INDEX IF EXISTS {}").format(
            sql.Identifier(spec.schema, spec.fulltext_index_name)),
        *(sql.SQL(s) for s in drop_postings(spec, column_id)),
    ]
    if drop_columns:
        statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
            table(spec), sql.Identifier(spec.fulltext_column)))
    return [_text(s) for s in statements]
