"""Rows like a given row, and near-duplicate rows, found through the vector index.

``more_like_this`` is :func:`embeddb.search` with a stored row's vector (the row itself left
out), so filters, plans and "k means k" are the same.

``near_duplicates`` finds every pair of rows, among the rows matching a filter, at least
``min_similarity`` alike. Each row asks the index for its k nearest neighbours in a ``LATERAL``
join, so the work grows with rows x k, not rows squared; the threshold is applied outside each
neighbour scan. ``duplicate_groups`` joins the pairs into groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.visitors import replacement_traverse

from . import _planner as planner
from . import _settings as local_settings
from ._checks import check_k, check_where
from ._planner import Filter, Plan
from ._search import Hit, SearchResult, connection_for, search
from ._target import (
    Target,
    distance,
    distance_bound,
    hidden_from_index,
    resolve,
    similarity,
    unreachable,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "DuplicatePair",
    "amore_like_this",
    "anear_duplicates",
    "duplicate_groups",
    "more_like_this",
    "near_duplicates",
]


class DuplicatePair(NamedTuple):
    """Two rows, named by primary key (a tuple for a composite key), and their similarity.

    Example::

        for pair in near_duplicates(session, Ticket.embedding, min_similarity=0.95):
            print(pair.first, pair.second, f"{pair.similarity:.3f}")
    """

    first: Any
    second: Any
    similarity: float


def more_like_this(
    session: Session | Connection,
    column: Any,
    row: Any,
    *,
    k: int = 10,
    where: Any = None,
    plan: Plan = "auto",
    min_similarity: float | None = None,
) -> SearchResult[Hit]:
    """The k rows nearest to ``row`` (an ORM object or its primary key), ``row`` excluded.

    Raises ``LookupError`` when there is no such row, or when it has no vector yet (the worker
    has not embedded it).

    Example::

        for ticket, similarity in more_like_this(session, Ticket.embedding, ticket, k=5): ...
    """
    check_k(k)
    target = resolve(column)
    key = _primary_key(target, row)
    conn = connection_for(session, target)
    is_row = sa.and_(*(c == v for c, v in zip(target.key_columns, key, strict=True)))
    found = conn.execute(sa.select(target.column).where(is_row)).one_or_none()
    if found is None:
        raise LookupError(f"{target.table.name} has no row with key {_display(key)}")
    if found[0] is None:
        raise LookupError(f"{target.table.name} row {_display(key)} has no embedding yet;"
                          " the worker has not embedded it")
    others = sa.not_(is_row) if where is None else sa.and_(sa.not_(is_row), where)
    return search(session, column, found[0], k=k, where=others, plan=plan,
                  min_similarity=min_similarity)


def near_duplicates(
    session: Session | Connection,
    column: Any,
    *,
    min_similarity: float,
    where: Any = None,
    k: int = 10,
    plan: Plan = "auto",
) -> list[DuplicatePair]:
    """Every pair of rows matching ``where`` that are at least ``min_similarity`` alike.

    Each row's ``k`` nearest neighbours are examined, so a row with more than k near-copies
    reports its k closest (groups still connect through them). ``where`` must be an
    expression on the table's columns; it applies to both rows of a pair. Pairs come once,
    most similar first.

    Example::

        pairs = near_duplicates(session, Ticket.embedding, min_similarity=0.9,
                                where=Ticket.status == "open")
        for group in duplicate_groups(pairs): ...
    """
    check_k(k)
    target = resolve(column)
    check_where(target, where)
    if unreachable(target, min_similarity):
        return []  # no statement: a scan of every row's neighbours would find nothing
    conn = connection_for(session, target)
    choice = planner.choose(conn, Filter(target, where), k, plan)
    stmt = _pairs_statement(target, min_similarity, where, k, choice.plan == "exact")
    with local_settings.scoped(conn, planner.settings(choice, k, planner.pgvector_version(conn))):
        rows = conn.execute(stmt).all()
    width = len(target.key_columns)
    best: dict[tuple[Any, Any], float] = {}
    for row in rows:
        first, second = sorted((tuple(row[:width]), tuple(row[width:2 * width])))
        best[first, second] = max(float(row.similarity), best.get((first, second), -1e300))
    pairs = [DuplicatePair(_scalar(a), _scalar(b), s) for (a, b), s in best.items()]
    pairs.sort(key=lambda pair: (-pair.similarity, pair.first, pair.second))
    return pairs


def duplicate_groups(pairs: Iterable[DuplicatePair]) -> list[list[Any]]:
    """Rows joined by pairs into groups (connected components), largest group first.

    Example::

        duplicate_groups([DuplicatePair(1, 2, 0.95), DuplicatePair(2, 3, 0.91)])  # [[1, 2, 3]]
    """
    parent: dict[Any, Any] = {}

    def root(key: Any) -> Any:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for pair in pairs:
        parent[root(pair.first)] = root(pair.second)
    groups: dict[Any, list[Any]] = {}
    for key in parent:
        groups.setdefault(root(key), []).append(key)
    return sorted((sorted(group) for group in groups.values()), key=lambda g: (-len(g), g[0]))


async def amore_like_this(
    session: AsyncSession | AsyncConnection, column: Any, row: Any, **options: Any
) -> SearchResult[Hit]:
    """:func:`more_like_this` for an ``AsyncSession`` or ``AsyncConnection``.

    Example::

        hits = await amore_like_this(async_session, Ticket.embedding, ticket, k=5)
    """
    return await session.run_sync(lambda sync: more_like_this(sync, column, row, **options))


async def anear_duplicates(
    session: AsyncSession | AsyncConnection, column: Any, **options: Any
) -> list[DuplicatePair]:
    """:func:`near_duplicates` for an ``AsyncSession`` or ``AsyncConnection``.

    Example::

        pairs = await anear_duplicates(async_session, Ticket.embedding, min_similarity=0.9)
    """
    return await session.run_sync(lambda sync: near_duplicates(sync, column, **options))


def _pairs_statement(target: Target, min_similarity: float, where: Any, k: int,
                     exact: bool) -> sa.Select[Any]:
    """``SELECT a.key, b.key, similarity FROM t a CROSS JOIN LATERAL (k-NN of a) b``."""
    a, b = target.table.alias("a"), target.table.alias("b")
    name = target.column.name
    keys = [key.name for key in target.key_columns]
    apart = distance(target, a.c[name], column=b.c[name])  # b.embedding <op> a.embedding
    neighbours = (
        sa.select(*(b.c[key].label(f"other_{key}") for key in keys), apart.label("distance"))
        .where(b.c[name].is_not(None), sa.not_(sa.and_(*(a.c[key] == b.c[key] for key in keys))),
               *_on(where, target.table, b))
        .order_by(hidden_from_index(apart) if exact else apart)
        .limit(k)
        .lateral("neighbours")
    )
    stmt = (
        sa.select(*(a.c[key] for key in keys), *(neighbours.c[f"other_{key}"] for key in keys),
                  similarity(target, neighbours.c.distance).label("similarity"))
        .select_from(a.join(neighbours, sa.true()))
        .where(a.c[name].is_not(None), *_on(where, target.table, a))
    )
    bound = distance_bound(target, min_similarity)
    return stmt if bound is None else stmt.where(neighbours.c.distance <= bound)


def _on(where: Any, table: sa.Table, alias: sa.FromClause) -> list[Any]:
    """``where`` re-pointed from ``table``'s columns to ``alias``'s (empty when None)."""
    if where is None:
        return []

    def swap(element: Any, **_: Any) -> Any:
        if isinstance(element, sa.Column) and element.table is table:
            return alias.c[element.name]
        return None

    options: dict[str, Any] = {}
    return [replacement_traverse(sa.and_(where), options, swap)]


def _primary_key(target: Target, row: Any) -> tuple[Any, ...]:
    width = len(target.key_columns)
    state = sa.inspect(row, raiseerr=False)
    if state is not None and hasattr(state, "identity"):
        if state.identity is None:
            raise ValueError(f"{row!r} has no primary key yet; flush it first")
        key = tuple(state.identity)
    else:
        key = tuple(row) if isinstance(row, tuple) else (row,)
    if len(key) != width:
        raise ValueError(f"{target.table.name} has a {width}-column primary key, got {key!r}")
    return key


def _scalar(key: tuple[Any, ...]) -> Any:
    return key[0] if len(key) == 1 else key


def _display(key: tuple[Any, ...]) -> str:
    return repr(_scalar(key))
