"""The declarative side: ``Embedding(...)`` on an ordinary SQLAlchemy 2 model.

``Embedding`` returns a ``mapped_column`` of pgvector's ``VECTOR`` type that carries the
declaration in ``Column.info``. When the column joins its table, embeddb adds the companion
``<column>_source_hash`` column and hooks the table's DDL events, so ``create_all`` installs
the trigger, index and catalog row and ``drop_all`` removes them. For a table that already
exists, call :func:`embeddb.install`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import TSVECTOR, UUID
from sqlalchemy.engine import Connection
from sqlalchemy.orm import MappedColumn, QueryableAttribute, mapped_column

from . import catalog
from .backends import TORCH, check_backend
from .chunking import Chunking
from .embedders import is_http_model, model_dimensions, runs_on_backends
from .errors import SpecError
from .providers import openai as providers_openai
from .spec import (
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    DEFAULT_MODEL,
    DEFAULT_RERANK,
    VECTOR_TYPES,
    Distance,
    EmbeddingSpec,
    EncodeOptions,
    HnswIndex,
    check_fulltext_config,
    fulltext_column_name,
    hash_column_name,
)
from .sql import queries
from .template import Template

INFO_KEY = "embeddb"


@dataclass(frozen=True)
class Declaration:
    """What an ``Embedding(...)`` call declared, before it knows its table and column name."""

    template: Template
    model: str
    dimensions: int
    distance: Distance
    index: HnswIndex | None
    encode: EncodeOptions
    vector_type: str = "vector"
    chunking: Chunking | None = None
    fulltext: str | None = None


def Embedding(
    template: str,
    *,
    model: str = DEFAULT_MODEL,
    distance: str | Distance = Distance.COSINE,
    dimensions: int | None = None,
    index: bool = True,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    normalize: bool = True,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    deferred: bool = True,
    vector_type: str = "vector",
    base_url: str | None = None,
    api_key_env: str | None = None,
    chunks: Chunking | None = None,
    fulltext: bool | str = False,
    quantize: str | None = None,
    rerank: int = DEFAULT_RERANK,
    backend: str = "torch",
) -> MappedColumn[Any]:
    """Declare a vector column kept in step with ``template`` by embeddb's worker.

    ``template`` is a format string over the row's columns, e.g. ``"{subject}\\n\\n{body}"``.
    The column's dimension comes from ``model`` (read from its files; pass ``dimensions`` for a
    model that is not on this machine). ``deferred`` keeps the vector out of ordinary loads.
    ``vector_type="halfvec"`` stores half-precision floats: half the space, and HNSW indexes up
    to 4,000 dimensions instead of 2,000; queries are cast to match the index.
    ``chunks=Chunking(...)`` splits long texts into chunks counted in the model's tokens, each
    embedded and stored in a chunk table; the column then holds the mean of its chunks' vectors.

    ``dimensions`` below the model's own keeps the first N components of each vector,
    normalised again (Matryoshka); an ``openai/...`` model is asked for N by the API.
    ``base_url`` and ``api_key_env`` say where an ``openai/...`` model is served and which
    environment variable of the embedding process holds its key (default ``OPENAI_API_KEY``;
    ``""`` for a server without keys).
    ``fulltext=True`` (or a text search configuration such as ``"german"``; True is
    ``"english"``) also keeps a ``tsvector`` of the text (written by the worker with the
    vector) and a GIN index, for :func:`embeddb.hybrid_search`'s BM25 text leg.
    ``quantize="halfvec"`` builds the HNSW index over ``column::halfvec(n)`` (half its size);
    ``quantize="binary"`` over ``binary_quantize(column)::bit(n)`` with Hamming distance, whose
    ``rerank * k`` nearest candidates a search re-ranks by the stored vectors in one statement.
    Either changes the index only: the stored vectors and the model stay as they are.
    ``backend`` runs a local model on ``"onnx"`` (ONNX Runtime) or ``"openvino"``: the same
    vectors as ``"torch"``, so switching re-embeds nothing; ``"onnx-int8"`` is a quantised,
    different model (switching to it re-embeds the column). See :mod:`embeddb.backends`.

    Example::

        class Ticket(Base):
            __tablename__ = "tickets"
            id: Mapped[int] = mapped_column(primary_key=True)
            subject: Mapped[str]
            body: Mapped[str]
            embedding = Embedding("{subject}\\n\\n{body}")
            small = Embedding("{body}", model="openai/text-embedding-3-small", dimensions=256)
    """
    model = _with_provider_options(model, base_url, api_key_env)
    if quantize is not None and not index:
        raise SpecError(f"quantize={quantize!r} describes the HNSW index; drop index=False")
    if vector_type not in VECTOR_TYPES:
        choices = ", ".join(VECTOR_TYPES)
        raise SpecError(f"vector_type must be one of {choices}, got {vector_type!r}")
    declaration = Declaration(
        template=Template.parse(template),
        model=model,
        dimensions=_declared_dimensions(model, dimensions),
        distance=Distance.parse(distance),
        index=HnswIndex(m, ef_construction, quantize, rerank) if index else None,
        encode=EncodeOptions(normalize, query_prompt, document_prompt,
                             _checked_backend(model, backend)),
        vector_type=vector_type,
        chunking=chunks,
        fulltext=_fulltext_config(fulltext),
    )
    if chunks is not None:
        chunks.check_window(model)
    column_type = HALFVEC if vector_type == "halfvec" else VECTOR
    return mapped_column(
        column_type(declaration.dimensions),
        nullable=True,
        deferred=deferred,
        info={INFO_KEY: declaration},
    )


def _with_provider_options(model: str, base_url: str | None, api_key_env: str | None) -> str:
    if base_url is None and api_key_env is None:
        return model
    if not is_http_model(model):
        provider = model.partition("/")[0] if "/" in model else model
        raise SpecError(
            f"unknown provider {provider!r} for base_url=/api_key_env= (model {model!r});"
            " HTTP models are named openai/<model> (any OpenAI-compatible server)"
        )
    return providers_openai.model_name(model, base_url=base_url, api_key_env=api_key_env)


def _declared_dimensions(model: str, dimensions: int | None) -> int:
    """The column's dimension: the model's own unless ``dimensions`` says otherwise."""
    # a declared dimension is checked against the model on install (create_all, install())
    return model_dimensions(model) if dimensions is None else dimensions
def _checked_backend(model: str, backend: str) -> str:
    check_backend(backend)
    if backend != TORCH and not runs_on_backends(model):
        raise SpecError(f"backend={backend!r} applies to local sentence-transformers models;"
                        f" {model!r} is not one, so drop backend=")
    return backend


def _fulltext_config(fulltext: bool | str) -> str | None:
    if fulltext is True:
        return "english"
    if fulltext is False or fulltext is None:
        return None
    return check_fulltext_config(fulltext)


def embedded_column(target: Any) -> sa.Column[Any]:
    """The ``Column`` behind ``Ticket.embedding`` (or the column itself), checked to be embedded."""
    column = target
    if isinstance(target, QueryableAttribute):
        column = target.property.columns[0]
    if not isinstance(column, sa.Column) or INFO_KEY not in column.info:
        raise SpecError(f"{target!r} is not a column declared with embeddb.Embedding(...)")
    return column


def spec_for(column: sa.Column[Any], default_schema: str) -> EmbeddingSpec:
    """The full spec of an embedded column, once its table is known."""
    declaration: Declaration = column.info[INFO_KEY]
    table = column.table
    if not isinstance(table, sa.Table):
        raise SpecError(f"column {column.name!r} is not attached to a table")
    known = set(table.columns.keys())
    unknown = [name for name in declaration.template.columns if name not in known]
    if unknown:
        raise SpecError(
            f"the template of {table.name}.{column.name} names column"
            f" {', '.join(map(repr, unknown))}, which {table.name} does not have"
            f" (its columns: {', '.join(sorted(known))})"
        )
    return EmbeddingSpec(
        schema=table.schema or default_schema,
        table=table.name,
        column=column.name,
        key_columns=tuple(c.name for c in table.primary_key.columns),
        template=declaration.template,
        model=declaration.model,
        dimensions=declaration.dimensions,
        distance=declaration.distance,
        index=declaration.index,
        encode=declaration.encode,
        vector_type=declaration.vector_type,
        chunking=declaration.chunking,
        fulltext=declaration.fulltext,
    )


def embedded_columns(table: sa.Table) -> list[sa.Column[Any]]:
    return [column for column in table.columns if INFO_KEY in column.info]


def current_schema(conn: Connection) -> str:
    return str(conn.execute(sa.text(queries["current_schema"])).scalar_one())


@event.listens_for(sa.Column, "after_parent_attach")
def _on_attach(column: sa.Column[Any], table: Any) -> None:
    if INFO_KEY not in column.info or not isinstance(table, sa.Table):
        return
    hash_name = hash_column_name(column.name)
    if hash_name not in table.columns:
        table.append_column(sa.Column(hash_name, UUID(as_uuid=True), nullable=True))
    fulltext_name = fulltext_column_name(column.name)
    if column.info[INFO_KEY].fulltext is not None and fulltext_name not in table.columns:
        table.append_column(sa.Column(fulltext_name, TSVECTOR, nullable=True))
    if not event.contains(table, "before_create", _before_create):
        event.listen(table, "before_create", _before_create)
        event.listen(table, "after_create", _after_create)
        event.listen(table, "before_drop", _before_drop)


def _before_create(table: sa.Table, connection: Connection, **_: Any) -> None:
    catalog.ensure_catalog(connection)


def _after_create(table: sa.Table, connection: Connection, **_: Any) -> None:
    schema = current_schema(connection)
    for column in embedded_columns(table):
        catalog.install(connection, spec_for(column, schema))


def _before_drop(table: sa.Table, connection: Connection, **_: Any) -> None:
    schema = current_schema(connection)
    for column in embedded_columns(table):
        catalog.uninstall(connection, spec_for(column, schema))


def install(
    bind: sa.Engine | Connection, *targets: Any, enqueue_existing: bool = True
) -> list[catalog.CatalogEntry]:
    """Install the embedded columns of existing tables: columns, index, trigger, catalog row.

    ``targets`` are mapped classes, tables or embedded columns (``Ticket.embedding``). Rows
    already in the table are queued for the worker unless ``enqueue_existing`` is false.
    Everything happens in one transaction: on error the database is left as it was. A column
    recorded with another model (or dimension, prompt) starts a model change without a gap
    (:mod:`embeddb.generations`); its entry is returned as it is live until the swap.

    Example::

        embeddb.install(engine, Ticket)
    """
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            return install(conn, *targets, enqueue_existing=enqueue_existing)
    schema = current_schema(bind)
    columns = [column for target in targets for column in _columns_of(target)]
    return [
        catalog.install(bind, spec_for(column, schema), enqueue_existing=enqueue_existing)
        for column in columns
    ]


def _columns_of(target: Any) -> list[sa.Column[Any]]:
    if isinstance(target, sa.Table):
        return embedded_columns(target)
    table = getattr(target, "__table__", None)
    if isinstance(table, sa.Table):
        return embedded_columns(table)
    return [embedded_column(target)]
