"""Searching a chunked column: documents ranked by their best chunk, and chunks for RAG.

A chunked column's vectors live in its chunk table (:mod:`embeddb.chunk_sql`). Both searches
filter on the parent's columns (the chunk table is joined to the parent) and plan like
:func:`~embeddb.search`: an exact scan of the matching rows' chunks when few match, pgvector's
iterative HNSW scan of the chunk index otherwise.

The index plan asks for the ``n`` nearest chunks of matching documents and keeps each
document's best one. If the nearest ``n`` chunks hold at least k distinct documents, those are
exactly the k documents whose best chunk is nearest (a document's best chunk comes before any
chunk of a document ranked below it), so "k distinct documents" never depends on how chunks
fall. Fewer than k: ``n`` grows, and after :data:`CANDIDATE_ROUNDS` the exact plan answers.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, NamedTuple

import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy.dialects.postgresql import UUID, distinct_on
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..chunk_sql import CHUNK_COLUMNS
from ..spec import hash_column_name
from . import _planner as planner
from . import _settings as local_settings
from ._planner import Choice
from ._target import (
    Target,
    distance,
    hidden_from_index,
    query_parameter,
    similarity,
    vector_text,
)

#: Candidate chunks per wanted result in the index plan's rounds (then the exact plan).
CANDIDATE_ROUNDS = (8, 64)
#: Whether a document scores the better of its best chunk and its own vector (the mean of its
#: chunks) rather than its best chunk alone. Off until benchmarks/chunk_quality.py, which
#: scores the stored vectors both ways, shows it better on SciFact and NFCorpus.
DOCUMENT_VECTOR_COUNTS = False


class ChunkSpan(NamedTuple):
    """Where a document's best chunk is: its number and ``[start, end)`` in the rendered text.

    Example::

        hits = search(session, Doc.body_embedding, "reset a password", k=5)
        for (doc, similarity), span in zip(hits, hits.best_chunks):
            print(doc.id, span.chunk_no, span.start, span.end)
    """

    chunk_no: int
    start: int
    end: int


@functools.lru_cache(maxsize=256)
def chunk_table(column: sa.Column[Any]) -> sa.Table:
    """The chunk table of a chunked column as a Core ``Table`` (its own MetaData)."""
    parent = column.table
    assert isinstance(parent, sa.Table)
    declaration = column.info["embeddb"]
    vector_type = HALFVEC if isinstance(column.type, HALFVEC) else VECTOR
    name = _chunk_table_name(parent.name, column.name)
    return sa.Table(
        name, sa.MetaData(),
        *[sa.Column(key.name, key.type, primary_key=True) for key in parent.primary_key.columns],
        sa.Column("chunk_no", sa.Integer, primary_key=True),
        sa.Column("char_start", sa.Integer), sa.Column("char_end", sa.Integer),
        sa.Column("text", sa.Text), sa.Column("embedding", vector_type(declaration.dimensions)),
        sa.Column("text_hash", UUID(as_uuid=True)),
        schema=parent.schema,
    )


def _chunk_table_name(table: str, column: str) -> str:
    # the spec's naming rule, without building a whole spec
    from ..spec import _identifier

    return _identifier(f"{table}_{column}_chunks")


def key_match(target: Target, chunks: Any) -> sa.ColumnElement[bool]:
    return sa.and_(*(chunks.c[key.name] == key for key in target.key_columns))


def candidates(target: Target, where: Any, exact: bool, *,
               with_text: bool = False) -> sa.Select[Any]:
    """The chunks of matching documents, nearest first (index: ``LIMIT :n``)."""
    chunks = chunk_table(target.column)
    ordering = distance(target, query_parameter(target), chunks.c.embedding)
    columns: list[Any] = [chunks.c[key.name] for key in target.key_columns]
    columns += [chunks.c.chunk_no, chunks.c.char_start, chunks.c.char_end]
    if with_text:
        columns.append(chunks.c.text)
    columns.append(ordering.label("distance"))
    stmt = sa.select(*columns).select_from(chunks.join(target.table, key_match(target, chunks)))
    if where is not None:
        stmt = stmt.where(where)
    if exact:
        return stmt
    # the inner ORDER BY ... LIMIT is what the HNSW index serves
    return stmt.order_by(ordering).limit(sa.bindparam("n", type_=sa.Integer))


def documents_in(target: Target, within: sa.Select[Any]) -> sa.ColumnElement[bool]:
    """``(key) IN (the keys of the rows within selects)``: ``within=`` as a filter on the
    parent, so the chunk index plan stays one ``ORDER BY ... LIMIT``."""
    keys = within.with_only_columns(*target.key_columns, maintain_column_froms=True)
    return sa.tuple_(*target.key_columns).in_(keys.order_by(None).limit(None))


def documents_statement(target: Target, where: Any, exact: bool) -> sa.Select[Any]:
    """``(entity, similarity, chunk_no, char_start, char_end)`` of the k best documents."""
    found = candidates(target, where, exact).subquery("found")
    keys = [found.c[key.name] for key in target.key_columns]
    best = (sa.select(found).ext(distinct_on(*keys)).order_by(*keys, found.c.distance)
            .subquery("best"))
    return (
        sa.select(*_entity_columns(target), similarity(target, best.c.distance).label("similarity"),
                  best.c.chunk_no, best.c.char_start, best.c.char_end)
        .join(best, key_match(target, best))
        .order_by(best.c.distance)
        .limit(sa.bindparam("k", type_=sa.Integer))
    )


def best_of_statement(target: Target, where: Any, exact: bool) -> sa.Select[Any]:
    """Like :func:`documents_statement`, each document scored by the better of its best chunk
    and its own vector (the mean of its chunks).

    The k best by that score are among the k best by either (a document above k others on one
    score is above them on the better of the two), so the candidates are the k documents of
    each leg, the chunk index's and the parent index's, scored exactly.
    """
    chunk_leg = documents_statement(target, where, exact).with_only_columns(
        *target.key_columns).cte("chunk_leg")
    to_document = distance(target, query_parameter(target))
    document_leg = sa.select(*target.key_columns).where(target.column.is_not(None))
    if where is not None:
        document_leg = document_leg.where(where)
    document_leg = document_leg.order_by(
        hidden_from_index(to_document) if exact else to_document
    ).limit(sa.bindparam("k", type_=sa.Integer))
    found = sa.union(sa.select(chunk_leg), document_leg).subquery("found")
    chunks = chunk_table(target.column).alias("best_chunk")
    to_chunk = distance(target, query_parameter(target), chunks.c.embedding)
    best = (  # the document's own best chunk: a few rows by the key, never the chunk index
        sa.select(chunks.c.chunk_no, chunks.c.char_start, chunks.c.char_end,
                  to_chunk.label("distance"))
        .where(*(chunks.c[key.name] == found.c[key.name] for key in target.key_columns))
        .order_by(hidden_from_index(to_chunk)).limit(1)
        .lateral("best")
    )
    score = sa.func.least(best.c.distance, to_document)
    stmt = (
        sa.select(*_entity_columns(target), similarity(target, score).label("similarity"),
                  best.c.chunk_no, best.c.char_start, best.c.char_end)
        .select_from(found)
        .join(target.table, sa.and_(*(found.c[key.name] == key
                                      for key in target.key_columns)))
        .join(best, sa.true())
        .order_by(score)
        .limit(sa.bindparam("k", type_=sa.Integer))
    )
    if exact:
        return stmt
    # nothing unless the nearest chunks held k documents: the leg would miss some of its k
    # best, and the caller asks again with more chunks (the other leg cannot stand in for it)
    held = sa.select(sa.func.count()).select_from(chunk_leg).scalar_subquery()
    return stmt.where(held >= sa.bindparam("k", type_=sa.Integer))


def _entity_columns(target: Target) -> list[Any]:
    if isinstance(target.entity, sa.Table):
        hidden = {target.column.name, hash_column_name(target.column.name)}
        return [column for column in target.entity.columns if column.name not in hidden]
    return [target.entity]


def run(session: Session | Connection, conn: Connection, target: Target, stmt: sa.Select[Any],
        vector: list[float], k: int, choice: Choice, n: int) -> list[sa.Row[Any]]:
    """Execute a chunk statement under the plan's settings (ef_search sized for ``n``)."""
    parameters: dict[str, Any] = {"query_vector": vector_text(vector), "k": k}
    if choice.plan == "exact":
        return list(session.execute(stmt, parameters).all())
    parameters["n"] = n
    # the parent's calibration sizes ef_search for k documents of its own index; the chunk
    # index is asked for n chunks, so it gets at least what n asks for
    sized = replace(choice, ef_search=max(choice.ef_search or 0, planner.ef_search(n)))
    settings = planner.settings(sized, n, planner.pgvector_version(conn))
    with local_settings.scoped(conn, settings):
        return list(session.execute(stmt, parameters).all())


def search_documents(
    session: Session | Connection, conn: Connection, target: Target, vector: list[float],
    k: int, where: Any, choice: Choice,
) -> tuple[list[Any], str]:
    """The k documents whose best chunk is nearest: (rows, plan that ran)."""
    statement = best_of_statement if DOCUMENT_VECTOR_COUNTS else documents_statement
    if choice.plan == "index":
        stmt = statement(target, where, False)
        for per_result in CANDIDATE_ROUNDS:
            rows = run(session, conn, target, stmt, vector, k, choice, k * per_result)
            if len(rows) >= k:
                return rows, "index"
        exact = Choice("exact")
        return run(session, conn, target, statement(target, where, True), vector, k,
                   exact, 0), "index+exact"
    return run(session, conn, target, statement(target, where, True), vector, k,
               choice, 0), "exact"


__all__ = ["CHUNK_COLUMNS", "ChunkSpan", "chunk_table", "search_documents"]
