"""What the application pays on every write: the same writes into a table with an embedded
column (embeddb's trigger) and into the same table without one, in one run.

Both tables have the same columns and the same B-tree primary key; the embedded one gets its
vector and hash columns, HNSW index and triggers from ``create_all``. The texts are WordNet
glosses. No worker runs: this measures the trigger and the queue alone. Each measurement runs
``--repeat`` times, alternating the two tables, on freshly truncated tables; the best time
counts (the least disturbed by the rest of the machine).

    .venv/bin/python benchmarks/write_path.py [--copy-rows 100000] [--repeat 3]

Prints rows/s for each kind of write, and the ratio of the embedded table's time to the plain
table's; writes benchmarks/results/write_path.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS_DIR,
    Databases,
    load_corpus,
    machine_facts,
    print_table,
    server_versions,
    source_digest,
    write_json,
)

from embeddb import Embedding, create_engine
from embeddb.database import libpq_conninfo

# The hash test model: its dimensions are known without loading anything, and no worker runs.
MODEL = "embeddb-testing/hash-384"
PLAIN, EMBEDDED = "plain_docs", "embedded_docs"


class Base(DeclarativeBase):
    pass


class EmbeddedDoc(Base):
    __tablename__ = EMBEDDED
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    views: Mapped[int]
    embedding = Embedding("{body}", model=MODEL)


CREATE_PLAIN = sql.SQL(
    "CREATE TABLE {} (id integer PRIMARY KEY, body varchar NOT NULL, views integer NOT NULL)"
).format(sql.Identifier(PLAIN))

Write = Callable[[psycopg.Connection[Any], sql.Identifier], int]


def single_inserts(texts: list[str]) -> Write:
    def run(conn: psycopg.Connection[Any], table: sql.Identifier) -> int:
        conn.autocommit = True
        statement = sql.SQL("INSERT INTO {} (id, body, views) VALUES (%s, %s, 0)").format(table)
        for i, text in enumerate(texts):
            conn.execute(statement, (i, text))
        conn.autocommit = False
        return len(texts)
    return run


def batch_inserts(texts: list[str], batch: int = 1000) -> Write:
    def run(conn: psycopg.Connection[Any], table: sql.Identifier) -> int:
        statement = sql.SQL(
            "INSERT INTO {} (id, body, views) SELECT i, b, 0 FROM unnest(%s::int[], %s::text[])"
            " AS t(i, b)").format(table)
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            with conn.transaction():
                conn.execute(statement, (list(range(start, start + len(chunk))), chunk))
        return len(texts)
    return run


def copy_in(texts: list[str]) -> Write:
    def run(conn: psycopg.Connection[Any], table: sql.Identifier) -> int:
        with conn.transaction(), conn.cursor().copy(
                sql.SQL("COPY {} (id, body, views) FROM STDIN").format(table)) as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text, 0))
        return len(texts)
    return run


def update(column: str, rows: int) -> Write:
    new_value = sql.SQL("body || ' (revised)'") if column == "body" else sql.SQL("views + 1")

    def run(conn: psycopg.Connection[Any], table: sql.Identifier) -> int:
        with conn.transaction():
            conn.execute(sql.SQL("UPDATE {} SET {} = {} WHERE id < %s").format(
                table, sql.Identifier(column), new_value), (rows,))
        return rows
    return run


def prefill(texts: list[str]) -> Callable[[psycopg.Connection[Any], sql.Identifier], None]:
    def run(conn: psycopg.Connection[Any], table: sql.Identifier) -> None:
        copy_in(texts)(conn, table)
        # rows as the worker leaves them: queue entries gone, so an update re-queues them
        with conn.transaction():
            clear_queue(conn)
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        conn.autocommit = False
    return run


def clear_queue(conn: psycopg.Connection[Any]) -> None:
    """Empty the queue: embeddb.pending, and the inbox of bulk INSERTs (revision 0012 on) and
    its key ranges (revision 0016 on)."""
    conn.execute("DELETE FROM embeddb.pending")
    for inbox in ("embeddb.inbox", "embeddb.inbox_ranges"):
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (inbox,)).fetchone() == (True,):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(*inbox.split("."))))


def reset(conn: psycopg.Connection[Any], table: sql.Identifier) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("TRUNCATE {}").format(table))
        clear_queue(conn)


def measure(conn: psycopg.Connection[Any], write: Write, repeat: int,
            setup: Callable[[psycopg.Connection[Any], sql.Identifier], None] | None
            ) -> dict[str, float]:
    """Best seconds of ``write`` on each table, alternating tables between repeats."""
    best = {PLAIN: float("inf"), EMBEDDED: float("inf")}
    rows = 0
    for attempt in range(repeat):
        order = (PLAIN, EMBEDDED) if attempt % 2 == 0 else (EMBEDDED, PLAIN)
        for name in order:
            table = sql.Identifier(name)
            reset(conn, table)
            if setup is not None:
                setup(conn, table)
            started = time.perf_counter()
            rows = write(conn, table)
            best[name] = min(best[name], time.perf_counter() - started)
    return {"rows": rows, "plain_s": best[PLAIN], "embedded_s": best[EMBEDDED]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a database to use (default: a fresh one on the"
                        " benchmarks' embedded server)")
    parser.add_argument("--copy-rows", type=int, default=100_000)
    parser.add_argument("--single-rows", type=int, default=2_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--update-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    texts = load_corpus("wordnet", max(args.copy_rows, args.update_rows))
    databases = Databases.choose(args.database_url)
    cases: list[tuple[str, Write, Any]] = [
        (f"single-row INSERT, autocommit ({args.single_rows:,})",
         single_inserts(texts[:args.single_rows]), None),
        (f"INSERT of 1,000-row batches ({args.batch_rows:,})",
         batch_inserts(texts[:args.batch_rows]), None),
        (f"COPY ({args.copy_rows:,})", copy_in(texts[:args.copy_rows]), None),
        (f"UPDATE of the source column ({args.update_rows:,})",
         update("body", args.update_rows), prefill(texts[:args.update_rows])),
        (f"UPDATE of another column ({args.update_rows:,})",
         update("views", args.update_rows), prefill(texts[:args.update_rows])),
    ]
    results: list[dict[str, Any]] = []
    with databases.fresh("bench_write_path") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        with psycopg.connect(libpq_conninfo(url)) as conn:
            with conn.transaction():
                conn.execute(CREATE_PLAIN)
            for name, write, setup in cases:
                figures = measure(conn, write, args.repeat, setup)
                results.append({"write": name, **figures})
                print(f"measured: {name}", file=sys.stderr)
        versions = server_versions(url)

    rows = [[r["write"], f"{r['rows'] / r['plain_s']:,.0f}", f"{r['rows'] / r['embedded_s']:,.0f}",
             f"{r['embedded_s'] / r['plain_s']:.2f}x"] for r in results]
    print_table(["write", "plain rows/s", "embedded rows/s", "time ratio"], rows)
    path = write_json(RESULTS_DIR / "write_path.json", {
        "results": results, "machine": machine_facts(), "versions": versions,
        "source": source_digest(), "repeat": args.repeat})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
