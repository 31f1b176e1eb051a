"""The arguments every query helper shares, checked before anything is sent to the database.

A bad ``k``, an empty query text or a filter on a table the search does not read is refused
here with a :class:`~embeddb.errors.QueryError` naming it, rather than as a database error
that shows the SQL and aborts the caller's transaction (or, for the filter, as repeated hits).
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Hashable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.visitors import iterate

from ..errors import QueryError
from ._target import Target

#: The largest k. A search is a ranking, not an export: pgvector's iterative scan visits at most
#: ``hnsw.max_scan_tuples`` (20,000 by default) tuples, so an index pass asked for more comes back
#: short and is re-run as an exact scan, and hybrid search asks each leg for 2k candidates.
#: 10,000 keeps hybrid's 2k within that budget; read more rows with an ordinary query.
MAX_K = 10_000
#: How many filter shapes found to read only the searched table are remembered.
CHECKED_SHAPES = 1024

_lock = threading.Lock()
_checked: dict[Hashable, None] = {}  # insertion-ordered: the oldest shape is forgotten first


def check_k(k: object, name: str = "k") -> int:
    """``k`` as an int, or QueryError unless it is an integer (not a bool) from 1 to MAX_K.

    Example::

        check_k(5)  # 5; check_k(2.5), check_k("3"), check_k(0) raise QueryError
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise QueryError(f"{name} must be an int, got {k!r} ({type(k).__name__})")
    k = int(k)  # a numpy integer too
    if k < 1:
        raise QueryError(f"{name} must be at least 1, got {k}")
    if k > MAX_K:
        raise QueryError(
            f"{name} must be at most {MAX_K}, got {k}: a similarity search ranks the best rows"
            " (pgvector's index scan stops after 20,000 tuples); read more rows with a plain query")
    return k


def check_query_text(text: object, column: str | None = None) -> None:
    """QueryError unless ``text`` is a string with something besides whitespace in it."""
    on = f" on {column}" if column else ""
    if not isinstance(text, str):
        raise QueryError(f"the query{on} must be a text or a vector, got {type(text).__name__}")
    if not text.strip():
        raise QueryError(f"the query text{on} is empty{' (only whitespace)' if text else ''}:"
                         " there is nothing to search for")


def check_where(target: Target, where: Any, within: sa.Select[Any] | None = None) -> None:
    """QueryError if ``where`` reads a table the search does not (one not in ``within``).

    Such a filter makes PostgreSQL pair every searched row with every matching row of the other
    table (an implicit cross join), so each hit would come back once per pairing.
    """
    if where is None:
        return
    shape = _shape(target, where, within)
    if shape is not None and shape in _checked:
        return
    base = sa.select(target.entity) if within is None else within
    # compared table by table: the ORM builds its FROM objects (joins) afresh on every call
    read = {id(table) for source in base.get_final_froms() for table in _surface(source)}
    extra = [table for source in base.where(where).get_final_froms()
             for table in _surface(source) if id(table) not in read]
    if extra:
        raise QueryError(_foreign_tables_message(target, where, extra, within is not None))
    if shape is not None:
        with _lock:
            _checked[shape] = None
            while len(_checked) > CHECKED_SHAPES:
                del _checked[next(iter(_checked))]


def _surface(source: Any) -> list[Any]:
    """The tables (aliases, subqueries) a FROM object reads at its top level, joins opened."""
    if isinstance(source, sa.Join):
        return [*_surface(source.left), *_surface(source.right)]
    return [source]


def _shape(target: Target, where: Any, within: sa.Select[Any] | None) -> Hashable | None:
    """The filter's SQL structure with what it is applied to (None: SQLAlchemy cannot key it)."""
    keys = [getattr(part, "_generate_cache_key", lambda: None)() for part in (where, within)]
    if keys[0] is None or (within is not None and keys[1] is None):
        return None
    return (target.column, target.entity, *(key.key if key else None for key in keys))


def _foreign_tables_message(target: Target, where: Any, extra: list[Any], within: bool) -> str:
    names = ", ".join(_describe(source) for source in extra)
    columns = sorted({f"{_describe(element.table)}.{element.name}"
                      for element in iterate(where)
                      if isinstance(element, sa.ColumnClause)
                      and any(element.table is source for source in extra)})
    searched = target.table.name
    scope = "the tables of within=" if within else f"the searched table {searched}"
    return (
        f"where= on {searched}.{target.column.name} reads {names}"
        f"{' (' + ', '.join(columns) + ')' if columns else ''}, which is not among {scope}:"
        " every hit would repeat once per matching row of it. Join it in within="
        "select(...).join(...), or test it in a subquery (key.in_(select(...)) or exists())"
    )


def _describe(source: Any) -> str:
    if isinstance(source, sa.Alias) and isinstance(source.element, sa.Table):
        return f"an alias of {source.element.fullname}"
    return str(getattr(source, "fullname", None) or getattr(source, "name", None) or source)
