"""Hybrid search: a full-text leg and a vector leg, fused in SQL.

Both legs run in one statement, one round trip, under the same filter. Each takes its best
``candidates`` rows: the vector leg by distance, with the plan :func:`embeddb.search` would choose
(so a selective filter still fills it), the text leg by BM25 over the column's stored
``tsvector`` (:mod:`._bm25`; declared with ``Embedding(..., fulltext=True)``), or, for a
``fulltext=`` source given by the caller, by ``ts_rank_cd`` against a ``tsquery`` made of the
query's words (any of them by default; all of them, in ``websearch_to_tsquery`` syntax, with
``match="all"``). By default (``fusion="score"``) the legs are fused by a weighted sum of each
leg's min-max normalised score (similarity for the vector leg, BM25 for the text leg, each
scaled to 0..1 over the leg's candidates)::

    vector_weight * vector_score + text_weight * text_score

or, with ``fusion="rrf"``, by reciprocal rank fusion::

    vector_weight / (rrf_k + vector_rank) + text_weight / (rrf_k + text_rank)

On BEIR SciFact (benchmarks/README.md) equal-weight score fusion scored nDCG@10 0.730 against
RRF's 0.714, the vector leg's 0.645 and the text leg's 0.693: hence the default.

where a leg that did not return the row adds nothing, and the k best rows are returned.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..errors import QueryError
from . import _chunks as chunked
from . import _planner as planner
from . import _settings as local_settings
from . import _statement_cache as reuse
from ._bm25 import (
    BM25,
    Statistics,
    Totals,
    bm25_leg,
    document_vector,
    leg_values,
    statistics,
    stored_fulltext,
)
from ._checks import check_k, check_query_text, check_where
from ._planner import Choice, Filter, Plan
from ._query_vectors import query_vector
from ._search import (
    Explanation,
    SearchResult,
    connection_for,
    returns_objects,
    vector_off_loop,
)
from ._target import (
    QueryVector,
    Target,
    distance,
    hidden_from_index,
    query_parameter,
    resolve,
    vector_text,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["BM25", "HybridHit", "HybridOptions", "ahybrid_search", "explain_hybrid",
           "hybrid_search"]

#: The usual constant of reciprocal rank fusion (Cormack et al., 2009).
RRF_K = 60
DEFAULT_BM25 = BM25()
Fusion = Literal["rrf", "score"]


class HybridHit(NamedTuple):
    """One fused result: the row, its fused score and its rank in each leg (None: not in it).

    Example::

        for hit in hybrid_search(session, Ticket.embedding, "refund duplicate charge", k=5):
            print(hit.row.subject, hit.score, hit.vector_rank, hit.text_rank)
    """

    row: Any
    score: float
    vector_rank: int | None
    text_rank: int | None


class HybridOptions(TypedDict, total=False):
    """:func:`hybrid_search`'s keyword options, which :func:`ahybrid_search` and
    :func:`explain_hybrid` take as they are (one list of them for the three). The defaults:
    ``k=10``, ``where=None``, ``fulltext=None``, ``language=None``, ``vector_weight=1.0``,
    ``text_weight=1.0``, ``fusion="score"``, ``rrf_k=60``, ``bm25=BM25()``,
    ``candidates=None`` (``max(2k, 20)``), ``plan="auto"``, ``match="any"``, ``vector=None``."""

    k: int
    where: Any
    fulltext: Any
    language: str | None
    vector_weight: float
    text_weight: float
    fusion: Fusion
    rrf_k: int
    bm25: BM25
    candidates: int | None
    plan: Plan
    match: Literal["any", "all"]
    vector: QueryVector | None


def hybrid_search(
    session: Session | Connection,
    column: Any,
    text: str,
    **options: Unpack[HybridOptions],
) -> SearchResult[HybridHit]:
    """The k best rows for ``text`` by full-text and vector similarity, fused.

    The text leg ranks the column's own text by BM25 (``bm25=BM25(k1=1.2, b=0.75)``) with the
    full-text index declared by ``Embedding(..., fulltext=True)``, matching rows with any of
    the query's words. ``fulltext=`` searches something else instead (a ``tsvector`` column,
    a text column or a list of them, made into a ``tsvector`` in the ``language``
    configuration on the fly), ranked by ``ts_rank_cd`` (``match="all"``: rows with all
    the words, in ``websearch_to_tsquery``'s syntax). ``where`` filters both legs. Each leg
    contributes ``candidates`` rows (default ``max(2k, 20)``); raise a leg's weight to trust it
    more. ``fusion="score"`` (the default) sums the legs' normalised scores; ``fusion="rrf"``
    fuses their ranks.
    A query of only stop words leaves the text leg empty; an empty query is refused.
    ``vector`` replaces the embedding of ``text``. ``result.plan`` is the vector leg's plan.
    The options and their defaults: :class:`HybridOptions`.

    Example::

        hits = hybrid_search(session, Ticket.embedding, "refund duplicate charge", k=5,
                             where=Ticket.status == "open", text_weight=0.5)
        for ticket, score, vector_rank, text_rank in hits: ...
    """
    started = time.perf_counter()
    target, conn, params, document, choice = _prepare(session, column, text, options)
    where = options.get("where")
    # a chunked column's index plan asks for more chunks per wanted document each round
    rounds = chunked.CANDIDATE_ROUNDS if target.declaration.chunking is not None else (1,)
    ran: str = choice.plan
    for per_result in rounds:
        hits, vector_hits = _run(session, conn, target, params, document, where, choice,
                                 per_result)
        if choice.plan != "index" or vector_hits >= params.candidates:
            break
    else:
        ran = "index+exact"  # the vector leg came back short: fill it exactly
        hits, _ = _run(session, conn, target, params, document, where, Choice("exact"))
    elapsed_ms = (time.perf_counter() - started) * 1000
    return SearchResult(hits, ran, choice.estimated_rows, elapsed_ms)


def explain_hybrid(
    session: Session | Connection,
    column: Any,
    text: str,
    *,
    analyze: bool = False,
    **options: Unpack[HybridOptions],
) -> Explanation:
    """The statement :func:`hybrid_search` would run and PostgreSQL's plan for both its legs.

    ``options`` are :func:`hybrid_search`'s. The plan shows the vector leg (the HNSW index, or
    the exact scan) and the text leg (the GIN index's bitmap scan and the BM25 aggregation)
    side by side; ``analyze=True`` runs it (``EXPLAIN ANALYZE``) for real row counts and times.

    Example::

        print(explain_hybrid(session, Ticket.embedding, "refund", where=Ticket.status == "open"))
    """
    where = options.get("where")
    target, conn, params, document, choice = _prepare(session, column, text, options)
    stmt = _statement(target, params, document, where, choice.plan == "exact")
    values = planner.settings(choice, params.candidates, planner.pgvector_version(conn))
    explain_options = "ANALYZE, BUFFERS, FORMAT TEXT" if analyze else "FORMAT TEXT"
    with local_settings.scoped(conn, values):
        lines = conn.execute(planner.Explain(stmt, explain_options)).scalars().all()
    compiled = stmt.compile(conn)
    return Explanation(f"hybrid (vector leg: {choice.plan})", choice.estimated_rows, values,
                       str(compiled), dict(compiled.params), "\n".join(lines))


def _prepare(
    session: Session | Connection,
    column: Any,
    text: str,
    options: HybridOptions,
) -> tuple[Target, Connection, _Params, Any, Choice]:
    """The options checked (their defaults are here), the query embedded and the vector
    leg's plan chosen."""
    unknown = sorted(set(options) - set(HybridOptions.__annotations__))
    if unknown:
        raise TypeError(f"hybrid_search() got unexpected keyword arguments: {unknown}")
    k = options.get("k", 10)
    where = options.get("where")
    fulltext = options.get("fulltext")
    match = options.get("match", "any")
    fusion = options.get("fusion", "score")
    candidates = options.get("candidates")
    vector = options.get("vector")
    check_k(k)
    check_query_text(text)
    if match not in ("any", "all"):
        raise QueryError(f"match must be 'any' or 'all', got {match!r}")
    if fusion not in ("rrf", "score"):
        raise QueryError(f"fusion must be 'rrf' or 'score', got {fusion!r}")
    target = resolve(column)
    check_where(target, where)
    conn = connection_for(session, target)
    wanted = candidates if candidates is not None else max(2 * k, 20)
    language = _language(conn, target, fulltext, options.get("language"))
    params = _Params(
        vector=query_vector(conn, target, vector if vector is not None else text),
        text=text, language=language,
        weights=(options.get("vector_weight", 1.0), options.get("text_weight", 1.0)),
        rrf_k=options.get("rrf_k", RRF_K), candidates=max(wanted, k), k=k, match=match,
        fusion=fusion, bm25=BM25(*options.get("bm25", DEFAULT_BM25)),
    )
    document = _document(target, fulltext, params.config)
    if document is None:
        params = params._replace(corpus=statistics(conn, target, text, params.bm25))
    choice = planner.choose(conn, Filter(target, where), params.candidates,
                            options.get("plan", "auto"))
    return target, conn, params, document, choice


async def ahybrid_search(
    session: AsyncSession | AsyncConnection,
    column: Any,
    text: str,
    **options: Unpack[HybridOptions],
) -> SearchResult[HybridHit]:
    """:func:`hybrid_search` for an ``AsyncSession``; the query is embedded off the event loop.

    Example::

        hits = await ahybrid_search(session, Ticket.embedding, "refund", k=5)
    """
    if options.get("vector") is None:
        options = {**options, "vector": await vector_off_loop(session, column, text)}
    return await session.run_sync(lambda sync: hybrid_search(sync, column, text, **options))


class _Params(NamedTuple):
    vector: list[float]
    text: str
    language: str
    weights: tuple[float, float]
    rrf_k: int
    candidates: int
    k: int
    match: str
    fusion: str = "score"
    bm25: BM25 = BM25()
    corpus: Statistics = Statistics(Totals(0.0, 0.0), ())  # BM25's (the stored index only)

    @property
    def config(self) -> sa.ColumnElement[Any]:
        return sa.cast(sa.literal(self.language), REGCONFIG)

    @property
    def tsquery_all(self) -> sa.ColumnElement[Any] | None:
        if self.match != "all":
            return None
        return sa.func.websearch_to_tsquery(self.config, sa.literal(self.text))

    def tsquery(self) -> sa.ColumnElement[Any]:
        if self.match == "all":
            return sa.func.websearch_to_tsquery(self.config, sa.literal(self.text))
        if self.match != "any":
            raise ValueError(f"match must be 'any' or 'all', got {self.match!r}")
        # the query's own lexemes (stemmed, stop words dropped), OR-ed together
        lexemes = sa.func.tsvector_to_array(document_vector(self.config, sa.literal(self.text)))
        return sa.func.to_tsquery(self.config, sa.func.array_to_string(lexemes, " | "))


def _language(conn: Connection, target: Target, fulltext: Any, language: str | None) -> str:
    """The text search configuration of the text leg, checked to exist."""
    declared = target.declaration.fulltext
    if fulltext is None:
        if declared is None:
            raise QueryError(
                f"hybrid_search on {target.table.name}.{target.column.name} needs a full-text"
                " index: declare the column with Embedding(..., fulltext=True) (then migrate or"
                " embeddb.install), or pass fulltext= a tsvector or text column"
            )
        if language is not None and language != declared:
            raise QueryError(
                f"{target.table.name}.{target.column.name}'s full-text index is in {declared!r};"
                f" it cannot be searched in language={language!r}"
            )
        return declared
    chosen = language or "english"
    known = conn.execute(sa.text("SELECT to_regclass('pg_catalog.pg_ts_config') IS NOT NULL"
                                 " AND EXISTS (SELECT FROM pg_ts_config"
                                 " WHERE oid::regconfig::text = :name OR cfgname = :name)"),
                         {"name": chosen}).scalar()
    if not known:
        raise QueryError(f"language={chosen!r} is not a text search configuration this"
                         " database knows (SELECT cfgname FROM pg_ts_config lists them)")
    return chosen


def _document(target: Target, fulltext: Any, config: sa.ColumnElement[Any]) -> Any:
    """What the text leg matches: None for the stored BM25 index, else a ``tsvector``."""
    if fulltext is None:
        return None
    if isinstance(fulltext, Sequence) and not isinstance(fulltext, str):
        return document_vector(config, sa.func.concat_ws(" ", *fulltext))
    if isinstance(getattr(fulltext, "type", None), TSVECTOR):
        return fulltext
    return document_vector(config, fulltext)


def _statement(target: Target, params: _Params, document: Any, where: Any,
               exact: bool, per_result: int = 1) -> sa.Select[Any]:
    keys = target.key_columns
    names = [key.name for key in keys]
    filters = [where] if where is not None else []

    if target.declaration.chunking is not None:
        vector_hits = _best_chunks(target, params, filters, exact, per_result)
    else:
        ordering = distance(target, query_parameter(target, params.vector))
        vector_hits = (
            sa.select(*keys, ordering.label("distance"))
            .where(target.column.is_not(None), *filters)
            .order_by(hidden_from_index(ordering) if exact else ordering)
            .limit(params.candidates)
            .subquery("vector_hits")
        )
    # relaxed_order can hand back rows slightly out of order: rank by the distance itself
    vector_leg = sa.select(
        *(vector_hits.c[name] for name in names),
        sa.func.row_number().over(
            order_by=[vector_hits.c.distance, *(vector_hits.c[name] for name in names)]
        ).label("rank"),
        _scaled(-vector_hits.c.distance).label("scaled"),
    ).subquery("vector_leg")

    if document is None:
        text_filters = list(filters)
        stored = stored_fulltext(target)
        if params.tsquery_all is not None and stored is not None:
            # rows with every word, as websearch_to_tsquery reads the query
            text_filters.append(stored.op("@@")(params.tsquery_all))
        text_hits = bm25_leg(target, params.corpus, text_filters, params.candidates,
                             params.bm25)
    else:
        text_hits = _rank_cd_leg(keys, params, document, filters)
    text_leg = sa.select(
        *(text_hits.c[name] for name in names),
        sa.func.row_number().over(
            order_by=[text_hits.c.score.desc(), *(text_hits.c[name] for name in names)]
        ).label("rank"),
        _scaled(text_hits.c.score).label("scaled"),
    ).subquery("text_leg")

    vector_weight, text_weight = (sa.literal(w, sa.Float) for w in params.weights)
    if params.fusion == "score":
        vector_part = vector_weight * vector_leg.c.scaled
        text_part = text_weight * text_leg.c.scaled
    else:
        rrf_k = sa.literal(params.rrf_k, sa.Float)
        vector_part = vector_weight / (rrf_k + vector_leg.c.rank)
        text_part = text_weight / (rrf_k + text_leg.c.rank)
    fused = sa.select(
        *(sa.func.coalesce(vector_leg.c[n], text_leg.c[n]).label(n) for n in names),
        vector_leg.c.rank.label("vector_rank"),
        text_leg.c.rank.label("text_rank"),
        (sa.func.coalesce(vector_part, 0.0) + sa.func.coalesce(text_part, 0.0)).label("score"),
        sa.func.count(vector_leg.c.rank).over().label("vector_hits"),
    ).select_from(
        vector_leg.outerjoin(
            text_leg, sa.and_(*(vector_leg.c[n] == text_leg.c[n] for n in names)), full=True)
    ).subquery("fused")

    return (
        sa.select(target.entity, fused.c.score, fused.c.vector_rank, fused.c.text_rank,
                  fused.c.vector_hits)
        .join(fused, sa.and_(*(key == fused.c[key.name] for key in keys)))
        .order_by(fused.c.score.desc(), fused.c.vector_rank.asc().nulls_last(),
                  fused.c.text_rank.asc().nulls_last())
        .limit(params.k)
    )


def _best_chunks(target: Target, params: _Params, filters: list[Any], exact: bool,
                 per_result: int) -> sa.Subquery:
    """A chunked column's vector leg: the documents whose best chunk is nearest, each once.

    The index plan takes the ``candidates * per_result`` nearest chunks of matching documents
    (what the chunk table's HNSW index serves) and keeps each document's best; if they hold
    fewer than ``candidates`` documents the caller asks again with more, then exactly
    (:mod:`._chunks` explains why that is exact).
    """
    chunks = chunked.chunk_table(target.column)
    ordering = distance(target, query_parameter(target, params.vector), chunks.c.embedding)
    nearest = (sa.select(*(chunks.c[key.name] for key in target.key_columns),
                         ordering.label("distance"))
               .select_from(chunks.join(target.table, chunked.key_match(target, chunks)))
               .where(*filters))
    if not exact:
        nearest = nearest.order_by(ordering).limit(params.candidates * per_result)
    found = nearest.subquery("nearest_chunks")
    best = sa.func.min(found.c.distance)
    return (
        sa.select(*(found.c[key.name] for key in target.key_columns), best.label("distance"))
        .group_by(*(found.c[key.name] for key in target.key_columns))
        .order_by(best, *(found.c[key.name] for key in target.key_columns))
        .limit(params.candidates)
        .subquery("vector_hits")
    )


def _rank_cd_leg(keys: list[sa.Column[Any]], params: _Params, document: Any,
                 filters: list[Any]) -> sa.Subquery:
    """The text leg over a caller's ``fulltext=``: ``ts_rank_cd``, no statistics needed."""
    tsquery = params.tsquery()
    rank = sa.func.ts_rank_cd(document, tsquery)
    return (
        sa.select(*keys, rank.label("score"))
        .where(document.op("@@")(tsquery), *filters)
        .order_by(rank.desc(), *keys)
        .limit(params.candidates)
        .subquery("text_hits")
    )


def _scaled(score: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """``score`` min-max normalised over its leg: the best 1, the worst 0 (all equal: 1)."""
    low, high = sa.func.min(score).over(), sa.func.max(score).over()
    return sa.func.coalesce((score - low) / sa.func.nullif(high - low, 0), 1.0)


#: hybrid statements without a filter, by shape (filtered ones: ``_statement_cache``)
_unfiltered: dict[Hashable, sa.Select[Any]] = {}


def _reused(conn: Connection, target: Target, params: _Params, document: Any, where: Any,
            exact: bool, per_result: int) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The statement to run and the values to run it with.

    Building and compiling the statement costs more than running it on a few thousand rows,
    so a statement is built once per shape (the plan, whether the query has lexemes, k, the
    fusion, the filter's structure); the query vector, the BM25 statistics and the filter's
    values are passed as parameters. A caller's ``fulltext=`` or ``match="all"`` builds afresh.
    """
    if document is not None or params.match != "any":
        return _statement(target, params, document, where, exact, per_result), {}
    shape, values = leg_values(params.corpus, params.bm25)
    values["query_vector"] = vector_text(params.vector)
    template = ("hybrid", target.column, target.entity, exact, per_result, shape, params.k,
                params.candidates, params.fusion, params.weights, params.rrf_k)

    def build() -> sa.Select[Any]:
        return _statement(target, params, document, where, exact, per_result)

    if where is None:
        stmt = _unfiltered.get(template)
        if stmt is None:
            if len(_unfiltered) >= reuse.CACHE_SIZE:
                _unfiltered.clear()
            stmt = _unfiltered[template] = build()
        return stmt, values
    prepared = reuse.prepare(conn.dialect, template, where, build)
    return prepared.statement, {**prepared.values, **values}


def _run(session: Session | Connection, conn: Connection, target: Target, params: _Params,
         document: Any, where: Any, choice: Choice,
         per_result: int = 1) -> tuple[list[HybridHit], int]:
    stmt, bound = _reused(conn, target, params, document, where, choice.plan == "exact",
                          per_result)
    # ef_search sized for what the index is asked for: chunks, on a chunked column
    values = planner.settings(choice, params.candidates * per_result,
                              planner.pgvector_version(conn))
    with local_settings.scoped(conn, values):
        rows = session.execute(stmt, bound).all()
    entity_only = returns_objects(session, target)
    hits = [
        HybridHit(row[0] if entity_only else row, float(row.score), row.vector_rank,
                  row.text_rank)
        for row in rows
    ]
    # every row carries the vector leg's size; no row means both legs were empty
    return hits, int(rows[0].vector_hits) if rows else 0
