"""The sync worker: claims pending rows, embeds them, and stores the vectors, guarded.

One batch is three short steps, and no transaction is open while the model runs:

1. claim up to ``batch_size`` ready rows of a column under a lease and read their text
   (one transaction);
2. embed the distinct texts;
3. store the vectors only where the row's text is still the text that was embedded, then
   forget those rows, hand back the ones that changed, and count failures (one transaction).

Step 3 of one batch runs on a second thread while steps 1 and 2 of the next one run, so the
database's share of the time hides behind the model's.

A crashed worker's claims expire after ``lease_seconds`` and are taken by another. A row the
model fails on is retried with backoff and parked after ``max_attempts``; when the model fails
for everything, the worker backs off as a whole and no row's attempts are spent. A row the
worker's role cannot see (row-level security) is parked with that reason, never forgotten.

A failure confined to one column (its table dropped, a privilege missing, an index that cannot
be built) is that column's fault (:mod:`embeddb.faults`): logged once, retried with backoff and
jitter, recorded for ``embeddb status``, while the other columns keep flowing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from pgvector.psycopg import register_vector
from sqlalchemy.engine import Engine

from . import (
    backfill,
    calibration,
    catalog,
    chunk_worker,
    column_sql,
    generations,
    queue,
    schema_version,
)
from .catalog import CatalogEntry
from .database import create_engine, libpq_conninfo
from .embedders import Embedder, Vectors, load_embedder
from .errors import (
    DatabaseError,
    EmbeddbError,
    ModelError,
    ModelUnavailable,
    SchemaNotReady,
    first_line,
)
from .faults import Faults, confined_to_column, jittered_backoff
from .privileges import (
    is_permission_error,
    privilege_error,
    worker_column_needs,
    worker_needs,
)
from .scrub import describe_failure

log = logging.getLogger(__name__)

_PROBE_TEXT = "embeddb model health check"
_MAX_ERROR_LENGTH = 2000
_WORKER = 0  # the fault key of what is no column's (the catalog, the worker's own rows)
_CHARS_PER_TOKEN = 4
# A lost connection is retried after 1 s, doubling to 30 s, each wait drawn from its upper half.
_RECONNECT_BACKOFF_SECONDS = 1.0
_RECONNECT_BACKOFF_MAX_SECONDS = 30.0
# Seen in pg_stat_activity; a statement that hangs (a dead peer, a lock) fails instead of
# stalling the worker, and a transaction left idle cannot hold claims' row locks for long.
_WORKER_CONNECT_ARGS: dict[str, Any] = {
    "application_name": "embeddb-worker",
    "options": "-c statement_timeout=60000 -c idle_in_transaction_session_timeout=60000",
}
FAILPOINT_VARIABLE = "EMBEDDB_FAILPOINT"
_BINARY_VECTORS = "embeddb.binary_vectors"  # key in a pooled connection's info dict


@dataclass(frozen=True)
class WorkerConfig:
    """Tuning knobs; the defaults suit a CPU running a small model.

    * ``batch_size``: rows claimed per round (the model sorts them by length into batches of 32).
    * ``max_batch_tokens``: a claim is also cut at about this many tokens.
    * ``lease_seconds``: how long a claim is this worker's; past it another worker may take it.
    * ``defer_index_rows``, ``defer_index_share``: a backlog at least this large and this share
      of its table is embedded with the HNSW index set aside, rebuilt after (0: never).
    * ``index_build_memory``: ``maintenance_work_mem`` for that rebuild.
    * ``poll_seconds``: the safety-net poll between NOTIFYs.
    * ``max_attempts``, ``backoff_seconds``, ``backoff_max_seconds``: a failing row is retried
      with exponential backoff, then parked after this many attempts.
    * ``column_backoff_seconds``, ``column_backoff_max_seconds``: the same for a whole column
      whose table, privileges or index fail (no row's attempts are spent).
    * ``heartbeat_seconds``: how often a running worker says it is alive.
    * ``threads``: torch threads for the model (None: torch's default).

    Example::

        Worker(url, WorkerConfig(batch_size=128, lease_seconds=300, threads=2)).run()
    """

    # Rows claimed per round. The model encodes them in sub-batches of 32 sorted by length, so
    # a large claim wastes far less on padding than 32 rows in arrival order (3x on docstrings).
    batch_size: int = 256
    # A claim is also cut at about this many tokens (estimated as characters / 4), so a batch
    # of long texts stays well inside its lease and bounded in memory.
    max_batch_tokens: int = 32_768
    lease_seconds: float = 120.0
    # A backlog at least this large, and at least this share of its table's rows, is embedded
    # with the column's HNSW index set aside, then the index is rebuilt (see embeddb.backfill);
    # defer_index_rows=0 keeps the index throughout.
    defer_index_rows: int = 1_000
    defer_index_share: float = 0.5
    index_build_memory: str = "512MB"
    poll_seconds: float = 5.0
    max_attempts: int = 5
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    # A column whose table or privileges fail is retried after this, doubling, with jitter.
    column_backoff_seconds: float = 5.0
    column_backoff_max_seconds: float = 300.0
    # A running worker's heartbeat; status calls it gone after stale_after_seconds of silence.
    heartbeat_seconds: float = 5.0
    threads: int | None = None
    # When idle, this often the worker looks for columns whose search calibration is missing
    # or stale (index rebuilt, table grown by half) and recalibrates them (0: never).
    calibrate_seconds: float = 600.0

    @property
    def retry_policy(self) -> queue.RetryPolicy:
        """How a failing row is retried: ``max_attempts`` and the backoff."""
        return queue.RetryPolicy(self.max_attempts, self.backoff_seconds,
                                 self.backoff_max_seconds)

    @property
    def stale_after_seconds(self) -> float:
        """Silence after which this worker counts as gone: three missed heartbeats, plus a
        lease, since a ``--once`` worker beats only between batches and a batch fits a lease."""
        return 3 * self.heartbeat_seconds + self.lease_seconds


@dataclass
class WorkerStats:
    embedded: int = 0
    cleared: int = 0
    failed: int = 0
    superseded: int = 0
    batches: int = 0
    chunks_encoded: int = 0  # chunked columns: chunk texts the model embedded
    chunks_reused: int = 0  # ... and chunks that kept their stored vector
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.embedded / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class BatchResult:
    claimed: int
    stored: int
    superseded: int
    failed: int
    column: str = ""  # the column's qualified name
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    batch_seconds: float = 0.0  # from the claim to the write's commit


@dataclass
class _EmbeddedBatch:
    """A claimed batch after the model ran: what to store, what failed, what vanished."""

    entry: CatalogEntry
    token: uuid.UUID
    claimed: int
    lease_ends: float  # time.monotonic() by which its claims may have expired
    gone: list[Any]
    started: float = 0.0  # time.monotonic() when it was claimed
    model_seconds: float = 0.0
    hidden_by: str | None = None  # why the gone keys may be rows hidden from us, not deleted
    to_store: list[tuple[Any, Vectors | None, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    chunks: dict[str, chunk_worker.Document] | None = None  # a chunked column's, by row key


_LOCK_WAIT_FAILED = ("55P03", "40P01")  # lock_not_available, deadlock_detected

_TRANSIENT_ERRORS = (
    sa.exc.OperationalError, sa.exc.InterfaceError, psycopg.OperationalError, ModelUnavailable,
)


class Worker:
    """Keeps every embedded column of one database in step with its rows.

    ``run_once()`` drains what is ready and returns (scripts, tests); ``run()`` keeps going,
    woken by NOTIFY and polling as a fallback, until ``stop()`` is called.

    Example::

        with Worker(database_url(), WorkerConfig(batch_size=128)) as worker:
            stats = worker.run_once()          # or worker.run() until worker.stop()
        print(stats.embedded, stats.failed)
    """

    def __init__(
        self,
        database_url: str,
        config: WorkerConfig | None = None,
        *,
        engine: Engine | None = None,
        embedder_for: Callable[[CatalogEntry], Embedder] | None = None,
    ) -> None:
        self.config = config or WorkerConfig()
        self.url = database_url
        self._owns_engine = engine is None
        self.engine = engine or create_engine(
            database_url, pool_size=2, pool_pre_ping=True, connect_args=_WORKER_CONNECT_ARGS
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self._embedder_for = embedder_for or _load_checked_embedder
        self._stopping = threading.Event()
        self._last_heartbeat = 0.0
        self.heartbeat_at: float | None = None  # time.time() of the last heartbeat written
        # called with every batch's result, e.g. by embeddb.metrics
        self.batch_listeners: list[Callable[[BatchResult], None]] = []
        self._faults = Faults(self.config.column_backoff_seconds,
                              self.config.column_backoff_max_seconds)
        self._index_kept: set[int] = set()  # columns whose index we may not set aside
        self._calibrated_at: float | None = None  # monotonic time of the last calibration pass
        self._warned: set[str] = set()
        if self.config.threads:
            _set_torch_threads(self.config.threads)

    def close(self) -> None:
        """Close the worker's connections (those of an engine it was given stay open)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- loops ---------------------------------------------------------------------------

    def run_once(self, on_batch: Callable[[BatchResult], None] | None = None) -> WorkerStats:
        """Embed everything that is ready now, then return.

        A column that fails (a wrong model, a missing table or privilege) does not stop the
        others; the first such error is raised once they are done.
        """
        refused: list[EmbeddbError] = []
        lacking = self._check_privileges()
        try:
            entries = self._entries()
        except sa.exc.DBAPIError as exc:
            if not confined_to_column(exc):
                raise
            raise self._explain(exc, None) from exc
        for entry in entries:
            error = self._drain_isolated(entry, on_batch)
            if error is not None:
                refused.append(error)
        self._heartbeat(force=True, state="idle")
        if refused:
            raise refused[0]
        if lacking is not None:  # what could be embedded was; the missing grant still fails
            raise lacking
        return self.stats

    def run(self) -> None:
        """Work until ``stop()``: wake on NOTIFY, poll every ``poll_seconds`` as a safety net.

        Lost connections (a database restart, a terminated backend) and a model that fails for
        everything pause the worker with exponential backoff; it then reconnects and re-LISTENs.
        On the way out, however it ends, the worker hands back whatever it still holds.
        """
        listener: psycopg.Connection[Any] | None = None
        failures = 0  # transient failures in a row
        heartbeat = threading.Thread(target=self._beat_until_stopped, name="embeddb-heartbeat",
                                     daemon=True)
        heartbeat.start()
        self._check_privileges()
        try:
            while not self._stopping.is_set():
                try:
                    if listener is None:
                        listener = self._listen()
                    if not self._drain_ready():
                        self._calibrate_due()
                        self._wait_for_notify(listener)
                    failures = 0
                    self._faults.recovered(_WORKER, "embeddb worker")
                except _TRANSIENT_ERRORS as exc:
                    failures += 1
                    delay = reconnect_delay(failures)
                    log.warning("worker paused %.1fs: %s", delay, first_line(exc))
                    if listener is not None and not isinstance(exc, ModelUnavailable):
                        listener.close()
                        listener = None
                    self._stopping.wait(delay)
                except SchemaNotReady as exc:
                    # `embeddb migrate` (a deploy's one-shot step) may not have run yet: wait
                    self._warn_once(f"schema:{exc}", "waiting: %s", exc)
                    self._stopping.wait(jittered_backoff(1, self.config.poll_seconds,
                                                         self.config.poll_seconds))
                except sa.exc.DBAPIError as exc:
                    # the catalog itself fails (a privilege on embeddb's tables): wait and retry
                    if not confined_to_column(exc):
                        raise
                    fault = self._faults.failed(_WORKER, "embeddb worker",
                                                str(self._explain(exc, None)))
                    self._stopping.wait(fault.wait_seconds())
        finally:
            self._stopping.set()
            if listener is not None:
                listener.close()
            self._release_claims()
            heartbeat.join(timeout=5)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run()``."""
        self._stopping.set()

    # --- one batch -----------------------------------------------------------------------

    def process_batch(self, entry: CatalogEntry, embedder: Embedder) -> BatchResult:
        """Claim, embed and store one batch of ``entry``'s pending rows."""
        batch = self._prepare(entry, embedder)
        return self._write(batch) if batch is not None else BatchResult(0, 0, 0, 0)

    def _drain_column(
        self, entry: CatalogEntry, embedder: Embedder,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> int:
        """Batches until nothing of ``entry`` is ready; returns how many rows were claimed.

        Batch N is written by a second thread while the model embeds batch N+1, so the
        database's time per batch hides behind the model's instead of adding to it.
        """
        claimed = 0
        if entry.id not in self._index_kept:
            try:
                backfill.set_index_aside(self.engine, entry, self.config.defer_index_rows,
                                         self.config.defer_index_share)
            except backfill.CannotSetAside as exc:
                self._index_kept.add(entry.id)  # for this worker's life: say it once
                log.warning("%s", exc)
        with ThreadPoolExecutor(1, thread_name_prefix="embeddb-writer") as writer:
            writing: tuple[_EmbeddedBatch, Future[BatchResult]] | None = None
            while True:
                if writing is not None and writing[0].lease_ends <= time.monotonic():
                    # its lease ran out while the model ran, so the next claim could take its
                    # rows back from this very write (and again, forever): write them first
                    claimed += self._finish(entry, writing[1], on_batch).claimed
                    writing = None
                batch = None if self._stopping.is_set() else self._prepare(entry, embedder)
                if writing is not None:
                    result = self._finish(entry, writing[1], on_batch)
                    claimed, writing = claimed + result.claimed, None
                    if batch is None and (result.superseded or result.failed):
                        continue  # rows that write handed back may be ready again
                if batch is None:
                    break
                writing = batch, writer.submit(self._write, batch)
        if not self._stopping.is_set():
            backfill.rebuild_index(self.engine, entry, self.config.index_build_memory)
            generations.swap_if_complete(self.engine, entry)  # a model change, once complete
        return claimed

    def _finish(self, entry: CatalogEntry, writing: Future[BatchResult],
                on_batch: Callable[[BatchResult], None] | None) -> BatchResult:
        """Wait for a batch's write and report it."""
        result = writing.result()
        self._report(entry, result, on_batch)
        return result

    def _report(self, entry: CatalogEntry, result: BatchResult,
                on_batch: Callable[[BatchResult], None] | None) -> None:
        for listener in [*self.batch_listeners, *([on_batch] if on_batch else [])]:
            listener(result)
        log.info("%s: %d stored, %d superseded, %d failed (%.1f rows/s overall)",
                  entry.spec.qualified_column, result.stored, result.superseded, result.failed,
                  self.stats.rate, extra=_batch_fields(result, self.stats.rate))

    def _prepare(self, entry: CatalogEntry, embedder: Embedder) -> _EmbeddedBatch | None:
        """Claim a batch and run the model on it (no transaction is open while it runs)."""
        token = uuid.uuid4()
        started = time.monotonic()
        lease_ends = started + self.config.lease_seconds  # no later than the claim's
        claimed, rows, hidden_by = self._claim(entry, token)
        if not claimed:
            return None
        _failpoint("claimed")
        rows, claimed = self._within_token_budget(entry, token, rows, claimed)
        found = {_key_id(row.row_key) for row in rows}
        batch = _EmbeddedBatch(entry, token, len(claimed), lease_ends,
                               gone=[key for key in claimed if _key_id(key) not in found],
                               started=started, hidden_by=hidden_by)
        texts = [row.text for row in rows if row.text is not None]
        vectors: Mapping[str, Vectors | None]
        try:
            model_started = time.monotonic()
            if entry.spec.chunking is not None:
                vectors, failures = self._embed_chunked(entry, embedder, batch, rows)
            else:
                vectors, failures = self._embed(embedder, texts)
            batch.model_seconds = time.monotonic() - model_started
        except ModelUnavailable:
            with self.engine.begin() as conn:
                queue.release(conn, entry, token, claimed)
            raise
        for row in rows:
            if row.text is None:
                batch.to_store.append((row.row_key, None, None))
            elif row.text in failures:
                batch.failed.append({"row_key": row.row_key, "error": failures[row.text]})
            else:
                batch.to_store.append((row.row_key, vectors[row.text], row.hash))
        _failpoint("embedded")
        return batch

    def _write(self, batch: _EmbeddedBatch) -> BatchResult:
        """Store the vectors (guarded), forget stored rows, hand back the rest; one transaction."""
        entry, token = batch.entry, batch.token
        write_started = time.monotonic()
        with self.engine.begin() as conn:
            stored = self._store(conn, entry, batch.to_store)
            if batch.hidden_by is not None and batch.gone:
                # hidden or deleted, we cannot tell; a deleted row's trigger drops its entry
                # anyway, so parking loses nothing and never forgets a row we cannot see
                queue.park(conn, entry, token, batch.gone, batch.hidden_by)
                self._warn_once(f"hidden:{entry.id}", "%s: %d rows parked: %s",
                                entry.spec.qualified_column, len(batch.gone), batch.hidden_by)
            if batch.chunks is not None:  # in the same transaction as the guarded parent write
                chunk_worker.write_chunks(conn, entry, stored, batch.chunks)
            queue.complete(conn, entry, token,
                           stored if batch.hidden_by is not None else stored + batch.gone)
            written = {_key_id(k) for k in stored}
            superseded = [k for k, _, _ in batch.to_store if _key_id(k) not in written]
            if superseded:
                queue.release(conn, entry, token, superseded)
            if batch.failed:
                queue.fail(conn, entry, token, batch.failed, self.config.retry_policy)
            if stored:
                self._record_throughput(conn, entry, len(stored))
            _failpoint("stored")  # written, not yet committed

        cleared = sum(1 for _, vector, _ in batch.to_store if vector is None)
        self.stats.embedded += len(stored) - cleared
        self.stats.cleared += cleared
        self.stats.failed += len(batch.failed)
        self.stats.superseded += len(superseded)
        self.stats.batches += 1
        if batch.failed:
            log.warning("%s: %d of %d rows failed and will be retried",
                        entry.spec.qualified_column, len(batch.failed), batch.claimed)
        self._heartbeat()
        done = time.monotonic()
        return BatchResult(batch.claimed, len(stored), len(superseded), len(batch.failed),
                           entry.spec.qualified_column, batch.model_seconds,
                           done - write_started, done - batch.started)

    def _record_throughput(self, conn: sa.Connection, entry: CatalogEntry, rows: int) -> None:
        """Count stored rows for ``status``; without the rights, the vectors are kept all the
        same (a savepoint), and the missing privilege is named once."""
        try:
            with conn.begin_nested():
                queue.record_throughput(conn, entry, rows)
        except sa.exc.ProgrammingError as exc:
            if not is_permission_error(exc):
                raise
            self._warn_once("throughput", "%s: throughput is not recorded: %s",
                            entry.spec.qualified_column, first_line(exc))

    def _claim(self, entry: CatalogEntry, token: uuid.UUID
               ) -> tuple[list[Any], list[Any], str | None]:
        """The claimed keys, the rows found for them, and, when some were not found and
        row-level security may hide them from this role, the reason to park them with."""
        self._expand_inbox(entry)
        with self.engine.begin() as conn:
            taken = queue.claim(conn, entry, token, self.worker_id, self.config.batch_size,
                                self.config.lease_seconds)
        return taken.keys, taken.rows, taken.hidden_by

    def _expand_inbox(self, entry: CatalogEntry) -> None:
        """Queue the rows of bulk INSERTs waiting in the inbox, in a transaction of its own (a
        crash before it commits leaves the inbox as it was). An expansion that waits for a
        lock is left for the next claim; without the rights to it, what is queued still flows."""
        try:
            with self.engine.begin() as conn:
                if queue.expand_inbox(conn, entry):
                    _failpoint("expanded")  # rows queued, inbox entries deleted, not committed
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _LOCK_WAIT_FAILED:
                log.debug("%s: inbox left for later: %s", entry.spec.qualified_column,
                          first_line(exc))
            elif is_permission_error(exc):
                self._warn_once(f"inbox:{entry.id}", "%s: bulk INSERTs wait in embeddb.inbox,"
                                " which this worker may not expand: %s",
                                entry.spec.qualified_column, first_line(exc))
            else:
                raise

    def _within_token_budget(
        self, entry: CatalogEntry, token: uuid.UUID, rows: list[Any], claimed: list[Any]
    ) -> tuple[list[Any], list[Any]]:
        """Keep the rows that fit ``max_batch_tokens`` (at least one); hand back the rest."""
        budget = self.config.max_batch_tokens * _CHARS_PER_TOKEN
        kept: list[Any] = []
        for row in rows:
            budget -= len(row.text or "")
            if budget < 0 and kept:
                break
            kept.append(row)
        if len(kept) == len(rows):
            return rows, claimed
        surplus = rows[len(kept):]
        with self.engine.begin() as conn:
            queue.release(conn, entry, token, [row.row_key for row in surplus])
        surplus_keys = {_key_id(row.row_key) for row in surplus}
        return kept, [k for k in claimed if _key_id(k) not in surplus_keys]

    def _embed(
        self, embedder: Embedder, texts: Sequence[str]
    ) -> tuple[dict[str, Vectors], dict[str, str]]:
        """Vectors for the distinct texts, and an error for each text the model failed on."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return {}, {}
        try:
            return _checked(distinct, embedder.embed_documents(distinct)), {}
        except ModelUnavailable:
            raise  # an outage or a rate limit (HTTP providers): no row is to blame
        except Exception as exc:
            if len(distinct) == 1:
                self._probe(embedder, exc)
                return {}, {distinct[0]: describe_failure(exc, distinct[0])}
        # Something in the batch breaks the model: find it text by text, so the rest flow.
        # Each error is stored without its text (a model may quote its input).
        vectors: dict[str, Vectors] = {}
        failures: dict[str, str] = {}
        for text in distinct:
            try:
                vectors.update(_checked([text], embedder.embed_documents([text])))
            except Exception as exc:
                failures[text] = describe_failure(exc, text)
        if not vectors:
            self._probe(embedder, ModelError(next(iter(failures.values()))))
        return vectors, failures

    def _embed_chunked(
        self, entry: CatalogEntry, embedder: Embedder, batch: _EmbeddedBatch, rows: list[Any]
    ) -> tuple[dict[str, Vectors | None], dict[str, str]]:
        """Split a chunked column's documents and embed the chunks they do not have yet."""
        with self.engine.connect() as conn:
            _send_vectors_in_binary(conn)
            stored = chunk_worker.stored_chunk_vectors(conn, entry, [r.row_key for r in rows])
        chunked = chunk_worker.embed_documents(
            entry, rows, stored, lambda texts: self._embed(embedder, texts))
        batch.chunks = chunked.documents
        self.stats.chunks_encoded += chunked.encoded
        self.stats.chunks_reused += chunked.reused
        return chunked.vectors, chunked.failures

    def _probe(self, embedder: Embedder, original: Exception) -> None:
        """Raise ModelUnavailable if the model fails on a known-good text too."""
        try:
            _checked([_PROBE_TEXT], embedder.embed_documents([_PROBE_TEXT]))
        except Exception as exc:
            raise ModelUnavailable(
                f"the model fails on every input: {_describe(exc)}"
            ) from original

    def _store(
        self, conn: sa.Connection, entry: CatalogEntry, items: list[tuple[Any, Vectors | None, Any]]
    ) -> list[Any]:
        if not items:
            return []
        _send_vectors_in_binary(conn)
        return queue.store_vectors(conn, entry, items)

    # --- plumbing ------------------------------------------------------------------------

    def _entries(self) -> list[CatalogEntry]:
        """The embedded columns, once the schema is checked: the worker never migrates it (it
        needs DDL, and a new worker must not upgrade the schema under old ones). Checked on
        every pass, so a running worker notices a newer schema it cannot serve."""
        with self.engine.connect() as conn:
            warning = schema_version.check_for_worker(conn)
            if warning is not None:
                self._warn_once(f"schema:{warning}", "%s", warning)
            return catalog.list_entries(conn)

    def _drain_ready(self) -> bool:
        """One pass over every column until nothing is ready; True if any row was claimed.

        A column backing off after a fault is skipped until its retry time.
        """
        busy = False
        for entry in self._entries():
            if self._stopping.is_set():
                break
            if self._faults.waiting(entry.id):
                continue
            claimed: list[int] = []
            self._drain_isolated(entry, None, claimed)
            busy = busy or bool(claimed and claimed[0])
        return busy

    def _calibrate_due(self) -> int:
        """Recalibrate the columns that need it, once per ``calibrate_seconds``; how many."""
        every = self.config.calibrate_seconds
        now = time.monotonic()
        if every <= 0 or (self._calibrated_at is not None and now - self._calibrated_at < every):
            return 0
        self._calibrated_at = now
        done = 0
        for entry in self._entries():
            if self._stopping.is_set():
                break
            try:
                with self.engine.connect() as conn:
                    due = calibration.needs_calibration(conn, entry)
            except sa.exc.SQLAlchemyError as exc:
                self._warn_once(f"calibrate:{entry.id}", "%s: calibration not checked: %s",
                                entry.spec.qualified_column, first_line(exc))
                continue
            if due and calibration.calibrate_quietly(self.engine, entry) is not None:
                done += 1
        return done

    def _drain_isolated(self, entry: CatalogEntry, on_batch: Callable[[BatchResult], None] | None,
                        claimed: list[int] | None = None) -> EmbeddbError | None:
        """Drain one column; a failure of its own becomes its fault, returned, not raised."""
        name = entry.spec.qualified_column
        try:
            embedder = self._embedder_for(entry)
            count = self._drain_column(entry, embedder, on_batch)
        except EmbeddbError as exc:
            if isinstance(exc, ModelUnavailable):
                raise  # the model, not the column: the whole worker backs off
            self._column_failed(entry, exc)
            return exc
        except sa.exc.DBAPIError as exc:
            if not confined_to_column(exc):
                raise
            error = self._explain(exc, entry)
            self._column_failed(entry, error)
            return error
        if claimed is not None:
            claimed.append(count)
        if self._faults.recovered(entry.id, name):
            self._record_fault(entry, None)
        return None

    def _column_failed(self, entry: CatalogEntry, error: EmbeddbError) -> None:
        """Record ``entry``'s fault, hand back its claims, and back off from it."""
        fault = self._faults.failed(entry.id, entry.spec.qualified_column, str(error))
        self._record_fault(entry, fault.reason, fault.wait_seconds())
        try:
            with self.engine.begin() as conn:
                queue.release_column(conn, entry, self.worker_id)
        except sa.exc.DBAPIError as exc:
            log.debug("%s: claims left to expire: %s", entry.spec.qualified_column,
                      first_line(exc))

    def _record_fault(self, entry: CatalogEntry, reason: str | None,
                      retry_in: float = 0.0) -> None:
        """Show the fault (or its end) in embeddb.columns, for ``status``; best effort."""
        try:
            with self.engine.begin() as conn:
                queue.record_fault(conn, entry, reason, retry_in)
        except sa.exc.DBAPIError as exc:
            log.debug("%s: fault not recorded: %s", entry.spec.qualified_column, first_line(exc))

    def _explain(self, exc: sa.exc.DBAPIError, entry: CatalogEntry | None) -> EmbeddbError:
        """``exc`` as a clear error: the missing privileges by name, else PostgreSQL's reason."""
        doing = entry.spec.qualified_column if entry is not None else "embeddb worker"
        if is_permission_error(exc):
            try:
                with self.engine.connect() as conn:
                    error = privilege_error(
                        conn, exc, worker_needs(entry.spec if entry is not None else None),
                        doing, None if entry is None else worker_column_needs(entry.spec))
                if error is not None:
                    return error
            except sa.exc.DBAPIError:
                pass
        return DatabaseError(f"{doing}: {first_line(exc)}")

    def _check_privileges(self) -> EmbeddbError | None:
        """What the role lacks on embeddb's own tables, said once before starting, so a grant
        forgotten is named at once instead of failing some statement much later."""
        try:
            with self.engine.connect() as conn:
                error = privilege_error(conn, None, worker_needs(), "embeddb worker")
        except sa.exc.DBAPIError as exc:
            log.debug("privileges not checked: %s", first_line(exc))
            return None
        if error is not None:
            self._warn_once("privileges", "%s", error)
        return error

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _listen(self) -> psycopg.Connection[Any]:
        listener = psycopg.connect(
            libpq_conninfo(self.url), autocommit=True, keepalives=1, keepalives_idle=30,
            keepalives_interval=10, keepalives_count=3, **_WORKER_CONNECT_ARGS,
        )
        listener.execute(column_sql.listen())
        return listener

    def _wait_for_notify(self, listener: psycopg.Connection[Any]) -> None:
        for _ in listener.notifies(timeout=self.config.poll_seconds, stop_after=1):
            pass

    def _beat_until_stopped(self) -> None:
        """The heartbeat of ``run()``, on a thread of its own so that a long model run or
        index build never makes a live worker look gone."""
        while not self._stopping.wait(self.config.heartbeat_seconds):
            self._heartbeat(force=True)

    def _heartbeat(self, force: bool = False, state: str = "running") -> None:
        """Say this worker is alive; a failure (a missing privilege) is logged once, never
        raised: the rows matter more than the worker's own bookkeeping."""
        now = time.monotonic()
        if not force and now - self._last_heartbeat < self.config.heartbeat_seconds:
            return
        self._last_heartbeat = now
        try:
            with self.engine.begin() as conn:
                queue.heartbeat(conn, self.worker_id, hostname=socket.gethostname(),
                                pid=os.getpid(), rows_embedded=self.stats.embedded, state=state,
                                stale_after_seconds=self.config.stale_after_seconds)
            self.heartbeat_at = time.time()
            with self.engine.begin() as conn:
                queue.prune_throughput(conn)
        except sa.exc.DBAPIError as exc:
            if not confined_to_column(exc):
                log.debug("heartbeat failed: %s", first_line(exc))
                return
            self._warn_once(f"heartbeat:{getattr(exc.orig, 'sqlstate', '')}",
                            "this worker is not shown by status: %s", first_line(exc))

    def _release_claims(self) -> None:
        try:
            with self.engine.begin() as conn:
                queue.release_worker(conn, self.worker_id)
        except sa.exc.DBAPIError as exc:
            log.warning("could not release claims on exit (leases will expire): %s",
                        first_line(exc))
        self._heartbeat(force=True, state="stopped")


def reconnect_delay(failures: int) -> float:
    """Seconds ``run()`` waits after ``failures`` lost connections in a row (1 s doubling to
    30 s, with jitter: workers that lost the database together do not return in lockstep)."""
    return jittered_backoff(failures, _RECONNECT_BACKOFF_SECONDS, _RECONNECT_BACKOFF_MAX_SECONDS)


def _load_checked_embedder(entry: CatalogEntry) -> Embedder:
    embedder = load_embedder(entry.spec.model, entry.spec.encode, entry.spec.dimensions)
    catalog.check_model(entry, embedder.identity)
    return embedder


def _batch_fields(result: BatchResult, overall_rate: float) -> dict[str, Any]:
    """A batch's log record fields, for structured logs (``--log-format json``)."""
    seconds = result.batch_seconds
    return {"column": result.column, "batch_size": result.claimed, "rows": result.stored,
            "superseded": result.superseded, "failed": result.failed,
            "seconds": round(seconds, 4),
            "rows_per_second": round(result.stored / seconds, 1) if seconds > 0 else None,
            "overall_rows_per_second": round(overall_rate, 1)}


def _key_id(key: Any) -> str:
    """A row key as a hashable, order-independent string, to match keys across statements."""
    return json.dumps(key, sort_keys=True)


def _checked(texts: Sequence[str], vectors: Vectors) -> dict[str, Vectors]:
    if len(vectors) != len(texts):
        raise ModelError(f"the model returned {len(vectors)} vectors for {len(texts)} texts")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise ModelError("the model returned non-finite values (NaN or infinity)")
    return dict(zip(texts, vectors, strict=True))


def _send_vectors_in_binary(conn: sa.Connection) -> None:
    """Have the connection send numpy vectors in pgvector's binary format, once per connection.

    As text, 256 vectors of 384 dimensions took ~60 ms of Python (holding the GIL the model's
    tokenizer needs) and their parsing more on the server: a few percent of the model's time.
    Registered here rather than on connect: pgvector may not be installed yet when the worker
    first connects.
    """
    if conn.info.get(_BINARY_VECTORS):
        return
    driver_connection = conn.connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection)
    register_vector(driver_connection)
    conn.info[_BINARY_VECTORS] = True


def _describe(exc: BaseException) -> str:
    """A model error that quotes no row text (the probe's, or one for every input)."""
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH]



def _failpoint(name: str) -> None:
    """Die here, as ``kill -9`` would, when a fault-injection test asks for it."""
    if os.environ.get(FAILPOINT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _set_torch_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


__all__ = ["BatchResult", "ModelUnavailable", "Worker", "WorkerConfig", "WorkerStats"]
