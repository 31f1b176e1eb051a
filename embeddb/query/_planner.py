"""Choosing a plan for a similarity query, and making sure the chosen plan is the one that runs.

Two plans answer "the k rows nearest to q among rows matching a filter":

``exact``
    Scan the matching rows (through a B-tree on the filter column when there is one) and sort
    them by distance. The ORDER BY is written ``(column <op> :q) + 0``, which no index can serve,
    so the plan needs no planner setting: no cached prepared plan and no session setting can
    turn it into an HNSW scan that stops short.
``index``
    Walk the HNSW index with pgvector 0.8's iterative scan (``relaxed_order``) and an
    ``ef_search`` derived from k, under ``enable_sort = off``: the only plan without a sort is
    the index scan, so PostgreSQL cannot swap in a B-tree-and-sort plan, whatever a generic plan
    of a prepared statement would have estimated.

Either plan needs the HNSW index to exist, not only to be declared: while the worker embeds a
large backlog it sets the index aside (:mod:`embeddb.backfill`), and a partitioned table's
index is usable only once every partition has one. Without a valid index PostgreSQL would
answer the ``index`` plan with a sequential scan, so :func:`choose` then runs, and reports,
``exact``. Whether the index is there is asked once per :data:`INDEX_TTL_SECONDS`.

``auto`` asks the planner (one ``EXPLAIN``, remembered per filter for a minute) how many rows
match the filter (R) and how many the table has (N). An exact scan visits the R rows; the index
visits about k / selectivity = k * N / R tuples, each much dearer, and many more when the rows
the filter keeps lie away from the query. A calibrated column answers that from its own
measurements (:func:`filtered_ef`): the index plan's time and recall under filters that keep
a cluster of rows, interpolated at R / N, against the exact scan's time for R of the N rows.
Without them :func:`prefers_exact` picks by a rule of thumb.

The index plan's ``ef_search`` comes from the column's calibration (:mod:`embeddb.calibration`):
the smallest measured ``ef_search`` whose recall@k meets the ``recall`` asked for (default
:data:`DEFAULT_RECALL`) by more than its standard error, scaled by k over the k it was
measured at. When no measured point meets it, or the exact scan measured faster, the plan is
``exact``. A column never calibrated, or calibrated before its index was rebuilt or its table
grew by half, gets ``ef_search`` from k (:func:`ef_search`), as before calibration existed. A
recall of 1 is always the exact scan.

A filter that a partial HNSW index covers (one the user created, ``CREATE INDEX ... USING hnsw
(embedding vector_cosine_ops) WHERE pos = 'adjective'``) is best served by walking that index:
its graph holds only the matching rows, so the walk is as short as an unfiltered one whatever
the selectivity. When the column has such indexes, ``auto`` asks PostgreSQL (one ``EXPLAIN`` of
the index plan, remembered per filter like the estimates) whether it would walk one of them
for this filter, and then takes the index plan.

The settings are applied by :mod:`embeddb.query._settings`: transaction-local, and put back
before anything else runs in the caller's transaction.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from ..calibration import Calibration, FilteredPoint, Point, first_meeting, is_stale, meets
from ..database import parse_version
from ..errors import QueryError
from ..sql import queries
from . import _settings as local_settings
from ._target import Target, distance, query_parameter

Plan = Literal["auto", "exact", "index"]
Chosen = Literal["exact", "index"]

#: Filters estimated to match at most this many rows are answered exactly, unless the
#: column's calibration measured the walk under filters (on SciFact's 5,183 abstracts a filter
#: keeping 1,000 took the exact scan 7-9 ms, where the calibrated walk measured 2-3 ms).
EXACT_ROWS_FLOOR = 1000
#: Exact when R * R <= CROSSOVER * k * N (R matching rows of N). An exact scan costs ~R row
#: visits (~1 us each through a B-tree bitmap, measured on 117k WordNet rows); an iterative
#: HNSW scan visits ~k * N / R tuples at ~50 us each, and about twice that many when the filter
#: and the query's neighbourhood do not overlap, as real filters often do not; its tail is
#: long too (p95 ~8x p50 at 10% selectivity), so the margin goes to the exact scan.
CROSSOVER = 200.0
#: What a row of a filtered exact scan costs against a row of the whole-table scan the
#: calibration times: its bitmap heap scan visits pages out of order (WordNet's band filters
#: 1.3-1.8x per row at p95, SciFact's 1.9x).
FILTERED_EXACT_COST = 1.5
#: ``hnsw.ef_search`` for the index plan, from k: candidates per round of the iterative scan.
#: 64 gives recall@10 0.978 on 117k WordNet rows where pgvector's default 40 gives 0.96.
EF_SEARCH_PER_K = 4
EF_SEARCH_MIN = 64
EF_SEARCH_MAX = 1000  # pgvector's limit
#: The recall@k the index plan must reach when ``search()`` is not told: the filtered-search
#: benchmark's target, met at k=10 on WordNet by ef_search 64, the setting before calibration.
DEFAULT_RECALL = 0.95
#: How long a column's calibration (or its absence) is remembered per engine.
CALIBRATION_TTL_SECONDS = 30.0
#: pgvector from which hnsw.iterative_scan exists.
ITERATIVE_SCAN_SINCE = (0, 8, 0)
#: How long, and for how many filters, the planner's row estimates are remembered per engine.
ESTIMATE_TTL_SECONDS = 60.0
ESTIMATE_CACHE_SIZE = 1024
#: How long whether a column's HNSW index exists (and is valid) is remembered per engine.
INDEX_TTL_SECONDS = 5.0

_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")


class _EngineMemory(Generic[_Key, _Value]):
    """Answers remembered per engine for ``ttl`` seconds, the ``size`` most recent per engine.

    What the planner asks the database (row estimates, calibrations, which indexes exist) is
    the same for every search of a minute, so it is asked once; a dropped engine takes its
    answers with it."""

    def __init__(self, ttl: float, size: int | None = None) -> None:
        self.ttl = ttl
        self.size = size
        self._lock = threading.Lock()
        self._by_engine: weakref.WeakKeyDictionary[
            sa.Engine, OrderedDict[_Key, tuple[float, _Value]]
        ] = weakref.WeakKeyDictionary()

    def recall(self, engine: sa.Engine, key: _Key | None, ask: Callable[[], _Value]) -> _Value:
        """The remembered answer for ``key``, else ``ask()``'s, remembered (a None key: never)."""
        now = time.monotonic()
        if key is not None:
            with self._lock:
                memory = self._by_engine.get(engine)
                known = memory.get(key) if memory is not None else None
            if known is not None and now - known[0] <= self.ttl:
                return known[1]
        answer = ask()  # outside the lock: it runs a statement
        if key is not None:
            with self._lock:
                memory = self._by_engine.setdefault(engine, OrderedDict())
                memory[key] = (now, answer)
                memory.move_to_end(key)
                while self.size is not None and len(memory) > self.size:
                    memory.popitem(last=False)
        return answer

    def forget(self, engine: sa.Engine) -> None:
        with self._lock:
            self._by_engine.pop(engine, None)


_ColumnKey = tuple[str | None, str, str]  # schema, table, column
_estimates: _EngineMemory[Hashable, tuple[float, float]] = _EngineMemory(
    ESTIMATE_TTL_SECONDS, ESTIMATE_CACHE_SIZE)
_partial_uses: _EngineMemory[Hashable, bool] = _EngineMemory(
    ESTIMATE_TTL_SECONDS, ESTIMATE_CACHE_SIZE)
_indexes: _EngineMemory[_ColumnKey, bool] = _EngineMemory(INDEX_TTL_SECONDS)
_partials: _EngineMemory[_ColumnKey, list[str]] = _EngineMemory(INDEX_TTL_SECONDS)
_calibrations: _EngineMemory[_ColumnKey, Calibration | None] = _EngineMemory(
    CALIBRATION_TTL_SECONDS)
_versions: _EngineMemory[str, tuple[int, ...]] = _EngineMemory(math.inf)


def _column_key(target: Target) -> _ColumnKey:
    return (target.table.schema, target.table.name, target.column.name)


@dataclass(frozen=True)
class Choice:
    """The plan to run and, for ``auto``, the planner's estimates it was chosen from.

    ``ef_search`` is the calibrated setting for the index plan (None: derived from k)."""

    plan: Chosen
    estimated_rows: float | None = None
    table_rows: float | None = None
    ef_search: int | None = None


@dataclass(frozen=True)
class Filter:
    """The rows a search may return: the target's embedded rows, narrowed by ``where`` and by
    the joins and conditions of ``within`` (a ``select()``)."""

    target: Target
    where: Any = None
    within: sa.Select[Any] | None = None

    @property
    def filters(self) -> bool:
        return self.where is not None or self.within is not None

    def probe(self) -> sa.Select[Any]:
        """``SELECT 1 FROM ... WHERE <the filter>``: what the planner is asked to estimate."""
        one: sa.ColumnClause[Any] = sa.literal_column("1")
        if self.within is not None:
            probe = self.within.with_only_columns(one, maintain_column_froms=True)
            probe = probe.order_by(None).limit(None)
        else:
            probe = sa.select(one).select_from(self.target.table)
        probe = probe.where(self.target.column.is_not(None))
        return probe if self.where is None else probe.where(self.where)

    def key(self) -> Hashable | None:
        """The filter's SQL structure and parameter values; None if they cannot be a key."""
        parts = [_cache_key(part) for part in (self.where, self.within)]
        if any(part is False for part in parts):
            return None
        return (self.target.column, *parts)


def choose(conn: Connection, rows: Filter, k: int, plan: Plan,
           recall: float | None = None) -> Choice:
    """The plan for the k nearest of ``rows``: as asked, or by the planner's estimate and the
    column's calibration, for at least ``recall`` (default :data:`DEFAULT_RECALL`)."""
    target = rows.target
    wanted = check_recall(recall)
    if plan == "exact":
        return Choice("exact")
    if plan == "index":
        if not target.indexed:
            raise ValueError(f"{target.table.name}.{target.column.name} has no HNSW index;"
                             " use plan='exact' or 'auto'")
        if not index_ready(conn, target):
            raise ValueError(f"{target.table.name}.{target.column.name}'s HNSW index is not"
                             " built (set aside while a backlog is embedded, or missing);"
                             " use plan='exact' or 'auto'")
        return Choice("index", ef_search=_calibrated_ef(conn, target, k, wanted))
    if plan != "auto":
        raise ValueError(f"plan must be 'auto', 'exact' or 'index', got {plan!r}")
    if wanted >= 1.0 or not target.indexed or not index_ready(conn, target):
        return Choice("exact")
    calibration = calibration_of(conn, target)
    ef = None
    if calibration is not None:
        ef = calibrated_ef(calibration, wanted, k)
        if ef is None and not (rows.filters and partial_index_serves(conn, rows, k)):
            return Choice("exact")  # no ef_search meets the target, or exact is faster
    if not rows.filters:
        return Choice("index", ef_search=ef)
    if partial_index_serves(conn, rows, k):  # its graph holds only the matching rows
        return Choice("index", ef_search=ef or _calibrated_ef(conn, target, k, wanted))
    matching, table_rows = estimate(conn, rows)
    if calibration is not None and calibration.filtered:  # measured: no rule of thumb
        ef = filtered_ef(calibration, wanted, k, matching / max(table_rows, 1.0))
        return Choice("exact" if ef is None else "index", matching, table_rows, ef)
    if prefers_exact(matching, table_rows, k):
        return Choice("exact", matching, table_rows)
    return Choice("index", matching, table_rows, ef)


def partial_index_serves(conn: Connection, rows: Filter, k: int) -> bool:
    """Whether PostgreSQL walks one of the column's partial HNSW indexes for this filter
    under the index plan's settings (False at once when the column has none)."""
    if not _partial_indexes(conn, rows.target):
        return False
    return _partial_uses.recall(conn.engine, rows.key(), lambda: _walks_partial(conn, rows, k))


def _walks_partial(conn: Connection, rows: Filter, k: int) -> bool:
    """One ``EXPLAIN`` of the index plan: does it scan one of the column's partial indexes?"""
    target = rows.target
    probe = rows.probe().order_by(distance(target, query_parameter(
        target, [1.0] + [0.0] * (target.dimensions - 1)))).limit(k)
    with local_settings.scoped(conn, {"enable_sort": "off",
                                      "hnsw.iterative_scan": "relaxed_order"}):
        plan = conn.execute(Explain(probe)).scalar_one()[0]["Plan"]
    return bool(_index_names(plan) & set(_partial_indexes(conn, target)))

def _partial_indexes(conn: Connection, target: Target) -> list[str]:
    """The column's partial HNSW indexes (remembered :data:`INDEX_TTL_SECONDS`)."""
    return _partials.recall(conn.engine, _column_key(target), lambda: list(conn.execute(
        sa.text(queries["partial_hnsw_indexes"]), {
            "table": conn.dialect.identifier_preparer.format_table(target.table),
            "column": target.column.name,
        }).scalars()))

def _index_names(plan: dict[str, Any]) -> set[str]:
    """Every index an ``EXPLAIN (FORMAT JSON)`` plan node or its children scan."""
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= _index_names(child)
    return found


def check_recall(recall: float | None) -> float:
    """``recall`` (None: :data:`DEFAULT_RECALL`), refused unless a number in (0, 1]."""
    if recall is None:
        return DEFAULT_RECALL
    if isinstance(recall, bool) or not isinstance(recall, int | float) or math.isnan(recall) \
            or not 0 < recall <= 1:
        raise QueryError(f"recall must be a number above 0 and at most 1, got {recall!r}")
    return float(recall)


def calibrated_ef(calibration: Calibration, recall: float, k: int) -> int | None:
    """The smallest calibrated ``ef_search`` reaching ``recall`` at k; None when the exact
    scan is the plan: no measured point reaches it, or the exact scan measured faster.

    A point measured at ``calibration.k`` is scaled by ``k / calibration.k``: the iterative
    scan's recall follows the candidates it keeps per result.
    """
    point = _meeting_point(calibration, recall)
    if point is None:
        return None
    return _scaled(point.ef_search, k, calibration)


def filtered_ef(calibration: Calibration, recall: float, k: int,
                selectivity: float) -> int | None:
    """The ``ef_search`` for the index plan under a filter keeping ``selectivity`` of the rows,
    or None when the exact scan is the plan there.

    From the smallest ``ef_search`` the unfiltered curve picks for ``recall`` upwards, each one
    the filtered points were measured at is tried: its recall and time are interpolated at
    ``selectivity`` (between measured selectivities, and the unfiltered point at 1); the first
    whose recall meets the target is the index plan's if its time beats the exact scan's for
    that share of the rows (the whole scan's time * selectivity * :data:`FILTERED_EXACT_COST`),
    else the exact scan is. Recall "meets" as :func:`embeddb.calibration.meets` says.

    Times are 95th percentiles where measured (means in a calibration from before 0017):
    under a filter the walk's tail is long (on WordNet at 15%, p95 4-5x its p50) where the
    exact scan's is short, and a search's latency is judged by its tail. A k above the
    calibration's scales the walk's time with it (it visits ~k / selectivity rows); the exact
    scan's stays.
    """
    wanted = _meeting_point(calibration, recall)
    if wanted is None:
        return None
    by_ef: dict[int, list[FilteredPoint]] = {}
    for point in calibration.filtered:
        by_ef.setdefault(point.ef_search, []).append(point)
    unfiltered = {p.ef_search: p for p in calibration.points}
    share = min(1.0, max(selectivity, 0.0))
    for ef in sorted(e for e in by_ef if e >= wanted.ef_search and e in unfiltered):
        measured = sorted(by_ef[ef], key=lambda p: p.selectivity)
        top = unfiltered[ef]
        anchor = FilteredPoint(1.0, ef, top.recall, top.ms, top.p95_ms)
        found, ms = _interpolated([*measured, anchor], share)
        if meets(found, recall, calibration.samples * calibration.k):
            exact_ms = calibration.exact_tail_ms * share * FILTERED_EXACT_COST
            if ms * max(1.0, k / calibration.k) >= exact_ms:
                return None
            return _scaled(ef, k, calibration)
    return None


def _scaled(ef: int, k: int, calibration: Calibration) -> int:
    """A calibrated ``ef_search`` for k: scaled by k over the k it was measured at, within
    pgvector's limits."""
    return min(EF_SEARCH_MAX, max(1, math.ceil(ef * k / calibration.k)))


def _interpolated(points: list[FilteredPoint], share: float) -> tuple[float, float]:
    """Recall and milliseconds (:attr:`FilteredPoint.tail_ms`) at ``share``, from points
    sorted by selectivity: linear in log(selectivity) between two points; below the lowest,
    its recall and a time growing as 1 / share (the walk visits about k / share rows)."""
    low = points[0]
    if share <= low.selectivity:
        return low.recall, low.tail_ms * low.selectivity / max(share, 1e-9)
    for below, above in itertools.pairwise(points):
        if share <= above.selectivity:
            span = math.log(above.selectivity) - math.log(below.selectivity)
            t = (math.log(share) - math.log(below.selectivity)) / span if span > 0 else 1.0
            return (below.recall + t * (above.recall - below.recall),
                    below.tail_ms + t * (above.tail_ms - below.tail_ms))
    return points[-1].recall, points[-1].tail_ms


def _meeting_point(calibration: Calibration, recall: float) -> Point | None:
    """The unfiltered point of smallest ``ef_search`` meeting ``recall``; None when none does
    or the exact scan measured faster than it."""
    point = first_meeting(calibration.points, recall, calibration.samples * calibration.k)
    return None if point is None or calibration.exact_ms <= point.ms else point


def _calibrated_ef(conn: Connection, target: Target, k: int, recall: float) -> int | None:
    """For a forced index plan, or a partial index: the calibrated ``ef_search`` as
    :func:`calibrated_ef` picks it, else the largest measured (the exact scan is not wanted)."""
    calibration = calibration_of(conn, target)
    if calibration is None or not calibration.points:
        return None
    ef = calibrated_ef(calibration, recall, k)
    if ef is None:  # exact would be the answer, but the index was asked for: its best
        best = max(p.ef_search for p in calibration.points)
        ef = _scaled(best, k, calibration)
    return ef


def calibration_of(conn: Connection, target: Target) -> Calibration | None:
    """The column's calibration if it still describes its index (remembered
    :data:`CALIBRATION_TTL_SECONDS`); None if there is none, it is stale, or this role may
    not read embeddb's catalog."""
    return _calibrations.recall(conn.engine, _column_key(target),
                                lambda: _read_calibration(conn, target))


def _read_calibration(conn: Connection, target: Target) -> Calibration | None:
    if not conn.execute(sa.text(queries["calibrations_readable"])).scalar():
        return None
    table = target.table
    row = conn.execute(sa.text(queries["column_calibration"]), {
        "schema": table.schema, "table": table.name, "column": target.column.name,
    }).one_or_none()
    if row is None or is_stale(row.same_index, row.table_rows, row.rows_now):
        return None
    return Calibration.from_row(row)

def forget_calibrations(engine: sa.Engine) -> None:
    """Read every column's calibration and partial indexes again on the next search (after
    recalibrating, or creating an index)."""
    for memory in (_calibrations, _partials, _partial_uses):
        memory.forget(engine)

def index_ready(conn: Connection, target: Target) -> bool:
    """Whether the column has a valid HNSW index now (remembered :data:`INDEX_TTL_SECONDS`)."""
    return _indexes.recall(conn.engine, _column_key(target), lambda: bool(conn.execute(
        sa.text(queries["hnsw_index_ready"]), {
            "table": conn.dialect.identifier_preparer.format_table(target.table),
            "column": target.column.name,
        }).scalar()))

def prefers_exact(rows: float, table_rows: float, k: int) -> bool:
    """Whether scanning ``rows`` matching rows beats walking the index for k of them."""
    return rows <= EXACT_ROWS_FLOOR or rows * rows <= CROSSOVER * k * table_rows


def estimate(conn: Connection, rows: Filter) -> tuple[float, float]:
    """The planner's estimates of the rows matching ``rows`` and of the rows in the table.

    One ``EXPLAIN`` of ``<probe> UNION ALL SELECT 1 FROM table``: planning only, nothing runs.
    The answer is remembered per engine for :data:`ESTIMATE_TTL_SECONDS`, keyed by the filter's
    SQL and parameter values, so a repeated filter costs no round trip.
    """
    return _estimates.recall(conn.engine, rows.key(), lambda: _explain_rows(conn, rows))


def _explain_rows(conn: Connection, rows: Filter) -> tuple[float, float]:
    everything: sa.Select[Any] = sa.select(sa.literal_column("1")).select_from(rows.target.table)
    plan = conn.execute(Explain(sa.union_all(rows.probe(), everything))).scalar_one()[0]["Plan"]
    children = plan.get("Plans", [])
    if plan["Node Type"] != "Append" or len(children) != 2:
        return (float(plan["Plan Rows"]), float(plan["Plan Rows"]))
    return (float(children[0]["Plan Rows"]), float(children[1]["Plan Rows"]))

def _cache_key(element: Any) -> Hashable | bool:
    """An element's SQL structure and parameter values (None for None; False: not keyable)."""
    if element is None:
        return None
    cache_key = element._generate_cache_key() if hasattr(element, "_generate_cache_key") else None
    if cache_key is None:
        return False
    try:
        values = tuple(_frozen(bind.effective_value) for bind in cache_key.bindparams)
        hash(values)
    except TypeError:
        return False
    return cache_key.key, values


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


def ef_search(k: int) -> int:
    """Candidates per iterative-scan round for k results."""
    return min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, EF_SEARCH_PER_K * k))


def settings(choice: Choice, k: int, pgvector: tuple[int, ...]) -> dict[str, str]:
    """The transaction-local settings a plan runs under (none for the exact plan)."""
    if choice.plan == "exact":
        return {}
    candidates = choice.ef_search or ef_search(k)
    if pgvector >= ITERATIVE_SCAN_SINCE:
        return {
            "enable_sort": "off",
            "hnsw.iterative_scan": "relaxed_order",
            "hnsw.ef_search": str(candidates),
        }
    # Before 0.8 the index returns at most ef_search rows before the filter: widen it by the
    # expected selectivity; a short answer is re-run exactly by the caller.
    wanted = candidates
    if choice.estimated_rows and choice.table_rows:
        wanted = math.ceil(wanted * choice.table_rows / max(choice.estimated_rows, 1.0))
    return {"enable_sort": "off", "hnsw.ef_search": str(min(EF_SEARCH_MAX, wanted))}


def pgvector_version(conn: Connection) -> tuple[int, ...]:
    """pgvector's version in the connection's database, asked once per engine."""
    def ask() -> tuple[int, ...]:
        text = conn.execute(sa.text(queries["pgvector_installed"])).scalar()
        return parse_version(str(text)) if text else (0,)
    return _versions.recall(conn.engine, "pgvector", ask)


class Explain(Executable, ClauseElement):
    """``EXPLAIN (<options>) <statement>``, executable and cached like any statement."""

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it as a plain list)
        ("statement", InternalTraversal.dp_clauseelement),
        ("explain_options", InternalTraversal.dp_string),
    ]

    def __init__(self, statement: ClauseElement, options: str = "FORMAT JSON") -> None:
        self.statement = statement
        self.explain_options = options

    @property
    def _all_selected_columns(self) -> list[sa.ColumnClause[Any]]:
        # what a cached compilation maps its result columns against: the plan's one column
        return [sa.column("QUERY PLAN")]


@compiles(Explain)
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    statement = compiler.process(element.statement, **kw)
    return f"EXPLAIN ({element.explain_options}) {statement}"
