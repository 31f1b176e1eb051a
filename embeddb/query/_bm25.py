"""The BM25 text leg of hybrid search, in SQL over a column's stored ``tsvector``.

Nothing is kept for it beyond the ``tsvector`` column and its GIN index: every statistic is
read at query time, so writes pay for no bookkeeping and concurrent writers share no rows.
A query is turned into its lexemes with the column's own text search configuration; the GIN
index finds the rows holding them; a row's score is::

    sum over the query's lexemes t in the row:
        idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average_length))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

``n(t)``, the number of rows holding ``t``, is counted with the GIN index, one count per
lexeme, exactly (:func:`statistics`). ``where`` filters which rows are scored, not the
statistics: a row's score does not depend on the filter. ``N`` (rows with a ``tsvector``)
and the average length are read from the table itself, exactly, or, on a table PostgreSQL
estimates above ``BM25.sample_above`` rows, from a ``TABLESAMPLE SYSTEM`` of about that many
rows. This process reuses N, the average length and each lexeme's ``n(t)`` for
``BM25.totals_max_age`` seconds, so a query whose lexemes were seen lately runs as one
statement.

``tf`` is the number of positions of ``t`` in the row's ``tsvector``; a row's ``length`` is its
number of distinct lexemes (``length(tsvector)``). Not every matching row is scored: see
:func:`bm25_leg` for how the top rows are found exactly while scoring few.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, TSQUERY, TSVECTOR
from sqlalchemy.engine import Connection

from ..spec import fulltext_column_name
from ._target import Target

__all__ = ["BM25", "Statistics", "Totals", "bm25_leg", "document_vector", "leg_values",
           "query_lexemes", "sample_percent", "statistics", "stored_fulltext", "totals"]

# constants of ts_filter/setweight: the query's lexemes are marked with weight A, then kept
_MARK: sa.ColumnClause[Any] = sa.literal_column("'A'::\"char\"")
_MARKED: sa.ColumnClause[Any] = sa.literal_column("'{a}'::\"char\"[]")
# ts_rank_cd with every weight 1, no normalisation, and a one-lexeme query: the lexeme's tf
_ONES: sa.ColumnClause[Any] = sa.literal_column("'{1,1,1,1}'::float4[]")


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
    """What BM25 needs for one query: the corpus's totals and, for each of the query's
    lexemes, the number of rows holding it (``frequencies``: ``(lexeme, rows)`` pairs)."""

    totals: Totals
    frequencies: tuple[tuple[str, int], ...]


#: how many lexemes a column's document frequency cache holds before it starts again
FREQUENCIES_KEPT = 200_000
_lexemes: dict[tuple[str, str], tuple[str, ...]] = {}
_frequencies: dict[tuple[str, str, str], dict[str, tuple[float, int]]] = {}


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
    (:func:`totals`), and the document frequency of each of the query's lexemes, counted
    with the GIN index (the heap pages of the rows holding it, no ``tsvector`` read) and
    reused, like the totals, for ``parameters.totals_max_age`` seconds.
    """
    document = stored_fulltext(target)
    assert document is not None and target.declaration.fulltext is not None
    corpus = totals(conn, target, parameters)
    lexemes = query_lexemes(conn, target.declaration.fulltext, text)
    known = _frequencies.setdefault((conn.engine.url.render_as_string(hide_password=True),
                                     _qualified_name(target), document.name), {})
    now = time.monotonic()
    fresh = {lexeme: entry[1] for lexeme in lexemes
             if (entry := known.get(lexeme)) is not None
             and now - entry[0] < parameters.totals_max_age}
    missing = [lexeme for lexeme in dict.fromkeys(lexemes) if lexeme not in fresh]
    if missing:
        lexeme = sa.func.unnest(sa.literal(missing, ARRAY(sa.Text))).table_valued(
            "lexeme").render_derived("missing")
        rows = sa.select(sa.func.count()).select_from(target.table).where(
            document.op("@@")(sa.cast(_quoted(lexeme.c.lexeme), TSQUERY))).scalar_subquery()
        counted = {str(row[0]): int(row[1])
                   for row in conn.execute(sa.select(lexeme.c.lexeme, rows))}
        if len(known) + len(counted) > FREQUENCIES_KEPT:
            known.clear()
        for name, count in counted.items():
            known[name] = (now, int(count))
            fresh[name] = int(count)
    return Statistics(corpus, tuple((lexeme, fresh[lexeme]) for lexeme in dict.fromkeys(lexemes)))


def _quoted(lexeme: Any) -> sa.ColumnElement[Any]:
    """A lexeme as ``tsquery`` text: quoted, so nothing stems it a second time."""
    return sa.func.concat("'", sa.func.replace(sa.func.replace(
        lexeme, "\\", "\\\\"), "'", "''"), "'")


def _tsquery_text(lexemes: list[str]) -> str:
    """``'a' | 'b'``: a ``tsquery`` matching rows with any of ``lexemes``, quoted as above."""
    return " | ".join("'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
                      for lexeme in lexemes)


def leg_values(corpus: Statistics, parameters: BM25) -> tuple[tuple[int, bool], dict[str, Any]]:
    """The shape of :func:`bm25_leg`'s SQL for ``corpus`` (how many lexemes, whether some are
    set aside) and the values of its parameters: statements of one shape differ only in
    these, so a statement built once serves them all."""
    k1, b = parameters[:2]
    documents = corpus.totals.documents
    # a sample (or a cached N) can undercount; never below a lexeme's own count (idf > 0)
    idf = {lexeme: math.log(1 + (max(documents, n) - n + 0.5) / (n + 0.5))
           for lexeme, n in corpus.frequencies}
    ordered = sorted(idf, key=lambda lexeme: (idf[lexeme], lexeme))
    bound = [idf[lexeme] * (k1 + 1) for lexeme in ordered]
    aside: list[str] = []
    running: list[float] = []
    for lexeme, lexeme_bound in zip(ordered[:-1], bound, strict=False):
        total = (running[-1] if running else 0.0) + lexeme_bound
        if total >= bound[-1]:
            break
        aside.append(lexeme)
        running.append(total)
    values: dict[str, Any] = {
        "bm25_k1": k1, "bm25_b": b, "bm25_lexemes": ordered,
        "bm25_average_length": corpus.totals.average_length or 1.0,
        "bm25_essential": _tsquery_text(ordered[len(aside):]),
        "bm25_aside": aside, "bm25_running": running,
    }
    for i, lexeme in enumerate(ordered):
        values[f"bm25_w{i}"] = bound[i]
        values[f"bm25_q{i}"] = _tsquery_text([lexeme])
    return (len(ordered), bool(aside)), values


def bm25_leg(target: Target, corpus: Statistics, filters: list[Any], limit: int,
             parameters: BM25) -> sa.Subquery:
    """The best ``limit`` rows by BM25 for the query whose ``corpus`` statistics are given
    (:func:`statistics`): the key columns and ``score``.

    Exact top-``limit`` without scoring every matching row (MaxScore, Turtle and Flood 1995):
    a lexeme adds less than its bound ``idf * (k1 + 1)`` to any row's score.

    * The query's commonest lexemes, whose bounds sum to less than the best single bound, are
      set aside; the rows holding any other lexeme are the *essential* rows.
    * Each essential row's bound is the sum of the bounds of the query lexemes it holds (one
      ``@@`` test each, no ``tsvector`` unpacked). The ``limit`` rows of the best bounds are
      scored; then only the essential rows whose bound reaches the ``limit``-th best of those
      scores (any other scores below it).
    * A row holding only set-aside lexemes ``c1..cj`` (by ascending bound) scores at most
      ``bound(c1) + ... + bound(cj)``; a last pass scores the rows holding a set-aside lexeme
      whose running sum reaches the ``limit``-th best essential score (usually none).

    Scoring a row unpacks only the query's lexemes (``setweight`` marks them, ``ts_filter``
    keeps them); ``ts_rank_cd`` of a one-lexeme query with every weight 1 is that lexeme's tf.
    """
    document = stored_fulltext(target)
    assert document is not None
    keys = target.key_columns
    names = [key.name for key in keys]
    if not corpus.frequencies:  # only stop words: nothing to match
        return (sa.select(*keys, sa.literal(0.0, sa.Float).label("score"))
                .where(sa.false()).subquery("text_hits"))
    shape, values = leg_values(corpus, parameters)
    count, has_aside = shape

    def bind(name: str, type_: Any = sa.Float) -> sa.BindParameter[Any]:
        return sa.bindparam(name, values[name], type_=type_)

    k1, b = bind("bm25_k1"), bind("bm25_b")
    weight = [bind(f"bm25_w{i}") for i in range(count)]  # idf * (k1 + 1): the bound too
    lexemes = bind("bm25_lexemes", ARRAY(sa.Text))
    average_length = bind("bm25_average_length")
    one_lexeme = [sa.cast(bind(f"bm25_q{i}", sa.Text), TSQUERY) for i in range(count)]

    def exact(rows: Any, name: str) -> sa.CTE:
        """The BM25 scores of ``rows`` (key columns and ``document``, the ``tsvector``)."""
        # OFFSET 0: the hit is made once per row, not once per lexeme
        matching = (
            sa.select(*(rows.c[key] for key in names),
                      sa.func.ts_filter(sa.func.setweight(rows.c.document, _MARK, lexemes),
                                        _MARKED, type_=TSVECTOR).label("hit"),
                      sa.func.length(rows.c.document).label("length"))
            .offset(0)
            .subquery(f"{name}_matching")
        )
        norm = k1 * (1 - b + b * matching.c.length / average_length)
        terms = []
        for i in range(count):
            tf = sa.func.ts_rank_cd(_ONES, matching.c.hit, one_lexeme[i], 0, type_=sa.Float)
            # k1 = 0 and tf = 0 would divide 0 by 0: the lexeme adds nothing
            terms.append(sa.func.coalesce(weight[i] * tf / sa.func.nullif(tf + norm, 0), 0.0))
        return (
            sa.select(*(matching.c[key] for key in names), sum(terms[1:], terms[0]).label("score"))
            .cte(f"text_{name}")
        )

    def best(scores: Any) -> sa.ColumnElement[Any]:
        """The ``limit``-th best of ``scores`` (0 when there are fewer)."""
        return sa.func.coalesce(
            sa.select(scores.c.score).order_by(scores.c.score.desc())
            .offset(limit - 1).limit(1).scalar_subquery(), 0.0)

    def keyed(cte: sa.CTE) -> sa.Select[Any]:
        return sa.select(*(cte.c[key] for key in names), cte.c.score)

    essential_query = sa.cast(bind("bm25_essential", sa.Text), TSQUERY)
    # every lexeme a row holds adds less than its bound: their sum bounds the row's score
    holds = [sa.case((document.op("@@", is_comparison=True)(one_lexeme[i]), weight[i]),
                     else_=0.0) for i in range(count)]
    bounded = (
        sa.select(*keys, document.label("document"), sum(holds[1:], holds[0]).label("bound"))
        .where(document.op("@@")(essential_query), *filters)
        .cte("text_bounded")
    )
    by_bound = [bounded.c.bound.desc(), *(bounded.c[key] for key in names)]
    # the rows of the best bounds first; then only the rows whose bound reaches the
    # limit-th best score of those (the others score below it)
    first = exact(sa.select(bounded).order_by(*by_bound).limit(limit).subquery("text_top"),
                  "first")
    after = sa.select(bounded).order_by(*by_bound).offset(limit).subquery("text_after")
    rest = exact(sa.select(after).where(after.c.bound >= best(first)).subquery("text_reaching"),
                 "rest")
    essential_scores = sa.union_all(keyed(first), keyed(rest)).cte("text_essential")
    parts: list[sa.Select[Any]] = [keyed(essential_scores)]
    if has_aside:
        aside_lexeme = sa.func.unnest(bind("bm25_aside", ARRAY(sa.Text)),
                                      bind("bm25_running", ARRAY(sa.Float))).table_valued(
            "lexeme", "running").render_derived("aside_lexeme")
        needed = sa.select(sa.cast(sa.func.string_agg(_quoted(aside_lexeme.c.lexeme), " | "),
                                   TSQUERY)).where(aside_lexeme.c.running >= best(essential_scores))
        aside_rows = (
            sa.select(*keys, document.label("document"))
            .where(document.op("@@")(needed.scalar_subquery()),
                   sa.not_(document.op("@@", is_comparison=True)(essential_query)), *filters)
            .subquery("aside_rows"))
        parts.append(keyed(exact(aside_rows, "aside")))
    both = sa.union_all(*parts).subquery("text_scored")
    return (
        sa.select(*(both.c[key] for key in names), both.c.score)
        .order_by(both.c.score.desc(), *(both.c[key] for key in names))
        .limit(limit)
        .subquery("text_hits")
    )
