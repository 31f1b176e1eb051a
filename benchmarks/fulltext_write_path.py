"""What the full-text index costs the application's writes: the same writes into a plain
table, an embedded table, and an embedded table with ``fulltext=True``, in one run.

The three tables have the same columns and primary key; the embedded ones get their vector
columns, HNSW index and triggers from ``create_all``, the full-text one also its ``tsvector``
column, GIN index and whatever keeps its BM25 statistics. The texts are SciFact abstracts
(title and text). No worker runs. Each write runs ``--repeat`` times on freshly truncated
tables, rotating the tables' order; the best time counts.

    .venv/bin/python benchmarks/fulltext_write_path.py [--single-rows 400] [--repeat 3]

Prints rows/s per kind of write and table, and the full-text table's time over the plain
table's and over the embedded table's; writes benchmarks/results/fulltext_write_path.json.
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
from write_path import (
    CREATE_PLAIN,
    Write,
    batch_inserts,
    copy_in,
    prefill,
    reset,
    single_inserts,
)
from write_path import update as update_column

from embeddb import Embedding
from embeddb.database import (
    create_engine,
    libpq_conninfo,
)

MODEL = "embeddb-testing/hash-384"  # no worker runs: the model is never loaded
PLAIN, EMBEDDED, FULLTEXT = "plain_docs", "embedded_docs", "fulltext_docs"
TABLES = (PLAIN, EMBEDDED, FULLTEXT)


class Base(DeclarativeBase):
    pass


class EmbeddedDoc(Base):
    __tablename__ = EMBEDDED
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    views: Mapped[int]
    embedding = Embedding("{body}", model=MODEL)


class FulltextDoc(Base):
    __tablename__ = FULLTEXT
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    views: Mapped[int]
    embedding = Embedding("{body}", model=MODEL, fulltext=True)


def measure(conn: psycopg.Connection[Any], write: Write, repeat: int,
            setup: Callable[[psycopg.Connection[Any], sql.Identifier], None] | None
            ) -> dict[str, Any]:
    best = dict.fromkeys(TABLES, float("inf"))
    rows = 0
    for attempt in range(repeat):
        shift = attempt % len(TABLES)
        for name in TABLES[shift:] + TABLES[:shift]:
            table = sql.Identifier(name)
            reset(conn, table)
            if setup is not None:
                setup(conn, table)
            started = time.perf_counter()
            rows = write(conn, table)
            best[name] = min(best[name], time.perf_counter() - started)
    return {"rows": rows, **{f"{name}_s": best[name] for name in TABLES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a database to use (default: a fresh one on the"
                        " benchmarks' embedded server)")
    parser.add_argument("--single-rows", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    texts = load_corpus("scifact")
    cases: list[tuple[str, Write, Any]] = [
        (f"single-row INSERT, autocommit ({args.single_rows:,})",
         single_inserts(texts[:args.single_rows]), None),
        (f"INSERT of 1,000-row batches ({len(texts):,})", batch_inserts(texts), None),
        (f"COPY ({len(texts):,})", copy_in(texts), None),
        (f"UPDATE of another column ({len(texts):,})", update_column("views", len(texts)),
         prefill(texts)),
    ]
    results: list[dict[str, Any]] = []
    databases = Databases.choose(args.database_url)
    with databases.fresh("bench_fulltext_write_path") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        with psycopg.connect(libpq_conninfo(url)) as conn:
            with conn.transaction():
                conn.execute(CREATE_PLAIN)
            for name, write, setup in cases:
                results.append({"write": name, **measure(conn, write, args.repeat, setup)})
                print(f"measured: {name}", file=sys.stderr)
        versions = server_versions(url)

    rows = [[r["write"], *(f"{r['rows'] / r[f'{t}_s']:,.0f}" for t in TABLES),
             f"{r[f'{FULLTEXT}_s'] / r[f'{PLAIN}_s']:.2f}x",
             f"{r[f'{FULLTEXT}_s'] / r[f'{EMBEDDED}_s']:.2f}x"] for r in results]
    print_table(["write", "plain rows/s", "embedded rows/s", "fulltext rows/s",
                 "fulltext / plain", "fulltext / embedded"], rows)
    path = write_json(RESULTS_DIR / "fulltext_write_path.json", {
        "results": results, "machine": machine_facts(), "versions": versions,
        "source": source_digest(), "repeat": args.repeat})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
