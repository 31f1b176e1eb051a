"""The SQL of a column's full-text index and its BM25 statistics, composed with psycopg.sql.

A column declared with ``fulltext=`` (catalog id N) also owns:

* the ``tsvector`` column ``<column>_fulltext`` and its GIN index
  ``<table>_<column>_fulltext_gin``; the row trigger ``embeddb_<column>_fts_doc`` (BEFORE
  INSERT or UPDATE of a source column, function ``embeddb.fulltext_document_N()``) sets it to
  ``embeddb.fulltext_vector(config, embeddb.render_N(row))``, so the text leg is current
  the moment a row is written, before the worker has embedded it;
* ``embeddb.fulltext_stats_N()``, run by statement triggers ``embeddb_<column>_fts_ins|upd|
  del|trunc``: from the statement's transition tables it adds what changed to the column's
  rows of ``embeddb.fulltext_terms`` (documents per lexeme) and ``embeddb.fulltext_totals``
  (documents and lexemes in all); TRUNCATE resets them.

One statement's changes are folded into one upsert, taken in lexeme order, so a worker's batch
of 256 rows costs one statement and concurrent writers wait for each other instead of
deadlocking.
"""

from __future__ import annotations

from psycopg import sql

from .column_sql import render_function, table
from .spec import EmbeddingSpec

_NEW = "embeddb_new"
_OLD = "embeddb_old"


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def document_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"fulltext_document_{column_id}")


def stats_function(column_id: int) -> sql.Identifier:
    return sql.Identifier("embeddb", f"fulltext_stats_{column_id}")


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


def recount(spec: EmbeddingSpec, column_id: int) -> list[str]:
    """Statistics computed afresh from the table's ``tsvector`` column."""
    column = sql.Identifier(spec.fulltext_column)
    ident = sql.Literal(column_id)
    return [_text(s) for s in (
        sql.SQL("DELETE FROM embeddb.fulltext_terms WHERE column_id = {}").format(ident),
        sql.SQL(
            "INSERT INTO embeddb.fulltext_terms (column_id, lexeme, documents)"
            " SELECT {0}, lexeme, count(*) FROM {1}, unnest(tsvector_to_array({2})) AS lexeme"
            " GROUP BY lexeme"
        ).format(ident, table(spec), column),
        sql.SQL(
            "INSERT INTO embeddb.fulltext_totals AS t (column_id, documents, lexemes)"
            " SELECT {0}, count({2}), coalesce(sum(length({2})), 0) FROM {1}"
            " ON CONFLICT (column_id) DO UPDATE"
            " SET documents = EXCLUDED.documents, lexemes = EXCLUDED.lexemes"
        ).format(ident, table(spec), column),
    )]


def _changes(spec: EmbeddingSpec, *, old: bool, new: bool) -> sql.Composable:
    """The documents a statement added (sign 1) and removed (sign -1).

    A row whose ``tsvector`` an UPDATE left as it was appears on neither side.
    """
    column = sql.Identifier(spec.fulltext_column)

    def side(this: str, other: str, sign: int, other_exists: bool) -> sql.Composable:
        unchanged: sql.Composable = sql.SQL("")
        if other_exists:
            same = sql.SQL(" AND ").join(
                [sql.SQL("o.{0} = t.{0}").format(sql.Identifier(key)) for key in spec.key_columns]
                + [sql.SQL("o.{0} = t.{0}").format(column)])
            unchanged = sql.SQL(" AND NOT EXISTS (SELECT FROM {} AS o WHERE {})").format(
                sql.Identifier(other), same)
        return sql.SQL("SELECT t.{0} AS doc, {1} AS sign FROM {2} AS t"
                       " WHERE t.{0} IS NOT NULL{3}").format(
            column, sql.Literal(sign), sql.Identifier(this), unchanged)

    sides = []
    if new:
        sides.append(side(_NEW, _OLD, 1, old))
    if old:
        sides.append(side(_OLD, _NEW, -1, new))
    return sql.SQL(" UNION ALL ").join(sides)


def _apply_changes(spec: EmbeddingSpec, column_id: int, *, old: bool, new: bool) -> sql.Composable:
    return sql.SQL("""
        WITH changed AS ({changes}),
        totals AS (
            INSERT INTO embeddb.fulltext_totals AS t (column_id, documents, lexemes)
            SELECT {id}, sum(sign), sum(sign * length(doc)) FROM changed HAVING count(*) > 0
            ON CONFLICT (column_id) DO UPDATE
            SET documents = t.documents + EXCLUDED.documents,
                lexemes = t.lexemes + EXCLUDED.lexemes
        )
        INSERT INTO embeddb.fulltext_terms AS f (column_id, lexeme, documents)
        SELECT {id}, lexeme, sum(sign)
        FROM changed, unnest(tsvector_to_array(doc)) AS lexeme
        GROUP BY lexeme HAVING sum(sign) <> 0
        ORDER BY lexeme
        ON CONFLICT (column_id, lexeme) DO UPDATE SET documents = f.documents + EXCLUDED.documents;
""").format(changes=_changes(spec, old=old, new=new), id=sql.Literal(column_id))


def create_document_function(spec: EmbeddingSpec, column_id: int) -> str:
    body = sql.SQL("BEGIN NEW.{} := {}; RETURN NEW; END").format(
        sql.Identifier(spec.fulltext_column), document(spec, column_id, sql.SQL("NEW")))
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}"
    ).format(document_function(column_id), sql.Literal(_text(body))))


def create_stats_function(spec: EmbeddingSpec, column_id: int) -> str:
    ident = sql.Literal(column_id)
    body = sql.SQL("""
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM embeddb.fulltext_terms WHERE column_id = {id};
        UPDATE embeddb.fulltext_totals SET documents = 0, lexemes = 0 WHERE column_id = {id};
    ELSIF TG_OP = 'INSERT' THEN {inserted}
    ELSIF TG_OP = 'UPDATE' THEN {updated}
    ELSE {deleted}
    END IF;
    RETURN NULL;
END
""").format(
        id=ident,
        inserted=_apply_changes(spec, column_id, old=False, new=True),
        updated=_apply_changes(spec, column_id, old=True, new=True),
        deleted=_apply_changes(spec, column_id, old=True, new=False),
    )
    return _text(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}"
    ).format(stats_function(column_id), sql.Literal(_text(body))))


def trigger_names(spec: EmbeddingSpec) -> dict[str, str]:
    prefix = spec.fulltext_trigger_prefix
    return {event: f"{prefix}_{event}" for event in ("ins", "upd", "del", "trunc", "doc")}


def create_triggers(spec: EmbeddingSpec, column_id: int) -> list[str]:
    names = trigger_names(spec)
    function = stats_function(column_id)
    referencing = {
        "ins": ("INSERT", f"NEW TABLE AS {_NEW}"),
        "upd": ("UPDATE", f"OLD TABLE AS {_OLD} NEW TABLE AS {_NEW}"),
        "del": ("DELETE", f"OLD TABLE AS {_OLD}"),
    }
    statements: list[sql.Composable] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table(spec))
        for name in names.values()
    ]
    for event, (operation, tables) in referencing.items():
        statements.append(sql.SQL(
            "CREATE TRIGGER {} AFTER {} ON {} REFERENCING {} FOR EACH STATEMENT"
            " EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(names[event]), sql.SQL(operation), table(spec), sql.SQL(tables),
                 function))
    statements.append(sql.SQL(
        "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()"
    ).format(sql.Identifier(names["trunc"]), table(spec), function))
    statements.append(sql.SQL(
        "CREATE TRIGGER {} BEFORE INSERT OR UPDATE OF {} ON {} FOR EACH ROW"
        " EXECUTE FUNCTION {}()"
    ).format(sql.Identifier(names["doc"]),
             sql.SQL(", ").join(map(sql.Identifier, spec.template.columns)), table(spec),
             document_function(column_id)))
    return [_text(s) for s in statements]


def drop_objects(spec: EmbeddingSpec, column_id: int, drop_columns: bool) -> list[str]:
    """Everything above, and the column's statistics."""
    statements: list[sql.Composable] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table(spec))
        for name in trigger_names(spec).values()
    ]
    statements += [
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(stats_function(column_id)),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(document_function(column_id)),
        sql.SQL("DROP INDEX IF EXISTS {}").format(
            sql.Identifier(spec.schema, spec.fulltext_index_name)),
        sql.SQL("DELETE FROM embeddb.fulltext_terms WHERE column_id = {}").format(
            sql.Literal(column_id)),
        sql.SQL("DELETE FROM embeddb.fulltext_totals WHERE column_id = {}").format(
            sql.Literal(column_id)),
    ]
    if drop_columns:
        statements.append(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
            table(spec), sql.Identifier(spec.fulltext_column)))
    return [_text(s) for s in statements]
