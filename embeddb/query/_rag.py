"""Chunk retrieval for RAG: the k best chunks of a chunked column, with their documents.

:func:`search_chunks` returns :class:`ChunkHit` rows: the parent row, the chunk's number, span,
text and similarity, and optionally the chunk with its neighbours as ``context``. Filters are
on the parent's columns; ``per_document`` caps how many chunks one document may contribute.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from . import _chunks as chunked
from . import _planner as planner
from ._checks import check_where
from ._planner import Choice, Filter, Plan
from ._query_vectors import query_vector
from ._search import Query, SearchResult, connection_for, returns_objects, vector_off_loop
from ._target import Target, resolve, similarity

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


class ChunkHit(NamedTuple):
    """One chunk: its document's row, where it is in the document's text, and how similar.

    ``context`` is the chunk joined with its ``neighbours`` on either side when they were asked
    for, else None: overlapping text appears once, and a line break stands for whitespace the
    splitter trimmed between two chunks.

    Example::

        for hit in search_chunks(session, Doc.body_embedding, "reset a password", k=5):
            print(hit.row.id, hit.chunk_no, hit.start, hit.end, f"{hit.similarity:.3f}")
    """

    row: Any
    chunk_no: int
    start: int
    end: int
    text: str
    similarity: float
    context: str | None = None


def search_chunks(
    session: Session | Connection,
    column: Any,
    query: Query,
    *,
    k: int = 10,
    where: Any = None,
    within: sa.Select[Any] | None = None,
    per_document: int | None = None,
    neighbours: int = 0,
    plan: Plan = "auto",
    min_similarity: float | None = None,
) -> SearchResult[ChunkHit]:
    """The k chunks of a chunked column nearest to ``query``, among documents matching ``where``.

    ``within`` narrows the documents to the rows a ``select()`` of the parent returns (its joins
    and conditions). At most ``per_document`` chunks come from one document; ``neighbours=n``
    adds each hit's ``context``: the chunk with n chunks before and after it. k chunks are
    returned whenever k (within the cap) exist.

    Example::

        for hit in search_chunks(session, Doc.embedding, "how do I rotate logs", k=5,
                                 per_document=2, neighbours=1):
            prompt += f"[{hit.row.id}#{hit.chunk_no}] {hit.context}\\n"
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if per_document is not None and per_document < 1:
        raise ValueError(f"per_document must be at least 1, got {per_document}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be 0 or more, got {neighbours}")
    started = time.perf_counter()
    target = resolve(column)
    if target.declaration.chunking is None:
        raise ValueError(f"{target.table.name}.{target.column.name} is not chunked: declare it"
                         " with Embedding(..., chunks=Chunking(...)), or use search()")
    check_where(target, where, within)
    conn = connection_for(session, target)
    vector = query_vector(conn, target, query)
    choice = planner.choose(conn, Filter(target, where, within), k, plan)
    if within is not None:
        where = sa.and_(*([] if where is None else [where]), chunked.documents_in(target, within))
    rows, ran = _find(session, conn, target, vector, k, where, per_document, choice)
    single = returns_objects(session, target)
    width = len(target.key_columns)
    hits = [ChunkHit(row[0] if single else row, row.chunk_no, row.char_start, row.char_end,
                     row.text, float(row.similarity))
            for row in rows
            if min_similarity is None or float(row.similarity) >= min_similarity]
    if neighbours and hits:
        keys = [tuple(row[-width:]) for row in rows][: len(hits)]
        hits = _with_context(session, target, hits, keys, neighbours)
    return SearchResult(hits, ran, choice.estimated_rows, (time.perf_counter() - started) * 1000)


class ChunkSearchOptions(TypedDict, total=False):
    """:func:`search_chunks`'s keyword options, which :func:`asearch_chunks` passes on as they
    are (one list of them for both twins)."""

    k: int
    where: Any
    within: sa.Select[Any] | None
    per_document: int | None
    neighbours: int
    plan: Plan
    min_similarity: float | None


async def asearch_chunks(
    session: AsyncSession | AsyncConnection,
    column: Any,
    query: Query,
    **options: Unpack[ChunkSearchOptions],
) -> SearchResult[ChunkHit]:
    """:func:`search_chunks` for an ``AsyncSession`` or ``AsyncConnection``, with the same
    keyword options (``k``, ``where``, ``within``, ``per_document``, ``neighbours``, ``plan``,
    ``min_similarity``).

    Example::

        hits = await asearch_chunks(session, Doc.embedding, "rotate logs", k=5)
    """
    vector = await vector_off_loop(session, column, query)
    return await session.run_sync(lambda sync: search_chunks(sync, column, vector, **options))


def _statement(target: Target, where: Any, per_document: int | None,
               exact: bool) -> sa.Select[Any]:
    found = chunked.candidates(target, where, exact, with_text=True).subquery("found")
    if per_document is not None:
        # ranked over the candidates, not inside their query: a window function there would
        # need every matching chunk (a full scan) before the index's ORDER BY ... LIMIT n
        keys = [found.c[key.name] for key in target.key_columns]
        found = sa.select(found, sa.func.row_number().over(
            partition_by=keys, order_by=found.c.distance).label("rank_in_document")
        ).subquery("ranked")
    stmt = (
        sa.select(*chunked._entity_columns(target),
                  found.c.chunk_no, found.c.char_start, found.c.char_end, found.c.text,
                  similarity(target, found.c.distance).label("similarity"),
                  *[found.c[key.name] for key in target.key_columns])
        .join(found, chunked.key_match(target, found))
        .order_by(found.c.distance)
        .limit(sa.bindparam("k", type_=sa.Integer))
    )
    if per_document is not None:
        stmt = stmt.where(found.c.rank_in_document <= per_document)
    return stmt


def _find(session: Session | Connection, conn: Connection, target: Target, vector: list[float],
          k: int, where: Any, per_document: int | None, choice: Choice
          ) -> tuple[list[Any], str]:
    if choice.plan == "index":
        stmt = _statement(target, where, per_document, exact=False)
        for per_result in chunked.CANDIDATE_ROUNDS:
            rows = chunked.run(session, conn, target, stmt, vector, k, choice, k * per_result)
            if len(rows) >= k:
                return rows, "index"
        return chunked.run(session, conn, target, _statement(target, where, per_document, True),
                           vector, k, Choice("exact"), 0), "index+exact"
    return chunked.run(session, conn, target, _statement(target, where, per_document, True),
                       vector, k, choice, 0), "exact"


def _with_context(session: Session | Connection, target: Target, hits: list[ChunkHit],
                  keys: list[tuple[Any, ...]], neighbours: int) -> list[ChunkHit]:
    """Each hit with its neighbouring chunks' text, read in one statement."""
    chunks = chunked.chunk_table(target.column)
    key_columns = [chunks.c[key.name] for key in target.key_columns]
    wanted = sa.or_(*(
        sa.and_(sa.tuple_(*key_columns) == sa.tuple_(*key),
                chunks.c.chunk_no.between(hit.chunk_no - neighbours, hit.chunk_no + neighbours))
        for hit, key in zip(hits, keys, strict=True)))
    rows = session.execute(
        sa.select(*key_columns, chunks.c.chunk_no, chunks.c.char_start, chunks.c.char_end,
                  chunks.c.text).where(wanted).order_by(*key_columns, chunks.c.chunk_no)).all()
    by_document: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    width = len(key_columns)
    for row in rows:
        by_document[tuple(row[:width])].append(row)
    return [
        hit._replace(context=_join([row for row in by_document[key]
                                    if abs(row.chunk_no - hit.chunk_no) <= neighbours]))
        for hit, key in zip(hits, keys, strict=True)
    ]


def _join(rows: list[Any]) -> str:
    """Consecutive chunks as one text: each chunk's overlap with the one before is dropped."""
    text, end = "", None
    for row in rows:
        if end is None:
            text, end = row.text, row.char_end
        elif row.char_start >= end:
            text, end = text + "\n" + row.text, row.char_end
        elif row.char_end > end:
            text, end = text + row.text[end - row.char_start:], row.char_end
    return text


__all__ = ["ChunkHit", "asearch_chunks", "search_chunks"]
