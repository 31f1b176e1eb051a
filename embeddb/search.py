"""Query helpers: the k nearest rows to a text or vector, combined with any SQL filter.

``search()`` returns k rows whenever at least k embedded rows match the filter. It picks a plan
from the planner's estimate of how many rows match:

* ``exact``: few rows match, so the filtered rows are scanned and sorted exactly (index scans
  are switched off for this query only, so the HNSW index cannot cut the result short);
* ``index``: the HNSW index with pgvector 0.8's iterative scan (relaxed order, re-sorted here)
  and ``ef_search`` derived from k; if it still comes back short, the query is re-run exactly.

Planner settings are made with ``SET LOCAL`` inside a savepoint that is rolled back after the
query, so nothing leaks into the caller's transaction or a pooled connection. Each plan's SQL
carries its own comment, so a driver's prepared-statement cache never reuses one plan for another.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import QueryableAttribute, Session

from . import catalog
from .catalog import CatalogEntry
from .errors import ModelMismatch, SchemaError
from .models import ModelIdentity, load_embedder
from .orm import INFO_KEY, Declaration, current_schema, embedded_column
from .spec import Distance, EncodeOptions

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

Plan = Literal["auto", "exact", "index"]
QueryInput = str | Sequence[float] | np.ndarray[Any, Any]

#: Filters estimated to match at most this many rows are answered by an exact scan.
EXACT_SCAN_MAX_ROWS = 5000


class Hit(NamedTuple):
    """One result: the row (an ORM object, or a Core row) and its similarity to the query."""

    row: Any
    similarity: float


class SearchResult(list[Hit]):
    """The hits, best first, plus how they were found."""

    def __init__(self, hits: Sequence[Hit], plan: str, estimated_rows: float | None,
                 elapsed_ms: float) -> None:
        super().__init__(hits)
        self.plan = plan
        self.estimated_rows = estimated_rows
        self.elapsed_ms = elapsed_ms


@dataclass(frozen=True)
class _Target:
    column: sa.Column[Any]
    entity: Any  # the mapped class, or the Table for Core use
    distance: Distance


def _target(column_or_attribute: Any) -> _Target:
    column = embedded_column(column_or_attribute)
    declaration: Declaration = column.info[INFO_KEY]
    entity = (
        column_or_attribute.class_
        if isinstance(column_or_attribute, QueryableAttribute)
        else column.table
    )
    return _Target(column, entity, declaration.distance)


def distance_expression(column: Any, query: Any) -> sa.ColumnElement[float]:
    """``column <op> :query`` with the operator of the column's distance (index-friendly)."""
    target = _target(column)
    vector = sa.bindparam("query_vector", _as_list(query), type_=target.column.type)
    return target.column.op(target.distance.operator, return_type=sa.Float)(vector)


def similarity_expression(column: Any, query: Any) -> sa.ColumnElement[float]:
    """Higher is more similar: cosine similarity, inner product, or 1 / (1 + L2 distance)."""
    distance = distance_expression(column, query)
    match _target(column).distance:
        case Distance.COSINE:
            return sa.literal(1.0) - distance
        case Distance.INNER_PRODUCT:
            return -distance
        case Distance.L2:
            return sa.literal(1.0) / (sa.literal(1.0) + distance)


def nearest(
    column: Any, query: Any, *, k: int = 10, where: Any = None
) -> sa.Select[Any]:
    """A composable ``SELECT entity, similarity ... ORDER BY distance LIMIT k``.

    ``query`` is a vector (use :func:`query_vector` for a text). Add joins, filters or columns
    as with any ``Select``. Executed as is, an HNSW index may return fewer than k rows under a
    selective filter; :func:`search` runs the same query with a plan that cannot.
    """
    target = _target(column)
    stmt = (
        sa.select(target.entity, similarity_expression(column, query).label("similarity"))
        .where(target.column.is_not(None))
        .order_by(distance_expression(column, query))
        .limit(k)
    )
    if where is not None:
        stmt = stmt.where(where)
    return stmt


def reflect_column(conn: Connection, entry: CatalogEntry) -> sa.Column[Any]:
    """The column of a catalog entry as a Core ``Column``, for use without the app's models."""
    table = sa.Table(entry.spec.table, sa.MetaData(), schema=entry.spec.schema,
                     autoload_with=conn)
    column = table.c[entry.spec.column]
    column.info[INFO_KEY] = Declaration(
        template=entry.spec.template, model=entry.spec.model, dimensions=entry.spec.dimensions,
        distance=entry.spec.distance, index=entry.spec.index, encode=entry.spec.encode,
    )
    return column


def column_entry(conn: Connection, column: Any) -> CatalogEntry:
    """The catalog entry of an embedded column, checked against its declaration."""
    target = _target(column)
    table = target.column.table
    assert isinstance(table, sa.Table)
    schema = table.schema or current_schema(conn)
    entry = catalog.get_entry(conn, schema, table.name, target.column.name)
    if entry is None:
        raise SchemaError(
            f"{schema}.{table.name}.{target.column.name} is not installed in this database; run"
            " Base.metadata.create_all(engine) or embeddb.install(engine, Model)"
        )
    declaration: Declaration = target.column.info[INFO_KEY]
    if declaration.model != entry.spec.model or declaration.encode != entry.spec.encode:
        raise ModelMismatch(
            f"{entry.spec.qualified_column} is declared with model {declaration.model}"
            f" ({declaration.encode}) but was embedded with {entry.identity.describe()}"
            f" ({entry.spec.encode}); change the model with a migration that re-embeds the column"
        )
    return entry


def query_vector(entry: CatalogEntry, text: str) -> list[float]:
    """The column's own model's embedding of a query text (with its query prompt)."""
    return list(_cached_query_vector(entry.spec.model, entry.spec.encode, entry.identity, text))


@functools.lru_cache(maxsize=1024)
def _cached_query_vector(
    model: str, encode: EncodeOptions, identity: ModelIdentity, text: str
) -> tuple[float, ...]:
    embedder = load_embedder(model, encode)
    differences = identity.differences(embedder.identity)
    if differences:
        raise ModelMismatch(
            f"the column was embedded with {identity.describe()}, but the model here is"
            f" {embedder.identity.describe()} ({'; '.join(differences)})"
        )
    return tuple(float(x) for x in embedder.embed_query(text))


def search(
    session: Session | Connection,
    column: Any,
    query: QueryInput,
    *,
    k: int = 10,
    where: Any = None,
    plan: Plan = "auto",
    min_similarity: float | None = None,
) -> SearchResult:
    """The k rows nearest to ``query`` (a text or a vector) among rows matching ``where``.

    Returns ``(row, similarity)`` pairs, best first; ``result.plan`` says which plan ran.
    ``min_similarity`` drops weaker hits after the scan (so it never slows the index down).

    Example::

        hits = search(session, Ticket.embedding, "reset my password", k=5,
                      where=Ticket.status == "open")
        for ticket, similarity in hits: ...
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    started = time.perf_counter()
    conn = session.connection() if isinstance(session, Session) else session
    vector = _resolve_query(conn, column, query)
    chosen, estimate = _choose_plan(conn, column, where, plan)
    hits = _run(session, column, vector, k, where, chosen)
    ran: str = chosen
    if chosen == "index" and len(hits) < k:
        ran = "index+exact"  # the approximate pass came back short: answer exactly
        hits = _run(session, column, vector, k, where, "exact")
    if min_similarity is not None:
        hits = [hit for hit in hits if hit.similarity >= min_similarity]
    elapsed = (time.perf_counter() - started) * 1000
    return SearchResult(hits, ran, estimate, elapsed)


async def asearch(
    session: AsyncSession,
    column: Any,
    query: QueryInput,
    *,
    k: int = 10,
    where: Any = None,
    plan: Plan = "auto",
    min_similarity: float | None = None,
) -> SearchResult:
    """:func:`search` for an ``AsyncSession``; the model runs in a thread, off the event loop."""
    import asyncio

    if isinstance(query, str):
        entry = await session.run_sync(lambda s: column_entry(s.connection(), column))
        query = await asyncio.to_thread(query_vector, entry, query)
    vector = query
    return await session.run_sync(
        lambda s: search(s, column, vector, k=k, where=where, plan=plan,
                         min_similarity=min_similarity)
    )


def _resolve_query(conn: Connection, column: Any, query: QueryInput) -> list[float]:
    if isinstance(query, str):
        return query_vector(column_entry(conn, column), query)
    vector = _as_list(query)
    expected = _target(column).column.type.dim  # type: ignore[attr-defined]
    if expected is not None and len(vector) != expected:
        raise ValueError(f"the query vector has {len(vector)} dimensions, the column {expected}")
    return vector


def _as_list(query: Any) -> list[float]:
    return [float(x) for x in query]


def _choose_plan(
    conn: Connection, column: Any, where: Any, plan: Plan
) -> tuple[Literal["exact", "index"], float | None]:
    if plan != "auto":
        return plan, None
    if where is None:
        return "index", None
    target = _target(column)
    probe = sa.select(sa.literal(1)).select_from(target.column.table).where(where)
    compiled = probe.compile(conn, compile_kwargs={"render_postcompile": True})
    explained = conn.exec_driver_sql(
        f"EXPLAIN (FORMAT JSON) {compiled}", _positional(compiled)
    ).scalar_one()
    estimate = float(explained[0]["Plan"]["Plan Rows"])
    return ("exact" if estimate <= EXACT_SCAN_MAX_ROWS else "index"), estimate


def _positional(compiled: Any) -> Any:
    return compiled.params


def _run(
    session: Session | Connection, column: Any, vector: list[float], k: int, where: Any,
    plan: Literal["exact", "index"],
) -> list[Hit]:
    settings = (
        {"enable_indexscan": "off"}
        if plan == "exact"
        else {"hnsw.iterative_scan": "relaxed_order", "hnsw.ef_search": str(max(40, 2 * k))}
    )
    stmt = nearest(column, vector, k=k, where=where).prefix_with(f"/* embeddb plan={plan} */")
    session.execute(sa.text("SAVEPOINT embeddb_search"))
    try:
        session.execute(
            sa.text(", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(settings)))
                    .join(("SELECT ", ""))),
            {**{f"n{i}": n for i, n in enumerate(settings)},
             **{f"v{i}": v for i, v in enumerate(settings.values())}},
        )
        rows = session.execute(stmt).all()
    finally:
        session.execute(sa.text("ROLLBACK TO SAVEPOINT embeddb_search"))
        session.execute(sa.text("RELEASE SAVEPOINT embeddb_search"))
    hits = [Hit(row[0] if len(row) == 2 else row[:-1], float(row[-1])) for row in rows]
    # relaxed_order may return rows slightly out of order: re-sort the (at most k) rows
    hits.sort(key=lambda hit: hit.similarity, reverse=True)
    return hits
