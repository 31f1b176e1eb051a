"""Measuring what each ``hnsw.ef_search`` buys on one column: recall@k and time per query.

An HNSW graph's recall at a given ``ef_search`` depends on the data and on each build, so
the planner does not guess it: :func:`calibrate` answers sample queries exactly
(``ORDER BY (column <op> q) + 0``, no index) and through the index with pgvector's iterative
scan at every ``ef_search`` of :data:`EF_GRID`, and records the curve, recall@k and mean
milliseconds per point, plus the exact scan's time, in ``embeddb.calibrations``. A row tied
with the k-th exact distance counts as a hit.

The sample queries are the midpoints of random pairs of stored vectors, unless the caller
gives real ones (``query_vectors=``, ``embeddb tune --queries FILE``). Not stored vectors
themselves: a stored vector is a node of the graph, whose edges lead straight to its
neighbours, so the walk finds them at any ``ef_search``, even with the row itself left out of
the answer. On 3,900 WordNet synsets, stored vectors as queries measured recall@10 0.997 at
``ef_search`` 10 where 200 held-out synsets (real queries: MiniLM has no query prompt) got
0.924. A midpoint is no node and its neighbours lie in two neighbourhoods: it measured 0.897,
a little harder than a real query, so a target it meets is met with a margin.

A filter changes the walk: the iterative scan must visit about k / selectivity rows, and many
more when the rows a filter keeps lie away from the query's neighbourhood, as real categories
do (on 117k WordNet glosses, at ``ef_search`` 100, ``pos IN ('verb', 'adverb')``, 14.8% of
the rows, took the walk 34 ms at p95 where ``pos = 'adjective'``, 15.4%, took 15). So the
curve is also measured under filters (:data:`SELECTIVITIES`): for each sample query, a random
stored vector is a pivot and the filter keeps the given share of rows nearest to it, a
cluster in vector space that most queries lie outside. On WordNet those walks (mean 7-12 ms,
p95 16-53 ms at 12-25% of the rows) measured among the band's real category filters (mean
7-16 ms, p95 12-51 ms); pivots picked far from each query (the least similar of 4) measured
harder than any of them (mean 20 ms at 12%), so the random pivot it is. The points are
measured at the ``ef_search`` values the recall targets of :data:`FILTER_TARGETS` pick, for
every sample query (the 95th percentile of 50 swung by 3x between runs).

:mod:`embeddb.query._planner` then picks, for a requested recall, the smallest ``ef_search``
whose recall meets it, or the exact scan when no point does or the exact scan is faster; under
a filter, the index plan only where its filtered points meet the recall and beat the exact
scan's time for the rows the filter keeps.

Recalibrate when the index changes: after the worker rebuilds an index set aside for a
backfill (:func:`embeddb.backfill.rebuild_index` calls :func:`calibrate_quietly`), with
``embeddb tune TABLE.COLUMN``, or on the worker's schedule (:func:`needs_calibration`: no
calibration yet, the index rebuilt since, or the table grown by :data:`GROWTH` since).

Example::

    with engine.begin() as conn:
        curve = calibrate(conn, catalog.get_entry(conn, "public", "tickets", "embedding"))
    print(curve.describe())
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import calibration_sql, column_sql, verbatim
from .catalog import CatalogEntry
from .errors import EmbeddbError
from .sql import queries

log = logging.getLogger(__name__)

#: The ``hnsw.ef_search`` values measured (pgvector allows 1..1000).
EF_GRID = (10, 16, 24, 32, 40, 64, 100, 160, 250, 400, 640, 1000)
#: Sample queries per calibration, and the k they are measured at.
DEFAULT_SAMPLES = 100
DEFAULT_K = 10
#: A calibration is stale once the table has this many times the rows it was measured at.
GROWTH = 1.5
#: A curve point stops the walk up :data:`EF_GRID` once its recall reaches this.
PERFECT = 0.9995
#: The shares of the rows the filtered points keep, and the recall targets whose
#: ``ef_search`` they are measured at.
SELECTIVITIES = (0.5, 0.25, 0.12, 0.06)
FILTER_TARGETS = (0.9, 0.95, 0.99)


class CalibrationError(EmbeddbError):
    """A column cannot be calibrated (no HNSW index, too few vectors)."""


class _Timed:
    """A measured point's time per query: its mean ``ms`` and 95th percentile ``p95_ms``
    (None in a calibration from before revision 0017)."""

    ms: float
    p95_ms: float | None

    @property
    def tail_ms(self) -> float:
        """The 95th percentile of the time per query, else its mean."""
        return self.ms if self.p95_ms is None else self.p95_ms


@dataclass(frozen=True)
class Point(_Timed):
    """The index plan at one ``ef_search``: mean recall@k and the time per query."""

    ef_search: int
    recall: float
    ms: float
    p95_ms: float | None = None


@dataclass(frozen=True)
class FilteredPoint(_Timed):
    """The index plan at one ``ef_search`` under a filter keeping ``selectivity`` of the rows,
    clustered around a pivot: mean recall@k and the time per query."""

    selectivity: float
    ef_search: int
    recall: float
    ms: float
    p95_ms: float | None = None


@dataclass(frozen=True)
class Calibration:
    """A column's measured curve, as recorded in ``embeddb.calibrations``.

    ``filtered`` is empty, and ``exact_p95_ms`` None, for a calibration made before revision
    0017; ``filtered`` is empty too for a table too small to filter."""

    k: int
    samples: int
    exact_ms: float
    points: tuple[Point, ...]
    table_rows: float
    filtered: tuple[FilteredPoint, ...] = ()
    exact_p95_ms: float | None = None

    @property
    def exact_tail_ms(self) -> float:
        """The exact scan's 95th percentile time per query, else its mean."""
        return self.exact_ms if self.exact_p95_ms is None else self.exact_p95_ms

    def describe(self) -> str:
        """The curve as lines of text, for ``embeddb tune``."""
        lines = [f"recall@{self.k} over {self.samples} queries,"
                 f" {self.table_rows:,.0f} rows; exact scan {self.exact_ms:.2f} ms"
                 f" (p95 {self.exact_tail_ms:.2f})"]
        lines += [f"  ef_search {p.ef_search:4d}: recall {p.recall:.4f}, {p.ms:.2f} ms"
                  for p in self.points]
        if self.filtered:
            lines.append("under filters keeping rows clustered around a pivot"
                         " (exact scan: its share of the time above):")
        lines += [f"  {p.selectivity:4.0%} of rows, ef_search {p.ef_search:4d}:"
                  f" recall {p.recall:.4f}, {p.ms:.2f} ms (p95 {p.tail_ms:.2f})"
                  for p in self.filtered]
        return "\n".join(lines)

    @classmethod
    def from_row(cls, row: Any) -> Calibration:
        points = tuple(Point(int(p["ef_search"]), float(p["recall"]), float(p["ms"]),
                             _optional(p.get("p95_ms")))
                       for p in _json_list(row.curve))
        filtered = tuple(FilteredPoint(float(p["selectivity"]), int(p["ef_search"]),
                                       float(p["recall"]), float(p["ms"]),
                                       _optional(p.get("p95_ms")))
                         for p in _json_list(getattr(row, "filtered", None) or []))
        return cls(int(row.k), int(row.samples), float(row.exact_ms), points,
                   float(row.table_rows), filtered,
                   _optional(getattr(row, "exact_p95_ms", None)))


def _json_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else list(json.loads(value))


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _p95(times: Sequence[float]) -> float:
    """The 95th percentile of ``times`` (the one time if there is one)."""
    return statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]


def calibrate(conn: Connection, entry: CatalogEntry, *, samples: int = DEFAULT_SAMPLES,
              k: int = DEFAULT_K, grid: Sequence[int] = EF_GRID,
              query_vectors: Sequence[Sequence[float]] | None = None) -> Calibration:
    """Measure the column's recall@k and time per query at each ``ef_search`` and record them.

    The queries are ``query_vectors`` (real ones, e.g. from the application's log) when
    given, else ``samples`` midpoints of random pairs of stored vectors. Runs in the caller's
    transaction (its settings are transaction-local) and replaces the column's previous
    calibration. Raises :class:`CalibrationError` if the column has no valid HNSW index or
    fewer than ``k`` vectors.

    Example::

        with engine.begin() as conn:
            print(calibrate(conn, entry, samples=200).describe())
    """
    spec = entry.spec
    if spec.index is None or not _index_valid(conn, entry):
        raise CalibrationError(f"{spec.qualified_column} has no valid HNSW index to calibrate")
    if spec.index.quantize is not None:  # its searches order by another expression
        raise CalibrationError(f"{spec.qualified_column}'s index is quantised"
                               f" ({spec.index.quantize}); only float indexes are calibrated")
    table_rows = float(verbatim.execute(conn, column_sql.count_rows(spec)).scalar_one())
    asked = [_vector_text(q) for q in query_vectors] if query_vectors is not None else \
        _midpoints(conn, entry, samples)
    if len(asked) < 1 or table_rows < k:
        raise CalibrationError(f"{spec.qualified_column} has too few vectors ({len(asked)}"
                               f" queries, {table_rows:.0f} rows) to calibrate at k={k}")
    exact_sql, index_sql = calibration_sql.neighbours(spec, exact=True), \
        calibration_sql.neighbours(spec, exact=False)
    truth, exact_times = [], []
    for vector in asked:  # exact first: it also warms the table's pages for the index runs
        distances, ms = _timed(conn, exact_sql, vector, k)
        truth.append(distances)
        exact_times.append(ms)
    conn.execute(sa.text("SELECT set_config('enable_sort', 'off', true),"
                         " set_config('hnsw.iterative_scan', 'relaxed_order', true)"))
    points = []
    for ef in sorted(set(grid)):
        _set_ef_search(conn, ef)
        recalls, times = [], []
        for vector, best in zip(asked, truth, strict=True):
            found, ms = _timed(conn, index_sql, vector, k)
            recalls.append(_recall(found, best, k))
            times.append(ms)
        points.append(Point(ef, statistics.fmean(recalls), statistics.fmean(times),
                            _p95(times)))
        if points[-1].recall >= PERFECT:
            break  # higher ef_search only costs more
    filtered = _filtered_points(conn, entry, asked, points, k) \
        if table_rows >= k / min(SELECTIVITIES) else []
    conn.execute(sa.text("SELECT set_config('enable_sort', 'on', true),"
                         " set_config('hnsw.iterative_scan', 'off', true)"))
    result = Calibration(k, len(asked), statistics.fmean(exact_times), tuple(points), table_rows,
                         tuple(filtered), _p95(exact_times))
    conn.execute(sa.text(queries["save_calibration"]), {
        "column_id": entry.id, "table_rows": table_rows, "index": column_sql.qualified_index(spec),
        "k": k, "samples": len(asked), "exact_ms": result.exact_ms,
        "exact_p95_ms": result.exact_p95_ms,
        "curve": json.dumps([p.__dict__ for p in points]),
        "filtered": json.dumps([p.__dict__ for p in filtered]),
    })
    log.info("%s calibrated: %s", spec.qualified_column, "; ".join(
        f"ef_search {p.ef_search} recall {p.recall:.3f}" for p in points))
    return result


def _filtered_points(conn: Connection, entry: CatalogEntry, asked: list[str],
                     points: list[Point], k: int) -> list[FilteredPoint]:
    """The index plan's recall and time under filters clustered around pivots, at each
    :data:`SELECTIVITIES` and at the ``ef_search`` each of :data:`FILTER_TARGETS` picks from
    ``points`` (settings as the caller left them: iterative scan, no sort)."""
    efs = sorted({meeting.ef_search for target in FILTER_TARGETS
                  if (meeting := first_meeting(points, target, len(asked) * k)) is not None})
    pivots = [_vector_text(json.loads(text)) for text in conn.exec_driver_sql(
        calibration_sql.sample_vectors(entry.spec), {"limit": len(asked)}).scalars()]
    truth_sql = calibration_sql.filtered_truth(entry.spec)
    cases = []  # (query, pivot, [(radius, exact distances)] per selectivity)
    for vector, pivot in zip(asked, pivots, strict=False):
        rows = conn.exec_driver_sql(truth_sql, {
            "q": vector, "pivot": pivot, "fractions": list(SELECTIVITIES), "k": k}).all()
        cases.append((vector, pivot, [(float(r), [float(d) for d in best]) for r, best in rows]))
    index_sql = calibration_sql.filtered_neighbours(entry.spec)
    measured = []
    for ef in efs:
        _set_ef_search(conn, ef)
        for i, selectivity in enumerate(SELECTIVITIES):
            recalls, times = [], []
            for vector, pivot, shares in cases:
                radius, best = shares[i]
                found, ms = _timed(conn, index_sql, vector, k, pivot=pivot, radius=radius)
                recalls.append(_recall(found, best, k))
                times.append(ms)
            measured.append(FilteredPoint(selectivity, ef, statistics.fmean(recalls),
                                          statistics.fmean(times), _p95(times)))
    return measured


def first_meeting(points: Sequence[Point], recall: float, draws: int) -> Point | None:
    """The point of smallest ``ef_search`` that :func:`meets` ``recall``, if any."""
    meeting = [p for p in points if meets(p.recall, recall, draws)]
    return min(meeting, key=lambda p: p.ef_search) if meeting else None


def meets(measured: float, recall: float, draws: int) -> bool:
    """Whether a recall measured over ``draws`` neighbours (sample queries * k) reaches
    ``recall`` by more than its standard error: a point measured at the target exactly is as
    likely to miss it for real queries as to meet it (SciFact: 0.990 measured at ef_search 40,
    0.986 found by the 300 real claims)."""
    error = math.sqrt(max(measured * (1 - measured), 0.0) / max(draws, 1))
    return measured - error >= recall


def calibrate_quietly(engine: Engine, entry: CatalogEntry) -> Calibration | None:
    """:func:`calibrate` in a transaction of its own; a failure is logged, never raised, so a
    worker's calibration cannot stop its embedding."""
    try:
        with engine.begin() as conn:
            return calibrate(conn, entry)
    except (EmbeddbError, sa.exc.SQLAlchemyError) as exc:
        log.warning("%s: not calibrated: %s", entry.spec.qualified_column,
                    str(exc).splitlines()[0])
        return None


def needs_calibration(conn: Connection, entry: CatalogEntry) -> bool:
    """Whether the column has a valid index and no calibration of it, one made before the
    index was rebuilt, one made when the table had less than 1 / :data:`GROWTH` its rows, or
    one without its filtered points (made before revision 0017, or by a worker from before)."""
    spec = entry.spec
    if spec.index is None or spec.index.quantize is not None or not _index_valid(conn, entry):
        return False
    row = conn.execute(sa.text(queries["column_calibration"]), {
        "schema": spec.schema, "table": spec.table, "column": spec.column}).one_or_none()
    return row is None or is_stale(row.same_index, row.table_rows, row.rows_now) \
        or not row.filtered_current


def is_stale(same_index: bool, table_rows: float, rows_now: float) -> bool:
    """Whether a calibration no longer describes the index: rebuilt, or the table grown."""
    return not same_index or rows_now > GROWTH * max(table_rows, 1.0)


def _index_valid(conn: Connection, entry: CatalogEntry) -> bool:
    return bool(conn.execute(sa.text(queries["hnsw_index_ready"]), {
        "table": column_sql.qualified_table(entry.spec), "column": entry.spec.column,
    }).scalar())


def _midpoints(conn: Connection, entry: CatalogEntry, samples: int) -> list[str]:
    """``samples`` midpoints of random pairs of stored vectors (fewer on a tiny table)."""
    drawn = [json.loads(text) for text in conn.exec_driver_sql(
        calibration_sql.sample_vectors(entry.spec), {"limit": 2 * samples}).scalars()]
    if len(drawn) < 2:
        return [_vector_text(v) for v in drawn]
    half = min(samples, len(drawn) // 2)
    return [_vector_text([(a + b) / 2 for a, b in zip(drawn[i], drawn[half + i], strict=True)])
            for i in range(half)]


def _vector_text(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _timed(conn: Connection, statement: str, vector: str, k: int,
           **parameters: Any) -> tuple[list[float], float]:
    """The distances ``statement`` returns for query ``vector`` at k, and its milliseconds."""
    started = time.perf_counter()
    rows = conn.exec_driver_sql(statement, {"q": vector, "k": k, **parameters}).scalars().all()
    return [float(d) for d in rows], (time.perf_counter() - started) * 1000


def _set_ef_search(conn: Connection, ef: int) -> None:
    conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(ef)})


def _recall(found: list[float], best: list[float], k: int) -> float:
    """Share of the exact k found; a row as near as the exact k-th counts (ties)."""
    if not best:
        return 1.0
    floor = best[-1] + 1e-6 * max(1.0, abs(best[-1]))
    hits = sum(1 for d in found[:k] if d <= floor or math.isclose(d, best[-1]))
    return min(1.0, hits / min(k, len(best)))
