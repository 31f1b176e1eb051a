"""The catalog in embeddb's schema: installing, altering and removing embedded columns.

The catalog row of a column is the single source of truth for what is embedded how; the worker
needs nothing else. ``install``, ``alter`` and ``uninstall`` run in the caller's transaction,
so a failure leaves the database as it was. The schema itself comes from embeddb's migrations
(:mod:`embeddb.migrate`), applied on first use by :func:`ensure_catalog`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from . import alter_sql, column_sql, migrate, privileges, verbatim
from .database import ensure_pgvector
from .embedders import ModelIdentity, expected_identity
from .errors import ModelMismatch, SchemaError, SpecError
from .rendering import render_context
from .spec import VECTOR_TYPES, Distance, EmbeddingSpec, EncodeOptions, HnswIndex
from .sql import queries
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
            vector_type=row.vector_type,
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
    """pgvector and embeddb's schema at this embeddb's revision, migrated if missing or older.

    Serialised by an advisory lock held until the transaction ends, so concurrent callers
    migrate once and the others find it done; a database already at head costs a few queries.
    """
    conn.execute(sa.text(queries["lock_catalog"]))
    ensure_pgvector(conn)
    if migrate.current(conn) != migrate.head():
        migrate.upgrade(conn)


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
    missing or stale as pending. A column stored as the other vector type (``vector`` or
    ``halfvec``) of the same dimension is converted and its index rebuilt; its vectors are
    kept. Refuses, changing nothing, if the column was embedded with a different model.
    """
    with conn.begin_nested():
        ensure_catalog(conn)
        actual = _check_table(conn, spec)
        identity = _identity(spec)
        existing = get_entry(conn, spec.schema, spec.table, spec.column)
        if existing is None:
            column_id = _insert_entry(conn, spec, identity)
        else:
            _check_same_model(existing, identity)
            column_id = existing.id
            _update_entry(conn, spec, column_id)
            if (existing.spec.index, existing.spec.distance) != (spec.index, spec.distance):
                verbatim.execute(conn, column_sql.drop_index(existing.spec))
        if actual is not None and actual != _column_type(spec):
            _retype(conn, spec, actual)
        for statement in _install_statements(conn, spec, column_id):
            verbatim.execute(conn, statement)
        entry = CatalogEntry(column_id, spec, identity)
        if enqueue_existing:
            queued = reconcile(conn, entry)
            if queued:
                log.info("%s: %d existing rows queued for embedding", spec.qualified_column, queued)
        return entry


def _install_statements(conn: Connection, spec: EmbeddingSpec, column_id: int) -> list[str]:
    index = column_sql.create_index(spec)
    return [
        *column_sql.add_columns(spec),
        _render_function(conn, spec, column_id),
        column_sql.create_enqueue_function(spec, column_id),
        *column_sql.create_triggers(spec, column_id, partitioned=_partitioned(conn, spec)),
        *([index] if index else []),
    ]


def _partitioned(conn: Connection, spec: EmbeddingSpec) -> bool:
    return bool(conn.execute(sa.text(queries["table_is_partitioned"]),
                             {"table": column_sql.qualified_table(spec)}).scalar())


def refresh_triggers(conn: Connection, entry: CatalogEntry, *, per_row: bool = False) -> bool:
    """Re-create the column's trigger function and triggers as this embeddb writes them; for
    migrations that change them. Returns whether it did.

    ``per_row`` makes every trigger a row trigger, as embeddb made them before revision 0010.
    A column whose table is gone, or lacks a column the triggers watch, is left as it was with
    a warning that says why: one broken column must not stop the upgrade of the others.
    """
    spec = entry.spec
    if not _table_exists(conn, spec):
        log.warning("%s: its table is gone; triggers left as they were", spec.qualified_column)
        return False
    try:
        with conn.begin_nested():
            _check_table(conn, spec, check_vector_type=False)
            partitioned = per_row or _partitioned(conn, spec)
            for statement in [column_sql.create_enqueue_function(spec, entry.id),
                              *column_sql.create_triggers(spec, entry.id,
                                                          partitioned=partitioned)]:
                verbatim.execute(conn, statement)
            return True
    except SchemaError as exc:
        log.warning("%s: triggers left as they were: %s", spec.qualified_column, exc)
        return False


def _render_function(conn: Connection, spec: EmbeddingSpec, column_id: int) -> str:
    """The render function's DDL, pinning the session's settings if the source columns need it."""
    context = render_context(conn, column_sql.qualified_table(spec), spec.template.columns)
    return column_sql.create_render_function(spec, column_id, context)


def alter(conn: Connection, spec: EmbeddingSpec, *, rebuild_index: bool = False) -> CatalogEntry:
    """Change an installed column to ``spec``, in the caller's transaction; the worker catches up.

    * A new template or key: the render and trigger functions are replaced and every row whose
      text changed is queued. Its old vector stays until the worker replaces it.
    * A new model identity (name, weights, normalisation, document prompt) or dimension: the
      stored vectors come from another model and cannot be compared with the new model's
      queries, so they are cleared (NULL, with their hashes) and every row with text is queued.
      A new dimension changes the column type (``vector(n) USING NULL``). Until the worker is
      done, search finds the rows already re-embedded. A new query prompt alone changes nothing
      stored.
    * A new vector type (``vector`` <-> ``halfvec``) of the same dimension: the column is cast
      and its index rebuilt for the new type; the vectors are kept, nothing is re-embedded.
    * A new distance or index parameters, or ``rebuild_index``: the HNSW index is rebuilt.
    """
    with conn.begin_nested():
        ensure_catalog(conn)
        existing = get_entry(conn, spec.schema, spec.table, spec.column)
        if existing is None:
            raise SchemaError(
                f"{spec.qualified_column} is not an embedded column, so it cannot be altered;"
                " create it first (op.create_embedding or embeddb.install)"
            )
        actual = _check_table(conn, spec, check_vector_type=False)
        identity = _identity(spec)
        old = existing.spec
        resize = old.dimensions != spec.dimensions
        reembed = _vectors_differ(existing.identity, identity)
        if rebuild_index or resize or (old.index, old.distance) != (spec.index, spec.distance):
            verbatim.execute(conn, column_sql.drop_index(old))
        if resize:
            verbatim.execute(conn, alter_sql.resize_vector(spec))
        elif actual is not None and actual != _column_type(spec):
            _retype(conn, spec, actual)
        if reembed:
            cleared = verbatim.execute(conn, alter_sql.clear_vectors(spec)).rowcount
            log.warning("%s: model changed (%s); %d stored vectors cleared for re-embedding",
                        spec.qualified_column, "; ".join(existing.identity.differences(identity)),
                        cleared)
        requeue = reembed or (old.template, old.key_columns) != (spec.template, spec.key_columns)
        if requeue:
            # A fresh pending set: claims made for the old text or model must not complete it.
            conn.execute(sa.text(queries["forget_pending"]), {"id": existing.id})
        _update_entry(conn, spec, existing.id)
        _update_model(conn, spec, identity, existing.id)
        for statement in _install_statements(conn, spec, existing.id):
            verbatim.execute(conn, statement)
        entry = CatalogEntry(existing.id, spec, identity)
        if requeue:
            queued = reconcile(conn, entry)
            log.info("%s: %d rows queued for embedding", spec.qualified_column, queued)
        return entry


def uninstall(conn: Connection, spec: EmbeddingSpec, *, drop_columns: bool = False) -> bool:
    """Remove the triggers, functions, index and catalog row (and the columns if asked).

    Returns False when ``spec`` was not in the catalog; with ``drop_columns``, its index and
    columns are dropped all the same.
    """
    entry = get_entry(conn, spec.schema, spec.table, spec.column)
    if entry is None:
        if drop_columns:
            verbatim.execute(conn, column_sql.drop_index(spec))
            verbatim.execute(conn, alter_sql.drop_vector_columns(spec))
        return False
    with conn.begin_nested():
        for statement in column_sql.drop_objects(entry.spec, entry.id, drop_columns):
            verbatim.execute(conn, statement)
        # The queue has no foreign key to the catalog (it would cost every queued row a check).
        conn.execute(sa.text(queries["forget_pending"]), {"id": entry.id})
        conn.execute(sa.text(queries["delete_column"]), {"id": entry.id})
    return True


def reconcile(conn: Connection, entry: CatalogEntry) -> int:
    """Queue every row whose vector is missing or stale; returns how many were queued.

    Raises :class:`~embeddb.errors.PrivilegeError`, naming the privileges, when the role may
    not read the table or add to embeddb's queue (the caller's transaction stays usable). Under
    row-level security only the rows the role can see are queued; a warning says so.
    """
    table = column_sql.qualified_table(entry.spec)
    try:
        with conn.begin_nested():
            result = verbatim.execute(conn, column_sql.enqueue_stale_rows(entry.spec, entry.id))
    except sa.exc.ProgrammingError as exc:
        if not privileges.is_permission_error(exc):
            raise
        error = privileges.privilege_error(conn, exc, privileges.reconcile_needs(entry.spec),
                                           f"reconcile {entry.spec.qualified_column}")
        if error is None:
            raise
        raise error from exc
    hidden = conn.execute(sa.text(queries["row_security_active"]), {"table": table}).one()
    if hidden.active:
        log.warning("%s: row-level security on %s applies to role %s: rows it hides were not"
                    " checked", entry.spec.qualified_column, hidden.table_name, hidden.role)
    if result.rowcount:
        conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": column_sql.NOTIFY_CHANNEL, "payload": str(entry.id)})
    return int(result.rowcount)


def refresh_render_function(conn: Connection, entry: CatalogEntry) -> int:
    """Re-create the column's render function as this embeddb writes it, and queue the rows
    whose text that changes; returns how many. For migrations that change how text renders.

    A column whose table is gone, or lacks a column the template reads, is left as it was with
    a warning that says why: one broken column must not stop the upgrade of the others.
    """
    spec = entry.spec
    if not _table_exists(conn, spec):
        log.warning("%s: its table is gone; render function left as it was", spec.qualified_column)
        return 0
    try:
        with conn.begin_nested():
            _check_table(conn, spec, check_vector_type=False)
            verbatim.execute(conn, _render_function(conn, spec, entry.id))
            return reconcile(conn, entry)
    except SchemaError as exc:
        log.warning("%s: render function left as it was: %s", spec.qualified_column, exc)
        return 0


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


def _identity(spec: EmbeddingSpec) -> ModelIdentity:
    try:
        identity = expected_identity(spec.model, spec.encode, spec.dimensions)
    except SpecError as exc:
        raise SpecError(f"{spec.qualified_column}: {exc}") from exc
    if identity.dimensions != spec.dimensions:
        raise SpecError(
            f"{spec.qualified_column} is declared with {spec.dimensions} dimensions but model"
            f" {spec.model} makes {identity.dimensions}-dim vectors; drop dimensions= or fix it"
        )
    return identity


def _vectors_differ(old: ModelIdentity, new: ModelIdentity) -> bool:
    """Whether vectors made by ``old`` are not what ``new`` makes (the query prompt is no part)."""
    return replace(old, query_prompt=None) != replace(new, query_prompt=None)


def _retype(conn: Connection, spec: EmbeddingSpec, actual: str) -> None:
    """Cast the column to ``spec``'s vector type; the install statements rebuild the index."""
    verbatim.execute(conn, column_sql.drop_index(spec))
    verbatim.execute(conn, alter_sql.retype_vector(spec))
    log.info("%s: converted from %s to %s, stored vectors kept", spec.qualified_column, actual,
             _column_type(spec))


def _column_type(spec: EmbeddingSpec) -> str:
    """The vector column's type as ``format_type`` spells it: ``vector(384)``."""
    return f"{spec.vector_type}({spec.dimensions})"


def _table_exists(conn: Connection, spec: EmbeddingSpec) -> bool:
    return bool(conn.execute(sa.text(queries["table_exists"]),
                             {"qualified_table": column_sql.qualified_table(spec)}).scalar())


def _check_table(
    conn: Connection, spec: EmbeddingSpec, *, check_vector_type: bool = True
) -> str | None:
    """Refuse a table that lacks what ``spec`` reads; returns the vector column's type, if any.

    A vector column of the same dimension but the other vector type passes: a cast converts it.
    """
    columns = {
        row.name: row.type
        for row in conn.execute(
            sa.text(queries["table_columns"]), {"qualified_table": column_sql.qualified_table(spec)}
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
    wanted = _column_type(spec)
    actual: str | None = columns.get(spec.column)
    castable = {f"{vector_type}({spec.dimensions})" for vector_type in VECTOR_TYPES}
    if check_vector_type and actual is not None and actual not in castable:
        raise SchemaError(
            f"column {spec.qualified_column} is {actual}, but model {spec.model} needs {wanted};"
            " a dimension change needs a migration that re-embeds the column"
        )
    return actual


def _entry_params(spec: EmbeddingSpec) -> dict[str, Any]:
    index = spec.index
    return {
        "key_columns": list(spec.key_columns),
        "source_columns": list(spec.template.columns),
        "template": spec.template.source,
        "distance": spec.distance.value,
        "vector_type": spec.vector_type,
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
        **_identity_params(identity),
    }
    return int(conn.execute(sa.text(queries["insert_column"]), params).scalar_one())


def _update_entry(conn: Connection, spec: EmbeddingSpec, column_id: int) -> None:
    conn.execute(sa.text(queries["update_column"]), {**_entry_params(spec), "id": column_id})


def _update_model(
    conn: Connection, spec: EmbeddingSpec, identity: ModelIdentity, column_id: int
) -> None:
    conn.execute(sa.text(queries["update_column_model"]), {
        "id": column_id, **_identity_params(identity), "distance": spec.distance.value,
    })


def _identity_params(identity: ModelIdentity) -> dict[str, Any]:
    """The catalog's model columns, as query parameters."""
    return {
        "model_name": identity.name,
        "model_fingerprint": identity.fingerprint,
        "dimensions": identity.dimensions,
        "normalize": identity.normalize,
        "query_prompt": identity.query_prompt,
        "document_prompt": identity.document_prompt,
    }
