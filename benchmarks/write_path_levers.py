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
  this only shows what it costs a write);
* ``inbox, jsonb keys (0012)``: revisions 0012-0015: an INSERT of 100 rows or more adds one
  ``embeddb.inbox`` row per 10,000 keys (a jsonb array) instead of a queue entry per row;
* ``key ranges (now)``: what embeddb installs since revision 0016: such an INSERT of fresh rows
  whose integer keys have no gaps adds only its first and last key (``embeddb.inbox_ranges``),
  reading the statement's rows once;
* ``key ranges, no SET search_path`` and ``key ranges, SECURITY INVOKER``: the same function
  without its pinned ``search_path`` (a GUC set and restored per call), and without running
  as its owner either: what those two safety measures cost a write (embeddb keeps both);
* floors: ``trigger that only NOTIFYs`` (the cheapest trigger that still wakes a worker) and
  ``no triggers`` (the embedded table's own shape: vector and hash columns, HNSW index).

Besides COPY and batch INSERT it measures a single-row INSERT in autocommit and an UPDATE of a
column the text is not made of, the writes whose targets (1.3x, 1.1x) only the floors can
judge.

    .venv/bin/python benchmarks/write_path_levers.py [--copy-rows 20000] [--repeat 3]
        [--only LABEL ...]

``--only`` measures the variants whose label contains one of the given texts.
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
from write_path import (
    CREATE_PLAIN,
    EMBEDDED,
    Base,
    batch_inserts,
    copy_in,
    measure,
    prefill,
    single_inserts,
    update,
)

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


def _notify_only(column_id: int) -> str:
    """An ``enqueue_N()`` that queues nothing and only NOTIFYs: the cheapest trigger at all."""
    body = (f"BEGIN PERFORM pg_notify('{column_sql.NOTIFY_CHANNEL}', '{column_id}');"
            " RETURN NULL; END")
    return sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
        column_sql.enqueue_function(column_id), sql.Literal(body)).as_string(None)


_PINNED_PATH = " SET search_path = pg_catalog, pg_temp"


def _unpinned(function: str, *, invoker: bool) -> str:
    """``function`` without its pinned search_path, and as ``invoker`` if asked."""
    assert _PINNED_PATH in function
    function = function.replace(_PINNED_PATH, "", 1)
    return function.replace(" SECURITY DEFINER", "", 1) if invoker else function


def setup(url: str, *, per_row: bool, foreign_key: bool, md5: bool = False,
          claim_index: bool = True, plain_insert: bool = False, inbox: bool = False,
          ranges: bool = False, floor: str | None = None,
          unpinned: str | None = None) -> list[str]:
    """The statements that give the embedded table's column this variant."""
    engine = create_engine(url)
    with engine.connect() as conn:
        (entry,) = [e for e in list_entries(conn) if e.spec.table == EMBEDDED]
    engine.dispose()
    if md5:
        with md5_always():
            function = column_sql.create_enqueue_function(entry.spec, entry.id, inbox=inbox,
                                                          ranges=ranges)
    else:
        function = column_sql.create_enqueue_function(entry.spec, entry.id, inbox=inbox,
                                                      ranges=ranges)
    if plain_insert:
        function = _plain_insert_first(function)
    if unpinned is not None:
        function = _unpinned(function, invoker=unpinned == "invoker")
    if floor == "notify only":
        function = _notify_only(entry.id)
    triggers = column_sql.create_triggers(entry.spec, entry.id, partitioned=per_row)
    if floor == "no triggers":
        triggers = [t for t in triggers if t.startswith("DROP TRIGGER")]
    return [
        function,
        *triggers,
        FOREIGN_KEY if foreign_key else NO_FOREIGN_KEY,
        CLAIM_INDEX if claim_index else "DROP INDEX IF EXISTS embeddb.pending_claimable",
    ]


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("row triggers + FK (before issue 14)", {"per_row": True, "foreign_key": True}),
    ("row triggers", {"per_row": True, "foreign_key": False}),
    ("statement triggers + FK", {"per_row": False, "foreign_key": True}),
    ("statement triggers (0010, 0011)", {"per_row": False, "foreign_key": False}),
    ("statement triggers, md5 of every row", {"per_row": False, "foreign_key": False,
                                              "md5": True}),
    ("statement triggers, plain INSERT first", {"per_row": False, "foreign_key": False,
                                                "plain_insert": True}),
    ("statement triggers, no claim index", {"per_row": False, "foreign_key": False,
                                            "claim_index": False}),
    ("inbox, jsonb keys (0012)", {"per_row": False, "foreign_key": False, "inbox": True}),
    ("key ranges (now)", {"per_row": False, "foreign_key": False, "inbox": True,
                          "ranges": True}),
    ("key ranges, no SET search_path", {"per_row": False, "foreign_key": False, "inbox": True,
                                        "ranges": True, "unpinned": "path"}),
    ("key ranges, SECURITY INVOKER", {"per_row": False, "foreign_key": False, "inbox": True,
                                      "ranges": True, "unpinned": "invoker"}),
    ("floor: trigger that only NOTIFYs", {"per_row": False, "foreign_key": False,
                                          "floor": "notify only"}),
    ("floor: no triggers", {"per_row": False, "foreign_key": False, "floor": "no triggers"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--copy-rows", type=int, default=20_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--single-rows", type=int, default=1_000)
    parser.add_argument("--update-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="variants whose label contains one of these")
    args = parser.parse_args()
    variants = [(label, options) for label, options in VARIANTS
                if not args.only or any(text in label for text in args.only)]
    texts = load_corpus("wordnet", max(args.copy_rows, args.batch_rows, args.update_rows))
    writes: list[tuple[str, Callable[..., int], Any]] = [
        (f"COPY ({args.copy_rows:,})", copy_in(texts[:args.copy_rows]), None),
        (f"INSERT of 1,000-row batches ({args.batch_rows:,})",
         batch_inserts(texts[:args.batch_rows]), None),
        (f"single-row INSERT, autocommit ({args.single_rows:,})",
         single_inserts(texts[:args.single_rows]), None),
        (f"UPDATE of another column ({args.update_rows:,})", update("views", args.update_rows),
         prefill(texts[:args.update_rows])),
    ]
    results: list[dict[str, Any]] = []
    with Databases.choose(args.database_url).fresh("bench_write_levers") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        with psycopg.connect(libpq_conninfo(url)) as conn:
            with conn.transaction():
                conn.execute(CREATE_PLAIN)
            for variant, options in variants:
                with conn.transaction():
                    for statement in setup(url, **options):
                        conn.execute(statement.encode())
                for write, run, prepare in writes:
                    figures = measure(conn, run, args.repeat, prepare)
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
