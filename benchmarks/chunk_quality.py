"""Chunked columns through the whole embeddb path: quality, speed, partial re-embedding, latency.

Run: ``.venv/bin/python benchmarks/chunk_quality.py [--corpora scifact,nfcorpus] [--sizes
truncated,128:32,64:16] [--skip-edit] [--data DIR] [--documents N]`` (``--data``: where
``scifact/`` and ``nfcorpus/`` are; default ``../shared/data``; ``--documents``: a quick trial
on the first N documents, written to ``chunk_quality_trial.json``). One command with the
defaults prints the whole table (both corpora, every size); the figures are also merged into
``benchmarks/results/chunk_quality.json`` after every run (keyed by corpus and config), so the
corpora and sizes can be measured one command at a time too.

For SciFact and NFCorpus (BEIR, from ``../shared/data``), the corpus goes into a table (one
INSERT), ``Worker.run_once()`` embeds it, and each test query is answered by ``embeddb.search``
(k=10, the column's own model for the query):

* ``truncated``: ``Embedding("{title} {body}")``, one vector per document, cut at the model's
  256-token window;
* ``chunked M/O``: ``Embedding("{title} {body}", chunks=Chunking(max_tokens=M, overlap=O))``,
  documents ranked as ``search`` ranks them (max-sim: the best chunk); the same stored vectors
  are also scored by exact scans with the index plan set aside, by the best chunk alone, by the
  mean vector alone and by the better of the two, so the approximation's and the scoring's
  shares of the figure can be told apart.

The measure is nDCG@10 (BEIR's linear gains). Also measured, in the same run:

* chunks embedded per second by the worker (end to end: claim, split, embed, write, index
  build; the model loaded before the clock starts) next to raw ``model.encode`` of the same
  chunk texts in the same batches (one call per worker claim, batch size 32), with the worker's
  time split into model, writes and splitting alone;
* a 20-chunk document with one paragraph edited: chunks the worker re-encoded (its counter);
* search latency p50/p95 on SciFact for ``search`` (documents) and ``search_chunks``
  (``per_document=2``) on the chunked table, next to ``search`` on the unchunked one.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import numpy as np
import sqlalchemy as sa
from common import (
    RESULTS_DIR,
    Databases,
    machine_facts,
    ndcg,
    print_table,
    read_jsonl,
    server_versions,
    write_json,
)
from sqlalchemy.orm import DeclarativeBase, Session

from embeddb import Chunking, Worker, WorkerConfig, search, search_chunks
from embeddb.chunking import Splitter
from embeddb.database import create_engine
from embeddb.embedders import MINILM, load_embedder, resolve_model_path
from embeddb.query._query_vectors import column_entry, embed_query
from embeddb.worker import BatchResult

OUTPUT = RESULTS_DIR / "chunk_quality.json"
K = 10
TARGET_SCIFACT = 0.676
DATA_DIR = common.DATA_DIR
DOCUMENTS: int | None = None  # --documents: the first N of each corpus (to try the benchmark)


#: Ways to rank documents from a chunked column's stored vectors, by exact scans: the best
#: chunk alone (max-sim), the document vector (the mean of its chunks) alone, the better of the
#: two (what ``search`` does with embeddb.query._chunks.DOCUMENT_VECTOR_COUNTS on).
ALTERNATIVES = {
    "best_chunk": "SELECT id FROM documents_embedding_chunks GROUP BY id"
                  " ORDER BY min(embedding <=> CAST(:q AS vector)) LIMIT :k",
    "mean_vector": "SELECT id FROM documents ORDER BY (embedding <=> CAST(:q AS vector)) + 0"
                   " LIMIT :k",
    "best_of_chunk_and_mean": (
        "SELECT d.id FROM documents d JOIN (SELECT id, min(embedding <=> CAST(:q AS vector))"
        " AS distance FROM documents_embedding_chunks GROUP BY id) c USING (id)"
        " ORDER BY least(c.distance, d.embedding <=> CAST(:q AS vector)) LIMIT :k"),
}


def model_for(chunking: Chunking | None) -> tuple[type[DeclarativeBase], Any]:
    return common.beir_documents(chunks=chunking)


def run_config(databases: Databases, corpus_name: str, chunking: Chunking | None,
               measure_latency: bool, measure_throughput: bool) -> dict[str, Any]:
    folder = DATA_DIR / corpus_name
    corpus, qrels, queries = common.beir_test_set(folder, DOCUMENTS)
    Base, Document = model_for(chunking)
    label = label_of(chunking)
    with databases.fresh(f"embeddb_bench_chunks_{corpus_name}") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(Document), [
                {"id": d["_id"], "title": d["title"], "body": d["text"]} for d in corpus])
        with engine.connect() as conn:  # the model is loaded before the clock starts, as
            spec = column_entry(conn, Document.embedding).spec  # raw encode's is
            load_embedder(spec.model, spec.encode, spec.dimensions)
        batches: list[BatchResult] = []
        started = time.perf_counter()
        with Worker(url, WorkerConfig()) as worker:
            worker.batch_listeners.append(batches.append)
            worker.run_once()
        seconds = time.perf_counter() - started
        result: dict[str, Any] = {
            "corpus": corpus_name, "config": label, "documents": len(corpus),
            "queries": len(queries), "worker_seconds": seconds,
            # where the worker's time went: split + model, and the guarded writes
            "worker_model_seconds": sum(b.model_seconds for b in batches),
            "worker_write_seconds": sum(b.write_seconds for b in batches)}
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE documents"))
            if chunking is not None:
                conn.execute(sa.text("ANALYZE documents_embedding_chunks"))
                by_document: dict[str, list[str]] = defaultdict(list)
                for doc_id, text in conn.execute(sa.text(
                        "SELECT id, text FROM documents_embedding_chunks ORDER BY id, chunk_no")):
                    by_document[doc_id].append(text)
                result["chunks"] = sum(map(len, by_document.values()))
                result["worker_chunks_per_second"] = worker.stats.chunks_encoded / seconds
                if measure_throughput:  # doubles the run's model time: only where asked
                    claims = claimed_chunk_texts([d["_id"] for d in corpus], by_document,
                                                 [b.claimed for b in batches])
                    result["raw_chunks_per_second"] = raw_encode_rate(claims)
                    result["split_seconds"] = split_seconds(
                        chunking, [f"{d['title']} {d['text']}" for d in corpus])
                    result["throughput_ratio"] = (result["worker_chunks_per_second"]
                                                  / result["raw_chunks_per_second"])
        rankings: dict[str, list[str]] = {}
        latencies: dict[str, list[float]] = {"search": []}
        with Session(engine) as session:
            entry = column_entry(session.connection(), Document.embedding)
            for text in queries.values():
                embed_query(entry, text)  # cached: the timings below are the database's
            for query_id, text in queries.items():
                t0 = time.perf_counter()
                hits = search(session, Document.embedding, text, k=K)
                latencies["search"].append((time.perf_counter() - t0) * 1000)
                rankings[query_id] = [hit.row.id for hit in hits]
                session.commit()
            if chunking is not None:  # what the index plan's approximation costs
                exact: dict[str, list[str]] = {}
                for query_id, text in queries.items():
                    hits = search(session, Document.embedding, text, k=K, plan="exact")
                    exact[query_id] = [hit.row.id for hit in hits]
                    session.commit()
                result["ndcg_at_10_exact"] = ndcg(exact, qrels)
                # the same stored vectors scored other ways (exact scans, no model time)
                for name, statement in ALTERNATIVES.items():
                    other: dict[str, list[str]] = {}
                    for query_id, text in queries.items():
                        vector = str(embed_query(entry, text))
                        other[query_id] = list(session.execute(
                            sa.text(statement), {"q": vector, "k": K}).scalars())
                    session.commit()
                    result[f"ndcg_at_10_{name}"] = ndcg(other, qrels)
            if measure_latency and chunking is not None:
                latencies["search_chunks"] = []
                for text in queries.values():
                    t0 = time.perf_counter()
                    search_chunks(session, Document.embedding, text, k=K, per_document=2)
                    latencies["search_chunks"].append((time.perf_counter() - t0) * 1000)
                    session.commit()
        engine.dispose()
    result["ndcg_at_10"] = common.ndcg(rankings, qrels, K)
    for name, values in latencies.items():
        if values:
            result[f"{name}_p50_ms"] = float(np.percentile(values, 50))
            result[f"{name}_p95_ms"] = float(np.percentile(values, 95))
    print(f"{corpus_name} {label}: nDCG@10 {result['ndcg_at_10']:.4f}"
          f" (worker {seconds:.0f} s)", flush=True)
    return result


_model: Any = None


def claimed_chunk_texts(order: list[str], by_document: dict[str, list[str]],
                        claims: list[int]) -> list[list[str]]:
    """The chunk texts the worker encoded, grouped as its claims were (documents in insertion
    order, the claims' sizes from its batch reports), each group's distinct texts by length."""
    groups: list[list[str]] = []
    position = 0
    for size in claims:
        texts = {text for doc_id in order[position:position + size]
                 for text in by_document.get(doc_id, [])}
        groups.append(sorted(texts, key=len))
        position += size
    return groups


def raw_encode_rate(claims: list[list[str]]) -> float:
    """Chunks per second of plain ``model.encode`` on the same texts in the same batches as the
    worker's (one call per claim, batch size 32)."""
    global _model
    from sentence_transformers import SentenceTransformer

    if _model is None:
        _model = SentenceTransformer(str(resolve_model_path(MINILM)), device="cpu")
        _model.encode(["warm up"])
    started = time.perf_counter()
    for texts in claims:
        _model.encode(texts, batch_size=32, normalize_embeddings=True)
    return sum(map(len, claims)) / (time.perf_counter() - started)


def split_seconds(chunking: Chunking, texts: list[str]) -> float:
    """Splitting alone: the worker's part of its time that is not the model or the database."""
    splitter = Splitter(MINILM, chunking)
    started = time.perf_counter()
    for text in texts:
        splitter.split(text)
    return time.perf_counter() - started


def edit_one_paragraph(databases: Databases, chunking: Chunking) -> dict[str, Any]:
    """A 20-chunk document (SciFact abstracts as paragraphs), one paragraph edited."""
    abstracts = [d["text"] for d in read_jsonl(DATA_DIR / "scifact" / "corpus.jsonl", 200)]
    Base, Document = model_for(chunking)
    with databases.fresh("embeddb_bench_chunks_edit") as url:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        paragraphs: list[str] = []
        count = 0
        for abstract in abstracts:  # grow the document until it splits into 20 chunks
            paragraphs.append(abstract)
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM documents"))
                conn.execute(sa.insert(Document), [
                    {"id": "long", "title": "Long", "body": "\n\n".join(paragraphs)}])
            with Worker(url) as worker:
                worker.run_once()
            with engine.connect() as conn:
                count = conn.execute(sa.text(
                    "SELECT count(*) FROM documents_embedding_chunks")).scalar_one()
            if count >= 20:
                break
        middle = len(paragraphs) // 2
        edited = [*paragraphs]
        edited[middle] = edited[middle].replace(".", ", as was later shown.", 1)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE documents SET body = :body"),
                         {"body": "\n\n".join(edited)})
        with Worker(url) as worker:
            worker.run_once()
        engine.dispose()
    print(f"edit: {count} chunks, {worker.stats.chunks_encoded} re-encoded", flush=True)
    return {"chunks": count, "re_encoded": worker.stats.chunks_encoded,
            "kept": worker.stats.chunks_reused, "limit": 2}


def parse_size(size: str) -> Chunking | None:
    """``128:32`` is ``Chunking(128, 32)``; ``truncated`` is the unchunked column."""
    return None if size == "truncated" else Chunking(*map(int, size.split(":")))


def label_of(chunking: Chunking | None) -> str:
    return "truncated" if chunking is None else f"chunked {chunking.max_tokens}/{chunking.overlap}"


def save(runs: list[dict[str, Any]], edit: dict[str, Any] | None, databases: Databases) -> Path:
    """Merge this run's figures into the results file (runs keyed by corpus and config), so a
    benchmark run one corpus or size at a time adds to what earlier runs measured."""
    previous: dict[str, Any] = {}
    if OUTPUT.exists():
        previous = json.loads(OUTPUT.read_text())
    merged = {(r["corpus"], r["config"]): r for r in previous.get("runs", [])}
    merged.update({(r["corpus"], r["config"]): r for r in runs})
    payload = {"benchmark": "chunk_quality",
               "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "runs": sorted(merged.values(), key=lambda r: (r["corpus"], r["config"])),
               "edit": edit if edit is not None else previous.get("edit"),
               "machine": machine_facts(), "versions": server_versions(databases.url)}
    return write_json(OUTPUT, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="truncated,128:32,64:16",
                        help="chunk sizes as max_tokens:overlap (or 'truncated': one vector"
                             " per document), comma-separated")
    parser.add_argument("--corpora", default="scifact,nfcorpus")
    parser.add_argument("--database-url")
    parser.add_argument("--data", type=Path, default=common.DATA_DIR)
    parser.add_argument("--skip-edit", action="store_true",
                        help="do not measure the one-paragraph edit")
    parser.add_argument("--documents", type=int,
                        help="only the first N documents of each corpus (a quick trial; the"
                             " figures are not comparable)")
    args = parser.parse_args()
    global DATA_DIR, DOCUMENTS, OUTPUT
    DATA_DIR, DOCUMENTS = args.data, args.documents
    if DOCUMENTS is not None:  # a trial never overwrites the measured figures
        OUTPUT = OUTPUT.with_name("chunk_quality_trial.json")
    sizes = [parse_size(size) for size in args.sizes.split(",")]
    databases = Databases.choose(args.database_url)
    edit = None if args.skip_edit else edit_one_paragraph(databases, Chunking())
    runs: list[dict[str, Any]] = []
    if edit is not None:
        save(runs, edit, databases)
    for corpus in filter(None, args.corpora.split(",")):  # --corpora "": the edit alone
        for chunking in sizes:
            # latency on SciFact (truncated and default chunking), throughput on its default
            on_scifact_default = corpus == "scifact" and chunking == Chunking()
            runs.append(run_config(databases, corpus, chunking,
                                   corpus == "scifact" and chunking in (None, Chunking()),
                                   on_scifact_default))
            save(runs, edit, databases)  # partial results land after every run
    rows = []
    for run in runs:
        rows.append([run["corpus"], run["config"], f"{run['ndcg_at_10']:.4f}",
                     f"{run['ndcg_at_10_exact']:.4f}" if "ndcg_at_10_exact" in run else "",
                     *(f"{run[f'ndcg_at_10_{name}']:.4f}" if f"ndcg_at_10_{name}" in run else ""
                       for name in ALTERNATIVES),
                     str(run.get("chunks", run["documents"])),
                     f"{run['throughput_ratio']:.2f}" if "throughput_ratio" in run else "",
                     f"{run['search_p50_ms']:.1f} / {run['search_p95_ms']:.1f}",
                     (f"{run['search_chunks_p50_ms']:.1f} / {run['search_chunks_p95_ms']:.1f}"
                      if "search_chunks_p50_ms" in run else "")])
    print()
    print_table(["corpus", "vectors", "nDCG@10", "nDCG@10 exact plan", "best chunk alone",
                 "mean vector alone", "best of chunk and mean", "vectors stored",
                 "chunks/s vs raw encode", "search p50/p95 ms", "search_chunks p50/p95 ms"], rows)
    for run in runs:
        if "throughput_ratio" in run:
            print(f"\n{run['corpus']} {run['config']}: worker {run['worker_chunks_per_second']:.1f}"
                  f" chunks/s, raw encode {run['raw_chunks_per_second']:.1f} (ratio"
                  f" {run['throughput_ratio']:.2f}); worker {run['worker_seconds']:.0f} s of which"
                  f" split+model {run['worker_model_seconds']:.0f} s, writes"
                  f" {run['worker_write_seconds']:.0f} s; splitting alone"
                  f" {run['split_seconds']:.1f} s")
    default = next((r for r in runs if r["corpus"] == "scifact"
                    and r["config"] == label_of(Chunking())), None)
    if default is not None:
        print(f"\nSciFact default chunking {default['ndcg_at_10']:.4f} vs target"
              f" {TARGET_SCIFACT} (ratio {default['ndcg_at_10'] / TARGET_SCIFACT:.3f})")
    if edit is not None:
        print(f"edit of one paragraph of a {edit['chunks']}-chunk document re-encoded"
              f" {edit['re_encoded']} chunks (limit 2)")
    print(f"written to {OUTPUT}")


if __name__ == "__main__":
    main()
