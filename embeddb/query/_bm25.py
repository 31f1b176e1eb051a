"""The BM25 text leg of hybrid search, in SQL over a column's postings.

A column declared with ``fulltext=`` keeps a stored ``tsvector`` (written by the worker with
the vector) and its postings: one row per lexeme and row, with the lexeme's number of
positions and the row's length, kept in step with the ``tsvector`` by triggers
(:mod:`embeddb.fulltext_sql`). A query is turned into its lexemes with the column's own text
search configuration; the postings of those lexemes are read by an index-only scan; a row's
score is::

    sum over the query's lexemes t in the row:
        idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average_length))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

``n(t)``, the number of rows holding ``t``, is the number of its postings, counted in the
same scan that scores them: exact and current. ``where`` filters which rows are scored, not
the statistics: a row's score does not depend on the filter. ``N`` (rows with a ``tsvector``)
and the average length are read from the table itself, exactly, or, on a table PostgreSQL
estimates above ``BM25.sample_above`` rows, from a ``TABLESAMPLE SYSTEM`` of about that many
rows; this process reuses them for ``BM25.totals_max_age`` seconds.

``tf`` is the number of positions of ``t`` in the row's ``tsvector``; a row's ``length`` is its
number of distinct lexemes (``length(tsvector)``). Every row holding a query lexeme is
scored (no pruning, so nothing is approximate): the cost grows with the postings of the
query's lexemes, a few thousand index tuples per query on BEIR's SciFact and NFCorpus.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, TSVECTOR
from sqlalchemy.engine import Connection

from ..spec import fulltext_column_name, postings_table_name
from ._target import Target

__all__ = ["BM25", "Statistics", "Totals", "bm25_leg", "document_vector", "leg_values",
           "postings_table", "query_lexemes", "sample_percent", "statistics", "stored_fulltext",
           "totals"]

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


class Statistics(NamedTuple):
    """What BM25 needs for one query besides the postings: the corpus's totals and the
    query's lexemes (distinct, in the column's configuration)."""

    totals: Totals
    lexemes: tuple[str, ...]


_lexemes: dict[tuple[str, str], tuple[str, ...]] = {}


def query_lexemes(conn: Connection, config: str, text: str) -> tuple[str, ...]:
    """The lexemes of ``text`` in text search configuration ``config`` (stemmed, no stop
    words), as the column's documents are indexed; remembered by this process."""
    key = (config, text)
    found = _lexemes.get(key)
    if found is None:
        found = tuple(conn.execute(sa.select(sa.func.tsvector_to_array(
            document_vector(sa.cast(sa.literal(config), REGCONFIG), sa.literal(text)),
            type_=ARRAY(sa.Text)))).scalar_one())
        if len(_lexemes) >= 10_000:
            _lexemes.clear()
        _lexemes[key] = found
    return found


def statistics(conn: Connection, target: Target, text: str, parameters: BM25) -> Statistics:
    """The statistics of :func:`bm25_leg` for ``text``: N and the average length
    (:func:`totals`, reused for ``parameters.totals_max_age`` seconds) and the query's
    lexemes. Each lexeme's document frequency is counted by the leg itself, from the same
    postings it scores: always current."""
    assert target.declaration.fulltext is not None
    lexemes = query_lexemes(conn, target.declaration.fulltext, text)
    return Statistics(totals(conn, target, parameters), tuple(dict.fromkeys(lexemes)))


_postings: dict[tuple[str | None, str, str], sa.Table] = {}


def postings_table(target: Target) -> sa.Table:
    """The column's postings table (:mod:`embeddb.fulltext_sql`) as SQLAlchemy sees it."""
    key = (target.table.schema, target.table.name, target.column.name)
    found = _postings.get(key)
    if found is None:
        found = _postings[key] = sa.Table(
            postings_table_name(target.table.name, target.column.name), sa.MetaData(),
            *(sa.Column(column.name, column.type) for column in target.key_columns),
            sa.Column("lexeme", sa.Text), sa.Column("tf", sa.Integer),
            sa.Column("doc_length", sa.Integer), schema=target.table.schema)
    return found


def leg_values(corpus: Statistics, parameters: BM25) -> tuple[bool, dict[str, Any]]:
    """The shape of :func:`bm25_leg`'s SQL for ``corpus`` (whether the query has lexemes at
    all) and the values of its parameters: statements of one shape differ only in these, so
    a statement built once serves them all."""
    k1, b = parameters[:2]
    return bool(corpus.lexemes), {
        "bm25_k1": float(k1), "bm25_b": float(b), "bm25_lexemes": list(corpus.lexemes),
        "bm25_documents": float(corpus.totals.documents),
        "bm25_average_length": corpus.totals.average_length or 1.0,
    }


def bm25_leg(target: Target, corpus: Statistics, filters: list[Any], limit: int,
             parameters: BM25) -> sa.Subquery:
    """The best ``limit`` rows by BM25 for the query whose ``corpus`` statistics are given
    (:func:`statistics`) among the rows matching ``filters``: the key columns and ``score``.

    Exact: every row holding one of the query's lexemes is scored, from the postings alone
    (one index-only scan per lexeme, ``tf`` and the row's length in the index), and each
    lexeme's document frequency is the number of its postings, counted in the same scan.
    No ``tsvector`` is read; a filter joins the scored keys to the table.
    """
    keys = target.key_columns
    names = [key.name for key in keys]
    if not corpus.lexemes:  # only stop words: nothing to match
        return (sa.select(*keys, sa.literal(0.0, sa.Float).label("score"))
                .where(sa.false()).subquery("text_hits"))
    _, values = leg_values(corpus, parameters)

    def bind(name: str, type_: Any = sa.Float) -> sa.BindParameter[Any]:
        return sa.bindparam(name, values[name], type_=type_)

    k1, b, documents = bind("bm25_k1"), bind("bm25_b"), bind("bm25_documents")
    average_length = bind("bm25_average_length")
    postings = postings_table(target)
    found = (
        sa.select(*(postings.c[name] for name in names), postings.c.tf, postings.c.doc_length,
                  sa.func.count().over(partition_by=postings.c.lexeme).label("df"))
        .where(postings.c.lexeme == sa.any_(bind("bm25_lexemes", ARRAY(sa.Text))))
        .subquery("text_postings")
    )
    # a sample (or a cached N) can undercount; never below a lexeme's own count (idf > 0)
    n = sa.func.greatest(documents, sa.cast(found.c.df, sa.Float))
    idf = sa.func.ln(1.0 + (n - found.c.df + 0.5) / (found.c.df + 0.5), type_=sa.Float)
    tf = sa.cast(found.c.tf, sa.Float)
    norm = k1 * (1.0 - b + b * found.c.doc_length / average_length)
    score = sa.func.sum(idf * tf * (k1 + 1.0) / (tf + norm), type_=sa.Float)
    scored = (sa.select(*(found.c[name] for name in names), score.label("score"))
              .group_by(*(found.c[name] for name in names)))
    ranked = scored.subquery("text_scored")
    ranked_keys = [ranked.c[name] for name in names]
    if filters:
        # the filter's own FROM is the table alone: its unqualified names (a text where=)
        # mean the table's columns, as in the vector leg
        matching = sa.select(*keys).where(*filters).correlate(None)
        ranked = (sa.select(*ranked_keys, ranked.c.score)
                  .where(sa.tuple_(*ranked_keys).in_(matching))
                  .subquery("text_filtered"))
    return (
        sa.select(*(ranked.c[name] for name in names), ranked.c.score)
        .order_by(ranked.c.score.desc(), *(ranked.c[name] for name in names))
        .limit(limit)
        .subquery("text_hits")
    )
