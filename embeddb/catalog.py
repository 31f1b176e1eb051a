"""The catalog in embeddb's schema: installing embedded columns and reading them back.

The catalog row of a column is the single source of truth for what is embedded how; the worker
needs nothing else. ``install`` is idempotent and runs in the caller's transaction, so a failure
leaves the database as it was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from . import column_sql
from .database import ensure_pgvector
from .errors import ModelMismatch, SchemaError, SpecError
from .models import ModelIdentity, expected_identity
from .spec import Distance, EmbeddingSpec, EncodeOptions, HnswIndex
from .sql import queries, schema
from .template import Template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    """An installed embedded column: its catalog id, its spec and the model it was made with."""

    id: int
    spec: EmbeddingSpec
    identity: ModelIdentity

    @classmethod
    def from_row(cls, row: Row[Any]) -> CatalogEntry:
        options = row.index_options
        spec = EmbeddingSpec(
            schema=row.table_schema,
            table=row.table_name,
            column=row.column_name,
            key_columns=tuple(row.key_columns),
            template=Template.parse(row.template),
            model=row.model_name,
            dimensions=row.dimensions,
            distance=Distance(row.distance),
            index=HnswIndex(**options) if options else None,
            encode=EncodeOptions(row.normalize, row.query_prompt, row.document_prompt),
        )
        identity = ModelIdentity(
            name=row.model_name,
            fingerprint=row.model_fingerprint,
            dimensions=row.dimensions,
            normalize=row.normalize,
            query_prompt=row.query_prompt,
            document_prompt=row.document_prompt,
        )
        return cls(row.id, spec, identity)


def ensure_catalog(conn: Connection) -> None:
    """pgvector and embeddb's schema, created if missing. Serialised by an advisory lock."""
    conn.execute(sa.text(queries["lock_catalog"]))
    ensure_pgvector(conn)
    if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
        conn.exec_driver_sql(schema)


def get_entry(conn: Connection, schema_name: str, table: str, column: str) -> CatalogEntry | None:
    if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
        return None
    row = conn.execute(
        sa.text(queries["get_column"]), {"schema": schema_name, "table": table, "column": column}
    ).one_or_none()
    return CatalogEntry.from_row(row) if row is not None else None


def list_entries(conn: Connection) -> list[CatalogEntry]:
    if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
        return []
    return [CatalogEntry.from_row(row) for row in conn.execute(sa.text(queries["list_columns"]))]


def install(
    conn: Connection, spec: EmbeddingSpec, *, enqueue_existing: bool = True
) -> CatalogEntry:
    """Create (or bring up to date) everything ``spec`` needs, in the caller's transaction.

    Adds the vector and hash columns if the table lacks them, the render and trigger functions,
    the triggers, the HNSW index and the catalog row; then marks every row whose vector is
    missing or stale as pending. Refuses, changing nothing, if the column was embedded with a
    different model.
    """
    with conn.begin_nested():
        ensure_catalog(conn)
        _check_table(conn, spec)
        identity = expected_identity(spec.model, spec.encode)
        if identity.dimensions != spec.dimensions:
            raise SpecError(
                f"{spec.qualified_column} is declared with {spec.dimensions} dimensions but model"
                f" {spec.model} makes {identity.dimensions}-dim vectors; drop dimensions= or fix it"
            )
        existing = get_entry(conn, spec.schema, spec.table, spec.column)
        if existing is None:
            column_id = _insert_entry(conn, spec, identity)
        else:
            _check_same_model(existing, identity)
            column_id = existing.id
            _update_entry(conn, spec, column_id)
            if (existing.spec.index, existing.spec.distance) != (spec.index, spec.distance):
                conn.exec_driver_sql(column_sql.drop_index(existing.spec))
        for statement in _install_statements(spec, column_id):
            conn.exec_driver_sql(statement)
        entry = CatalogEntry(column_id, spec, identity)
        if enqueue_existing:
            queued = reconcile(conn, entry)
            if queued:
                log.info("%s: %d existing rows queued for embedding", spec.qualified_column, queued)
        return entry


def _install_statements(spec: EmbeddingSpec, column_id: int) -> list[str]:
    index = column_sql.create_index(spec)
    return [
        *column_sql.add_columns(spec),
        column_sql.create_render_function(spec, column_id),
        column_sql.create_enqueue_function(spec, column_id),
        *column_sql.create_triggers(spec, column_id),
        *([index] if index else []),
    ]


def uninstall(conn: Connection, spec: EmbeddingSpec, *, drop_columns: bool = False) -> bool:
    """Remove the triggers, functions, index and catalog row (and the columns if asked)."""
    entry = get_entry(conn, spec.schema, spec.table, spec.column)
    if entry is None:
        return False
    with conn.begin_nested():
        for statement in column_sql.drop_objects(entry.spec, entry.id, drop_columns):
            conn.exec_driver_sql(statement)
        conn.execute(sa.text(queries["delete_column"]), {"id": entry.id})
    return True


def reconcile(conn: Connection, entry: CatalogEntry) -> int:
    """Queue every row whose vector is missing or stale; returns how many were queued."""
    result = conn.exec_driver_sql(column_sql.enqueue_stale_rows(entry.spec, entry.id))
    if result.rowcount:
        conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": column_sql.NOTIFY_CHANNEL, "payload": str(entry.id)})
    return int(result.rowcount)


def check_model(entry: CatalogEntry, identity: ModelIdentity) -> None:
    """Raise ModelMismatch, naming both models, unless ``identity`` is the column's model."""
    _check_same_model(entry, identity)


def _check_same_model(entry: CatalogEntry, identity: ModelIdentity) -> None:
    differences = entry.identity.differences(identity)
    if differences:
        raise ModelMismatch(
            f"{entry.spec.qualified_column} was embedded with {entry.identity.describe()}, but the"
            f" model here is {identity.describe()} ({'; '.join(differences)}). Vectors from"
            " different models cannot be mixed: use the model the column was made with, or"
            " re-embed the column with the new one."
        )


def _check_table(conn: Connection, spec: EmbeddingSpec) -> None:
    columns = {
        row.name: row.type
        for row in conn.execute(
            sa.text(queries["table_columns"]), {"qualified_table": _quoted(spec)}
        )
    }
    if not columns:
        raise SchemaError(
            f"table {spec.qualified_table} does not exist; create it first"
            " (Base.metadata.create_all(engine) or a migration), then install the embedding"
        )
    needed = [*spec.key_columns, *spec.template.columns]
    missing = [name for name in needed if name not in columns]
    if missing:
        raise SchemaError(
            f"table {spec.qualified_table} has no column {', '.join(map(repr, missing))}, which"
            f" {spec.qualified_column} reads (template {spec.template.source!r}); its columns are"
            f" {', '.join(columns)}"
        )
    wanted = f"{spec.vector_type}({spec.dimensions})"
    actual = columns.get(spec.column)
    if actual is not None and actual != wanted:
        raise SchemaError(
            f"column {spec.qualified_column} is {actual}, but model {spec.model} needs {wanted};"
            " a dimension change needs a migration that re-embeds the column"
        )


def _quoted(spec: EmbeddingSpec) -> str:
    return column_sql.table(spec).as_string(None)


def _entry_params(spec: EmbeddingSpec) -> dict[str, Any]:
    index = spec.index
    return {
        "key_columns": list(spec.key_columns),
        "source_columns": list(spec.template.columns),
        "template": spec.template.source,
        "index_name": spec.index_name if index else None,
        "index_options": json.dumps(
            {"m": index.m, "ef_construction": index.ef_construction} if index else None
        ),
    }


def _insert_entry(conn: Connection, spec: EmbeddingSpec, identity: ModelIdentity) -> int:
    params = {
        **_entry_params(spec),
        "schema": spec.schema,
        "table": spec.table,
        "column": spec.column,
        "hash_column": spec.hash_column,
        "model_name": identity.name,
        "model_fingerprint": identity.fingerprint,
        "dimensions": identity.dimensions,
        "normalize": identity.normalize,
        "query_prompt": identity.query_prompt,
        "document_prompt": identity.document_prompt,
        "distance": spec.distance.value,
        "vector_type": spec.vector_type,
    }
    return int(conn.execute(sa.text(queries["insert_column"]), params).scalar_one())


def _update_entry(conn: Connection, spec: EmbeddingSpec, column_id: int) -> None:
    conn.execute(sa.text(queries["update_column"]), {**_entry_params(spec), "id": column_id})
