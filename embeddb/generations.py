"""Blue/green model changes: a column's next generation of vectors, built beside the live one.

Changing a column's model, dimensions, prompts or normalisation makes vectors that cannot be
compared with the stored ones, and changing a chunked column's chunk size or overlap makes
other chunks. Instead of clearing them, embeddb adds a *generation*:

* **next**: a second catalog row for the same column, with its own vector and hash columns in
  the same table (``embedding__next``, ``embedding__next_source_hash``), its own render and
  trigger functions and, once filled, its own HNSW index; a chunked column's also has its own
  chunk table (``<table>_embedding__next_chunks``). To the worker it is one more column:
  the same claims, guard, retries and parking; every write to the table fires both columns'
  triggers in its own transaction, so rows written during the change are queued for both.
  Searches keep reading ``embedding`` with the live generation's model.
* **swap**: when the next generation has nothing pending (parked rows included) and its index
  is built, one transaction takes the table's ACCESS EXCLUSIVE lock (waiting at most
  :data:`SWAP_LOCK_TIMEOUT` for running searches, else retried later), renames the columns and
  the index (``embedding`` -> ``embedding__previous``, ``embedding__next`` -> ``embedding``)
  and updates both catalog rows. Renames touch only PostgreSQL's catalog: the swap takes
  milliseconds whatever the table's size. Query helpers read the live generation's id under
  the table's ACCESS SHARE lock (``embeddb.live_column_id``), so a search embeds its text with
  the model whose vectors it then reads, before or after a swap, never across one.
* **previous**: the old vectors, still kept current by their triggers, until
  :func:`finish` drops them, :func:`rollback` swaps them back, or the next change (of the
  model or anything else) confirms the swap and drops them.

Columns in the same table rather than a shadow table: the worker, the triggers and the
stale-write guard work unchanged (a shadow table would need its own triggers, a join in every
search and a copy at the swap), and the swap is a rename. The cost is one more vector per row
for the duration of the change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.engine import Connection, Engine

from . import alter_sql, catalog, chunk_sql, column_sql, grants, verbatim
from .catalog import CatalogEntry
from .embedders import ModelIdentity
from .errors import ModelChangeInProgress, SchemaError
from .spec import EmbeddingSpec, generation_column_name
from .sql import queries

log = logging.getLogger(__name__)

LIVE, NEXT, PREVIOUS = "live", "next", "previous"
#: How long a swap waits for running searches to let go of the table before trying later.
SWAP_LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class Progress:
    """How far a next generation has got: rows of the table, rows still to embed, the rate."""

    total: int
    remaining: int
    rows_per_second: float

    @property
    def done(self) -> int:
        return max(self.total - self.remaining, 0)

    @property
    def share(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def eta_seconds(self) -> float | None:
        if self.remaining == 0:
            return 0.0
        return self.remaining / self.rows_per_second if self.rows_per_second > 0 else None


def generations(conn: Connection, live: CatalogEntry) -> dict[str, CatalogEntry]:
    """The live column's ``next`` and ``previous`` generations, by name (empty: no change)."""
    spec = live.spec
    rows = conn.execute(sa.text(queries["column_generations"]),
                        {"schema": spec.schema, "table": spec.table, "column": spec.column})
    return {entry.generation: entry for entry in map(CatalogEntry.from_row, rows)}


def as_live(entry: CatalogEntry) -> EmbeddingSpec:
    """A next or previous generation's spec as it reads when live (under the column's name)."""
    assert entry.generation_of is not None
    return replace(entry.spec, column=entry.generation_of)


def begin(conn: Connection, live: CatalogEntry, target: EmbeddingSpec,
          identity: ModelIdentity) -> CatalogEntry:
    """Start building ``target``'s vectors beside ``live``'s; returns the next generation.

    In the caller's transaction: adds the columns, functions, triggers and catalog row and
    queues every row with text. The index is built by the worker once the rows are embedded.
    Asking again for the change in progress returns it; any other change while one is in
    progress raises :class:`~embeddb.errors.ModelChangeInProgress`. A previous generation
    kept from a change already swapped in is dropped first (:func:`finish`): a new change
    confirms the last one.
    """
    others = generations(conn, live)
    upcoming = others.get(NEXT)
    if upcoming is not None and as_live(upcoming) == target and upcoming.identity == identity:
        return upcoming
    refuse_if_changing(live, others)
    if PREVIOUS in others:  # a new change confirms the last one
        finish(conn, live)
    spec = replace(target, column=generation_column_name(target.column, NEXT))
    _check_free(conn, spec)
    column_id = catalog._insert_entry(conn, spec, identity)
    conn.execute(sa.text(queries["start_generation"]), {
        "id": column_id, "generation_of": target.column, "index_deferred": spec.index is not None,
    })
    render = catalog._render_function(conn, spec, column_id)
    for statement in [*column_sql.add_columns(spec), render,
                      column_sql.create_enqueue_function(spec, column_id),
                      *column_sql.create_triggers(
                          spec, column_id, partitioned=catalog._partitioned(conn, spec))]:
        verbatim.execute(conn, statement)
    # a chunked column: its own chunk table, indexed by the worker with the rest
    catalog._install_chunks(conn, spec, column_id, with_index=False)
    grants.carry_to_next_generation(conn, live.spec, spec)  # a least-privilege worker fills it
    entry = CatalogEntry(column_id, spec, identity, NEXT, target.column)
    queued = catalog.reconcile(conn, entry)
    differences = live.identity.differences(identity)
    if catalog.rechunks(live.spec, target):  # e.g. Chunking()'s default changed in an upgrade
        differences.append(f"chunks {_chunk_settings(live.spec)} vs {_chunk_settings(target)}")
    # a change of chunk settings alone keeps the model: say what changes, not "model change"
    change = (f"model change to {identity.describe()}" if live.identity != identity
              else "change of chunk settings")
    log.warning("%s: %s started (%s); %d rows queued for %s, searches use %s until it is"
                " complete", live.spec.qualified_column, change,
                "; ".join(differences) or "same model", queued, spec.column, live.spec.column)
    return entry


def _chunk_settings(spec: EmbeddingSpec) -> str:
    chunking = spec.chunking
    return "none" if chunking is None else (
        f"max_tokens={chunking.max_tokens}, overlap={chunking.overlap}")


def refuse_if_changing(live: CatalogEntry, others: dict[str, CatalogEntry]) -> None:
    """Raise ModelChangeInProgress if ``live`` has a change under way (not yet swapped in)."""
    name = f"{live.spec.table}.{live.spec.column}"
    if NEXT in others:
        raise ModelChangeInProgress(
            f"{live.spec.qualified_column} is already changing from {live.identity.describe()}"
            f" to {others[NEXT].identity.describe()}; wait until it is swapped in (embeddb"
            f" status shows its progress), or cancel it first: embeddb model rollback {name}")


def swap_if_complete(engine: Engine, entry: CatalogEntry) -> bool:
    """Swap a next generation in if nothing of it is pending and its index is built.

    True if this call swapped. Waits at most :data:`SWAP_LOCK_TIMEOUT` for searches holding
    the table; the next call tries again.
    """
    if entry.generation != NEXT or entry.generation_of is None:
        return False
    try:
        with engine.begin() as conn:
            if not _complete(conn, entry):
                return False
            conn.execute(sa.text(queries["set_lock_timeout"]), {"timeout": SWAP_LOCK_TIMEOUT})
            verbatim.execute(conn, alter_sql.lock_exclusively(entry.spec))
            if not _complete(conn, entry):  # a write queued a row before the lock was ours
                return False
            live = catalog.get_entry(conn, entry.spec.schema, entry.spec.table,
                                     entry.generation_of)
            if live is None:
                raise SchemaError(f"{entry.spec.qualified_column} is the next generation of"
                                  f" {entry.generation_of}, which is no longer installed")
            _exchange(conn, live, entry, PREVIOUS)
    except sa.exc.OperationalError as exc:
        if isinstance(exc.orig, pg_errors.LockNotAvailable):
            log.info("%s: searches hold the table; swap tried again later",
                     entry.spec.qualified_column)
            return False
        raise
    log.warning("%s: swapped in: searches now use %s; the old vectors are kept as %s until"
                " embeddb model finish (or rollback)", entry.spec.qualified_table,
                entry.identity.describe(), generation_column_name(entry.generation_of, PREVIOUS))
    return True


def finish(conn: Connection, live: CatalogEntry) -> CatalogEntry:
    """Drop the previous generation kept after a swap; returns it. In the caller's transaction.

    Raises SchemaError when there is none, ModelChangeInProgress while the change is building.
    """
    others = generations(conn, live)
    previous = others.get(PREVIOUS)
    if previous is None:
        if NEXT in others:
            raise ModelChangeInProgress(
                f"{live.spec.qualified_column}: the change to {others[NEXT].identity.describe()}"
                " is still being built; it is swapped in when complete, then finish drops the"
                " old vectors (or rollback cancels it now)")
        raise SchemaError(f"{live.spec.qualified_column} has no model change to finish")
    catalog.uninstall(conn, previous.spec, drop_columns=True)
    log.info("%s: previous vectors (%s) dropped", live.spec.qualified_column,
             previous.identity.describe())
    return previous


def rollback(conn: Connection, live: CatalogEntry) -> CatalogEntry:
    """Undo the column's model change; returns the generation that is live afterwards.

    Before the swap, the next generation is dropped and the column is as it was; after it
    (before ``finish``), the previous generation, kept current meanwhile, is swapped back in
    and the new one dropped. In the caller's transaction.
    """
    others = generations(conn, live)
    if NEXT in others:
        catalog.uninstall(conn, others[NEXT].spec, drop_columns=True)
        log.info("%s: model change to %s rolled back", live.spec.qualified_column,
                 others[NEXT].identity.describe())
        return live
    previous = others.get(PREVIOUS)
    if previous is None:
        raise SchemaError(f"{live.spec.qualified_column} has no model change to roll back")
    verbatim.execute(conn, alter_sql.lock_exclusively(live.spec))
    restored, dropped = _exchange(conn, live, previous, NEXT)
    catalog.uninstall(conn, dropped.spec, drop_columns=True)
    log.info("%s: back to %s", live.spec.qualified_column, restored.identity.describe())
    return restored


def progress(conn: Connection, entry: CatalogEntry, remaining: int) -> Progress:
    """The progress of a next generation with ``remaining`` rows queued (status counts them)."""
    total = int(verbatim.execute(conn, column_sql.count_rows(entry.spec)).scalar_one())
    rate = float(conn.execute(sa.text(queries["generation_rate"]),
                              {"column_id": entry.id}).scalar_one())
    return Progress(total, remaining, rate)


def _complete(conn: Connection, entry: CatalogEntry) -> bool:
    state = conn.execute(sa.text(queries["lock_generation"]),
                         {"column_id": entry.id}).one_or_none()
    if state is None or state.generation != NEXT or state.index_deferred:
        return False
    backlog = conn.execute(sa.text(queries["generation_backlog"]), {"column_id": entry.id})
    return int(backlog.scalar_one()) == 0


def _exchange(conn: Connection, live: CatalogEntry, other: CatalogEntry,
              retired_as: str) -> tuple[CatalogEntry, CatalogEntry]:
    """Make ``other`` live and ``live`` the ``retired_as`` generation, in the caller's
    transaction (which holds the table exclusively); returns (now live, now retired)."""
    base = live.spec.column
    table = column_sql.qualified_table(live.spec)
    for entry in (live, other):
        names = [*column_sql.trigger_names(entry.spec).values(),
                 *(chunk_sql.trigger_names(entry.spec).values() if entry.spec.chunking else [])]
        for name in names:
            verbatim.execute(conn, column_sql.drop_trigger(name, table))
    aside = replace(other.spec, column=generation_column_name(base, "swap"))
    retired = replace(live.spec, column=generation_column_name(base, retired_as))
    promoted = replace(other.spec, column=base)
    for statement in [*alter_sql.rename_vector_columns(other.spec, aside),
                      *alter_sql.rename_vector_columns(live.spec, retired),
                      *alter_sql.rename_vector_columns(aside, promoted),
                      # chunk tables: the live one's name is free once it is retired
                      *(chunk_sql.rename(live.spec, retired) if live.spec.chunking else []),
                      *(chunk_sql.rename(other.spec, promoted) if other.spec.chunking else [])]:
        verbatim.execute(conn, statement)
    # the retired row first: the column name it gives up is the one the promoted row takes
    for column_id, spec, generation, of in ((live.id, retired, retired_as, base),
                                            (other.id, promoted, LIVE, None)):
        conn.execute(sa.text(queries["set_generation"]), {
            "id": column_id, "column": spec.column, "hash_column": spec.hash_column,
            "index_name": spec.index_name if spec.index else None,
            "generation": generation, "generation_of": of,
        })
        # the trigger function names the hash column, which has just been renamed; the
        # chunk cleanup function names the chunk table, also renamed
        chunks = ([chunk_sql.create_cleanup_function(spec, column_id),
                   *chunk_sql.create_cleanup_triggers(spec, column_id)]
                  if spec.chunking else [])
        for statement in [column_sql.create_enqueue_function(spec, column_id),
                          *column_sql.create_triggers(
                          spec, column_id, partitioned=catalog._partitioned(conn, spec)),
                          *chunks]:
            verbatim.execute(conn, statement)
        if spec.chunking:
            conn.execute(sa.text(queries["set_column_chunking"]), {
                "id": column_id, "chunking": spec.chunking.to_json(),
                "chunk_table": spec.chunk_table})
    return (CatalogEntry(other.id, promoted, other.identity),
            CatalogEntry(live.id, retired, live.identity, retired_as, base))


def _check_free(conn: Connection, spec: EmbeddingSpec) -> None:
    """Refuse to build a generation over a column of the table that embeddb did not make."""
    columns = {row.name for row in conn.execute(
        sa.text(queries["table_columns"]), {"qualified_table": column_sql.qualified_table(spec)})}
    taken = [name for name in (spec.column, spec.hash_column) if name in columns]
    if taken:
        raise SchemaError(
            f"{spec.qualified_table} already has a column {taken[0]!r}, where embeddb would build"
            f" the new vectors of {spec.table}.{spec.column.rsplit('__', 1)[0]}; rename it first")
