"""``embeddb.import_vectors`` next to plain COPY of the same vectors into the same table.

Run: ``.venv/bin/python benchmarks/import_vectors.py [--rows 20000] [--no-index]
[--repeat 1] [--database-url URL]``.
Prints a table and writes every figure to ``benchmarks/results/import_vectors[_no_index].json``.

The table is declared ``Embedding("{text}")`` (all-MiniLM-L6-v2, 384 dimensions, HNSW
index, or none with ``--no-index``); its ``--rows`` rows are inserted first with no vector
(the trigger queues them, as for a table that existed before embeddb). Their vectors are
derived from real ones: the first ``--real`` WordNet synsets (``"lemma, lemma: gloss"``) are
encoded by MiniLM once and cached (``wordnet_vectors.load``); row i has the text of synset
``i mod --real`` and that synset's vector plus a little noise (cosine ~0.998 to it, so the
index holds no exact duplicates). The import's check, which re-encodes a sample of rows with
the column's model, so passes as it would for a real migration. The model is loaded before
timing (a process loads it once).

Each way runs on a fresh database with the same rows and index, in this order, ``--repeat``
rounds (best of them kept):

* *import_vectors*: the whole call (binary COPY into a staging table, ``check=8`` rows
  re-encoded, the UPDATE with each row's text hash, the queue cleared, the keys checked by the
  UPDATE's row count; the import is the whole table, so the HNSW index is set aside and built
  again in the same transaction);
* the same with ``check=0``;
* the same with ``set_index_aside=False``: every vector enters the graph as it is written;
* *plain COPY into a temporary table*: binary COPY of the same (key, vector) pairs, no index;
* *plain COPY into an indexed table like the user's*: the same rows (key, texts, vector)
  COPYed into ``CREATE TABLE ... (LIKE glosses INCLUDING INDEXES)``, its HNSW index kept, so
  every vector enters the graph: the limit for an import that keeps the index;
* *COPY + UPDATE by hand*: that COPY into a temporary table, then ``UPDATE table SET
  embedding = v FROM staging``, the index kept: what a hand-written import does (it leaves the
  rows queued and their hashes unset, so the worker would embed them all again);
* the same with the HNSW index dropped before the UPDATE and built again after, with the same
  ``maintenance_work_mem`` (its build time printed apart): the limit for an import that sets
  the index aside.

The table ends with import_vectors' rate against each limit measured in the same run. The
model is loaded and used once before timing (a process loads it once; its first call is
slower). The embedded server runs at the priority of the process that started it: stop it
(``EMBEDDB_HOME=.embeddb-bench embeddb db stop``) before a run whose speed matters, so that
the run starts it; the server's nice value is printed and recorded.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from common import RESULTS_DIR, Databases, machine_facts, print_table, server_versions, write_json
from pgvector.psycopg import register_vector
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from wordnet_vectors import Synset, load, synsets

from embeddb import import_vectors
from embeddb.database import create_engine, libpq_conninfo
from embeddb.embedders import MINILM, load_embedder
from embeddb.orm import Embedding

RESULTS = RESULTS_DIR


def gloss_table(*, index: bool) -> Any:
    """The mapped class of table ``glosses``, its vector column with or without HNSW index."""

    class Base(DeclarativeBase):
        pass

    class Gloss(Base):
        __tablename__ = "glosses"
        id: Mapped[str] = mapped_column(primary_key=True)
        pos: Mapped[str]
        text: Mapped[str]
        embedding = Embedding("{text}", model=MINILM, index=index)

    return Gloss


Vectors = np.ndarray[Any, Any]
Way = Callable[[str, list[str], Vectors], dict[str, Any]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows (default 20000)")
    parser.add_argument("--real", type=int, default=1_000,
                        help="synsets really encoded, the rows' texts (default 1000)")
    parser.add_argument("--no-index", action="store_true",
                        help="declare the column with index=False (no HNSW upkeep per row)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every way, the best kept (default 1)")
    parser.add_argument("--database-url", help="a database to use (default: the benchmarks'"
                        " embedded server, fresh databases)")
    args = parser.parse_args()
    table = gloss_table(index=not args.no_index)

    real = synsets()[:args.real]
    started = time.perf_counter()
    real_vectors = load([synset.text for synset in real])
    print(f"{len(real):,} real MiniLM vectors ready in {time.perf_counter() - started:.0f} s")
    rows, vectors = derived_rows(real, real_vectors, args.rows)
    # the check's model, loaded once per process and used once (its first call is slower)
    load_embedder(MINILM).embed_documents([rows[0].text])
    keys = [row.id for row in rows]
    ways: dict[str, Way] = {
        "import_vectors": lambda url, k, v: via_import(url, table, k, v, check=8),
        "import_vectors, check=0": lambda url, k, v: via_import(url, table, k, v, check=0),
        "import_vectors, index kept in place": lambda url, k, v: via_import(
            url, table, k, v, check=8, set_index_aside=False),
        "plain COPY into a temporary table": lambda url, k, v: via_copy(url, k, v, update=False),
        "plain COPY into an indexed table like the user's": lambda url, k, v: via_copy_indexed(
            url, rows, v),
        "COPY + UPDATE by hand": lambda url, k, v: via_copy(url, k, v, update=True),
        "COPY + UPDATE by hand, index dropped and built again": lambda url, k, v: via_copy(
            url, k, v, update=True, rebuild=True),
    }
    databases = Databases.choose(args.database_url)
    server_nice = postgres_nice(databases.url)
    print(f"the database server runs at nice {server_nice}")
    results: dict[str, dict[str, Any]] = {}
    for round_ in range(args.repeat):
        for number, (name, way) in enumerate(ways.items()):
            if args.no_index and "index" in name:
                continue  # nothing to keep, set aside or build
            with databases.fresh(f"embeddb_bench_import_{number}") as url:
                prepare(url, table, rows)
                figures = way(url, keys, vectors)
            best = results.get(name)
            if best is None or figures["seconds"] < best["seconds"]:
                results[name] = {**figures, "rounds": round_ + 1}
            print(f"{name}: {figures['rows_per_second']:,.0f} rows/s")

    limit = results["plain COPY into a temporary table"]["rows_per_second"]
    table = [[name, f"{r['seconds']:.2f}", f"{r['rows_per_second']:,.0f}",
              f"{r['rows_per_second'] / limit:.3f}", str(r.get("still_queued", "")),
              {True: "rebuilt", False: "kept"}.get(r.get("index_rebuilt"), ""),
              {True: "yes", False: "NO", None: "none"}[r["hnsw_index_valid"]]]
             for name, r in results.items()]
    print()
    print_table(["way", "seconds", "rows/s", "ratio to plain COPY", "rows still queued",
                 "HNSW index", "index valid after"], table)
    for name, r in results.items():
        if "index_build_seconds" in r:
            print(f"{name}: the CREATE INDEX took {r['index_build_seconds']:.2f} s of"
                  f" {r['seconds']:.2f} s")
    ratios = fair_ratios(results)
    if ratios:
        print()
        print_table(["import_vectors", "against its limit", "rows/s", "limit rows/s", "ratio"],
                    [[way, against, f"{mine:,.0f}", f"{theirs:,.0f}", f"{mine / theirs:.3f}"]
                     for way, against, mine, theirs in ratios])
    index = "no index" if args.no_index else "HNSW index"
    print(f"\n{len(rows):,} rows (texts of {len(real):,} WordNet synsets), 384-dimensional"
          f" vectors, {index} on the column; ratios to plain COPY measured in this run")
    payload = {
        "benchmark": "import_vectors",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(rows),
        "real_vectors": len(real),
        "hnsw_index": not args.no_index,
        "results": results,
        "ratios_to_limits": [{"way": way, "limit": against, "ratio": mine / theirs}
                             for way, against, mine, theirs in ratios],
        "repeat": args.repeat,
        "server_nice": server_nice,
        "machine": machine_facts(),
        "versions": server_versions(databases.url),
    }
    output = RESULTS / ("import_vectors_no_index.json" if args.no_index else "import_vectors.json")
    print(f"written to {write_json(output, payload)}")


#: Each import_vectors way against the limits measured in the same run.
LIMITS = (
    ("import_vectors", "COPY + UPDATE by hand, index dropped and built again"),
    ("import_vectors, check=0", "COPY + UPDATE by hand, index dropped and built again"),
    ("import_vectors, index kept in place", "plain COPY into an indexed table like the user's"),
    ("import_vectors, index kept in place", "COPY + UPDATE by hand"),
    ("import_vectors", "plain COPY into a temporary table"),
)


def fair_ratios(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """(way, limit, its rows/s, the limit's rows/s) for the pairs of :data:`LIMITS` measured."""
    return [(way, against, results[way]["rows_per_second"], results[against]["rows_per_second"])
            for way, against in LIMITS if way in results and against in results]


def postgres_nice(url: str) -> int | None:
    """The nice value of the server's postmaster (None if it runs elsewhere)."""
    with psycopg.connect(libpq_conninfo(url)) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    pid_file = Path(row[0]) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        return os.getpriority(os.PRIO_PROCESS, pid)
    except (OSError, ValueError, IndexError):
        return None


def derived_rows(real: list[Synset], vectors: Vectors, count: int) -> tuple[list[Synset], Vectors]:
    """``count`` rows cycling through ``real``, each with its synset's vector plus noise."""
    picks = np.arange(count) % len(real)
    rows = [Synset(f"{real[i].id}/{n}", real[i].pos, real[i].lexname, real[i].text)
            for n, i in enumerate(picks)]
    noisy = vectors[picks] + np.random.default_rng(12).normal(0, 0.0032, (count, 384))
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return rows, noisy.astype(np.float32)


def prepare(url: str, table: Any, rows: list[Synset]) -> None:
    """The table with its rows and no vectors (queued by the trigger), analysed."""
    engine = create_engine(url)
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": r.id, "pos": r.pos, "text": r.text}
                                        for r in rows])
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text("VACUUM ANALYZE glosses"))
    engine.dispose()


def via_import(url: str, table: Any, keys: list[str], vectors: Vectors, *,
               check: int, set_index_aside: bool | None = None) -> dict[str, Any]:
    engine = create_engine(url)
    started = time.perf_counter()
    result = import_vectors(engine, table.embedding, zip(keys, vectors, strict=True),
                            check=check, set_index_aside=set_index_aside)
    seconds = time.perf_counter() - started
    figures = {"seconds": seconds, "rows_per_second": result.rows / seconds,
               "checked": result.checked, "min_cosine": result.min_cosine,
               "index_rebuilt": result.index_rebuilt, **state(engine)}
    engine.dispose()
    if result.rows != len(keys) or figures["stored"] != len(keys) or figures["still_queued"]:
        raise SystemExit(f"import_vectors left {figures}")
    return figures


def via_copy(url: str, keys: list[str], vectors: Vectors, *, update: bool,
             rebuild: bool = False) -> dict[str, Any]:
    """COPY into a temporary table; then the UPDATE; with ``rebuild`` the column's HNSW index
    is dropped before the UPDATE and built again after, as import_vectors does."""
    build_seconds = None
    with psycopg.connect(libpq_conninfo(url)) as conn:
        register_vector(conn)
        started = time.perf_counter()
        if rebuild:
            index = conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index"
                                 " WHERE indrelid = 'glosses'::regclass AND"
                                 " indexrelid::regclass::text LIKE '%hnsw%'").fetchone()
            assert index is not None
            conn.execute("DROP INDEX glosses_embedding_hnsw")
        conn.execute("CREATE TEMP TABLE staging (id text, vector vector(384))")
        with conn.cursor() as cursor, cursor.copy(
                "COPY staging (id, vector) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for key, vector in zip(keys, vectors, strict=True):
                copy.write_row((key, vector))
        if update:
            conn.execute("UPDATE glosses AS t SET embedding = s.vector FROM staging AS s"
                         " WHERE t.id = s.id")
        if rebuild:
            building = time.perf_counter()
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            conn.execute(index[0])
            build_seconds = time.perf_counter() - building
        conn.commit()
        seconds = time.perf_counter() - started
    engine = create_engine(url)
    figures = {"seconds": seconds, "rows_per_second": len(keys) / seconds, **state(engine)}
    if build_seconds is not None:
        figures["index_build_seconds"] = build_seconds
    engine.dispose()
    return figures


def via_copy_indexed(url: str, rows: list[Synset], vectors: Vectors) -> dict[str, Any]:
    """The rows with their vectors COPYed into a new table like ``glosses``, with its primary
    key and HNSW index (and no embeddb triggers): each vector enters the graph as it comes."""
    with psycopg.connect(libpq_conninfo(url)) as conn:
        register_vector(conn)
        started = time.perf_counter()
        conn.execute("CREATE TABLE glosses_copied (LIKE glosses INCLUDING INDEXES)")
        with conn.cursor() as cursor, cursor.copy(
                "COPY glosses_copied (id, pos, text, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "text", "text", "vector"])
            for row, vector in zip(rows, vectors, strict=True):
                copy.write_row((row.id, row.pos, row.text, vector))
        conn.commit()
        seconds = time.perf_counter() - started
        stored = conn.execute("SELECT count(embedding) FROM glosses_copied").fetchone()
        valid = conn.execute(
            "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'glosses_copied'::regclass"
            " AND indexrelid::regclass::text LIKE '%embedding%'").fetchone()
    assert stored is not None and valid is not None and stored[0] == len(rows)
    return {"seconds": seconds, "rows_per_second": len(rows) / seconds, "stored": stored[0],
            "hnsw_index_valid": valid[0]}


def state(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(embedding) FROM glosses")).scalar_one()
        queued = conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar_one()
        valid = conn.execute(sa.text(
            "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'glosses'::regclass"
            " AND indexrelid::regclass::text LIKE '%hnsw%'")).scalar()
    return {"stored": int(stored), "still_queued": int(queued), "hnsw_index_valid": valid}


if __name__ == "__main__":
    main()
