"""``embeddb doctor``: check a database's embedded columns and say what is wrong and how to fix it.

Each check is read-only and answers with :class:`Finding` objects that name the column, table
or worker involved, what is wrong, and the command or SQL that fixes it. The checks:

* embeddb's schema is at this embeddb's revision;
* each catalog row has its table, its key, source, vector and hash columns, and its functions
  (``embeddb.render_N``, ``embeddb.enqueue_N``) and triggers;
* the vector column's type and dimension are the catalog's, and the model installed here is
  the one the column was embedded with (else a worker here refuses the column), with the
  package its backend runs on (``onnxruntime``, ``openvino``);
* the HNSW index exists and is valid, or, if set aside for a backlog, a worker will build it;
* no embeddb function or trigger is left without its catalog row;
* rows whose vector is missing or stale and that nobody has queued (what ``reconcile`` would
  queue), counted up to a limit and within a time budget per column;
* claims held past their lease that no worker has taken back;
* workers that say they run but whose heartbeat stopped;
* parked rows.

A check that fails on one column (a privilege, a timeout) is reported and the others go on.
``embeddb doctor`` first names each column it checked, with its model and backend
(:func:`checked_columns`).

Severities and the exit code of ``embeddb doctor`` (those of monitoring plugins): ``error``
(exit 2) needs a fix and will not heal by itself; ``warning`` (exit 1) needs attention;
``info`` does not change the code; 0 means healthy, and 3 that the database could not be checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import alter_sql, backends, catalog, column_sql, generations, migrate, queue, schema_version
from .catalog import CatalogEntry
from .database import create_engine
from .embedders import expected_identity, runs_on_backends, shown_backend
from .errors import ModelError, SchemaNotReady, SchemaTooNew
from .sql import queries

Severity = Literal["error", "warning", "info"]

EXIT_HEALTHY = 0
EXIT_WARNING = 1
EXIT_ERROR = 2
EXIT_UNKNOWN = 3
#: PostgreSQL's SQLSTATE for a statement cancelled (by statement_timeout, among others).
QUERY_CANCELED = "57014"


@dataclass(frozen=True)
class Finding:
    """One thing ``doctor`` found: which check, how bad, about what, what is wrong, the fix.

    Example::

        for finding in doctor(engine):
            print(finding.severity, finding.check, finding.subject, finding.fix)
    """

    check: str
    severity: Severity
    subject: str
    problem: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """How far the checks go, and when a worker or a claim counts as dead."""

    stale_row_limit: int = 100_000
    stale_seconds: float = 10.0  # time budget for counting one column's stale rows
    heartbeat_seconds: float = 120.0
    lease_grace_seconds: float = 30.0


def doctor(engine_or_url: Engine | str, limits: Limits | None = None) -> list[Finding]:
    """Check every embedded column of a database; an empty list means healthy.

    Example::

        for finding in embeddb.doctor(engine):
            print(finding.severity, finding.subject, finding.problem, "fix:", finding.fix)
    """
    limits = limits or Limits()
    if isinstance(engine_or_url, Engine):
        return _Doctor(engine_or_url, limits).run()
    engine = create_engine(engine_or_url, poolclass=sa.pool.NullPool)
    try:
        return _Doctor(engine, limits).run()
    finally:
        engine.dispose()


def checked_columns(engine: Engine) -> list[dict[str, Any]]:
    """The embedded columns ``doctor`` checks, as ``embeddb doctor`` names them: ``column``,
    ``generation``, ``model``, ``fingerprint``, ``dimensions`` and ``backend`` (what runs a
    local model: ``torch``, ``onnx``, ``openvino``, ``onnx-int8``; None for an HTTP one).

    Example::

        from embeddb.doctor import checked_columns

        for column in checked_columns(engine):
            print(column["column"], column["model"], column["backend"])
    """
    with engine.connect() as conn:
        if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
            return []
        entries = catalog.list_entries(conn)
    return [{"column": entry.spec.qualified_column, "generation": entry.generation,
             "model": entry.identity.name, "fingerprint": entry.identity.fingerprint,
             "dimensions": entry.identity.dimensions,
             "backend": shown_backend(entry.spec.model, entry.spec.encode.backend)}
            for entry in entries]


def exit_code(findings: list[Finding]) -> int:
    """``embeddb doctor``'s exit code for ``findings``: 2 if any error, 1 if any warning, else 0."""
    severities = {finding.severity for finding in findings}
    if "error" in severities:
        return EXIT_ERROR
    return EXIT_WARNING if "warning" in severities else EXIT_HEALTHY


def report_json(findings: list[Finding], columns: Sequence[dict[str, Any]] = ()) -> str:
    """The findings as ``embeddb doctor --json`` prints them, after the ``columns`` checked
    (:func:`checked_columns`)."""
    code = exit_code(findings)
    status = {EXIT_HEALTHY: "healthy", EXIT_WARNING: "warning", EXIT_ERROR: "error"}[code]
    return json.dumps({"status": status, "exit_code": code, "columns": list(columns),
                       "findings": [finding.to_dict() for finding in findings]}, indent=2)


def report_text(findings: list[Finding], columns: Sequence[dict[str, Any]] = ()) -> str:
    """The findings as ``embeddb doctor`` prints them: a line per column checked
    (:func:`checked_columns`), a block per finding, then a summary line."""
    lines = [_column_line(column) for column in columns]
    for finding in findings:
        lines.append(f"{finding.severity.upper():7} {finding.subject}: {finding.problem}"
                     f" [{finding.check}]")
        lines.append(f"        fix: {finding.fix}")
    counts = {severity: sum(f.severity == severity for f in findings)
              for severity in ("error", "warning")}
    if not counts["error"] and not counts["warning"]:
        lines.append("healthy")
    else:
        lines.append(f"{counts['error']} errors, {counts['warning']} warnings")
    return "\n".join(lines)


def _column_line(column: dict[str, Any]) -> str:
    generation = "" if column["generation"] == generations.LIVE else \
        f" ({column['generation']} generation)"
    backend = f", backend {column['backend']}" if column["backend"] else ""
    return (f"column  {column['column']}{generation}: model {column['model']}"
            f" ({column['fingerprint']}, {column['dimensions']} dims){backend}")


class _Doctor:
    def __init__(self, engine: Engine, limits: Limits) -> None:
        self.engine = engine
        self.limits = limits
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        with self.engine.connect() as conn:
            if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
                self._add("catalog", "info", "embeddb", "embeddb's schema is not installed in"
                          " this database, so there is nothing to check",
                          "embeddb migrate (or create_all / embeddb.install on your models)")
                return self.findings
            entries = catalog.list_entries(conn)
        self._guarded("schema_version", "embeddb", self._schema_version)
        for entry in entries:
            self._guarded("column", entry.spec.qualified_column, self._column, entry)
        self._guarded("orphans", "embeddb", self._orphans, entries)
        self._guarded("claims", "embeddb.pending", self._expired_claims)
        self._guarded("workers", "embeddb.workers", self._silent_workers)
        self._guarded("parked", "embeddb.pending", self._parked)
        return self.findings

    def _add(self, check: str, severity: Severity, subject: str, problem: str, fix: str) -> None:
        self.findings.append(Finding(check, severity, subject, problem, fix))

    def _guarded(self, check: str, subject: str, run: Callable[..., None], *args: Any) -> None:
        """Run one check in its own transaction; its failure becomes a finding, not the end."""
        try:
            with self.engine.connect() as conn, conn.begin():
                run(conn, *args)
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            self._add(f"{check}_unchecked", "error", subject,
                      f"the {check} check could not run: {reason}",
                      "run doctor as a role that can read embeddb's schema and the table")

    # --- checks -------------------------------------------------------------------------

    def _schema_version(self, conn: Connection) -> None:
        current, head = migrate.current(conn), migrate.head()
        try:
            newer = schema_version.check_for_worker(conn)
        except SchemaTooNew as exc:  # workers of this embeddb stop on it
            self._add("schema_version", "error", "embeddb", str(exc),
                      "upgrade embeddb on the workers and here")
            return
        except SchemaNotReady:
            newer = None
        if newer is not None:
            self._add("schema_version", "warning", "embeddb", newer,
                      "upgrade embeddb on the workers and here")
        elif current != head:
            self._add("schema_version", "warning", "embeddb",
                      f"embeddb's schema is at revision {current}, this embeddb expects {head}",
                      "embeddb migrate")

    def _column(self, conn: Connection, entry: CatalogEntry) -> None:
        self._model(entry)
        if self._table_intact(conn, entry):
            self._index(conn, entry)
            self._stale_rows(conn, entry)

    def _model(self, entry: CatalogEntry) -> None:
        """The model as installed where doctor runs, against the one the catalog records."""
        spec, name = entry.spec, entry.spec.qualified_column
        backend = spec.encode.backend
        missing = backends.missing_runtime(backend) if runs_on_backends(spec.model) else None
        if missing is not None:
            self._add("backend_missing", "info", name,
                      f"the column runs on backend {backend}, whose package {missing} is not"
                      " installed here, so a worker here cannot embed it",
                      "pip install 'embeddb[onnx]' where the workers run (or run doctor there)")
        try:
            here = expected_identity(spec.model, spec.encode)
        except ModelError:
            self._add("model_mismatch", "info", name, f"model {spec.model} is not installed"
                      " here, so it was not compared with the catalog's",
                      "run doctor where the workers run to compare it")
            return
        differences = entry.identity.differences(here)
        if differences:
            self._add("model_mismatch", "warning", name,
                      f"the column was embedded with {entry.identity.describe()} but the model"
                      f" here is {here.describe()} ({'; '.join(differences)}): a worker here"
                      " refuses the column",
                      "install the model the column was made with, or re-embed the column:"
                      f" op.alter_embedding({spec.table!r}, {spec.column!r}, model=...)")

    def _table_intact(self, conn: Connection, entry: CatalogEntry) -> bool:
        """The table, its columns, functions and triggers; False when rows cannot be checked."""
        spec, name = entry.spec, entry.spec.qualified_column
        columns = {row.name: row.type for row in conn.execute(
            sa.text(queries["table_columns"]),
            {"qualified_table": column_sql.qualified_table(spec)})}
        if not columns:
            self._add("table_missing", "error", name,
                      f"the catalog names table {spec.qualified_table}, which does not exist",
                      f"restore the table, or forget the column by hand: DELETE FROM"
                      " embeddb.columns"
                      f" WHERE id = {entry.id}; DROP FUNCTION IF EXISTS"
                      f" {_sql(column_sql.enqueue_function(entry.id))}()")
            return False
        intact = True
        read = [*spec.key_columns, *spec.template.columns]
        missing = [c for c in read if c not in columns]
        if missing:
            intact = False
            self._add("source_column_missing", "error", name,
                      f"table {spec.qualified_table} has no column {', '.join(missing)}, which"
                      f" the template {spec.template.source!r} or the key reads",
                      "restore the column, or change the template: op.alter_embedding"
                      f"({spec.table!r}, {spec.column!r}, template=...)")
        for column in (spec.column, spec.hash_column):
            if column not in columns:
                intact = False
                self._add("vector_column_missing", "error", name,
                          f"table {spec.qualified_table} has no column {column!r}",
                          "re-install the column, which adds it and queues every row:"
                          " embeddb.install(engine, Model)")
        wanted = spec.column_type
        actual = columns.get(spec.column)
        if actual is not None and actual != wanted:
            intact = False
            self._add("vector_type_mismatch", "error", name,
                      f"the column is {actual} but the catalog records {wanted} (model"
                      f" {spec.model}); the worker cannot store its vectors",
                      f"{alter_sql.resize_vector(spec)}; UPDATE the hash column to NULL, then"
                      " embeddb reconcile (or change the model with op.alter_embedding)")
        self._objects(conn, entry)
        return intact

    def _objects(self, conn: Connection, entry: CatalogEntry) -> None:
        """The column's render and trigger functions and its four triggers."""
        spec, name = entry.spec, entry.spec.qualified_column
        functions = {row.name for row in conn.execute(sa.text(queries["doctor_functions"]))}
        expected = {f"render_{entry.id}", f"enqueue_{entry.id}"}
        triggers = set(conn.execute(sa.text(queries["doctor_table_triggers"]),
                                    {"qualified_table": column_sql.qualified_table(spec)}
                                    ).scalars())
        absent = sorted(expected - functions)
        absent += sorted(set(column_sql.trigger_names(spec).values()) - triggers)
        if absent:
            self._add("objects_missing", "error", name,
                      f"{', '.join(absent)} missing: changed rows are not queued",
                      "re-install the column, which recreates them and queues what was missed:"
                      " embeddb.install(engine, Model)")

    def _index(self, conn: Connection, entry: CatalogEntry) -> None:
        spec, name = entry.spec, entry.spec.qualified_column
        if spec.index is None:
            return
        state = conn.execute(sa.text(queries["doctor_index_state"]),
                             {"column_id": entry.id}).one()
        build = column_sql.create_index(spec, concurrently=True)
        if entry.generation == generations.NEXT and not (state.index_exists and state.index_valid):
            self._next_generation_index(conn, entry)
        elif state.index_deferred:
            if state.being_built or (self._live_workers(conn) and self._backlog(conn, entry)):
                return  # workers are embedding the backlog, and the last one builds the index
            self._add("index_deferred", "error", name,
                      f"the HNSW index {spec.index_name} was set aside for a backlog and no"
                      " worker is building it; searches scan the whole table",
                      f"embeddb worker --once builds it; or by hand: {build};"
                      f" UPDATE embeddb.columns SET index_deferred = false WHERE id = {entry.id}")
        elif not state.index_exists:
            self._add("index_missing", "error", name,
                      f"the HNSW index {spec.index_name} does not exist; searches scan the"
                      " whole table", f"{build}")
        elif not state.index_valid:
            self._add("index_invalid", "error", name,
                      f"the HNSW index {spec.index_name} is invalid (an interrupted build);"
                      " PostgreSQL does not use it but keeps updating it",
                      f"{column_sql.drop_index(spec, concurrently=True)}; {build}")

    def _next_generation_index(self, conn: Connection, entry: CatalogEntry) -> None:
        """A model change's index is built once its vectors are; searches never read it."""
        if self._live_workers(conn):
            return  # the worker filling the generation builds its index, then swaps it in
        self._add("next_generation_stalled", "warning", entry.spec.qualified_column,
                  f"the model change to {entry.identity.describe()} waits for a worker to embed"
                  f" its rows and build {entry.spec.index_name}; searches keep using the live"
                  f" vectors of {entry.generation_of}",
                  "start a worker: embeddb worker (or undo the change: embeddb model rollback"
                  f" {entry.spec.table}.{entry.generation_of})")

    def _stale_rows(self, conn: Connection, entry: CatalogEntry) -> None:
        spec, name, limit = entry.spec, entry.spec.qualified_column, self.limits.stale_row_limit
        conn.execute(sa.text("SELECT set_config('statement_timeout', :ms, true)"),
                     {"ms": str(int(self.limits.stale_seconds * 1000))})
        try:
            with conn.begin_nested():
                count = int(conn.exec_driver_sql(
                    column_sql.count_unqueued_stale_rows(spec, entry.id), {"limit": limit}
                ).scalar_one())
        except sa.exc.OperationalError as exc:
            # query_canceled, not the message: when the budget cancels a parallel scan, the
            # error can come from a parallel worker as "canceling statement due to user request"
            if getattr(exc.orig, "sqlstate", None) != QUERY_CANCELED:
                raise
            self._add("stale_rows", "info", name,
                      f"counting stale rows took longer than {self.limits.stale_seconds:g}s,"
                      " so it was skipped", "embeddb reconcile (it is always safe)")
            return
        if count:
            amount = f"at least {limit}" if count >= limit else str(count)
            self._add("stale_rows", "warning", name,
                      f"{amount} rows have a missing or stale vector and are not queued"
                      " (a lost queue entry, or changes made with the triggers disabled)",
                      "embeddb reconcile")

    def _orphans(self, conn: Connection, entries: list[CatalogEntry]) -> None:
        known = {entry.id for entry in entries}
        for trigger in conn.execute(sa.text(queries["doctor_triggers"])):
            if trigger.column_id not in known:
                self._add("orphan_trigger", "error", f"{trigger.on_table}.{trigger.name}",
                          f"trigger {trigger.name} on {trigger.on_table} calls embeddb."
                          f"{trigger.function_name} but no embedded column {trigger.column_id}"
                          " is in the catalog",
                          column_sql.drop_trigger(trigger.name, trigger.on_table))
        for function in conn.execute(sa.text(queries["doctor_functions"])):
            if function.column_id not in known:
                self._add("orphan_function", "error", function.signature,
                          f"function {function.signature} belongs to no embedded column (no"
                          f" catalog row {function.column_id})",
                          f"DROP FUNCTION IF EXISTS {function.signature}")

    def _expired_claims(self, conn: Connection) -> None:
        for claim in conn.execute(sa.text(queries["doctor_expired_claims"]),
                                  {"grace_seconds": self.limits.lease_grace_seconds}):
            self._add("expired_claims", "warning", claim.qualified_column,
                      f"{claim.rows} rows are still claimed by {claim.claimed_by}, whose lease"
                      f" ran out {claim.overdue_seconds:.0f}s ago, and no worker took them back",
                      "start a worker (embeddb worker): it takes them")

    def _silent_workers(self, conn: Connection) -> None:
        for worker in conn.execute(sa.text(queries["doctor_silent_workers"]),
                                   {"seconds": self.limits.heartbeat_seconds}):
            self._add("worker_silent", "warning", f"worker {worker.worker_id}",
                      f"no heartbeat for {worker.silent_seconds:.0f}s (pid {worker.pid} on"
                      f" {worker.hostname}): it died, hangs, or builds an index that long",
                      "if the process is gone, forget it: DELETE FROM embeddb.workers WHERE"
                      f" worker_id = '{_quote(worker.worker_id)}' (its claims expire after the"
                      " lease)")

    def _parked(self, conn: Connection) -> None:
        for column in conn.execute(sa.text(queries["doctor_parked"])):
            table_column = column.qualified_column.split(".", 1)[1]
            self._add("parked_rows", "warning", column.qualified_column,
                      f"{column.rows} rows are parked after failing too often",
                      "read their errors: SELECT row_key, attempts, last_error FROM"
                      f" embeddb.pending WHERE column_id = {column.id} AND parked_at IS NOT"
                      f" NULL; fix the cause, then embeddb retry {table_column}")

    # --- helpers ------------------------------------------------------------------------

    def _live_workers(self, conn: Connection) -> int:
        return int(conn.execute(sa.text(queries["doctor_live_workers"]),
                                {"seconds": self.limits.heartbeat_seconds}).scalar_one())

    def _backlog(self, conn: Connection, entry: CatalogEntry) -> int:
        return queue.backlog(conn, entry)


def _sql(composable: Any) -> str:
    return str(composable.as_string(None))


def _quote(text: str) -> str:
    return text.replace("'", "''")


__all__ = ["Finding", "Limits", "checked_columns", "doctor", "exit_code", "report_json",
           "report_text"]
