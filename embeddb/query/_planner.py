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
visits about k / selectivity = k * N / R tuples, each much dearer. :func:`prefers_exact` picks
the cheaper one.

The settings are applied by :mod:`embeddb.query._settings`: transaction-local, and put back
before anything else runs in the caller's transaction.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from ..database import parse_version
from ..sql import queries
from ._target import Target

Plan = Literal["auto", "exact", "index"]
Chosen = Literal["exact", "index"]

#: Filters estimated to match at most this many rows are always answered exactly.
EXACT_ROWS_FLOOR = 1000
#: Exact when R * R <= CROSSOVER * k * N (R matching rows of N). An exact scan costs ~R row
#: visits (~1 us each through a B-tree bitmap, measured on 117k WordNet rows); an iterative
#: HNSW scan visits ~k * N / R tuples at ~50 us each, and about twice that many when the filter
#: and the query's neighbourhood do not overlap, as real filters often do not; its tail is
#: long too (p95 ~8x p50 at 10% selectivity), so the margin goes to the exact scan.
CROSSOVER = 200.0
#: ``hnsw.ef_search`` for the index plan, from k: candidates per round of the iterative scan.
#: 64 gives recall@10 0.978 on 117k WordNet rows where pgvector's default 40 gives 0.96.
EF_SEARCH_PER_K = 4
EF_SEARCH_MIN = 64
EF_SEARCH_MAX = 1000  # pgvector's limit
#: pgvector from which hnsw.iterative_scan exists.
ITERATIVE_SCAN_SINCE = (0, 8, 0)
#: How long, and for how many filters, the planner's row estimates are remembered per engine.
ESTIMATE_TTL_SECONDS = 60.0
ESTIMATE_CACHE_SIZE = 1024
#: How long whether a column's HNSW index exists (and is valid) is remembered per engine.
INDEX_TTL_SECONDS = 5.0

# Per-engine memory: pgvector's version, and recent row estimates by filter.
_lock = threading.Lock()
_estimates: weakref.WeakKeyDictionary[
    sa.Engine, OrderedDict[Hashable, tuple[float, tuple[float, float]]]
] = weakref.WeakKeyDictionary()
_indexes: weakref.WeakKeyDictionary[
    sa.Engine, dict[tuple[str | None, str, str], tuple[float, bool]]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Choice:
    """The plan to run and, for ``auto``, the planner's estimates it was chosen from."""

    plan: Chosen
    estimated_rows: float | None = None
    table_rows: float | None = None


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


def choose(conn: Connection, rows: Filter, k: int, plan: Plan) -> Choice:
    """The plan for the k nearest of ``rows``: as asked, or by the planner's estimate."""
    target = rows.target
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
        return Choice("index")
    if plan != "auto":
        raise ValueError(f"plan must be 'auto', 'exact' or 'index', got {plan!r}")
    if not target.indexed or not index_ready(conn, target):
        return Choice("exact")
    if not rows.filters:
        return Choice("index")
    matching, table_rows = estimate(conn, rows)
    chosen: Chosen = "exact" if prefers_exact(matching, table_rows, k) else "index"
    return Choice(chosen, matching, table_rows)


def index_ready(conn: Connection, target: Target) -> bool:
    """Whether the column has a valid HNSW index now (remembered :data:`INDEX_TTL_SECONDS`)."""
    table = target.table
    key = (table.schema, table.name, target.column.name)
    now = time.monotonic()
    with _lock:
        known = _indexes.setdefault(conn.engine, {}).get(key)
    if known is not None and now - known[0] <= INDEX_TTL_SECONDS:
        return known[1]
    ready = bool(conn.execute(sa.text(queries["hnsw_index_ready"]), {
        "table": conn.dialect.identifier_preparer.format_table(table),
        "column": target.column.name,
    }).scalar())
    with _lock:
        _indexes.setdefault(conn.engine, {})[key] = (now, ready)
    return ready


def prefers_exact(rows: float, table_rows: float, k: int) -> bool:
    """Whether scanning ``rows`` matching rows beats walking the index for k of them."""
    return rows <= EXACT_ROWS_FLOOR or rows * rows <= CROSSOVER * k * table_rows


def estimate(conn: Connection, rows: Filter) -> tuple[float, float]:
    """The planner's estimates of the rows matching ``rows`` and of the rows in the table.

    One ``EXPLAIN`` of ``<probe> UNION ALL SELECT 1 FROM table``: planning only, nothing runs.
    The answer is remembered per engine for :data:`ESTIMATE_TTL_SECONDS`, keyed by the filter's
    SQL and parameter values, so a repeated filter costs no round trip.
    """
    key = rows.key()
    now = time.monotonic()
    cache = _estimates_of(conn.engine)
    cached = cache.get(key) if key is not None else None  # a dict read needs no lock
    if cached is not None and now - cached[0] <= ESTIMATE_TTL_SECONDS:
        return cached[1]
    everything: sa.Select[Any] = sa.select(sa.literal_column("1")).select_from(rows.target.table)
    plan = conn.execute(Explain(sa.union_all(rows.probe(), everything))).scalar_one()[0]["Plan"]
    children = plan.get("Plans", [])
    if plan["Node Type"] != "Append" or len(children) != 2:
        found = (float(plan["Plan Rows"]), float(plan["Plan Rows"]))
    else:
        found = (float(children[0]["Plan Rows"]), float(children[1]["Plan Rows"]))
    if key is not None:
        with _lock:
            cache[key] = (now, found)
            cache.move_to_end(key)
            while len(cache) > ESTIMATE_CACHE_SIZE:
                cache.popitem(last=False)
    return found


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


def _estimates_of(engine: sa.Engine) -> OrderedDict[Hashable, tuple[float, tuple[float, float]]]:
    with _lock:
        cache = _estimates.get(engine)
        if cache is None:  # not setdefault: that would build a dict per search
            cache = _estimates[engine] = OrderedDict()
        return cache


def ef_search(k: int) -> int:
    """Candidates per iterative-scan round for k results."""
    return min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, EF_SEARCH_PER_K * k))


def settings(choice: Choice, k: int, pgvector: tuple[int, ...]) -> dict[str, str]:
    """The transaction-local settings a plan runs under (none for the exact plan)."""
    if choice.plan == "exact":
        return {}
    if pgvector >= ITERATIVE_SCAN_SINCE:
        return {
            "enable_sort": "off",
            "hnsw.iterative_scan": "relaxed_order",
            "hnsw.ef_search": str(ef_search(k)),
        }
    # Before 0.8 the index returns at most ef_search rows before the filter: widen it by the
    # expected selectivity; a short answer is re-run exactly by the caller.
    wanted = ef_search(k)
    if choice.estimated_rows and choice.table_rows:
        wanted = math.ceil(wanted * choice.table_rows / max(choice.estimated_rows, 1.0))
    return {"enable_sort": "off", "hnsw.ef_search": str(min(EF_SEARCH_MAX, wanted))}


_versions: weakref.WeakKeyDictionary[sa.Engine, tuple[int, ...]] = weakref.WeakKeyDictionary()


def pgvector_version(conn: Connection) -> tuple[int, ...]:
    """pgvector's version in the connection's database, asked once per engine."""
    with _lock:
        known = _versions.get(conn.engine)
    if known is None:
        text = conn.execute(sa.text(queries["pgvector_installed"])).scalar()
        known = parse_version(str(text)) if text else (0,)
        with _lock:
            _versions[conn.engine] = known
    return known


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
