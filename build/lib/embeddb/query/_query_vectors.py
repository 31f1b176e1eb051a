"""Turning a query into a vector: a text through the column's own model, or a vector as given.

A text is embedded with the model and query prompt recorded for the column in the catalog,
after checking that the model here is that model (:class:`~embeddb.errors.ModelMismatch`
otherwise). Both the catalog entry (per engine, for :data:`CATALOG_TTL_SECONDS`) and the vectors
of recent query texts are cached, so a repeated query costs one round trip (which generation
is live: see :mod:`embeddb.generations`) and not the model.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .. import catalog, column_sql, generations
from ..catalog import CatalogEntry
from ..embedders import ModelIdentity, load_embedder
from ..errors import ModelMismatch, PrivilegeError, SchemaError, first_line
from ..orm import INFO_KEY, Declaration, current_schema
from ..privileges import is_permission_error
from ..spec import EmbeddingSpec, EncodeOptions
from ..sql import queries
from ._checks import check_query_text
from ._target import QueryVector, Target, check_dimensions, resolve

#: How long a column's catalog entry is trusted before it is read again.
CATALOG_TTL_SECONDS = 60.0
#: How many query texts' vectors are kept (per model).
QUERY_CACHE_SIZE = 1024

_Key = tuple[str | None, str, str]
_entries: weakref.WeakKeyDictionary[sa.Engine, dict[_Key, tuple[float, CatalogEntry]]]
_entries = weakref.WeakKeyDictionary()
_entries_lock = threading.Lock()


def query_vector(conn: Connection, target: Target, query: str | QueryVector) -> list[float]:
    """The vector to search with: ``query`` itself (size-checked), or its text's embedding."""
    if isinstance(query, str):
        return embed_query(column_entry(conn, target), query)
    return check_dimensions(target, query)


def embed_query(entry: CatalogEntry, text: str) -> list[float]:
    """The column's own model's embedding of a query text (with its query prompt), cached."""
    check_query_text(text, entry.spec.qualified_column)
    try:
        return list(_cached_query_vector(entry.spec.model, entry.spec.encode, entry.identity,
                                         text))
    except _DifferentModel as exc:
        catalog.check_model(entry, exc.identity)  # raises ModelMismatch naming the column
        raise


def column_entry(conn: Connection, column: Any) -> CatalogEntry:
    """The catalog entry of an embedded column (``Ticket.embedding``), checked against its
    declaration: :class:`~embeddb.errors.ModelMismatch` if they name different models."""
    target = column if isinstance(column, Target) else resolve(column)
    table = target.table
    # keyed as declared (schema None: the search path's)
    key = (table.schema, table.name, target.column.name)
    entry = _cached_entry(conn.engine, key)
    if entry is None:
        entry = _read_entry(conn, target)
    # A model change swaps generations under the same name: the one live once the table is
    # locked for this transaction is the one the search reads (one round trip).
    live_id = conn.execute(sa.text(queries["live_column_id"]), {
        "table": column_sql.qualified_name(table.schema, table.name),
        "column": target.column.name}).scalar()
    if live_id != entry.id:
        entry = _read_entry(conn, target)
    with _entries_lock:
        _entries.setdefault(conn.engine, {})[key] = (time.monotonic(), entry)
    declaration = target.declaration
    if not _declares(declaration, entry.spec) and not any(
            _declares(declaration, other.spec)
            for other in generations.generations(conn, entry).values()):
        raise ModelMismatch(
            f"{entry.spec.qualified_column} is declared with model {declaration.model}"
            f" ({declaration.encode}) but was embedded with {entry.identity.describe()}"
            f" ({entry.spec.encode}); change the model with a migration that re-embeds the column"
        )
    return entry


def _read_entry(conn: Connection, target: Target) -> CatalogEntry:
    table = target.table
    schema = table.schema or current_schema(conn)
    try:
        entry = catalog.get_entry(conn, schema, table.name, target.column.name)
    except sa.exc.ProgrammingError as exc:
        if not is_permission_error(exc):
            raise
        raise PrivilegeError(
            f"search {schema}.{table.name}.{target.column.name}: role cannot read embeddb's"
            f" catalog ({first_line(exc)}); it needs USAGE on schema embeddb and SELECT on"
            " embeddb.columns (embeddb grants --app ROLE)") from exc
    if entry is None:
        raise SchemaError(
            f"{schema}.{table.name}.{target.column.name} is not installed in this database;"
            " run Base.metadata.create_all(engine) or embeddb.install(engine, Model)"
        )
    return entry


def _declares(declaration: Declaration, spec: EmbeddingSpec) -> bool:
    """Whether the app's declaration names the model ``spec`` embeds with: during a model
    change the app may declare either generation's (the live one answers either way)."""
    return declaration.model == spec.model and declaration.encode == spec.encode


def reflect_column(conn: Connection, entry: CatalogEntry) -> sa.Column[Any]:
    """The column of a catalog entry as a Core ``Column``, for use without the app's models.

    Example::

        column = reflect_column(conn, entry)
        search(conn, column, "parse a date", k=5)
    """
    table = sa.Table(entry.spec.table, sa.MetaData(), schema=entry.spec.schema,
                     autoload_with=conn)
    column = table.c[entry.spec.column]
    column.info[INFO_KEY] = Declaration(
        template=entry.spec.template, model=entry.spec.model, dimensions=entry.spec.dimensions,
        distance=entry.spec.distance, index=entry.spec.index, encode=entry.spec.encode,
        vector_type=entry.spec.vector_type, chunking=entry.spec.chunking,
        fulltext=entry.spec.fulltext,
    )
    return column


def _cached_entry(engine: sa.Engine, key: _Key) -> CatalogEntry | None:
    with _entries_lock:
        cached = _entries.get(engine, {}).get(key)
    if cached is None or time.monotonic() - cached[0] > CATALOG_TTL_SECONDS:
        return None
    return cached[1]


class _DifferentModel(Exception):
    """The model here is not the column's; :func:`embed_query` says so, naming the column."""

    def __init__(self, identity: ModelIdentity) -> None:
        super().__init__(identity.describe())
        self.identity = identity


@functools.lru_cache(maxsize=QUERY_CACHE_SIZE)
def _cached_query_vector(
    model: str, encode: EncodeOptions, identity: ModelIdentity, text: str
) -> tuple[float, ...]:
    embedder = load_embedder(model, encode, identity.dimensions)
    if identity.differences(embedder.identity):
        raise _DifferentModel(embedder.identity)
    return tuple(float(x) for x in embedder.embed_query(text))
