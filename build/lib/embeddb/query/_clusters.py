"""Clusters and outliers of an embedded column: what is in it, and what fits nowhere.

``clusters`` runs k-means (numpy, k-means++ seeding) over a sample of the column's vectors, then
assigns every row matching the filter to its nearest centroid in one SQL statement, so a table
far larger than the sample is still counted row by row. Each cluster reports its size, its most
central rows and a label made from the words those rows share.

``outliers`` asks the vector index for each row's nearest neighbours in a ``LATERAL`` join (as
``near_duplicates`` does) and returns the rows whose neighbours are least like them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from . import _planner as planner
from . import _settings as local_settings
from ._planner import Filter, Plan
from ._search import connection_for
from ._target import (
    Target,
    distance,
    hidden_from_index,
    resolve,
    similarity,
    template_text,
    vector_text,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["Cluster", "Outlier", "aclusters", "aoutliers", "clusters", "outliers"]

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,}")
# words too common to say what a cluster is about
_COMMON = (
    "the and for with that this from are was were been has have had not but its into than then"
    " them they their there these those which when what where who whom how can may might will"
    " would should could also each any all some such only other more most very one two use used"
    " using returns return given new object objects value values none true false having made"
    " especially usually often she her his him being something someone whose"
)
_STOP_WORDS = frozenset(_COMMON.split())
_LABEL_ROWS = 20


@dataclass(frozen=True)
class Cluster:
    """One k-means cluster: its number, how many rows it holds, its most central rows (primary
    keys, nearest the centroid first, a tuple for a composite key), a label made from the words
    those rows share, and the centroid itself.

    Example::

        for cluster in clusters(session, Ticket.embedding, 8):
            print(cluster.number, cluster.size, cluster.label, cluster.central[:3])
    """

    number: int
    size: int
    central: list[Any]
    label: str
    centroid: np.ndarray[Any, Any] = field(repr=False)


class Outlier(NamedTuple):
    """A row (primary key) and the mean similarity to its nearest neighbours: low is lonely.

    Example::

        for outlier in outliers(session, Ticket.embedding, k=10):
            print(outlier.key, f"{outlier.score:.3f}")
    """

    key: Any
    score: float


def clusters(
    session: Session | Connection,
    column: Any,
    n: int,
    *,
    where: Any = None,
    sample: int = 5000,
    central: int = 5,
    store: str | None = None,
    seed: int = 0,
    iterations: int = 50,
) -> list[Cluster]:
    """Group the rows of ``column`` matching ``where`` into ``n`` clusters, largest first.

    k-means runs on at most ``sample`` vectors (a fixed, seeded choice of rows); then every
    matching row is assigned to its nearest centroid in SQL, so sizes count every row. With
    ``store="topic"`` each row's cluster number is also written to the table's integer column
    ``topic`` (which must exist); the numbers are those of the returned clusters.

    Example::

        for cluster in clusters(session, Ticket.embedding, 8, where=Ticket.status == "open"):
            print(cluster.size, cluster.label, cluster.central[:3])
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    target = resolve(column)
    conn = connection_for(session, target)
    if store is not None and store not in target.table.c:
        raise ValueError(f"store: {target.table.name} has no column {store!r}"
                         f" (columns: {', '.join(target.table.c.keys())})")
    vectors = _sample(conn, target, where, sample, seed)
    if len(vectors) < n:
        raise ValueError(f"{target.table.name}.{target.column.name}: {len(vectors)} embedded"
                         f" rows match, fewer than the {n} clusters asked for")
    centroids = kmeans(_prepared(target, vectors), n, seed=seed, iterations=iterations)
    assigned = _assigned(target, centroids, where).cte("assigned")
    ranked = sa.select(
        assigned,
        sa.func.row_number().over(partition_by=assigned.c.cluster,
                                  order_by=assigned.c.distance).label("rank"),
        sa.func.count().over(partition_by=assigned.c.cluster).label("size"),
    ).subquery("ranked")
    # the label reads more rows than are returned: a few glosses rarely share their words
    rows = conn.execute(sa.select(ranked).where(ranked.c.rank <= max(central, _LABEL_ROWS))
                        .order_by(ranked.c.cluster, ranked.c.rank)).all()
    found = _gather(target, rows, centroids, central)
    if store is not None:
        _store(conn, target, store, _assigned(target, centroids, where).subquery("assigned"))
    return found


def outliers(
    session: Session | Connection,
    column: Any,
    k: int = 10,
    *,
    where: Any = None,
    neighbours: int = 5,
    plan: Plan = "auto",
) -> list[Outlier]:
    """The ``k`` rows matching ``where`` least similar to their ``neighbours`` nearest rows.

    Each row's score is its mean similarity to its nearest neighbours among the matching rows
    (found through the HNSW index, one ``LATERAL`` scan per row); the lowest come first. Rows
    that are near-copies of one another still have each other, so this finds the rows nothing
    else resembles: the support ticket nobody else wrote, the record typed by a stranger.

    Example::

        for key, score in outliers(session, Ticket.embedding, 5, where=Ticket.status == "open"):
            print(key, f"{score:.3f}")
    """
    if k < 1 or neighbours < 1:
        raise ValueError(f"k and neighbours must be at least 1, got {k} and {neighbours}")
    target = resolve(column)
    conn = connection_for(session, target)
    choice = planner.choose(conn, Filter(target, where), neighbours, plan)
    stmt = _lonely_statement(target, where, k, neighbours, choice.plan == "exact")
    with local_settings.scoped(conn, planner.settings(choice, neighbours,
                                                      planner.pgvector_version(conn))):
        rows = conn.execute(stmt).all()
    width = len(target.key_columns)
    return [Outlier(_scalar(tuple(row[:width])), float(row.score)) for row in rows]


async def aclusters(
    session: AsyncSession | AsyncConnection, column: Any, n: int, **options: Any
) -> list[Cluster]:
    """:func:`clusters` for an ``AsyncSession`` or ``AsyncConnection``.

    Example::

        found = await aclusters(async_session, Ticket.embedding, 8)
    """
    return await session.run_sync(lambda sync: clusters(sync, column, n, **options))


async def aoutliers(
    session: AsyncSession | AsyncConnection, column: Any, k: int = 10, **options: Any
) -> list[Outlier]:
    """:func:`outliers` for an ``AsyncSession`` or ``AsyncConnection``.

    Example::

        lonely = await aoutliers(async_session, Ticket.embedding, k=10)
    """
    return await session.run_sync(lambda sync: outliers(sync, column, k, **options))


def kmeans(vectors: np.ndarray[Any, Any], n: int, *, seed: int = 0,
           iterations: int = 50) -> np.ndarray[Any, Any]:
    """``n`` centroids of the rows of ``vectors`` (Lloyd's algorithm, k-means++ seeding).

    Example::

        kmeans(np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]]), 2)  # two centroids
    """
    rng = np.random.default_rng(seed)
    points = np.asarray(vectors, dtype=np.float64)
    centroids = _plus_plus(points, n, rng)
    for _ in range(iterations):
        nearest = _nearest(points, centroids)
        moved = centroids.copy()
        for number in range(n):
            members = points[nearest == number]
            # an emptied cluster restarts on the point worst served by the others
            moved[number] = members.mean(axis=0) if len(members) else points[
                int(np.argmax(_squared_distances(points, moved).min(axis=1)))]
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return centroids


def _plus_plus(points: np.ndarray[Any, Any], n: int,
               rng: np.random.Generator) -> np.ndarray[Any, Any]:
    chosen = [int(rng.integers(len(points)))]
    closest = _squared_distances(points, points[chosen]).min(axis=1)
    for _ in range(1, n):
        total = closest.sum()
        pick = int(rng.choice(len(points), p=closest / total)) if total > 0 else int(
            rng.integers(len(points)))
        chosen.append(pick)
        closest = np.minimum(closest, _squared_distances(points, points[[pick]])[:, 0])
    result: np.ndarray[Any, Any] = points[chosen].copy()
    return result


def _squared_distances(points: np.ndarray[Any, Any],
                       centroids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    squared = ((points**2).sum(axis=1)[:, None] - 2 * points @ centroids.T
               + (centroids**2).sum(axis=1)[None, :])
    result: np.ndarray[Any, Any] = np.maximum(squared, 0.0)
    return result


def _nearest(points: np.ndarray[Any, Any], centroids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    result: np.ndarray[Any, Any] = _squared_distances(points, centroids).argmin(axis=1)
    return result


def _prepared(target: Target, vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Unit vectors for cosine (k-means on the sphere matches ``<=>``), as stored otherwise."""
    if target.distance.value != "cosine":
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: np.ndarray[Any, Any] = vectors / np.where(norms == 0, 1.0, norms)
    return result


def _sample(conn: Connection, target: Target, where: Any, size: int,
            seed: int) -> np.ndarray[Any, Any]:
    """Up to ``size`` vectors of matching rows, the same rows for the same seed."""
    order = sa.func.md5(sa.func.concat(sa.literal(f"{seed}:"),
                                       *(sa.cast(key, sa.Text) for key in target.key_columns)))
    stmt = (sa.select(target.column).where(target.column.is_not(None), *_filters(where))
            .order_by(order).limit(size))
    values = [_as_list(row[0]) for row in conn.execute(stmt)]
    return np.asarray(values, dtype=np.float64).reshape(len(values), target.dimensions)


def _as_list(value: Any) -> Any:
    return value.to_list() if hasattr(value, "to_list") else value


def _centroid_table(target: Target, centroids: np.ndarray[Any, Any]) -> sa.Subquery:
    """``unnest(:centroids::text[]) WITH ORDINALITY`` as (vector, number), vectors typed as the
    column so its distance operator applies."""
    texts = [vector_text(row.tolist()) for row in centroids]
    unnested = sa.func.unnest(sa.bindparam("centroids", texts, type_=ARRAY(sa.Text))
                              ).table_valued("value", with_ordinality="number").render_derived()
    return sa.select(sa.cast(unnested.c.value, target.column.type).label("centroid"),
                     (unnested.c.number - 1).label("number")).subquery("centroids")


def _assigned(target: Target, centroids: np.ndarray[Any, Any], where: Any) -> sa.Select[Any]:
    """Every matching row's key, nearest centroid, distance to it and text."""
    table = _centroid_table(target, centroids)
    apart = distance(target, table.c.centroid)
    nearest = (sa.select(table.c.number.label("cluster"), apart.label("distance"))
               .order_by(apart).limit(1).lateral("nearest"))
    return (sa.select(*target.key_columns, nearest.c.cluster, nearest.c.distance,
                      template_text(target).label("text"))
            .select_from(target.table.join(nearest, sa.true()))
            .where(target.column.is_not(None), *_filters(where)))


def _gather(target: Target, rows: Sequence[Any], centroids: np.ndarray[Any, Any],
            central: int) -> list[Cluster]:
    width = len(target.key_columns)
    by_number: dict[int, list[Any]] = {}
    for row in rows:
        by_number.setdefault(int(row.cluster), []).append(row)
    labels = _labels({number: [m.text or "" for m in members]
                      for number, members in by_number.items()})
    found = [
        Cluster(number, int(members[0].size),
                [_scalar(tuple(m[:width])) for m in members[:central]], labels[number],
                centroids[number])
        for number, members in by_number.items()
    ]
    found.sort(key=lambda cluster: (-cluster.size, cluster.number))
    return found


def _labels(texts: dict[int, list[str]], words: int = 3) -> dict[int, str]:
    """Each cluster's label: the words many of its central rows use and few other clusters do
    (rows containing the word, weighted by the word's rarity among the clusters)."""
    counts = {number: _word_rows(rows) for number, rows in texts.items()}
    spread: Counter[str] = Counter(word for found in counts.values() for word in found)
    labels = {}
    for number, found in counts.items():
        weight = {word: rows * np.log(1 + len(counts) / spread[word])
                  for word, rows in found.items()}
        chosen = sorted(weight, key=lambda word: (-weight[word], word))[:words]
        labels[number] = " / ".join(chosen) if chosen else "(no words)"
    return labels


def _word_rows(texts: list[str]) -> Counter[str]:
    """How many of ``texts`` use each word (stop words left out)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update({w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP_WORDS})
    return counts


def _store(conn: Connection, target: Target, name: str, assigned: sa.Subquery) -> None:
    table = target.table
    same_row = [key == assigned.c[key.name] for key in target.key_columns]
    conn.execute(sa.update(table).where(*same_row).values({name: assigned.c.cluster}))


def _lonely_statement(target: Target, where: Any, k: int, neighbours: int,
                      exact: bool) -> sa.Select[Any]:
    """Each matching row's mean similarity to its nearest matching rows, lowest ``k`` first."""
    from ._neighbours import _on

    a, b = target.table.alias("a"), target.table.alias("b")
    name = target.column.name
    keys = [key.name for key in target.key_columns]
    apart = distance(target, a.c[name], column=b.c[name])
    near = (
        sa.select(apart.label("distance"))
        .where(b.c[name].is_not(None), sa.not_(sa.and_(*(a.c[key] == b.c[key] for key in keys))),
               *_on(where, target.table, b))
        .order_by(hidden_from_index(apart) if exact else apart)
        .limit(neighbours)
        .lateral("near")
    )
    score = sa.func.avg(similarity(target, near.c.distance)).label("score")
    return (
        sa.select(*(a.c[key] for key in keys), score)
        .select_from(a.join(near, sa.true()))
        .where(a.c[name].is_not(None), *_on(where, target.table, a))
        .group_by(*(a.c[key] for key in keys))
        .order_by(score, *(a.c[key] for key in keys))
        .limit(k)
    )


def _filters(where: Any) -> list[Any]:
    return [] if where is None else [where]


def _scalar(key: tuple[Any, ...]) -> Any:
    return key[0] if len(key) == 1 else key
