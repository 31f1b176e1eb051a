"""Autogenerate: the models' ``Embedding`` declarations against the catalog and the database.

Alembic compares tables and columns first; this comparator runs after it, at the top
("autogenerate") level with the lowest priority, and rewrites its result:

1. It takes out what embeddb manages, which Alembic would otherwise report as added, dropped
   or changed: the vector and ``<column>_source_hash`` columns, the HNSW index, and the tables
   of embeddb's own schema.
2. It adds ``op.create_embedding`` / ``op.alter_embedding`` / ``op.drop_embedding`` for each
   declaration that differs from the catalog, and ``op.create_embeddb_schema()`` before the
   first. The index is compared with the database itself (``pg_index``): its access method,
   operator class (and so its quantisation), ``m`` and ``ef_construction``, which Alembic
   does not compare.
3. It adds ``import pgvector.sqlalchemy`` when the script spells a pgvector type (Alembic
   writes the type's full module path but not the import).

Order matters: drops come first (their source columns or tables may be dropped next), creates
and alters last (they may read columns added in the same migration), and a dropped column that
the old template still reads moves after the alter that stops reading it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation
from alembic.operations import ops as alembic_ops
from alembic.util import PriorityDispatchResult
from psycopg import sql
from sqlalchemy.engine import Connection

from .. import catalog, generations, migrate, orm
from ..catalog import CatalogEntry
from ..spec import DEFAULT_RERANK, EmbeddingSpec
from ..sql import queries
from .ops import (
    INDEX_METHOD,
    AlterEmbeddingOp,
    CreateEmbeddbSchemaOp,
    CreateEmbeddingOp,
    Definition,
    DropEmbeddingOp,
    chunks_argument,
)
from .render import ImportsOp  # also registers the renderers of the operations made here

PGVECTOR_IMPORT = "import pgvector.sqlalchemy"
_WHOLE_TABLE = "*"  # in _managed_names: every object of the table is embeddb's
# pgvector's documented HNSW defaults, for an index built without explicit options.
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}

ColumnKey = tuple[str, str, str]  # schema, table, column
TableKey = tuple[str, str]  # schema, table


@dataclass(frozen=True)
class IndexState:
    """An index as it is (or should be): access method, operator class and HNSW options."""

    method: str | None = None
    opclass: str | None = None
    m: int | None = None
    ef_construction: int | None = None
    #: None, "halfvec" or "binary": read from the operator class (the index's expression)
    quantize: str | None = None

    @classmethod
    def declared(cls, spec: EmbeddingSpec) -> IndexState:
        if spec.index is None:
            return cls()
        return cls(INDEX_METHOD, spec.index_opclass, spec.index.m,
                   spec.index.ef_construction, spec.index.quantize)

    @classmethod
    def actual(cls, conn: Connection, spec: EmbeddingSpec) -> IndexState:
        qualified = sql.Identifier(spec.schema, spec.index_name).as_string(None)
        row = conn.execute(sa.text(queries["index_state"]),
                           {"qualified_index": qualified}).one_or_none()
        if row is None:
            return cls()
        options = dict(option.split("=", 1) for option in row.options or [])
        if row.method != INDEX_METHOD:
            return cls(row.method, row.opclass)
        return cls(row.method, row.opclass,
                   int(options.get("m", HNSW_DEFAULTS["m"])),
                   int(options.get("ef_construction", HNSW_DEFAULTS["ef_construction"])),
                   _quantize_of(row.opclass, spec.vector_type))


def _quantize_of(opclass: str, vector_type: str) -> str | None:
    """How an index with ``opclass`` quantises a column of ``vector_type``."""
    if opclass.startswith("bit_"):
        return "binary"
    if opclass.startswith("halfvec_") and vector_type != "halfvec":
        return "halfvec"
    return None


def _actual_index(conn: Connection, entry: CatalogEntry) -> IndexState:
    deferred = conn.execute(sa.text(queries["index_is_deferred"]), {"column_id": entry.id}).scalar()
    # Set aside by the worker during a large backfill; it rebuilds it as the catalog says.
    return IndexState.declared(entry.spec) if deferred else IndexState.actual(conn, entry.spec)


def compare_embeddings(
    autogen_context: AutogenContext, upgrade_ops: alembic_ops.UpgradeOps
) -> PriorityDispatchResult:
    """The plugin's comparator: see the module docstring."""
    conn = autogen_context.connection
    if conn is None or autogen_context.metadata is None:
        return PriorityDispatchResult.CONTINUE
    default_schema = conn.dialect.default_schema_name or orm.current_schema(conn)
    declared = _declared(autogen_context, default_schema)
    installed = _installed(autogen_context, conn, default_schema)
    # a model change in progress or awaiting finish: its columns are embeddb's, and a
    # declaration of the model being built is already what the database is becoming
    changing = [e for e in catalog.list_entries(conn) if e.generation != generations.LIVE]
    upcoming = {(e.spec.schema, e.spec.table, generations.as_live(e).column): generations.as_live(e)
                for e in changing if e.generation == generations.NEXT}
    managed = _managed_names([*declared.values(), *(e.spec for e in installed.values()),
                              *(e.spec for e in changing)])
    theirs = _without_managed(upgrade_ops.ops, managed, default_schema)
    plan = _Plan(default_schema)
    for key in sorted(installed.keys() - declared.keys()):
        plan.drop(installed[key])
    for key in sorted(declared.keys() & installed.keys()):
        if upcoming.get(key) == declared[key]:
            continue
        plan.alter(declared[key], installed[key], _actual_index(conn, installed[key]))
    for key in sorted(declared.keys() - installed.keys()):
        plan.create(declared[key])
    first: list[MigrateOperation] = []
    if declared and migrate.current(conn) is None:
        first.append(CreateEmbeddbSchemaOp())
    theirs, later = _split_off_drops(theirs, plan.reads, default_schema)
    upgrade_ops.ops = [*first, *plan.drops, *theirs, *plan.changes, *later]
    if any(_is_pgvector(type_) for type_ in _types(upgrade_ops)):
        upgrade_ops.ops.append(ImportsOp([PGVECTOR_IMPORT]))
    return PriorityDispatchResult.CONTINUE


class _Plan:
    """embeddb's operations for one autogenerate run, and the columns altered ones read."""

    def __init__(self, default_schema: str) -> None:
        self.default_schema = default_schema
        self.drops: list[MigrateOperation] = []
        self.changes: list[MigrateOperation] = []
        self.reads: dict[TableKey, set[str]] = {}

    def drop(self, entry: CatalogEntry) -> None:
        spec = entry.spec
        self.drops.append(DropEmbeddingOp(spec.table, spec.column, Definition.from_spec(spec),
                                          schema=self._schema(spec)))

    def alter(self, spec: EmbeddingSpec, entry: CatalogEntry, actual: IndexState) -> None:
        change = _alter(spec, entry, actual, self._schema(spec))
        if change is not None:
            self.changes.append(change)
            old = entry.spec
            self.reads.setdefault((old.schema, old.table), set()).update(
                [*old.template.columns, *old.key_columns])

    def create(self, spec: EmbeddingSpec) -> None:
        self.changes.append(CreateEmbeddingOp(spec.table, spec.column,
                                              Definition.from_spec(spec),
                                              schema=self._schema(spec)))

    def _schema(self, spec: EmbeddingSpec) -> str | None:
        return _op_schema(spec.schema, self.default_schema)


def _compared(autogen_context: AutogenContext, schema: str, default_schema: str) -> bool:
    """Whether Alembic compares ``schema`` in this run (include_schemas and name filters)."""
    if schema == default_schema:
        return True
    return bool(autogen_context.opts.get("include_schemas")) and \
        autogen_context.run_name_filters(schema, "schema", {})


def _declared(
    autogen_context: AutogenContext, default_schema: str
) -> dict[ColumnKey, EmbeddingSpec]:
    declared: dict[ColumnKey, EmbeddingSpec] = {}
    for table in autogen_context.sorted_tables:
        schema = table.schema or default_schema
        if not _compared(autogen_context, schema, default_schema):
            continue
        if not autogen_context.run_object_filters(table, table.name, "table", False, None):
            continue
        for column in orm.embedded_columns(table):
            spec = orm.spec_for(column, default_schema)
            declared[(spec.schema, spec.table, spec.column)] = spec
    return declared


def _installed(
    autogen_context: AutogenContext, conn: Connection, default_schema: str
) -> dict[ColumnKey, CatalogEntry]:
    installed: dict[ColumnKey, CatalogEntry] = {}
    for entry in catalog.list_entries(conn):
        spec = entry.spec
        if entry.generation != generations.LIVE:
            continue
        if not _compared(autogen_context, spec.schema, default_schema):
            continue
        if not autogen_context.run_name_filters(
                spec.table, "table", {"schema_name": _op_schema(spec.schema, default_schema)}):
            continue
        installed[(spec.schema, spec.table, spec.column)] = entry
    return installed


def _alter(
    spec: EmbeddingSpec, entry: CatalogEntry, actual: IndexState, schema: str | None
) -> AlterEmbeddingOp | None:
    """The operation that turns the installed column into the declared one, if they differ."""
    old, identity = entry.spec, entry.identity
    changes: dict[str, Any] = {}
    existing: dict[str, Any] = {}

    def compare(name: str, wanted: Any, found: Any) -> None:
        if wanted != found:
            changes[name], existing[name] = wanted, found

    compare("template", spec.template.source, old.template.source)
    compare("key_columns", list(spec.key_columns), list(old.key_columns))
    compare("model", spec.model, identity.name)
    compare("dimensions", spec.dimensions, identity.dimensions)
    compare("normalize", spec.encode.normalize, identity.normalize)
    compare("query_prompt", spec.encode.query_prompt, identity.query_prompt)
    compare("document_prompt", spec.encode.document_prompt, identity.document_prompt)
    compare("backend", spec.encode.backend, old.encode.backend)
    compare("vector_type", spec.vector_type, old.vector_type)
    compare("distance", spec.distance.value, old.distance.value)
    compare("fulltext", spec.fulltext, old.fulltext)
    wanted = IndexState.declared(spec)
    compare("index_method", wanted.method, actual.method)
    # The operator class follows the distance and the quantisation; only one the catalog (or
    # the index's own quantisation, compared next) cannot explain is news.
    implied = actual.opclass in (None, old.index_opclass) or actual.quantize != wanted.quantize
    if wanted.opclass is not None and not implied:
        compare("opclass", wanted.opclass, actual.opclass)
    compare("m", wanted.m, actual.m)
    compare("ef_construction", wanted.ef_construction, actual.ef_construction)
    if wanted.method is not None:
        compare("quantize", wanted.quantize, actual.quantize)
    if spec.index is not None and spec.index.quantize == "binary":  # a search setting
        compare("rerank", spec.index.rerank, old.index.rerank if old.index else DEFAULT_RERANK)
    compare("chunks", chunks_argument(spec.chunking), chunks_argument(old.chunking))
    if not changes:
        return None
    return AlterEmbeddingOp(spec.table, spec.column, changes, existing, schema=schema)


def _op_schema(schema: str, default_schema: str) -> str | None:
    return None if schema == default_schema else schema


def _managed_names(specs: list[EmbeddingSpec]) -> dict[TableKey, set[str]]:
    """Per table, the column and index names that embeddb's operations own."""
    managed: dict[TableKey, set[str]] = {}
    for spec in specs:
        managed.setdefault((spec.schema, spec.table), set()).update(
            [spec.column, spec.hash_column, spec.index_name,
             *((spec.fulltext_column, spec.fulltext_index_name) if spec.fulltext else ())])
        if spec.chunking is not None:  # the chunk table is embeddb's as a whole
            managed.setdefault((spec.schema, spec.chunk_table), set()).add(_WHOLE_TABLE)
        # so are the BM25 postings, also while a migration that drops fulltext= has yet to run
        managed.setdefault((spec.schema, spec.postings_table), set()).add(_WHOLE_TABLE)
    return managed


def _without_managed(
    operations: list[MigrateOperation], managed: dict[TableKey, set[str]], default_schema: str
) -> list[MigrateOperation]:
    """Alembic's operations, minus those on objects embeddb manages."""
    kept: list[MigrateOperation] = []
    for op in operations:
        schema = getattr(op, "schema", None) or default_schema
        if schema == migrate.SCHEMA:
            continue  # embeddb's own tables, seen when include_schemas is on
        names = managed.get((schema, getattr(op, "table_name", "")), set())
        if _WHOLE_TABLE in names:
            continue
        if isinstance(op, alembic_ops.ModifyTableOps):
            op.ops = [inner for inner in op.ops if _object_name(inner) not in names]
            if op.ops:
                kept.append(op)
        elif isinstance(op, alembic_ops.CreateTableOp):
            op.columns = [c for c in op.columns
                          if not (isinstance(c, sa.Column) and c.name in names)]
            kept.append(op)
        elif isinstance(op, alembic_ops.DropTableOp) and names:
            create = op.reverse()
            create.columns = [c for c in create.columns
                              if not (isinstance(c, sa.Column) and c.name in names)]
            kept.append(create.reverse())
        else:
            kept.append(op)
    return kept


def _object_name(op: MigrateOperation) -> str | None:
    if isinstance(op, alembic_ops.AddColumnOp):
        return str(op.column.name)
    if isinstance(op, alembic_ops.DropColumnOp | alembic_ops.AlterColumnOp):
        return op.column_name
    if isinstance(op, alembic_ops.CreateIndexOp | alembic_ops.DropIndexOp):
        return str(op.index_name) if op.index_name is not None else None
    return None


def _split_off_drops(
    operations: list[MigrateOperation], reads: dict[TableKey, set[str]], default_schema: str
) -> tuple[list[MigrateOperation], list[MigrateOperation]]:
    """Alembic's operations without the drops of columns that an altered embedding still reads
    (its triggers depend on them), and those drops, to run once the alter is done."""
    kept: list[MigrateOperation] = []
    later: list[MigrateOperation] = []
    for op in operations:
        if isinstance(op, alembic_ops.ModifyTableOps):
            read = reads.get((op.schema or default_schema, op.table_name), set())
            moved = [inner for inner in op.ops
                     if isinstance(inner, alembic_ops.DropColumnOp) and inner.column_name in read]
            if moved:
                later.append(alembic_ops.ModifyTableOps(op.table_name, moved, schema=op.schema))
                op.ops = [inner for inner in op.ops if inner not in moved]
            if not op.ops:
                continue
        kept.append(op)
    return kept, later


def _types(container: alembic_ops.OpContainer) -> Iterator[Any]:
    """Every column type the rendered script will spell, upgrade and downgrade."""
    for op in container.ops:
        if isinstance(op, alembic_ops.OpContainer):
            yield from _types(op)
        elif isinstance(op, alembic_ops.CreateTableOp | alembic_ops.DropTableOp):
            yield from (column.type for column in op.to_table().columns)
        elif isinstance(op, alembic_ops.AddColumnOp):
            yield op.column.type
        elif isinstance(op, alembic_ops.DropColumnOp):
            yield op.to_column().type
        elif isinstance(op, alembic_ops.AlterColumnOp):
            yield from (op.modify_type, op.existing_type)


def _is_pgvector(type_: Any) -> bool:
    return type_ is not None and type(type_).__module__.startswith("pgvector.")
