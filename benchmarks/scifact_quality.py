"""Retrieval quality on SciFact through the whole embeddb path, next to numpy brute force.

Run: ``.venv/bin/python benchmarks/scifact_quality.py [--database-url URL]``. Prints a table
and writes every figure to ``benchmarks/results/scifact_quality.json``.

embeddb: the 5,183 abstracts go into a table declared with ``Embedding("{title} {body}")``
(rows in with one INSERT; embeddb's trigger queues them), embeddb's worker embeds them
(``Worker.run_once()`` in this process), and each of the 300 test claims is answered by
``embeddb.search`` with the query text, embedded by the helper with the column's own model:
once with ``plan="exact"`` and once with the HNSW index (the default plan with no filter).
Each claim is embedded once before the two passes, through the helper's own path and timed
apart, so the passes' latencies are the database's (the helper caches query vectors).

numpy: the same model loaded directly with sentence-transformers, ``model.encode`` on
``title + " " + text`` and on each claim (normalised), top 10 by dot product.

The measure is BEIR's nDCG@10 over the 300 test queries (``qrels/test.tsv``). For reference,
the MTEB leaderboard gives all-MiniLM-L6-v2 0.645 on SciFact.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
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
    search_passes,
    server_versions,
    write_json,
)
from sqlalchemy.orm import Session

from embeddb import Worker, WorkerConfig
from embeddb.database import create_engine
from embeddb.embedders import MINILM, resolve_model_path
from embeddb.query._query_vectors import column_entry, embed_query

OUTPUT = RESULTS_DIR / "scifact_quality.json"
SCIFACT = DATA_DIR / "scifact"
K = 10


Base, Abstract = beir_documents("abstracts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database-url", help="a database to use (default: the benchmarks'"
                        " embedded server, a fresh database)")
    args = parser.parse_args()

    corpus, qrels, claims = beir_test_set(SCIFACT)
    databases = Databases.choose(args.database_url)
    with databases.fresh("embeddb_bench_scifact") as url:
        engine = create_engine(url)
        embedded = embed_with_embeddb(engine, url, corpus)
        with Session(engine) as session:
            # embed every claim once, as search() does (timed apart): the passes below then
            # find the vectors in the helper's query cache and time the database work
            entry = column_entry(session.connection(), Abstract.embedding)
            encode_ms = []
            for text in claims.values():
                started = time.perf_counter()
                embed_query(entry, text)
                encode_ms.append((time.perf_counter() - started) * 1000)
            passes = search_passes(session, Abstract.embedding, claims, K, ("exact", "index"))
        engine.dispose()
    rankings, latencies, plans = passes.rankings, passes.latencies, passes.plans
    rankings["numpy"], numpy_seconds = brute_force(corpus, claims)

    scores = {name: ndcg(ranking, qrels) for name, ranking in rankings.items()}
    agreement = {name: overlap(rankings[name], rankings["numpy"]) for name in ("exact", "index")}
    rows = [
        ["embeddb, exact", f"{scores['exact']:.4f}", f"{agreement['exact']:.3f}",
         f"{np.percentile(latencies['exact'], 50):.1f}", ", ".join(sorted(plans["exact"]))],
        ["embeddb, HNSW", f"{scores['index']:.4f}", f"{agreement['index']:.3f}",
         f"{np.percentile(latencies['index'], 50):.1f}", ", ".join(sorted(plans["index"]))],
        ["numpy brute force", f"{scores['numpy']:.4f}", "1.000", "", ""],
    ]
    print()
    print_table(["path", "nDCG@10", "top-10 overlap with numpy", "search p50 ms", "plans"], rows)
    print(f"\n{len(claims)} test queries, {len(corpus):,} abstracts;"
          f" worker {embedded['rows_per_second']:.1f} rows/s,"
          f" numpy path encoded in {numpy_seconds:.0f} s;"
          f" a claim's embedding p50 {np.percentile(encode_ms, 50):.1f} ms (then cached)")
    payload = {
        "benchmark": "scifact_quality",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "queries": len(claims),
        "documents": len(corpus),
        "ndcg_at_10": scores,
        "top10_overlap_with_numpy": agreement,
        "search_p50_ms": {name: float(np.percentile(values, 50))
                          for name, values in latencies.items()},
        "query_embedding_p50_ms": float(np.percentile(encode_ms, 50)),
        "plans": {name: sorted(values) for name, values in plans.items()},
        "embedding": embedded,
        "numpy_encode_seconds": numpy_seconds,
        "machine": machine_facts(),
        "versions": server_versions(databases.url),
    }
    print(f"written to {write_json(OUTPUT, payload)}")


def embed_with_embeddb(engine: sa.Engine, url: str,
                       corpus: list[dict[str, Any]]) -> dict[str, float]:
    """Rows in, worker until done: the path an application's rows take."""
    Base.metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.insert(Abstract), [
            {"id": doc["_id"], "title": doc["title"], "body": doc["text"]} for doc in corpus])
    with Worker(url, WorkerConfig()) as worker:
        worker.run_once()  # embeds everything ready, then returns
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        missing = conn.execute(sa.text(
            "SELECT count(*) FROM abstracts WHERE embedding IS NULL")).scalar_one()
        conn.execute(sa.text("ANALYZE abstracts"))
    if missing:
        raise SystemExit(f"{missing} abstracts were not embedded")
    print(f"embedded {len(corpus):,} abstracts through the worker in {seconds:.0f} s")
    return {"seconds": seconds, "rows_per_second": len(corpus) / seconds}


def brute_force(corpus: list[dict[str, Any]],
                claims: dict[str, str]) -> tuple[dict[str, list[str]], float]:
    """Top 10 per claim by dot product on ``model.encode`` vectors, and the encoding time."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model_path(MINILM)), device="cpu")
    started = time.perf_counter()
    documents = model.encode([f"{doc['title']} {doc['text']}" for doc in corpus],
                             batch_size=32, normalize_embeddings=True)
    queries = model.encode(list(claims.values()), batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    ids = [doc["_id"] for doc in corpus]
    top = np.argsort(-(queries @ documents.T), axis=1)[:, :K]
    return {query_id: [ids[i] for i in row] for query_id, row in zip(claims, top, strict=True)}, \
        seconds


def overlap(a: dict[str, list[str]], b: dict[str, list[str]]) -> float:
    return float(np.mean([len(set(a[q]) & set(b[q])) / K for q in b]))


if __name__ == "__main__":
    main()
