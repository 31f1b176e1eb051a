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

from . import alter_sql, chunk_sql, column_sql, fulltext_sql, migrate, privileges, verbatim
from .chunking import Chunking
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
    """An installed embedded column: its catalog id, its spec and the model it was made with.

    Example::

        with engine.connect() as conn:
            entry = embeddb.catalog.get_entry(conn, "public", "tickets", "embedding")
        entry.spec.model, entry.identity.fingerprint, entry.spec.dimensions
    """

    id: int
    spec: EmbeddingSpec
    identity: ModelIdentity
    #: ``live`` (what searches read), ``next`` or ``previous`` (see :mod:`embeddb.generations`)
    generation: str = "live"
    #: for a next or previous generation, the column name searches use
    generation_of: str | None = None

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
            encode=EncodeOptions(row.normalize, row.query_prompt, row.document_prompt,
                                 getattr(row, "backend", "torch")),
            vector_type=row.vector_type,
            chunking=Chunking.from_catalog(getattr(row, "chunking", None)),
            fulltext=getattr(row, "fulltext_config", None),
        )
        identity = ModelIdentity(
            name=row.model_name,
            fingerprint=row.model_fingerprint,
            dimensions=row.dimensions,
            normalize=row.normalize,
            query_prompt=row.query_prompt,
            document_prompt=row.document_prompt,
        )
        fields = row._mapping
        return cls(row.id, spec, identity, fields.get("generation", "live"),
                   fields.get("generation_of"))


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
    kept. A column embedded with a different model (or dimension, prompt, normalisation) is
    changed to ``spec``'s without a gap: the new vectors are built beside the live ones, which
    searches keep using until the worker swaps them in (:mod:`embeddb.generations`).
    """
    with conn.begin_nested():
        ensure_catalog(conn)
        identity = _identity(spec)
        existing = get_entry(conn, spec.schema, spec.table, spec.column)
        changing = existing is not None and (_vectors_differ(existing.identity, identity)
                                             or rechunks(existing.spec, spec))
        actual = _check_table(conn, spec, check_vector_type=not changing)
        if existing is not None and changing:
            from . import generations  # it builds on this module

            # another model: built beside the live vectors, which searches keep using
            generations.begin(conn, existing, spec, identity)
            return existing
        if existing is None:
            column_id = _insert_entry(conn, spec, identity)
        else:
            check_model(existing, identity)
            column_id = existing.id
            _update_entry(conn, spec, column_id)
            if (existing.spec.index, existing.spec.distance) != (spec.index, spec.distance):
                verbatim.execute(conn, column_sql.drop_index(existing.spec))
                verbatim.execute(conn, chunk_sql.drop_index(existing.spec))
            if existing.spec.chunking != spec.chunking:
                _change_chunking(conn, existing, spec)
        if actual is not None and actual != spec.column_type:
            _retype(conn, spec, actual)
        for statement in _install_statements(conn, spec, column_id):
            verbatim.execute(conn, statement)
        _install_chunks(conn, spec, column_id)
        _install_fulltext(conn, spec, column_id, existing.spec if existing else None)
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


def refresh_triggers(conn: Connection, entry: CatalogEntry, *, per_row: bool = False,
                     inbox: bool = True, ranges: bool = True) -> bool:
    """Re-create the column's trigger function and triggers as this embeddb writes them; for
    migrations that change them. Returns whether it did.

    ``per_row`` makes every trigger a row trigger, as embeddb made them before revision 0010;
    ``inbox=False`` queues every row in embeddb.pending, as before revision 0012;
    ``ranges=False`` writes no key ranges (embeddb.inbox_ranges), as before revision 0016.
    A column whose table is gone, or lacks a column the triggers watch, is left as it was with
    a warning that says why: one broken column must not stop the upgrade of the others.
    """
    spec = entry.spec
    if not table_exists(conn, spec):
        log.warning("%s: its table is gone; triggers left as they were", spec.qualified_column)
        return False
    try:
        with conn.begin_nested():
            _check_table(conn, spec, check_vector_type=False)
            partitioned = per_row or _partitioned(conn, spec)
            for statement in [column_sql.create_enqueue_function(spec, entry.id, inbox=inbox,
                                                                 ranges=ranges),
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
      new vectors are built beside the old ones as the column's next generation
      (:mod:`embeddb.generations`); searches use the old ones until the worker has made every
      new vector, then the two are swapped in one transaction. Altering back to the live
      definition while that runs (an Alembic downgrade) rolls the change back; any other
      change meanwhile raises :class:`~embeddb.errors.ModelChangeInProgress`. After the swap,
      the old vectors are kept until ``embeddb model finish`` or the next alteration. A new
      query prompt alone changes nothing stored.
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
        # another model or dimension (the identity covers both), or other chunks, is a new
        # generation
        reembed = _vectors_differ(existing.identity, identity) or rechunks(old, spec)
        changed = _change_generation(conn, existing, spec, identity, reembed)
        if changed is not None:
            return changed
        if rebuild_index or (old.index, old.distance) != (spec.index, spec.distance):
            verbatim.execute(conn, column_sql.drop_index(old))
            verbatim.execute(conn, chunk_sql.drop_index(old))
        if old.chunking is not None and old.vector_type != spec.vector_type:
            # chunk vectors of another type must not be reused by text hash
            for statement in chunk_sql.drop_objects(old, existing.id):
                verbatim.execute(conn, statement)
        rechunk = old.chunking != spec.chunking
        if rechunk:
            _change_chunking(conn, existing, spec)
        if actual is not None and actual != spec.column_type:
            _retype(conn, spec, actual)
        requeue = rechunk or (old.template, old.key_columns) != (spec.template, spec.key_columns)
        if requeue:
            # A fresh pending set: claims made for the old text or model must not complete it.
            conn.execute(sa.text(queries["forget_pending"]), {"id": existing.id})
        _update_entry(conn, spec, existing.id)
        _update_model(conn, spec, identity, existing.id)
        for statement in _install_statements(conn, spec, existing.id):
            verbatim.execute(conn, statement)
        _install_chunks(conn, spec, existing.id)
        _install_fulltext(conn, spec, existing.id, old)
        entry = CatalogEntry(existing.id, spec, identity)
        if requeue:
            queued = reconcile(conn, entry)
            log.info("%s: %d rows queued for embedding", spec.qualified_column, queued)
        return entry


def _change_generation(conn: Connection, live: CatalogEntry, spec: EmbeddingSpec,
                       identity: ModelIdentity, reembed: bool) -> CatalogEntry | None:
    """What ``alter`` does about generations: start a model change, keep the one asked for,
    roll one back, or refuse; None when ``spec`` is an ordinary alteration of a quiet column."""
    from . import generations  # it builds on this module

    others = generations.generations(conn, live)
    upcoming, previous = others.get("next"), others.get("previous")
    if upcoming is not None and generations.as_live(upcoming) == spec:
        return live  # the change in progress, asked for again
    if upcoming is not None and spec == live.spec:
        return generations.rollback(conn, live)  # back to what is live: e.g. a downgrade
    if previous is not None and generations.as_live(previous) == spec:
        return generations.rollback(conn, live)  # back to what was live before the swap
    if previous is not None and spec == live.spec:
        return live
    generations.refuse_if_changing(live, others)
    if previous is not None:  # a new change confirms the last one
        generations.finish(conn, live)
    if reembed:
        generations.begin(conn, live, spec, identity)
        return live
    return None


def uninstall(conn: Connection, spec: EmbeddingSpec, *, drop_columns: bool = False) -> bool:
    """Remove the triggers, functions, index and catalog row (and the columns if asked).

    Returns False when ``spec`` was not in the catalog; with ``drop_columns``, its index and
    columns are dropped all the same.
    """
    entry = get_entry(conn, spec.schema, spec.table, spec.column)
    if entry is None:
        if drop_columns:
            verbatim.execute(conn, column_sql.drop_index(spec))
            verbatim.execute(conn, column_sql.drop_vector_columns(spec))
        return False
    with conn.begin_nested():
        if entry.spec.chunking is not None:
            for statement in chunk_sql.drop_objects(entry.spec, entry.id):
                verbatim.execute(conn, statement)
        if entry.spec.fulltext is not None:
            for statement in fulltext_sql.drop_objects(entry.spec, entry.id, drop_columns):
                verbatim.execute(conn, statement)
        if entry.generation == "live":
            from . import generations  # it builds on this module

            for other in generations.generations(conn, entry).values():
                uninstall(conn, other.spec, drop_columns=True)
        for statement in column_sql.drop_objects(entry.spec, entry.id, drop_columns):
            verbatim.execute(conn, statement)
        # The queue has no foreign key to the catalog (it would cost every queued row a check).
        conn.execute(sa.text(queries["forget_pending"]), {"id": entry.id})
        conn.execute(sa.text(queries["delete_column"]), {"id": entry.id})
    return True


def _install_chunks(conn: Connection, spec: EmbeddingSpec, column_id: int, *,
                    with_index: bool = True) -> None:
    """A chunked column's chunk table, its index (unless the worker is to build it, as for a
    new generation) and the triggers that clear it; its catalog."""
    conn.execute(sa.text(queries["set_column_chunking"]), {
        "id": column_id,
        "chunking": spec.chunking.to_json() if spec.chunking else None,
        "chunk_table": spec.chunk_table if spec.chunking else None,
    })
    if spec.chunking is None:
        return
    types = {
        row.name: row.type
        for row in conn.execute(
            sa.text(queries["table_columns"]), {"qualified_table": column_sql.qualified_table(spec)}
        )
    }
    clashing = [name for name in spec.key_columns if name in chunk_sql.CHUNK_COLUMNS]
    if clashing:
        raise SpecError(
            f"{spec.qualified_column}: the key column {clashing[0]!r} has the name of a column"
            " of the chunk table; a chunked column needs a key with other names"
        )
    index = chunk_sql.create_index(spec) if with_index else None
    for statement in [
        chunk_sql.create_table(spec, types),
        *([index] if index else []),
        chunk_sql.create_cleanup_function(spec, column_id),
        *chunk_sql.create_cleanup_triggers(spec, column_id),
    ]:
        verbatim.execute(conn, statement)


def _change_chunking(conn: Connection, existing: CatalogEntry, spec: EmbeddingSpec) -> None:
    """New chunk settings: every row is split again; its old chunks serve searches meanwhile.

    Without chunking any more, the chunk table goes and the rows get one vector each again.
    """
    if spec.chunking is None:
        for statement in chunk_sql.drop_objects(existing.spec, existing.id):
            verbatim.execute(conn, statement)
    cleared = verbatim.execute(conn, chunk_sql.clear_source_hashes(spec)).rowcount
    log.info("%s: chunking changed (%s -> %s); %d rows will be split again",
             spec.qualified_column, existing.spec.chunking, spec.chunking, cleared)


def _install_fulltext(
    conn: Connection, spec: EmbeddingSpec, column_id: int, previous: EmbeddingSpec | None
) -> None:
    """The column's ``tsvector`` column and its GIN index, or neither.

    A new configuration or text (or a first install) writes every row's ``tsvector``; after
    that the worker writes a row's with its vector.
    """
    before = previous.fulltext if previous is not None else None
    if spec.fulltext is None:
        if before is not None and previous is not None:
            for statement in fulltext_sql.drop_objects(previous, column_id, drop_columns=True):
                verbatim.execute(conn, statement)
            _set_fulltext(conn, spec, column_id)
        return
    _check_fulltext_config(conn, spec)
    verbatim.execute(conn, fulltext_sql.add_column(spec))
    refill = before != spec.fulltext or previous is None or previous.template != spec.template
    if refill:
        # new, another configuration or another text: every row's tsvector now, and its
        # postings after it in one statement rather than by trigger, row by row
        for statement in fulltext_sql.drop_postings_triggers(spec):
            verbatim.execute(conn, statement)
        verbatim.execute(conn, fulltext_sql.fill(spec, column_id))
    verbatim.execute(conn, fulltext_sql.create_index(spec))
    install_postings(conn, spec, column_id, refill=refill)
    _set_fulltext(conn, spec, column_id)


def install_postings(conn: Connection, spec: EmbeddingSpec, column_id: int, *,
                     refill: bool = False) -> None:
    """The column's BM25 postings table, written from the stored ``tsvector`` s if it is new
    (or ``refill``), and the triggers that keep it in step with them."""
    assert spec.fulltext is not None
    clashing = [name for name in spec.key_columns if name in fulltext_sql.POSTINGS_COLUMNS]
    if clashing:
        raise SpecError(
            f"{spec.qualified_column}: the key column {clashing[0]!r} has the name of a column"
            " of the full-text postings table; fulltext= needs a key with other names"
        )
    types = {
        row.name: row.type
        for row in conn.execute(
            sa.text(queries["table_columns"]), {"qualified_table": column_sql.qualified_table(spec)}
        )
    }
    new = conn.execute(sa.select(sa.func.to_regclass(
        fulltext_sql.qualified_postings_table(spec)))).scalar() is None
    verbatim.execute(conn, fulltext_sql.create_postings(spec, types))
    if new or refill:
        for statement in fulltext_sql.drop_postings_triggers(spec):
            verbatim.execute(conn, statement)
        for statement in fulltext_sql.fill_postings(spec):
            verbatim.execute(conn, statement)
    for statement in [fulltext_sql.create_postings_function(spec, column_id),
                      *fulltext_sql.create_postings_triggers(spec, column_id)]:
        verbatim.execute(conn, statement)


def _set_fulltext(conn: Connection, spec: EmbeddingSpec, column_id: int) -> None:
    conn.execute(sa.text(queries["set_fulltext"]), {
        "id": column_id, "config": spec.fulltext,
        "fulltext_column": spec.fulltext_column if spec.fulltext else None,
    })


def _check_fulltext_config(conn: Connection, spec: EmbeddingSpec) -> None:
    assert spec.fulltext is not None
    schema, _, name = spec.fulltext.rpartition(".")
    known = conn.execute(sa.text(queries["fulltext_config_exists"]),
                         {"name": name, "schema": schema or None}).scalar()
    if not known:
        raise SpecError(
            f"{spec.qualified_column}: fulltext={spec.fulltext!r} is not a text search"
            " configuration this database knows (SELECT cfgname FROM pg_ts_config lists them,"
            " e.g. 'english', 'simple')"
        )


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
    if not table_exists(conn, spec):
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
    """Raise ModelMismatch, naming the column and both models, unless ``identity`` is the
    column's model."""
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


def rechunks(old: EmbeddingSpec, new: EmbeddingSpec) -> bool:
    """Whether ``new`` cuts a chunked column's texts into other chunks (size or overlap): a new
    generation, built beside the live chunks, which searches keep using until the swap. Chunking
    turned on or off, or only ``max_chars`` changed, is altered in place."""
    if old.chunking is None or new.chunking is None:
        return False
    return ((old.chunking.max_tokens, old.chunking.overlap)
            != (new.chunking.max_tokens, new.chunking.overlap))


def _vectors_differ(old: ModelIdentity, new: ModelIdentity) -> bool:
    """Whether vectors made by ``old`` are not what ``new`` makes (the query prompt is no part)."""
    return replace(old, query_prompt=None) != replace(new, query_prompt=None)


def _retype(conn: Connection, spec: EmbeddingSpec, actual: str) -> None:
    """Cast the column to ``spec``'s vector type; the install statements rebuild the index."""
    verbatim.execute(conn, column_sql.drop_index(spec))
    verbatim.execute(conn, alter_sql.retype_vector(spec))
    log.info("%s: converted from %s to %s, stored vectors kept", spec.qualified_column, actual,
             spec.column_type)


def table_exists(conn: Connection, spec: EmbeddingSpec) -> bool:
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
    wanted = spec.column_type
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
            {"m": index.m, "ef_construction": index.ef_construction,
             **({"quantize": index.quantize, "rerank": index.rerank} if index.quantize else {})}
            if index else None
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
    column_id = int(conn.execute(sa.text(queries["insert_column"]), params).scalar_one())
    _set_backend(conn, spec, column_id)
    return column_id


def _update_entry(conn: Connection, spec: EmbeddingSpec, column_id: int) -> None:
    conn.execute(sa.text(queries["update_column"]), {**_entry_params(spec), "id": column_id})
    _set_backend(conn, spec, column_id)


def _set_backend(conn: Connection, spec: EmbeddingSpec, column_id: int) -> None:
    """Record the backend: a float32 one changes no vector, so it is not in the identity."""
    conn.execute(sa.text(queries["set_column_backend"]),
                 {"id": column_id, "backend": spec.encode.backend})


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
