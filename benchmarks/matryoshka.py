"""SciFact retrieval quality, HNSW index size and search latency of all-MiniLM-L6-v2 cut to
fewer dimensions (Matryoshka), through embeddb's whole path.

Run: ``.venv/bin/python benchmarks/matryoshka.py [--dimensions 384 256 128] [--all-through-worker]
[--database-url URL]``. Prints a table and writes every figure to
``benchmarks/results/matryoshka.json``.

One table per dimension, declared ``Embedding("{title} {body}", dimensions=N)``. The full
dimension (the first listed) takes the application's path: rows in with one INSERT, embeddb's
worker embeds them (``Worker.run_once()``). To save encoding SciFact again per dimension, the
other tables get their rows the same way and then their vectors from
``embeddb.import_vectors``: the worker's vectors cut to N components and normalised again,
which is what the worker would store, and the import itself re-encodes a sample of rows with
the column's own N-dimensional model and refuses on disagreement (``--all-through-worker``
runs the worker for every table instead). Every HNSW index is then rebuilt the same way
(``REINDEX``, m=16, ef_construction=64), so sizes compare builds of one kind.

Each of the 300 test claims is embedded once per column by the search helper's own path (the
column's model, cut to N) and cached, then answered by ``embeddb.search`` twice: the default
plan (HNSW, no filter) and ``plan="exact"``. The measure is BEIR's nDCG@10; the reference
("ratio") is the full dimension measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from common import (
    RESULTS_DIR,
    Databases,
    beir_test_set,
    machine_facts,
    ndcg,
    print_table,
    search_passes,
    server_versions,
    write_json,
)
from pgvector.psycopg import register_vector
from scifact_quality import SCIFACT, K
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Worker, WorkerConfig, import_vectors
from embeddb.database import create_engine, libpq_conninfo
from embeddb.embedders import MINILM
from embeddb.orm import Embedding
from embeddb.query._query_vectors import column_entry, embed_query

OUTPUT = RESULTS_DIR / "matryoshka.json"


class Base(DeclarativeBase):
    pass


def abstract_table(dimensions: int) -> Any:
    """The mapped class of table ``abstracts_<dimensions>``."""
    return type(f"Abstract{dimensions}", (Base,), {
        "__tablename__": f"abstracts_{dimensions}",
        "__annotations__": {"id": Mapped[str], "title": Mapped[str], "body": Mapped[str]},
        "id": mapped_column(primary_key=True),
        "title": mapped_column(),
        "body": mapped_column(),
        "embedding": Embedding("{title} {body}", model=MINILM, dimensions=dimensions),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dimensions", type=int, nargs="+", default=[384, 256, 128],
                        help="dimensions to measure, the full one first (default 384 256 128)")
    parser.add_argument("--all-through-worker", action="store_true",
                        help="embed every table with the worker instead of importing cuts")
    parser.add_argument("--limit", type=int, help="only the first N abstracts (a smoke run)")
    parser.add_argument("--database-url", help="a database to use (default: the benchmarks'"
                        " embedded server, a fresh database)")
    args = parser.parse_args()
    full, *cuts = args.dimensions
    if any(cut >= full for cut in cuts):
        raise SystemExit("list the full dimension first, then smaller ones")

    corpus, qrels, claims = beir_test_set(SCIFACT, args.limit)
    tables = {dims: abstract_table(dims) for dims in args.dimensions}
    databases = Databases.choose(args.database_url)
    results: dict[int, dict[str, Any]] = {}
    with databases.fresh("embeddb_bench_matryoshka") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        loading = {full: through_worker(engine, url, tables[full], corpus)}
        vectors = stored_vectors(url, tables[full])
        for dims in cuts:
            if args.all_through_worker:
                loading[dims] = through_worker(engine, url, tables[dims], corpus)
            else:
                loading[dims] = through_import(engine, tables[dims], corpus, vectors, dims)
        for dims, table in tables.items():
            check_complete(engine, table, len(corpus))
            index_bytes = rebuild_index(engine, table)
            results[dims] = {"loading": loading[dims], "index_bytes": index_bytes,
                             **measure_search(engine, table, claims, qrels)}
        engine.dispose()
    report(results, full, len(claims), len(corpus))
    payload = {
        "benchmark": "matryoshka",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": MINILM,
        "queries": len(claims),
        "documents": len(corpus),
        "all_through_worker": args.all_through_worker,
        "results": results,
        "machine": machine_facts(),
        "versions": server_versions(databases.url),
    }
    print(f"written to {write_json(OUTPUT, payload)}")


def through_worker(engine: sa.Engine, url: str, table: Any,
                   corpus: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows in, worker until done: the path an application's rows take."""
    started = time.perf_counter()
    insert_rows(engine, table, corpus)
    with Worker(url, WorkerConfig()) as worker:
        stats = worker.run_once()
    seconds = time.perf_counter() - started
    print(f"{table.__tablename__}: worker embedded {stats.embedded:,} rows in {seconds:.0f} s")
    return {"path": "worker", "seconds": seconds, "rows_per_second": len(corpus) / seconds}


def through_import(engine: sa.Engine, table: Any, corpus: list[dict[str, Any]],
                   full: dict[str, np.ndarray[Any, Any]], dims: int) -> dict[str, Any]:
    """Rows in (queued by the trigger), then the full vectors cut to ``dims`` imported."""
    insert_rows(engine, table, corpus)
    cut = {key: vector[:dims] / np.linalg.norm(vector[:dims]) for key, vector in full.items()}
    started = time.perf_counter()
    result = import_vectors(engine, table.embedding, cut.items(), check=16)
    seconds = time.perf_counter() - started
    print(f"{table.__tablename__}: imported {result.rows:,} cut vectors in {seconds:.1f} s,"
          f" {result.checked} re-encoded, lowest cosine {result.min_cosine:.5f}")
    return {"path": "import_vectors", "seconds": seconds,
            "rows_per_second": result.rows / seconds, "checked": result.checked,
            "min_cosine": result.min_cosine}


def insert_rows(engine: sa.Engine, table: Any, corpus: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [
            {"id": doc["_id"], "title": doc["title"], "body": doc["text"]} for doc in corpus])


def stored_vectors(url: str, table: Any) -> dict[str, np.ndarray[Any, Any]]:
    """Every row's stored vector, by id."""
    with psycopg.connect(libpq_conninfo(url)) as conn:
        register_vector(conn)
        rows = conn.execute(
            sa.text(f"SELECT id, embedding FROM {table.__tablename__}").text).fetchall()
    return {key: np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector,
                            dtype=np.float32) for key, vector in rows}


def check_complete(engine: sa.Engine, table: Any, expected: int) -> None:
    """Every row has a vector and nothing is left queued: the worker has nothing to redo."""
    name = table.__tablename__
    with engine.begin() as conn:
        stored = conn.execute(sa.text(
            f"SELECT count(embedding) FROM {name}")).scalar_one()
        queued = conn.execute(sa.text(
            "SELECT count(*) FROM embeddb.pending p JOIN embeddb.columns c ON c.id = p.column_id"
            " WHERE c.table_name = :name"), {"name": name}).scalar_one()
    if stored != expected or queued:
        raise SystemExit(f"{name}: {stored} of {expected} vectors stored, {queued} still queued")


def rebuild_index(engine: sa.Engine, table: Any) -> int:
    """REINDEX the column's HNSW index (one bulk build for every table); its size in bytes."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        name = conn.execute(sa.text(
            "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c"
            " ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE indrelid = CAST(:table AS regclass) AND am.amname = 'hnsw'"),
            {"table": table.__tablename__}).scalar_one_or_none()
        if name is None:
            raise SystemExit(f"no HNSW index on {table.__tablename__}")
        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        conn.execute(sa.text(f"REINDEX INDEX {name}"))
        conn.execute(sa.text(f"VACUUM ANALYZE {table.__tablename__}"))
        return int(conn.execute(sa.text("SELECT pg_relation_size(CAST(:index AS regclass))"),
                                {"index": name}).scalar_one())


def measure_search(engine: sa.Engine, table: Any, claims: dict[str, str],
                   qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    """nDCG@10 and search latency with the default plan (HNSW) and the exact plan."""
    with Session(engine) as session:
        entry = column_entry(session.connection(), table.embedding)
        for text in claims.values():
            embed_query(entry, text)  # cached: the passes below time the database's work
        session.commit()
        passes = search_passes(session, table.embedding, claims, K)
    rankings, latencies, plans = passes.rankings, passes.latencies, passes.plans
    return {
        "ndcg_at_10": {plan: ndcg(ranking, qrels) for plan, ranking in rankings.items()},
        "search_p50_ms": {plan: float(np.percentile(v, 50)) for plan, v in latencies.items()},
        "search_p95_ms": {plan: float(np.percentile(v, 95)) for plan, v in latencies.items()},
        "plans": {plan: sorted(values) for plan, values in plans.items()},
    }


def report(results: dict[int, dict[str, Any]], full: int, queries: int, documents: int) -> None:
    base = results[full]
    rows = []
    for dims, result in results.items():
        score, size = result["ndcg_at_10"], result["index_bytes"]
        p95 = result["search_p95_ms"]
        rows.append([
            str(dims), result["loading"]["path"],
            f"{score['index']:.4f}", f"{score['index'] / base['ndcg_at_10']['index']:.3f}",
            f"{score['exact']:.4f}",
            f"{size / 2**20:.2f}", f"{size / base['index_bytes']:.3f}",
            f"{result['search_p50_ms']['index']:.2f}", f"{p95['index']:.2f}",
            f"{p95['index'] / base['search_p95_ms']['index']:.3f}",
            f"{p95['exact']:.2f}", ", ".join(result["plans"]["index"]),
        ])
    print()
    print_table(["dims", "vectors by", "nDCG@10 HNSW", "ratio", "nDCG@10 exact", "index MiB",
                 "ratio", "HNSW p50 ms", "p95 ms", "ratio", "exact p95 ms", "plan"], rows,
                left=2)
    print(f"\n{queries} test queries, {documents:,} abstracts; ratios are to {full} dimensions"
          " measured in this run")


if __name__ == "__main__":
    main()
