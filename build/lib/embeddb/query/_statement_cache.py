"""Search statements reused from one call to the next when only the filter's values change.

Executing a new ``Select`` makes SQLAlchemy walk the whole statement for its cache key, look
that key up among its compiled statements and map the cached result columns onto the new
statement's. A search statement is a fixed template plus the caller's ``where``, so only the
``where`` needs walking: a call whose filter has the SQL structure of an earlier one
(``status == "open"``, then ``status == "closed"``) runs the earlier call's ``Select`` object,
whose cache key SQLAlchemy keeps, with the new filter's values passed as execution parameters
under the names the compiled SQL gives them (``status_1``). SQLAlchemy still applies the
parameters' types and maps the result columns as for any statement.

A filter that SQLAlchemy cannot cache, or whose parameters do not map one to one onto names,
is never reused: the statement is built afresh, as without this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

#: How many (column, plan, filter structure) statements are kept.
CACHE_SIZE = 256
#: Parameter names the search binds itself, which a filter's must not shadow.
RESERVED = frozenset({"query_vector", "k"})

_Names = tuple[str, ...]
_lock = threading.Lock()
# insertion-ordered; read without the lock (a dict lookup is atomic), evicted oldest first
_statements: dict[Hashable, tuple[sa.Select[Any], _Names] | None] = {}
_MISSING = object()


class Prepared(NamedTuple):
    """A statement to execute, and the filter's values to pass with it (by parameter name)."""

    statement: sa.Select[Any]
    values: dict[str, Any]


def prepare(dialect: Dialect, template: Hashable, where: Any,
            build: Callable[[], sa.Select[Any]]) -> Prepared:
    """``build()``'s statement for ``where``, or the statement an earlier call built for a filter
    of the same structure on the same ``template`` (what ``build`` starts from)."""
    key = _cache_key(where)
    if key is None:
        return Prepared(build(), {})
    shape = (dialect, template, key.key)
    known = _statements.get(shape, _MISSING)
    if known is _MISSING:  # first of its shape: run as built, its values in place
        statement = build()
        names = parameter_names(statement, key.bindparams, dialect)
        _remember(shape, None if names is None else (statement, names))
        return Prepared(statement, {})
    if not isinstance(known, tuple) or len(known[1]) != len(key.bindparams):
        return Prepared(build(), {})
    statement, names = known
    return Prepared(statement, {name: bind.effective_value
                                for name, bind in zip(names, key.bindparams, strict=True)})


def parameter_names(statement: sa.Select[Any], binds: list[sa.BindParameter[Any]],
                    dialect: Dialect) -> _Names | None:
    """The name each of ``binds`` has in ``statement`` compiled (None unless one name each).

    SQLAlchemy names a statement's parameters from its structure alone (``status_1`` for the
    first anonymous parameter compared with ``status``), which is what lets it cache compiled
    SQL per structure; execution parameters given under those names override the values bound
    in the statement. ``bind_names`` is the compiler's map from parameters to names: not in
    SQLAlchemy's documented API, so tests/unit/test_reuse.py pins its behaviour.
    """
    compiled = statement.compile(dialect=dialect)
    found = getattr(compiled, "bind_names", {})
    names = tuple(found.get(bind) for bind in binds)
    if any(name is None for name in names):
        return None  # compiling replaced a parameter (ORM adaptation): not safely reusable
    named = tuple(str(name) for name in names)
    if len(set(named)) != len(named) or RESERVED.intersection(named):
        return None
    return named


def clear() -> None:
    """Forget every kept statement (for tests)."""
    with _lock:
        _statements.clear()


def _cache_key(where: Any) -> Any:
    # the where clause's own cache key: its structure (.key) and parameters (.bindparams), in
    # the order SQLAlchemy walks them; memoized on the element, which the planner keys too
    if where is None or not hasattr(where, "_generate_cache_key"):
        return None
    return where._generate_cache_key()


def _remember(shape: Hashable, entry: tuple[sa.Select[Any], _Names] | None) -> None:
    with _lock:
        _statements[shape] = entry
        while len(_statements) > CACHE_SIZE:
            del _statements[next(iter(_statements))]
