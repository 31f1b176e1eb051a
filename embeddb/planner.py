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

``auto`` asks the planner (one ``EXPLAIN``) how many rows match the filter and how many rows the
table has. Scanning R matching rows exactly costs about R distance computations; the index
visits about k / selectivity = k * N / R tuples. :func:`prefers_exact` picks the cheaper one.

Settings are transaction-local (``set_config(..., true)``, i.e. ``SET LOCAL``), saved and set in
one statement before the query and restored in one statement after it, so nothing leaks into
the rest of the caller's transaction or a pooled connection. (A savepoint rolled back after the
query also scopes them, but costs four round trips, and psycopg reads the ``ROLLBACK`` tag of
``ROLLBACK TO SAVEPOINT`` as a reason to deallocate every prepared statement of the connection.)
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from .database import parse_version
from .similarity import Target
from .sql import queries

Plan = Literal["auto", "exact", "index"]
Chosen = Literal["exact", "index"]

#: Filters estimated to match at most this many rows are always answered exactly.
EXACT_ROWS_FLOOR = 1000
#: Exact when R * R <= CROSSOVER * k * N (R matching rows of N): an exact scan costs ~R distance
#: computations, an iterative index scan ~k*N/R visited tuples at ~CROSSOVER times the cost each.
CROSSOVER = 10.0
#: ``hnsw.ef_search`` for the index plan: candidates per iteration, from k.
EF_SEARCH_PER_K = 10
EF_SEARCH_MIN = 100
EF_SEARCH_MAX = 1000  # pgvector's limit
#: pgvector from which hnsw.iterative_scan exists.
ITERATIVE_SCAN_SINCE = (0, 8, 0)
#: How long, and for how many filters, the planner's row estimates are remembered per engine.
ESTIMATE_TTL_SECONDS = 60.0
ESTIMATE_CACHE_SIZE = 1024

# Per-engine memory: pgvector's version, and recent row estimates by filter.
_lock = threading.Lock()
_estimates: weakref.WeakKeyDictionary[
    sa.Engine, OrderedDict[Hashable, tuple[float, tuple[float, float]]]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Choice:
    """The plan to run and, for ``auto``, the planner's estimates it was chosen from."""

    plan: Chosen
    estimated_rows: float | None = None
    table_rows: float | None = None


def choose(conn: Connection, target: Target, probe: sa.Select[Any] | None, k: int,
           plan: Plan) -> Choice:
    """The plan for the k nearest rows of ``target`` among the rows ``probe`` selects.

    ``probe`` is ``SELECT 1 FROM ... WHERE <the filter>``, or None when nothing is filtered.
    """
    if plan == "exact":
        return Choice("exact")
    if plan == "index":
        if not target.indexed:
            raise ValueError(f"{target.table.name}.{target.column.name} has no HNSW index;"
                             " use plan='exact' or 'auto'")
        return Choice("index")
    if plan != "auto":
        raise ValueError(f"plan must be 'auto', 'exact' or 'index', got {plan!r}")
    if not target.indexed:
        return Choice("exact")
    if probe is None:
        return Choice("index")
    rows, table_rows = estimate(conn, probe, target.table)
    chosen: Chosen = "exact" if prefers_exact(rows, table_rows, k) else "index"
    return Choice(chosen, rows, table_rows)


def prefers_exact(rows: float, table_rows: float, k: int) -> bool:
    """Whether scanning ``rows`` matching rows beats walking the index for k of them."""
    return rows <= EXACT_ROWS_FLOOR or rows * rows <= CROSSOVER * k * table_rows


def estimate(conn: Connection, probe: sa.Select[Any], table: sa.Table) -> tuple[float, float]:
    """The planner's estimates of the rows ``probe`` returns and of the rows in ``table``.

    One ``EXPLAIN`` of ``probe UNION ALL SELECT 1 FROM table``: planning only, nothing runs.
    The answer is remembered per engine for :data:`ESTIMATE_TTL_SECONDS`, keyed by the filter's
    SQL and parameter values, so a repeated filter costs no round trip.
    """
    key = _estimate_key(probe)
    cache = _estimates_of(conn.engine)
    now = time.monotonic()
    with _lock:
        cached = cache.get(key) if key is not None else None
    if cached is not None and now - cached[0] <= ESTIMATE_TTL_SECONDS:
        return cached[1]
    everything: sa.Select[Any] = sa.select(sa.literal_column("1")).select_from(table)
    plan = conn.execute(Explain(sa.union_all(probe, everything))).scalar_one()[0]["Plan"]
    children = plan.get("Plans", [])
    if plan["Node Type"] != "Append" or len(children) != 2:
        rows = (float(plan["Plan Rows"]), float(plan["Plan Rows"]))
    else:
        rows = (float(children[0]["Plan Rows"]), float(children[1]["Plan Rows"]))
    if key is not None:
        with _lock:
            cache[key] = (now, rows)
            cache.move_to_end(key)
            while len(cache) > ESTIMATE_CACHE_SIZE:
                cache.popitem(last=False)
    return rows


def _estimate_key(probe: sa.Select[Any]) -> Hashable | None:
    """The probe's SQL structure and parameter values, or None if they cannot be a key."""
    cache_key = probe._generate_cache_key()
    if cache_key is None:
        return None
    try:
        values = tuple(_frozen(bind.effective_value) for bind in cache_key.bindparams)
        hash(values)
    except TypeError:
        return None
    return cache_key.key, values


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


def _estimates_of(engine: sa.Engine) -> OrderedDict[Hashable, tuple[float, tuple[float, float]]]:
    with _lock:
        return _estimates.setdefault(engine, OrderedDict())


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


_SAVE_AND_SET = sa.text("""
WITH wanted AS MATERIALIZED (
    SELECT s.name, s.value, current_setting(s.name, true) AS previous
    FROM unnest(CAST(:names AS text[]), CAST(:values AS text[])) AS s(name, value)
)
SELECT previous, set_config(name, value, true) FROM wanted
""")
_RESTORE = sa.text("""
SELECT set_config(s.name, s.value, true)
FROM unnest(CAST(:names AS text[]), CAST(:values AS text[])) AS s(name, value)
""")


@contextmanager
def scoped(conn: Connection, values: Mapping[str, str]) -> Iterator[None]:
    """Run the body with ``values`` set for the current transaction only, then restore them.

    Costs one statement before and one after (none when ``values`` is empty). On a connection
    in autocommit mode the body runs in a transaction of its own. If the body fails, the
    transaction is aborted anyway and its rollback discards the settings.
    """
    if not values:
        yield
        return
    names = list(values)
    autocommit = bool(getattr(conn.connection.driver_connection, "autocommit", False))
    if autocommit:
        conn.exec_driver_sql("BEGIN")
    rows = conn.execute(_SAVE_AND_SET, {"names": names, "values": list(values.values())}).all()
    try:
        yield
    except BaseException:
        if autocommit:
            conn.exec_driver_sql("ROLLBACK")
        raise
    if autocommit:
        conn.exec_driver_sql("COMMIT")
    else:
        conn.execute(_RESTORE, {"names": names, "values": [row.previous for row in rows]})


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
