"""Which part of the trigger's cost each lever removes: the write-path benchmark's COPY and
batch INSERT, on the same embedded table with its triggers and queue set up each way, against
the plain table, in one run.

Variants, from the row triggers of embeddb before issue 14 to this version's:

* ``row triggers + FK``: a trigger call per row, and the queue's foreign key to the catalog;
* ``row triggers``: the same without the foreign key;
* ``statement triggers + FK``: one call per statement reading the transition table;
* ``statement triggers``: what embeddb installs now;
* ``... md5 of every row``: without skipping the hash for rows that store none;
* ``... plain INSERT first``: the queue insert without ON CONFLICT (no probe of the key
  before inserting it), redone with ON CONFLICT only if it hits an entry: a subtransaction per
  statement, which is why embeddb does not do it;
* ``... no claim index``: without the queue's partial index for claiming (the worker needs it:
  this only shows what it costs a write).

    .venv/bin/python benchmarks/write_path_levers.py [--copy-rows 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, Databases, load_corpus, machine_facts, print_table, write_json
from write_path import CREATE_PLAIN, EMBEDDED, Base, batch_inserts, copy_in, measure

from embeddb import column_sql, create_engine
from embeddb.catalog import list_entries
from embeddb.database import libpq_conninfo

FOREIGN_KEY = ("ALTER TABLE embeddb.pending ADD CONSTRAINT pending_column_id_fkey"
               " FOREIGN KEY (column_id) REFERENCES embeddb.columns (id) ON DELETE CASCADE")
NO_FOREIGN_KEY = "ALTER TABLE embeddb.pending DROP CONSTRAINT IF EXISTS pending_column_id_fkey"
CLAIM_INDEX = ("CREATE INDEX IF NOT EXISTS pending_claimable ON embeddb.pending"
               " (column_id, enqueued_at) WHERE parked_at IS NULL")


def _md5_always(column_id: int, spec: Any, row: str) -> sql.Composable:
    text = sql.SQL("{}({})").format(column_sql.render_function(column_id), sql.Identifier(row))
    return sql.SQL("{} IS DISTINCT FROM md5({})::uuid").format(
        sql.Identifier(row, spec.hash_column), text)


@contextmanager
def md5_always() -> Iterator[None]:
    original = column_sql._needs_vector
    column_sql._needs_vector = _md5_always
    try:
        yield
    finally:
        column_sql._needs_vector = original


def _plain_insert_first(function: str) -> str:
    """``function`` with its statement-level queue insert tried without ON CONFLICT first."""
    start = function.index("INSERT INTO embeddb.pending AS p (column_id, row_key)\n        SELECT")
    end = function.index("IF FOUND THEN", start)
    upsert = function[start:end].rstrip()
    plain = upsert[:upsert.index("ON CONFLICT")].rstrip() + ";"
    return (function[:start] + "BEGIN\n" + plain + "\nEXCEPTION WHEN unique_violation THEN\n"
            + upsert + "\nEND;\n        " + function[end:])


def setup(url: str, *, per_row: bool, foreign_key: bool, md5: bool = False,
          claim_index: bool = True, plain_insert: bool = False) -> list[str]:
    """The statements that give the embedded table's column this variant."""
    engine = create_engine(url)
    with engine.connect() as conn:
        (entry,) = [e for e in list_entries(conn) if e.spec.table == EMBEDDED]
    engine.dispose()
    if md5:
        with md5_always():
            function = column_sql.create_enqueue_function(entry.spec, entry.id)
    else:
        function = column_sql.create_enqueue_function(entry.spec, entry.id)
    if plain_insert:
        function = _plain_insert_first(function)
    return [
        function,
        *column_sql.create_triggers(entry.spec, entry.id, partitioned=per_row),
        FOREIGN_KEY if foreign_key else NO_FOREIGN_KEY,
        CLAIM_INDEX if claim_index else "DROP INDEX IF EXISTS embeddb.pending_claimable",
    ]


VARIANTS: list[tuple[str, dict[str, bool]]] = [
    ("row triggers + FK (before issue 14)", {"per_row": True, "foreign_key": True}),
    ("row triggers", {"per_row": True, "foreign_key": False}),
    ("statement triggers + FK", {"per_row": False, "foreign_key": True}),
    ("statement triggers (now)", {"per_row": False, "foreign_key": False}),
    ("statement triggers, md5 of every row", {"per_row": False, "foreign_key": False,
                                              "md5": True}),
    ("statement triggers, plain INSERT first", {"per_row": False, "foreign_key": False,
                                                "plain_insert": True}),
    ("statement triggers, no claim index", {"per_row": False, "foreign_key": False,
                                            "claim_index": False}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--copy-rows", type=int, default=20_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    texts = load_corpus("wordnet", max(args.copy_rows, args.batch_rows))
    writes: list[tuple[str, Callable[..., int]]] = [
        (f"COPY ({args.copy_rows:,})", copy_in(texts[:args.copy_rows])),
        (f"INSERT of 1,000-row batches ({args.batch_rows:,})",
         batch_inserts(texts[:args.batch_rows])),
    ]
    results: list[dict[str, Any]] = []
    with Databases.choose(args.database_url).fresh("bench_write_levers") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        with psycopg.connect(libpq_conninfo(url)) as conn:
            with conn.transaction():
                conn.execute(CREATE_PLAIN)
            for variant, options in VARIANTS:
                with conn.transaction():
                    for statement in setup(url, **options):
                        conn.execute(statement.encode())
                for write, run in writes:
                    figures = measure(conn, run, args.repeat, None)
                    results.append({"variant": variant, "write": write, **figures})
                    print(f"measured: {variant}, {write}", file=sys.stderr)
    rows = [[r["variant"], r["write"], f"{r['rows'] / r['embedded_s']:,.0f}",
             f"{r['embedded_s'] / r['plain_s']:.2f}x"] for r in results]
    print_table(["variant", "write", "embedded rows/s", "time ratio to plain"], rows, left=2)
    path = write_json(RESULTS_DIR / "write_path_levers.json",
                      {"results": results, "machine": machine_facts(), "repeat": args.repeat})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
