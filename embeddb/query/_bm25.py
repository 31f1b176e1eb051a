"""The BM25 text leg of hybrid search, in SQL over a column's stored ``tsvector``.

For a column declared with ``fulltext=``, embeddb keeps per lexeme the number of documents
that hold it (``embeddb.fulltext_terms``), and the column's numbers of documents and lexemes
(``embeddb.fulltext_totals``). A query is turned into its lexemes with the column's own text
search configuration; the GIN index finds the rows holding any of them; each is scored::

    sum over the query's lexemes t in the row:
        idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average_length))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

``tf`` is the number of positions of ``t`` in the row's ``tsvector``; a row's ``length`` is its
number of distinct lexemes (``length(tsvector)``, read without unpacking the vector), and the
average is over the column's rows. Only the query's lexemes are unpacked: ``setweight`` marks
them and ``ts_filter`` keeps them, both in C, before ``unnest``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, TSQUERY, TSVECTOR

from ..spec import fulltext_column_name
from ._target import Target

__all__ = ["BM25", "bm25_leg", "document_vector", "stored_fulltext"]

_meta = sa.MetaData(schema="embeddb")
_columns = sa.Table(
    "columns", _meta,
    sa.Column("id", sa.Integer), sa.Column("table_schema", sa.Text),
    sa.Column("table_name", sa.Text), sa.Column("column_name", sa.Text),
)
_terms = sa.Table(
    "fulltext_terms", _meta,
    sa.Column("column_id", sa.Integer), sa.Column("lexeme", sa.Text),
    sa.Column("documents", sa.BigInteger),
)
_totals = sa.Table(
    "fulltext_totals", _meta,
    sa.Column("column_id", sa.Integer), sa.Column("documents", sa.BigInteger),
    sa.Column("lexemes", sa.BigInteger),
)
# constants of ts_filter/setweight: the query's lexemes are marked with weight A, then kept
_MARK: sa.ColumnClause[Any] = sa.literal_column("'A'::\"char\"")
_MARKED: sa.ColumnClause[Any] = sa.literal_column("'{a}'::\"char\"[]")


class BM25(NamedTuple):
    """BM25's parameters: ``k1`` (term frequency saturation) and ``b`` (length normalisation).

    The defaults are Lucene's and Elasticsearch's.
    """

    k1: float = 1.2
    b: float = 0.75


def stored_fulltext(target: Target) -> sa.Column[Any] | None:
    """The column's stored ``tsvector`` (declared with ``fulltext=``), or None."""
    if target.declaration.fulltext is None:
        return None
    return target.table.c[fulltext_column_name(target.column.name)]


def document_vector(config: sa.ColumnElement[Any], text: Any) -> sa.ColumnElement[Any]:
    """``embeddb.fulltext_vector(config, text)``: ``to_tsvector`` that never fails on size."""
    return sa.func.embeddb.fulltext_vector(config, text, type_=TSVECTOR)


def bm25_leg(target: Target, text: str, filters: list[Any], limit: int,
             parameters: BM25) -> sa.Subquery:
    """The best ``limit`` rows for ``text`` by BM25: the key columns and ``score``."""
    document = stored_fulltext(target)
    assert document is not None and target.declaration.fulltext is not None
    config = sa.cast(sa.literal(target.declaration.fulltext), REGCONFIG)
    column_id = (
        sa.select(_columns.c.id)
        .where(_columns.c.table_schema == (target.table.schema or sa.func.current_schema()),
               _columns.c.table_name == target.table.name,
               _columns.c.column_name == target.column.name)
        .scalar_subquery()
    )
    query_lexemes = sa.func.tsvector_to_array(document_vector(config, sa.literal(text)))
    documents = sa.cast(_totals.c.documents, sa.Float)
    idf = sa.func.ln(1 + (documents - _terms.c.documents + 0.5) / (_terms.c.documents + 0.5))
    terms = (
        sa.select(_terms.c.lexeme, idf.label("idf"),
                  (sa.cast(_totals.c.lexemes, sa.Float)
                   / sa.func.nullif(documents, 0)).label("average_length"))
        .select_from(_terms.join(_totals, _totals.c.column_id == _terms.c.column_id))
        .where(_terms.c.column_id == column_id, _terms.c.documents > 0,
               _terms.c.lexeme == sa.any_(query_lexemes))
        .cte("query_terms")
    )
    # the tsquery of the lexemes themselves: quoted, so nothing stems them a second time
    quoted = sa.func.concat("'", sa.func.replace(sa.func.replace(
        terms.c.lexeme, "\\", "\\\\"), "'", "''"), "'")
    tsquery = sa.select(
        sa.cast(sa.func.string_agg(quoted, " | "), TSQUERY)).scalar_subquery()
    lexemes = sa.select(sa.func.array_agg(terms.c.lexeme, type_=ARRAY(sa.Text))).scalar_subquery()

    keys = target.key_columns
    names = [key.name for key in keys]
    candidates = (
        sa.select(*keys,
                  sa.func.ts_filter(sa.func.setweight(document, _MARK, lexemes), _MARKED,
                                    type_=TSVECTOR).label("hit"),
                  sa.func.length(document).label("length"))
        .where(document.op("@@")(tsquery), *filters)
        .subquery("text_candidates")
    )
    found = sa.func.unnest(candidates.c.hit).table_valued(
        "lexeme", "positions", "weights").lateral("found")
    tf = sa.cast(sa.func.cardinality(found.c.positions), sa.Float)
    k1, b = (sa.literal(value, sa.Float) for value in parameters)
    score = sa.func.sum(terms.c.idf * tf * (k1 + 1) / (
        tf + k1 * (1 - b + b * candidates.c.length / terms.c.average_length)))
    return (
        sa.select(*(candidates.c[name] for name in names), score.label("score"))
        .select_from(candidates.join(found, sa.true())
                     .join(terms, terms.c.lexeme == found.c.lexeme))
        .group_by(*(candidates.c[name] for name in names))
        .order_by(score.desc(), *(candidates.c[name] for name in names))
        .limit(limit)
        .subquery("text_hits")
    )
