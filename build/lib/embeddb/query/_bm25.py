"""The BM25 text leg of hybrid search, in SQL over a column's stored ``tsvector``.

Nothing is kept for it beyond the ``tsvector`` column and its GIN index: every statistic is
read at query time, so writes pay for no bookkeeping and concurrent writers share no rows.
A query is turned into its lexemes with the column's own text search configuration; the GIN
index finds every row holding any of them (the *matching* rows); each is scored::

    sum over the query's lexemes t in the row:
        idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average_length))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

``n(t)``, the number of rows holding ``t``, is counted over the matching rows, which are all
the rows holding any query lexeme, so it is exact and costs no second scan. ``where`` filters
which matching rows are scored, not the statistics: a row's score does not depend on the
filter. ``N`` (rows with a ``tsvector``) and the average length are read from the table
itself, exactly, or, on a table PostgreSQL estimates above ``BM25.sample_above`` rows, from a
``TABLESAMPLE SYSTEM`` of about that many rows, and reused by this process for
``BM25.totals_max_age`` seconds.

``tf`` is the number of positions of ``t`` in the row's ``tsvector``; a row's ``length`` is its
number of distinct lexemes (``length(tsvector)``). Only the query's lexemes are unpacked:
``setweight`` marks them and ``ts_filter`` keeps them, both in C, before ``unnest``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, TSQUERY, TSVECTOR
from sqlalchemy.engine import Connection

from ..spec import fulltext_column_name
from ._target import Target

__all__ = ["BM25", "Totals", "bm25_leg", "document_vector", "sample_percent", "stored_fulltext",
           "totals"]

# constants of ts_filter/setweight: the query's lexemes are marked with weight A, then kept
_MARK: sa.ColumnClause[Any] = sa.literal_column("'A'::\"char\"")
_MARKED: sa.ColumnClause[Any] = sa.literal_column("'{a}'::\"char\"[]")


class BM25(NamedTuple):
    """BM25's parameters: ``k1`` (term frequency saturation) and ``b`` (length normalisation).

    The defaults are Lucene's and Elasticsearch's. Above ``sample_above`` rows (PostgreSQL's
    estimate) the number of documents and their average length are estimated from a sample
    of about that many rows instead of counted; either way this process reuses them for
    ``totals_max_age`` seconds (reading every ``tsvector``'s length costs ~30 ms on 5,000
    abstracts, more than the rest of the query).

    Example::

        hybrid_search(session, Doc.embedding, "gene expression", bm25=BM25(k1=0.9, b=0.4))
    """

    k1: float = 1.2
    b: float = 0.75
    sample_above: int = 100_000
    #: how long (seconds) this process reuses a column's N and average length; 0: recount
    totals_max_age: float = 60.0


def stored_fulltext(target: Target) -> sa.Column[Any] | None:
    """The column's stored ``tsvector`` (declared with ``fulltext=``), or None."""
    if target.declaration.fulltext is None:
        return None
    return target.table.c[fulltext_column_name(target.column.name)]


def document_vector(config: sa.ColumnElement[Any], text: Any) -> sa.ColumnElement[Any]:
    """``embeddb.fulltext_vector(config, text)``: ``to_tsvector`` that never fails on size."""
    return sa.func.embeddb.fulltext_vector(config, text, type_=TSVECTOR)


def sample_percent(target: Target, parameters: BM25) -> sa.ScalarSelect[Any]:
    """The percentage of the table read for ``N`` and the average length: 100 up to
    ``parameters.sample_above`` rows (or a table never analysed), less above."""
    estimate = sa.func.greatest(
        sa.select(sa.column("reltuples", sa.Float))
        .select_from(sa.table("pg_class"))
        .where(sa.column("oid") == sa.func.to_regclass(
            sa.literal(_qualified_name(target))))
        .scalar_subquery(), 1.0)
    return sa.select(sa.func.least(
        100.0, 100.0 * sa.literal(parameters.sample_above, sa.Float) / estimate)
    ).scalar_subquery()


def _qualified_name(target: Target) -> str:
    """The table's name as ``to_regclass`` reads it (quoted: any case, any character)."""
    parts = [target.table.schema, target.table.name] if target.table.schema else [
        target.table.name]
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


class Totals(NamedTuple):
    """BM25's corpus figures: ``documents`` (N, rows with a ``tsvector``), ``average_length``."""

    documents: float
    average_length: float


_cache: dict[tuple[str, str, str, int], tuple[float, Totals]] = {}


def totals(conn: Connection, target: Target, parameters: BM25) -> Totals:
    """N and the average length of the column's documents, reused for ``totals_max_age``.

    At 100 percent ``TABLESAMPLE SYSTEM`` reads every page: the counts are exact.
    """
    document = stored_fulltext(target)
    assert document is not None
    key = (conn.engine.url.render_as_string(hide_password=True), _qualified_name(target),
           document.name, parameters.sample_above)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < parameters.totals_max_age:
        return cached[1]
    percent = sample_percent(target, parameters)
    source = sa.tablesample(target.table, sa.func.system(percent), name="sampled")
    column = source.c[document.name]
    row = conn.execute(
        sa.select((sa.cast(sa.func.count(column), sa.Float) * 100.0 / percent),
                  sa.cast(sa.func.avg(sa.func.length(column)), sa.Float))
        .select_from(source)).one()
    found = Totals(float(row[0] or 0.0), float(row[1] or 0.0))
    _cache[key] = (now, found)
    return found


def bm25_leg(target: Target, text: str, filters: list[Any], limit: int,
             parameters: BM25, corpus: Totals) -> sa.Subquery:
    """The best ``limit`` rows for ``text`` by BM25: the key columns and ``score``.

    ``corpus``: N and the average length, from :func:`totals`.
    """
    document = stored_fulltext(target)
    assert document is not None and target.declaration.fulltext is not None
    config = sa.cast(sa.literal(target.declaration.fulltext), REGCONFIG)
    query_lexemes = sa.func.tsvector_to_array(
        document_vector(config, sa.literal(text)), type_=ARRAY(sa.Text))
    lexeme = sa.func.unnest(query_lexemes).table_valued("lexeme").render_derived("query_lexeme")
    # the tsquery of the lexemes themselves: quoted, so nothing stems them a second time
    quoted = sa.func.concat("'", sa.func.replace(sa.func.replace(
        lexeme.c.lexeme, "\\", "\\\\"), "'", "''"), "'")
    tsquery = sa.select(
        sa.cast(sa.func.string_agg(quoted, " | "), TSQUERY)).scalar_subquery()

    keys = target.key_columns
    names = [key.name for key in keys]
    # CASE: NULL counts as false, and a filter may be text(...), which has no operators
    scored: sa.ColumnElement[Any] = (
        sa.case((sa.and_(*filters), sa.true()), else_=sa.false()) if filters else sa.true())
    matching = (
        sa.select(*keys,
                  sa.func.ts_filter(sa.func.setweight(document, _MARK, query_lexemes), _MARKED,
                                    type_=TSVECTOR).label("hit"),
                  sa.func.length(document).label("length"),
                  scored.label("scored"))
        .where(document.op("@@")(tsquery))
        .cte("text_matching")
    )
    found = sa.func.unnest(matching.c.hit).table_valued(
        "lexeme", "positions", "weights").lateral("found")
    frequencies = (
        sa.select(found.c.lexeme, sa.cast(sa.func.count(), sa.Float).label("documents"))
        .select_from(matching.join(found, sa.true()))
        .group_by(found.c.lexeme)
        .cte("text_frequencies")
    )
    n = frequencies.c.documents
    # a sample (or a cached N) can undercount; never below a lexeme's own count (idf > 0)
    documents = sa.func.greatest(sa.literal(corpus.documents, sa.Float), n)
    average_length = sa.literal(corpus.average_length or 1.0, sa.Float)
    idf = sa.func.ln(1 + (documents - n + 0.5) / (n + 0.5))
    tf = sa.cast(sa.func.cardinality(found.c.positions), sa.Float)
    k1, b = (sa.literal(value, sa.Float) for value in parameters[:2])
    score = sa.func.sum(idf * tf * (k1 + 1) / (
        tf + k1 * (1 - b + b * matching.c.length / average_length)))
    return (
        sa.select(*(matching.c[name] for name in names), score.label("score"))
        .select_from(matching.join(found, sa.true())
                     .join(frequencies, frequencies.c.lexeme == found.c.lexeme))
        .where(matching.c.scored)
        .group_by(*(matching.c[name] for name in names))
        .order_by(score.desc(), *(matching.c[name] for name in names))
        .limit(limit)
        .subquery("text_hits")
    )
