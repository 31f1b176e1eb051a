"""Query helpers: the k rows nearest to a text or a vector, combined with any SQL filter.

``search()`` returns k rows whenever at least k embedded rows match the filter, at the recall of
an exact scan: :mod:`embeddb.query._planner` picks an exact scan of the matching rows when few match
and pgvector's iterative HNSW scan otherwise, and an index pass that comes back short is re-run
exactly. ``result.plan`` says which plan ran; ``explain()`` shows the SQL, the settings and
PostgreSQL's plan; ``nearest()`` is the same query as a composable ``Select``.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar, Unpack

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..orm import INFO_KEY
from . import _chunks as chunked
from . import _planner as planner
from . import _settings as local_settings
from . import _statement_cache as reuse
from ._checks import check_k, check_where
from ._planner import Choice, Filter, Plan
from ._query_vectors import column_entry, embed_query, query_vector, reflect_column
from ._target import (
    QueryVector,
    Target,
    check_dimensions,
    distance,
    hidden_from_index,
    index_distance,
    query_parameter,
    resolve,
    similarity,
    vector_text,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "Explanation",
    "Hit",
    "SearchResult",
    "asearch",
    "column_entry",
    "explain",
    "nearest",
    "reflect_column",
    "search",
    "vector_off_loop",
]

Query = str | QueryVector
_H = TypeVar("_H")
_LONG_VECTOR = re.compile(r"'\[[^\]']{60,}\]'")
_SIMILARITY = operator.itemgetter(1)  # a Hit's similarity


class Hit(NamedTuple):
    """One result: the row and its similarity to the query (higher is more similar).

    ``row`` is the ORM object when a Session selects one entity, else the whole ``Row`` (for a
    Core table, a search through a Connection, or a ``within`` select of several columns),
    whose last column is the similarity.

    Example::

        for hit in search(session, Ticket.embedding, "refund", k=5):
            print(hit.row.subject, f"{hit.similarity:.3f}")   # or: for ticket, similarity in ...
    """

    row: Any
    similarity: float


class SearchResult(list[_H]):
    """The hits, best first, plus how they were found.

    ``plan`` is ``"exact"``, ``"index"`` or ``"index+exact"`` (the index pass came back short
    and the query was re-run exactly); ``estimated_rows`` is the planner's estimate of the rows
    matching the filter (None when no estimate was needed).

    Example::

        hits = search(session, Ticket.embedding, "refund", k=10, where=Ticket.status == "open")
        print(hits.plan, hits.estimated_rows, len(hits))
    """

    def __init__(self, hits: Sequence[_H], plan: str, estimated_rows: float | None,
                 elapsed_ms: float) -> None:
        super().__init__(hits)
        self.plan = plan
        self.estimated_rows = estimated_rows
        self.elapsed_ms = elapsed_ms
        #: on a chunked column: each hit's best chunk (number and span), aligned with the hits
        self.best_chunks: list[chunked.ChunkSpan] | None = None

    def __repr__(self) -> str:
        return f"SearchResult({list.__repr__(self)}, plan={self.plan!r})"


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` found: the plan embeddb chose and what PostgreSQL will do with it.

    Example::

        explanation = explain(session, Ticket.embedding, "refund", where=Ticket.status == "open")
        print(explanation.plan)
        print(explanation)            # the settings, the SQL and PostgreSQL's plan
    """

    plan: str
    estimated_rows: float | None
    settings: dict[str, str]
    sql: str
    params: dict[str, Any] = field(repr=False)
    postgres_plan: str

    def __str__(self) -> str:
        settings = "".join(f"SET LOCAL {name} = {value};\n"
                           for name, value in self.settings.items())
        plan = _LONG_VECTOR.sub("'[…]'", self.postgres_plan)  # 384 numbers help nobody
        return f"-- embeddb plan: {self.plan}\n{settings}{self.sql}\n\n{plan}"


def nearest(
    column: Any,
    query: QueryVector,
    *,
    k: int = 10,
    where: Any = None,
    within: sa.Select[Any] | None = None,
    exact: bool = False,
) -> sa.Select[Any]:
    """``SELECT <entity>, similarity ... ORDER BY column <op> :q LIMIT k`` as a ``Select``.

    ``query`` is a vector. Add joins, filters or columns as with any ``Select``, or start from
    your own with ``within=select(Ticket).join(...)`` (its ORDER BY and LIMIT are replaced).
    Executed as is under a selective filter, an HNSW index may return fewer than k rows;
    :func:`search` runs the same statement with a plan that cannot. ``exact=True`` orders by
    ``(column <op> :q) + 0``, which no index serves: an exact scan, k rows always.

    Example::

        stmt = nearest(Ticket.embedding, vector, k=5).where(Ticket.status == "open")
        for ticket, similarity in session.execute(stmt): ...
    """
    check_k(k)
    target = resolve(column)
    check_where(target, where, within)
    stmt = _statement(target, where, within, exact)
    return stmt.params(_parameters(check_dimensions(target, query), k))


def search(
    session: Session | Connection,
    column: Any,
    query: Query,
    *,
    k: int = 10,
    where: Any = None,
    within: sa.Select[Any] | None = None,
    plan: Plan = "auto",
    min_similarity: float | None = None,
    recall: float | None = None,
) -> SearchResult[Hit]:
    """The k rows nearest to ``query`` (a text or a vector) among the rows matching ``where``.

    Returns :class:`Hit` ``(row, similarity)`` pairs, best first: k of them whenever at least k
    embedded rows match. A text is embedded with the column's own model and query prompt.
    ``within`` is a ``select()`` to search inside (joins, extra columns, filters). ``plan`` forces
    ``"exact"`` or ``"index"``; ``result.plan`` says which ran. ``min_similarity`` drops weaker
    hits after the scan, so a threshold nothing reaches returns at once, empty. ``recall`` is
    the recall@k the index plan must reach on the column's calibration (default 0.95, see
    :mod:`embeddb.calibration`); 1 means the exact scan.

    Example::

        hits = search(session, Ticket.embedding, "reset my password", k=5,
                      where=Ticket.status == "open", recall=0.99)
        for ticket, similarity in hits: ...
    """
    check_k(k)
    started = time.perf_counter()
    target = resolve(column)
    check_where(target, where, within)
    conn = connection_for(session, target)
    vector = query_vector(conn, target, query)
    if target.declaration.chunking is not None:
        return _search_chunked(session, conn, target, vector, k, where, within, plan,
                               min_similarity, started)
    choice = planner.choose(conn, Filter(target, where, within), k, plan, recall)
    hits = _run(session, conn, target, vector, k, where, within, choice)
    ran: str = choice.plan
    if choice.plan == "index" and len(hits) < k:
        ran = "index+exact"  # the index pass came back short while rows may still match
        hits = _run(session, conn, target, vector, k, where, within, Choice("exact"))
    if min_similarity is not None:
        hits = [hit for hit in hits if hit.similarity >= min_similarity]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return SearchResult(hits, ran, choice.estimated_rows, elapsed_ms)


def _search_chunked(
    session: Session | Connection, conn: Connection, target: Target, vector: list[float], k: int,
    where: Any, within: sa.Select[Any] | None, plan: Plan, min_similarity: float | None,
    started: float,
) -> SearchResult[Hit]:
    """``search`` on a chunked column: k distinct documents, ranked by their best chunk.

    ``within`` narrows the documents to the rows it selects (its joins and conditions; the hits
    are the searched table's rows, without ``within``'s extra columns)."""
    choice = planner.choose(conn, Filter(target, where, within), k, plan)
    if within is not None:
        where = sa.and_(*([] if where is None else [where]), chunked.documents_in(target, within))
    rows, ran = chunked.search_documents(session, conn, target, vector, k, where, choice)
    single = returns_objects(session, target)
    pairs = [(Hit(row[0] if single else row, float(row[-4])), chunked.ChunkSpan(*row[-3:]))
             for row in rows
             if min_similarity is None or float(row[-4]) >= min_similarity]
    result = SearchResult([hit for hit, _ in pairs], ran, choice.estimated_rows,
                          (time.perf_counter() - started) * 1000)
    result.best_chunks = [span for _, span in pairs]
    return result


class SearchOptions(TypedDict, total=False):
    """:func:`search`'s keyword options, which :func:`asearch` passes on as they are (one
    list of them for both twins)."""

    k: int
    where: Any
    within: sa.Select[Any] | None
    plan: Plan
    min_similarity: float | None
    recall: float | None


async def asearch(
    session: AsyncSession | AsyncConnection,
    column: Any,
    query: Query,
    **options: Unpack[SearchOptions],
) -> SearchResult[Hit]:
    """:func:`search` for an ``AsyncSession`` or ``AsyncConnection``, with the same keyword
    options (``k``, ``where``, ``within``, ``plan``, ``min_similarity``, ``recall``).

    A query text is embedded in a worker thread, off the event loop.

    Example::

        hits = await asearch(session, Ticket.embedding, "refund", k=5)
    """
    vector = await vector_off_loop(session, column, query)
    return await session.run_sync(lambda sync: search(sync, column, vector, **options))


def explain(
    session: Session | Connection,
    column: Any,
    query: Query,
    *,
    k: int = 10,
    where: Any = None,
    within: sa.Select[Any] | None = None,
    plan: Plan = "auto",
    analyze: bool = False,
    recall: float | None = None,
) -> Explanation:
    """The plan :func:`search` would choose, its SQL and settings, and PostgreSQL's plan for it.

    ``analyze=True`` runs the query (``EXPLAIN ANALYZE``) to show real row counts and timings.

    Example::

        print(explain(session, Ticket.embedding, "refund", where=Ticket.status == "open"))
    """
    check_k(k)
    target = resolve(column)
    check_where(target, where, within)
    conn = connection_for(session, target)
    vector = query_vector(conn, target, query)
    choice = planner.choose(conn, Filter(target, where, within), k, plan, recall)
    stmt = _statement(target, where, within, choice.plan == "exact")
    params = _parameters(vector, k)
    candidates = target.candidates(k, filtered=_narrowed(where, within))
    values = planner.settings(choice, candidates, planner.pgvector_version(conn))
    options = "ANALYZE, BUFFERS, FORMAT TEXT" if analyze else "FORMAT TEXT"
    with local_settings.scoped(conn, values):
        lines = conn.execute(planner.Explain(stmt, options), params).scalars().all()
    compiled = stmt.compile(conn)
    return Explanation(choice.plan, choice.estimated_rows, values, str(compiled),
                       {**compiled.params, **params}, "\n".join(lines))


async def aexplain(
    session: AsyncSession | AsyncConnection,
    column: Any,
    query: Query,
    *,
    k: int = 10,
    where: Any = None,
    within: sa.Select[Any] | None = None,
    plan: Plan = "auto",
    analyze: bool = False,
    recall: float | None = None,
) -> Explanation:
    """:func:`explain` for an ``AsyncSession`` or ``AsyncConnection``; a query text is embedded
    in a worker thread, off the event loop.

    Example::

        print(await aexplain(session, Ticket.embedding, "refund", where=Ticket.status == "open"))
    """
    vector = await vector_off_loop(session, column, query)
    return await session.run_sync(
        lambda sync: explain(sync, column, vector, k=k, where=where, within=within, plan=plan,
                             analyze=analyze, recall=recall)
    )


def returns_objects(session: Session | Connection, target: Target) -> bool:
    """Whether a hit's row is an ORM object: a Session searching a mapped class. A Connection
    gets a mapped class's columns as a ``Row`` (``row.id``, ``row.subject``), as for a table,
    and that ``Row`` is the hit's row."""
    return isinstance(session, Session) and not isinstance(target.entity, sa.Table)


def connection_for(session: Session | Connection, target: Target) -> Connection:
    """The connection ``session`` uses for the target's table (its transaction, its settings)."""
    if isinstance(session, Session):
        return session.connection(bind_arguments={"clause": target.table})
    return session


async def vector_off_loop(
    session: AsyncSession | AsyncConnection, column: Any, query: Query
) -> QueryVector:
    """``query`` as a vector, a text embedded in a thread so the event loop keeps running."""
    if not isinstance(query, str):
        return query
    target = resolve(column)
    entry = await session.run_sync(
        lambda sync: column_entry(connection_for(sync, target), target))
    return await asyncio.to_thread(embed_query, entry, query)


def _narrowed(where: Any, within: sa.Select[Any] | None) -> bool:
    """Whether a filter narrows the rows searched (a binary index then re-ranks more)."""
    return where is not None or within is not None


def _statement(target: Target, where: Any, within: sa.Select[Any] | None,
               exact: bool) -> sa.Select[Any]:
    """The search statement; ``query_vector`` and ``k`` are bound when it runs."""
    if target.quantize == "binary" and not exact:
        # the filter narrows the candidates (and, for a join's sake, the rows re-ranked)
        base = sa.select(*_default_columns(target)) if within is None else within
        stmt = _build(target, base, exact, where, filtered=_narrowed(where, within))
    elif within is None:
        stmt = _template(target.column, target.entity, exact)
    else:
        stmt = _build(target, within, exact)
    return stmt if where is None else stmt.where(where)


@functools.lru_cache(maxsize=256)
def _template(column: sa.Column[Any], entity: Any, exact: bool) -> sa.Select[Any]:
    # built once per column and plan: building a Select costs more than running a small one
    target = Target(column, entity, column.info[INFO_KEY])
    return _build(target, sa.select(*_default_columns(target)), exact)


def _build(target: Target, base: sa.Select[Any], exact: bool,
           where: Any = None, *, filtered: bool = False) -> sa.Select[Any]:
    full = distance(target, query_parameter(target))
    stmt = base.add_columns(similarity(target, full).label("similarity"))
    stmt = stmt.where(target.column.is_not(None)).order_by(None)
    k = sa.bindparam("k", type_=sa.Integer)
    if exact:
        return stmt.order_by(hidden_from_index(full)).limit(k)
    if target.quantize == "binary":
        return _reranked(target, base, stmt, k, where, filtered)
    # a quantised index serves its own expression; the similarity is the stored vectors'
    return stmt.order_by(index_distance(target, query_parameter(target))).limit(k)


def _reranked(target: Target, base: sa.Select[Any], stmt: sa.Select[Any],
              k: sa.BindParameter[int], where: Any, filtered: bool) -> sa.Select[Any]:
    """The binary index plan, one statement: the ``rerank * k`` rows nearest by Hamming
    distance on the index's bits (a subquery the filter is added to; twice as many when
    ``filtered``), ordered by the full vectors' distance, the k first."""
    keys = target.key_columns
    candidates = base.with_only_columns(*keys, maintain_column_froms=True).correlate(None)
    per_result = target.candidates(1, filtered=filtered)
    candidates = candidates.where(target.column.is_not(None)).order_by(None).order_by(
        index_distance(target, query_parameter(target))).limit(k * per_result)
    if where is not None:
        candidates = candidates.where(where)
    key = keys[0] if len(keys) == 1 else sa.tuple_(*keys)
    full = distance(target, query_parameter(target))
    return stmt.where(key.in_(candidates)).order_by(hidden_from_index(full)).limit(k)


def _parameters(vector: Sequence[float], k: int) -> dict[str, Any]:
    return {"query_vector": vector_text(vector), "k": k}


def _default_columns(target: Target) -> list[Any]:
    """The mapped class (its vector column is deferred), or a table's columns but the vector."""
    if isinstance(target.entity, sa.Table):
        return [column for column in target.entity.columns if column is not target.column]
    return [target.entity]


def _run(session: Session | Connection, conn: Connection, target: Target, vector: list[float],
         k: int, where: Any, within: sa.Select[Any] | None, choice: Choice) -> list[Hit]:
    exact = choice.plan == "exact"
    if within is None:
        stmt, values = reuse.prepare(conn.dialect, (target.column, target.entity, exact), where,
                                     lambda: _statement(target, where, None, exact))
        single = returns_objects(session, target)
    else:
        stmt, values = _statement(target, where, within, exact), {}
        single = isinstance(session, Session) and _selects_one_entity(stmt)
    parameters = {**values, **_parameters(vector, k)}
    if exact:  # the exact plan needs no setting (see embeddb.query._planner)
        rows = session.execute(stmt, parameters).all()
    else:
        candidates = target.candidates(k, filtered=_narrowed(where, within))
        settings = planner.settings(choice, candidates, planner.pgvector_version(conn))
        with local_settings.scoped(conn, settings):
            rows = session.execute(stmt, parameters).all()
    hits = [Hit(row[0] if single else row, float(row[-1])) for row in rows]
    if not exact:  # relaxed_order may hand rows back slightly out of order: re-sort them
        hits.sort(key=_SIMILARITY, reverse=True)
    return hits


def _selects_one_entity(stmt: sa.Select[Any]) -> bool:
    """Whether ``stmt`` selects one ORM entity (plus the similarity), e.g. ``(Ticket, sim)``."""
    described = stmt.column_descriptions
    first = described[0]
    return len(described) == 2 and first["entity"] is not None and first["expr"] is first["entity"]
