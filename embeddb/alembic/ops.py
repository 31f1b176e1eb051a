"""Alembic operations for embedded columns, available as ``op.<name>(...)`` in migrations.

* ``op.create_embeddb_schema()`` / ``op.drop_embeddb_schema()``: embeddb's own schema (the
  catalog), brought to this embeddb's head, or taken down to base.
* ``op.create_embedding(...)``: the vector and hash columns, the render and trigger functions,
  the triggers, the HNSW index and the catalog row; existing rows are queued for the worker.
* ``op.alter_embedding(...)``: a new template, key, model, dimension, vector type, distance
  or index.
* ``op.drop_embedding(...)``: all of the above removed, the columns included.

Every operation carries what it needs (template, model, dimensions, key, index), so a migration
never imports the application's models, and every operation reverses, so autogenerate writes
the downgrade. What they do to the database is in :mod:`embeddb.alembic.impl`; both are
registered by ``import embeddb.alembic``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy.engine import Connection

from ..backends import QUANTISED_BACKENDS, TORCH, check_backend
from ..chunking import Chunking
from ..errors import SpecError
from ..orm import current_schema
from ..spec import (
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    DEFAULT_RERANK,
    Distance,
    EmbeddingSpec,
    EncodeOptions,
    HnswIndex,
)
from ..template import Template

# What alter_embedding can change, in the order they are rendered.
IDENTITY_FIELDS = ("model", "dimensions", "normalize", "query_prompt", "document_prompt")
INDEX_FIELDS = ("distance", "index_method", "opclass", "m", "ef_construction", "quantize")
# rerank is the binary index's search setting: changing it rebuilds nothing
ALTER_FIELDS = ("template", "key_columns", *IDENTITY_FIELDS, "backend", "vector_type",
                *INDEX_FIELDS, "rerank", "chunks", "fulltext")
# The changes that make every stored vector useless (the query prompt is not stored).
REEMBED_FIELDS = frozenset({"model", "dimensions", "normalize", "document_prompt"})
INDEX_METHOD = "hnsw"


@dataclass(frozen=True)
class Definition:
    """An embedded column as an operation carries it: everything but where it lives."""

    template: str
    model: str
    dimensions: int
    key_columns: tuple[str, ...]
    distance: str = Distance.COSINE.value
    index: HnswIndex | None = field(default_factory=HnswIndex)
    normalize: bool = True
    query_prompt: str | None = None
    document_prompt: str | None = None
    vector_type: str = "vector"
    #: a chunked column's ``Chunking`` as a plain dict (max_tokens, overlap, max_chars)
    chunks: Mapping[str, int] | None = None
    fulltext: str | None = None
    #: what runs a local model (:mod:`embeddb.backends`); ``onnx-int8`` is another model
    backend: str = TORCH

    @classmethod
    def from_spec(cls, spec: EmbeddingSpec) -> Definition:
        return cls(
            template=spec.template.source,
            model=spec.model,
            dimensions=spec.dimensions,
            key_columns=spec.key_columns,
            distance=spec.distance.value,
            index=spec.index,
            normalize=spec.encode.normalize,
            query_prompt=spec.encode.query_prompt,
            document_prompt=spec.encode.document_prompt,
            vector_type=spec.vector_type,
            chunks=chunks_argument(spec.chunking),
            fulltext=spec.fulltext,
            backend=spec.encode.backend,
        )

    def to_spec(self, schema: str, table: str, column: str) -> EmbeddingSpec:
        return EmbeddingSpec(
            schema=schema,
            table=table,
            column=column,
            key_columns=tuple(self.key_columns),
            template=Template.parse(self.template),
            model=self.model,
            dimensions=self.dimensions,
            distance=Distance.parse(self.distance),
            index=self.index,
            encode=EncodeOptions(self.normalize, self.query_prompt, self.document_prompt,
                                 self.backend),
            vector_type=self.vector_type,
            chunking=Chunking(**self.chunks) if self.chunks is not None else None,
            fulltext=self.fulltext,
        )

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``op.create_embedding`` that describe this column.

        Defaults are spelled out, so a migration means the same whatever later versions of
        embeddb choose as defaults; prompts appear only when set.
        """
        arguments: dict[str, Any] = {
            "template": self.template,
            "model": self.model,
            "dimensions": self.dimensions,
            "vector_type": self.vector_type,
            "key_columns": list(self.key_columns),
            "distance": self.distance,
        }
        if self.index is None:
            arguments["index"] = False
        else:
            arguments["m"] = self.index.m
            arguments["ef_construction"] = self.index.ef_construction
            if self.index.quantize is not None:
                arguments["quantize"] = self.index.quantize
                arguments["rerank"] = self.index.rerank
        arguments["normalize"] = self.normalize
        if self.query_prompt is not None:
            arguments["query_prompt"] = self.query_prompt
        if self.document_prompt is not None:
            arguments["document_prompt"] = self.document_prompt
        if self.backend != TORCH:
            arguments["backend"] = self.backend
        if self.chunks is not None:
            arguments["chunks"] = dict(self.chunks)
        if self.fulltext is not None:
            arguments["fulltext"] = self.fulltext
        return arguments


def chunks_argument(chunking: Chunking | None) -> dict[str, int] | None:
    """How an operation spells a column's chunk settings: a dict a migration can hold."""
    if chunking is None:
        return None
    return {"max_tokens": chunking.max_tokens, "overlap": chunking.overlap,
            "max_chars": chunking.max_chars}


def definition(
    *,
    template: str,
    model: str,
    dimensions: int,
    key_columns: Sequence[str],
    distance: str = Distance.COSINE.value,
    index: bool = True,
    m: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    normalize: bool = True,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    vector_type: str = "vector",
    chunks: Mapping[str, int] | None = None,
    fulltext: str | None = None,
    quantize: str | None = None,
    rerank: int = DEFAULT_RERANK,
    backend: str = TORCH,
) -> Definition:
    """A :class:`Definition` from ``op.create_embedding``'s keyword arguments."""
    return Definition(
        template=template,
        model=model,
        dimensions=dimensions,
        key_columns=tuple(key_columns),
        distance=Distance.parse(distance).value,
        index=HnswIndex(m, ef_construction, quantize, rerank) if index else None,
        normalize=normalize,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        vector_type=vector_type,
        chunks=chunks_argument(Chunking(**chunks)) if chunks is not None else None,
        fulltext=fulltext,
        backend=check_backend(backend),
    )


@Operations.register_operation("create_embeddb_schema")
class CreateEmbeddbSchemaOp(MigrateOperation):
    """Bring embeddb's own schema (the catalog) to this embeddb's head revision."""

    @classmethod
    def create_embeddb_schema(cls, operations: Operations) -> None:
        """Create embeddb's schema (``embeddb.*``), or upgrade it to this embeddb's head.

        Its version is kept in ``embeddb.alembic_version``, apart from the application's.
        """
        operations.invoke(cls())

    def reverse(self) -> DropEmbeddbSchemaOp:
        return DropEmbeddbSchemaOp()

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_embeddb_schema",)


@Operations.register_operation("drop_embeddb_schema")
class DropEmbeddbSchemaOp(MigrateOperation):
    """Take embeddb's schema down to base: every trace of embeddb leaves the database."""

    @classmethod
    def drop_embeddb_schema(cls, operations: Operations) -> None:
        """Remove embeddb's schema and every embedded column still in its catalog.

        pgvector stays installed: other tables may use it.
        """
        operations.invoke(cls())

    def reverse(self) -> CreateEmbeddbSchemaOp:
        return CreateEmbeddbSchemaOp()

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("remove_embeddb_schema",)


class _ColumnOp(MigrateOperation):
    """An operation on one embedded column."""

    def __init__(self, table_name: str, column_name: str, *, schema: str | None = None) -> None:
        self.table_name = table_name
        self.column_name = column_name
        self.schema = schema

    def qualified_name(self) -> str:
        return ".".join(p for p in (self.schema, self.table_name, self.column_name) if p)

    def schema_in(self, conn: Connection) -> str:
        return self.schema or current_schema(conn)

    def diff_tuple(self, kind: str, *details: Any) -> tuple[Any, ...]:
        """What ``alembic check`` reports, e.g. ``("add_embedding", None, "tickets", ...)``."""
        return (kind, self.schema, self.table_name, self.column_name, *details)


@Operations.register_operation("create_embedding")
class CreateEmbeddingOp(_ColumnOp):
    """Install an embedded column on an existing table."""

    def __init__(
        self,
        table_name: str,
        column_name: str,
        definition: Definition,
        *,
        schema: str | None = None,
        enqueue_existing: bool = True,
    ) -> None:
        super().__init__(table_name, column_name, schema=schema)
        self.definition = definition
        self.enqueue_existing = enqueue_existing

    @classmethod
    def create_embedding(
        cls,
        operations: Operations,
        table_name: str,
        column_name: str,
        *,
        template: str,
        model: str,
        dimensions: int,
        key_columns: Sequence[str],
        distance: str = "cosine",
        index: bool = True,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        normalize: bool = True,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        vector_type: str = "vector",
        chunks: Mapping[str, int] | None = None,
        fulltext: str | None = None,
        quantize: str | None = None,
        rerank: int = DEFAULT_RERANK,
        backend: str = TORCH,
        schema: str | None = None,
        enqueue_existing: bool = True,
    ) -> None:
        """Embed ``template`` over the rows of ``table_name`` into a new ``column_name``.

        Adds the ``vector(dimensions)`` column (``vector_type="halfvec"``: ``halfvec``) and
        ``<column>_source_hash``, the render and
        trigger functions, the triggers, the HNSW index (``index=False`` for none) and the
        catalog row. Rows already in the table are queued for the worker unless
        ``enqueue_existing`` is false. Applies embeddb's own schema first if it is missing.
        ``chunks={"max_tokens": 128, "overlap": 32, "max_chars": 1000000}`` makes it a chunked
        column, with its chunk table.
        ``fulltext="english"`` adds the ``tsvector`` column and its GIN index for
        :func:`embeddb.hybrid_search`'s BM25 text leg.
        ``quantize="halfvec"`` or ``"binary"`` (with ``rerank``) indexes a quantised form of the
        vectors (see :func:`embeddb.Embedding`). ``backend`` is what runs a local model
        (``"onnx"``, ``"openvino"``, ``"onnx-int8"``; see :mod:`embeddb.backends`).

        Example::

            op.create_embedding("tickets", "embedding", template="{subject}\\n\\n{body}",
                                model="sentence-transformers/all-MiniLM-L6-v2",
                                dimensions=384, key_columns=["id"])
        """
        made = definition(
            template=template, model=model, dimensions=dimensions, key_columns=key_columns,
            distance=distance, index=index, m=m, ef_construction=ef_construction,
            normalize=normalize, query_prompt=query_prompt, document_prompt=document_prompt,
            vector_type=vector_type, chunks=chunks, fulltext=fulltext, quantize=quantize,
            rerank=rerank, backend=backend,
        )
        made.to_spec(schema or "", table_name, column_name)  # the spec's checks, before any SQL
        operations.invoke(cls(table_name, column_name, made, schema=schema,
                              enqueue_existing=enqueue_existing))

    def reverse(self) -> DropEmbeddingOp:
        return DropEmbeddingOp(self.table_name, self.column_name, self.definition,
                               schema=self.schema)

    def to_spec(self, conn: Connection) -> EmbeddingSpec:
        return self.definition.to_spec(self.schema_in(conn), self.table_name, self.column_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return self.diff_tuple("add_embedding", self.definition)


@Operations.register_operation("drop_embedding")
class DropEmbeddingOp(_ColumnOp):
    """Remove an embedded column: catalog row, triggers, functions, index and both columns."""

    def __init__(
        self,
        table_name: str,
        column_name: str,
        definition: Definition | None = None,
        *,
        schema: str | None = None,
    ) -> None:
        super().__init__(table_name, column_name, schema=schema)
        self.definition = definition

    @classmethod
    def drop_embedding(
        cls,
        operations: Operations,
        table_name: str,
        column_name: str,
        *,
        schema: str | None = None,
        **column: Any,
    ) -> None:
        """Remove the embedded column ``column_name`` and everything embeddb made for it.

        The vector and ``<column>_source_hash`` columns are dropped too. The other keywords are
        those of :meth:`create_embedding` and describe the column being dropped, so that the
        operation can be reversed; they are not needed to run it.
        """
        made = definition(**column) if column else None
        operations.invoke(cls(table_name, column_name, made, schema=schema))

    def reverse(self) -> CreateEmbeddingOp:
        if self.definition is None:
            raise SpecError(
                f"op.drop_embedding({self.qualified_name()!r}) names no template and model,"
                " so it cannot be reversed; pass the keywords of op.create_embedding"
            )
        return CreateEmbeddingOp(self.table_name, self.column_name, self.definition,
                                 schema=self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return self.diff_tuple("remove_embedding", self.definition)


@Operations.register_operation("alter_embedding")
class AlterEmbeddingOp(_ColumnOp):
    """Change an embedded column; ``existing_<field>`` values say what it was, for reversal."""

    def __init__(
        self,
        table_name: str,
        column_name: str,
        changes: Mapping[str, Any],
        existing: Mapping[str, Any] | None = None,
        *,
        schema: str | None = None,
    ) -> None:
        super().__init__(table_name, column_name, schema=schema)
        unknown = sorted(set(changes).union(existing or {}).difference(ALTER_FIELDS))
        if unknown:
            raise SpecError(
                f"alter_embedding({self.qualified_name()!r}) cannot change {', '.join(unknown)};"
                f" it changes {', '.join(ALTER_FIELDS)}"
            )
        self.changes = dict(changes)
        self.existing = dict(existing or {})

    @classmethod
    def alter_embedding(
        cls,
        operations: Operations,
        table_name: str,
        column_name: str,
        *,
        schema: str | None = None,
        **fields: Any,
    ) -> None:
        """Change an embedded column; the worker brings its vectors up to date.

        Keywords: ``template``, ``key_columns``, ``model``, ``dimensions``, ``normalize``,
        ``query_prompt``, ``document_prompt``, ``vector_type`` (``"vector"`` or ``"halfvec"``),
        ``distance``, ``index_method`` (``"hnsw"`` or None for no index), ``opclass``, ``m``,
        ``ef_construction``, ``quantize`` (None, ``"halfvec"`` or ``"binary"``), ``rerank``
        (the binary index's candidates per result; rebuilds nothing), ``chunks`` (a dict of
        ``Chunking``'s fields, or None for one vector per row), ``fulltext`` (a text search
        configuration, or None for no full-text index), ``backend`` (what runs a local model:
        a float32 one changes no vector, ``"onnx-int8"`` is another model); each may come with
        ``existing_<name>``, the value before, which only serves to reverse the operation.

        New ``chunks`` split every row again (its old chunks serve searches meanwhile; chunks
        whose text is unchanged keep their vectors).

        A new template or key queues every row whose text changes. A new model, dimension,
        normalisation or document prompt clears the stored vectors and queues every row: until
        the worker is done, search sees only rows already re-embedded. A new dimension changes
        the column type. A new vector type casts the stored vectors (nothing is re-embedded)
        and rebuilds the index. Index changes rebuild the index.

        Example::

            op.alter_embedding("tickets", "embedding", template="{subject}",
                               existing_template="{subject}\\n\\n{body}")
        """
        changes = {k: v for k, v in fields.items() if not k.startswith("existing_")}
        existing = {k.removeprefix("existing_"): v for k, v in fields.items()
                    if k.startswith("existing_")}
        operations.invoke(cls(table_name, column_name, changes, existing, schema=schema))

    def reverse(self) -> AlterEmbeddingOp:
        reverted = {name: self.existing[name] for name in self.changes if name in self.existing}
        before = {name: self.changes[name] for name in reverted}
        return AlterEmbeddingOp(self.table_name, self.column_name, reverted, before,
                                schema=self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return self.diff_tuple("modify_embedding", {
            name: (self.existing.get(name), value) for name, value in self.changes.items()})

    @property
    def reembeds(self) -> bool:
        """Whether this change clears the stored vectors (a different model or dimension)."""
        quantised = {self.changes.get("backend"), self.existing.get("backend")} & set(
            QUANTISED_BACKENDS) if "backend" in self.changes else set()
        return bool(quantised) or not REEMBED_FIELDS.isdisjoint(self.changes)

    @property
    def rebuilds_index(self) -> bool:
        return not set(INDEX_FIELDS).isdisjoint(self.changes)

    def apply(self, spec: EmbeddingSpec) -> EmbeddingSpec:
        """``spec`` with this operation's changes."""
        changes = self.changes
        distance = Distance.parse(changes.get("distance", spec.distance))
        changed = replace(
            spec,
            template=Template.parse(changes.get("template", spec.template.source)),
            key_columns=tuple(changes.get("key_columns", spec.key_columns)),
            model=changes.get("model", spec.model),
            dimensions=changes.get("dimensions", spec.dimensions),
            vector_type=changes.get("vector_type", spec.vector_type),
            fulltext=changes.get("fulltext", spec.fulltext),
            distance=distance,
            index=self._index(spec),
            chunking=(Chunking(**changes["chunks"]) if changes["chunks"] is not None else None)
            if "chunks" in changes else spec.chunking,
            encode=EncodeOptions(
                changes.get("normalize", spec.encode.normalize),
                changes.get("query_prompt", spec.encode.query_prompt),
                changes.get("document_prompt", spec.encode.document_prompt),
                check_backend(changes.get("backend", spec.encode.backend)),
            ),
        )
        opclass = changes.get("opclass")
        if opclass is not None and opclass != changed.index_opclass:
            raise SpecError(
                f"{spec.qualified_column}: embeddb indexes distance {distance.value!r} with"
                f" {changed.index_opclass}, not {opclass}; change the distance or quantize"
            )
        return changed

    def _index(self, spec: EmbeddingSpec) -> HnswIndex | None:
        changes = self.changes
        method = changes.get("index_method", INDEX_METHOD if spec.index else None)
        if method is None:
            if any(changes.get(name) is not None
                   for name in ("m", "ef_construction", "quantize")):
                raise SpecError(f"{spec.qualified_column} has no index to give m,"
                                " ef_construction or quantize; pass index_method='hnsw' as well")
            return None
        if method != INDEX_METHOD:
            raise SpecError(f"{spec.qualified_column}: embeddb builds {INDEX_METHOD} indexes,"
                            f" not {method}")
        base = spec.index or HnswIndex()
        m = changes.get("m")
        ef_construction = changes.get("ef_construction")
        return HnswIndex(base.m if m is None else m,
                         base.ef_construction if ef_construction is None else ef_construction,
                         changes.get("quantize", base.quantize),
                         changes.get("rerank", base.rerank))
