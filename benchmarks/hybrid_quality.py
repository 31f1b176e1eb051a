"""Hybrid search quality and speed on SciFact and NFCorpus through the whole embeddb path.

Run: ``.venv/bin/python benchmarks/hybrid_quality.py [--corpus scifact nfcorpus]
[--data DIR] [--database-url URL] [--keep]``. Prints a table per corpus and writes every figure
to ``benchmarks/results/hybrid_quality.json``. ``--keep`` keeps each corpus's embedded database
and, on the next run, measures the query passes again without loading and embedding.

Per corpus: the documents go into a table declared with
``Embedding("{title} {body}", fulltext=True)`` (one INSERT), embeddb's worker embeds them
and writes each row's ``tsvector`` with its vector (``Worker.run_once()``; BM25's statistics
are read at query time), and each test query is answered through the helpers: ``search``
(the vector leg alone), ``hybrid_search`` with ``vector_weight=0`` (the BM25 text leg alone)
and ``hybrid_search`` at several fusion settings. Each query is embedded once first (the
helpers cache query vectors), so the latencies are the database's. nDCG@10 as BEIR computes
it; for reference BEIR's BM25 (Elasticsearch, Thakur et al., 2021) scores 0.665 on SciFact
and 0.325 on NFCorpus.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from common import (
    DATA_DIR,
    RESULTS_DIR,
    Databases,
    beir_documents,
    beir_test_set,
    machine_facts,
    ndcg,
    print_table,
    server_versions,
    with_database,
    write_json,
)
from psycopg import sql
from sqlalchemy.orm import Session

from embeddb import Worker, WorkerConfig, hybrid_search, search
from embeddb.database import create_engine, libpq_conninfo
from embeddb.query._query_vectors import column_entry, embed_query

OUTPUT = RESULTS_DIR / "hybrid_quality.json"
K = 10
BEIR_BM25 = {"scifact": 0.665, "nfcorpus": 0.325}
#: name -> hybrid_search options (None: embeddb.search, the vector leg alone)
SETTINGS: dict[str, dict[str, Any] | None] = {
    "vector leg (search)": None,
    "text leg (BM25)": {"vector_weight": 0.0},
    "fused: RRF 1:1": {"fusion": "rrf"},
    "fused: RRF 1:1, 50 candidates": {"fusion": "rrf", "candidates": 50},
    "fused: scores 0.5:0.5": {"fusion": "score", "vector_weight": 0.5, "text_weight": 0.5},
    "fused: scores 0.6:0.4": {"fusion": "score", "vector_weight": 0.6, "text_weight": 0.4},
    "fused: scores 0.7:0.3": {"fusion": "score", "vector_weight": 0.7, "text_weight": 0.3},
    "fused: scores 0.6:0.4, 50 candidates": {"fusion": "score", "vector_weight": 0.6,
                                             "text_weight": 0.4, "candidates": 50},
}


Base, Document = beir_documents(fulltext=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", nargs="+", default=["scifact", "nfcorpus"])
    parser.add_argument("--data", type=Path, default=DATA_DIR,
                        help="the BEIR corpora's folder (default: ../shared/data)")
    parser.add_argument("--database-url", help="a database to use (default: the benchmarks'"
                        " embedded server, a fresh database)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each corpus's database (embeddb_bench_hybrid_<corpus>_kept on"
                        " the benchmarks' server) and, when it already holds every document"
                        " embedded, reuse it: the query passes only, no load and no worker")
    args = parser.parse_args()
    databases = Databases.choose(args.database_url)
    results = {name: run_corpus(databases, args.data / name, args.keep)
               for name in args.corpus}
    payload = {
        "benchmark": "hybrid_quality",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpora": results,
        "machine": machine_facts(),
        "versions": server_versions(databases.url),
    }
    print(f"written to {write_json(OUTPUT, payload)}")


def run_corpus(databases: Databases, folder: Path, keep: bool = False) -> dict[str, Any]:
    corpus, qrels, queries = beir_test_set(folder)
    rankings: dict[str, dict[str, list[str]]] = {name: {} for name in SETTINGS}
    latencies: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with _database(databases, folder.name, len(corpus), keep) as (url, state):
        engine = create_engine(url)
        if state == "embedded":
            load_seconds = embed_seconds = float("nan")  # reused: loaded by an earlier run
        elif state == "loaded":  # an earlier run stopped while the worker embedded: finish
            load_seconds = float("nan")
            embed_seconds = embed(engine, url)
        else:
            load_seconds, embed_seconds = load(engine, url, corpus)
        with Session(engine) as session:
            entry = column_entry(session.connection(), Document.embedding)
            for text in queries.values():
                embed_query(entry, text)  # cached: the passes time the database
            for name, options in SETTINGS.items():
                for query_id, text in queries.items():
                    started = time.perf_counter()
                    if options is None:
                        hits: Any = search(session, Document.embedding, text, k=K)
                    else:
                        hits = hybrid_search(session, Document.embedding, text, k=K, **options)
                    latencies[name].append((time.perf_counter() - started) * 1000)
                    rankings[name][query_id] = [hit.row.id for hit in hits]
                    session.commit()
        engine.dispose()

    scores = {name: ndcg(ranking, qrels) for name, ranking in rankings.items()}
    vector_p95 = float(np.percentile(latencies["vector leg (search)"], 95))
    rows = []
    for name in SETTINGS:
        p50, p95 = np.percentile(latencies[name], [50, 95])
        rows.append([name, f"{scores[name]:.4f}", f"{p50:.1f}", f"{p95:.1f}",
                     f"{p95 / vector_p95:.2f}"])
    print(f"\n{folder.name}: {len(queries)} test queries, {len(corpus):,} documents;"
          f" loaded in {load_seconds:.1f} s,"
          f" embedded by the worker in {embed_seconds:.0f} s")
    print_table(["path", "nDCG@10", "p50 ms", "p95 ms", "p95 / vector p95"], rows)
    text_gap = scores["text leg (BM25)"] - BEIR_BM25[folder.name]
    print(f"text leg vs BEIR's BM25 ({BEIR_BM25[folder.name]}): {text_gap:+.4f}")
    return {
        "queries": len(queries), "documents": len(corpus),
        "ndcg_at_10": scores,
        "p50_ms": {n: float(np.percentile(v, 50)) for n, v in latencies.items()},
        "p95_ms": {n: float(np.percentile(v, 95)) for n, v in latencies.items()},
        "beir_bm25": BEIR_BM25[folder.name],
        "load_seconds": load_seconds, "embed_seconds": embed_seconds,
        "settings": {n: o for n, o in SETTINGS.items()},
    }


@contextmanager
def _database(databases: Databases, corpus: str, documents: int,
              keep: bool) -> Iterator[tuple[str, str]]:
    """A fresh database for the run, or with ``keep`` one that outlives it; and what it holds:
    ``"embedded"`` (``documents`` rows, every one embedded, by an earlier ``--keep`` run),
    ``"loaded"`` (the rows, not all embedded yet: an earlier run was stopped while the worker
    embedded them) or ``"empty"``."""
    if not keep or databases.server_url is None:
        with databases.fresh(f"embeddb_bench_hybrid_{corpus}") as url:
            yield url, "empty"
        return
    name = f"embeddb_bench_hybrid_{corpus}_kept"
    url = with_database(databases.server_url, name)
    with psycopg.connect(libpq_conninfo(databases.server_url), autocommit=True) as admin:
        if admin.execute("SELECT FROM pg_database WHERE datname = %s",
                         [name]).fetchone() is not None:  # an empty row, not None
            with psycopg.connect(libpq_conninfo(url)) as conn:
                table = conn.execute("SELECT to_regclass('documents')").fetchone()
                counts = conn.execute("SELECT count(*), count(embedding) FROM documents"
                                      ).fetchone() if table and table[0] else None
            if counts is not None and counts[0] == documents:
                yield url, "embedded" if counts[1] == documents else "loaded"
                return
            # a run stopped while loading: start again
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield url, "empty"


def load(engine: sa.Engine, url: str, corpus: list[dict[str, Any]]) -> tuple[float, float]:
    """Rows in (the triggers index their text), then the worker until every row has a vector."""
    Base.metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.insert(Document), [
            {"id": doc["_id"], "title": doc["title"], "body": doc["text"]} for doc in corpus])
    loaded = time.perf_counter()
    return loaded - started, embed(engine, url)


def embed(engine: sa.Engine, url: str) -> float:
    """The worker until every row has a vector (and its ``tsvector``); the seconds it took."""
    started = time.perf_counter()
    with Worker(url, WorkerConfig()) as worker:
        worker.run_once()
    embedded = time.perf_counter()
    with engine.begin() as conn:
        missing = conn.execute(sa.text(
            "SELECT count(*) FROM documents WHERE embedding IS NULL")).scalar_one()
        conn.execute(sa.text("ANALYZE documents"))
    if missing:
        raise SystemExit(f"{missing} documents were not embedded")
    return embedded - started


if __name__ == "__main__":
    main()
