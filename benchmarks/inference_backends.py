"""Inference backends for all-MiniLM-L6-v2: texts/s, agreement with PyTorch, SciFact nDCG@10,
and the worker end to end, every variant in one run.

Run: ``.venv/bin/python benchmarks/inference_backends.py [--scifact 400] [--wordnet 3000]
[--ndcg-documents 5183] [--worker-rows 2000] [--threads 2]``. Prints the tables and writes
every figure to ``benchmarks/results/inference_backends.json``.

Variants: ``torch`` (sentence-transformers, today's path), ``onnx`` and ``openvino`` (the float32
export of :mod:`embeddb.backends`), ``onnx-int8`` (embeddb's int8 backend: dynamic, weights per
channel, feed-forward outputs float) and two reference quantisations of the same export, run the
same way: ONNX Runtime's plain dynamic int8 (per-tensor weights, every MatMul: the issue's
measurement) and per-channel dynamic int8 of every MatMul.

* Throughput: the first ``--scifact`` SciFact abstracts and ``--wordnet`` WordNet glosses, in
  the same length-sorted batches of 32 for every variant (sentence-transformers' order), with
  ``--threads`` threads; one warm-up pass, then the best of ``--repeats`` timed passes. Cosine
  of each vector to PyTorch's: mean and min.
* Quality: BEIR's nDCG@10 over the 300 SciFact test claims (benchmarks/scifact_quality.py's
  qrels reading and nDCG), documents and claims embedded by the variant, exact top 10 by
  cosine. ``--ndcg-documents`` below 5,183 keeps every judged abstract plus the first others.
* Worker: ``--worker-rows`` WordNet rows COPYed into a fresh table, then ``Worker.run_once()``
  until every vector is stored; with PyTorch (today's worker), with the fastest float32 variant
  (``embeddb worker --backend``'s override: the column's identity is PyTorch's) and with
  ``onnx-int8`` declared on the column. The ratio is to today's worker in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from common import (
    DATA_DIR,
    RESULTS_DIR,
    Databases,
    load_corpus,
    machine_facts,
    ndcg,
    print_table,
    read_jsonl,
    relevance,
    write_json,
)
from scifact_quality import K
from worker_throughput import TABLE, copy_rows, documents_database

from embeddb import backends, worker_backends
from embeddb.embedders import (
    MINILM,
    SentenceTransformerEmbedder,
    resolve_model_path,
    weights_fingerprint,
)
from embeddb.spec import EncodeOptions
from embeddb.worker import Worker, WorkerConfig

OUTPUT = RESULTS_DIR / "inference_backends.json"
SCIFACT = DATA_DIR / "scifact"
NDCG_TOLERANCE = 0.005
Encode = Callable[[Sequence[str]], np.ndarray[Any, Any]]


def variants(threads: int, scratch: Path) -> dict[str, Encode]:
    """Every variant's encode function, each computing sentence-transformers' batches."""
    import torch

    torch.set_num_threads(threads)
    path = resolve_model_path(MINILM)
    assert path is not None
    fingerprint = weights_fingerprint(path)
    float_file = backends.ensure_export(path, fingerprint, backends.ONNX)
    torch_model = SentenceTransformerEmbedder(MINILM, EncodeOptions())
    found: dict[str, Encode] = {"torch": torch_model.embed_documents}
    for backend in (backends.ONNX, backends.OPENVINO, backends.ONNX_INT8):
        found[backend] = backends.ExportedModel(path, fingerprint, backend, threads).encode
    for name, per_channel in (("ort-dynamic-int8 (per-tensor)", False),
                              ("ort-dynamic-int8 (per-channel, all)", True)):
        file = scratch / f"{name.split()[1].strip('(),')}.onnx"
        backends.quantise(float_file, file, keep_float=(), per_channel=per_channel)
        found[name] = backends.ExportedModel(path, fingerprint, backends.ONNX_INT8, threads,
                                             file=file).encode
    return found


def throughput(encode: Encode, texts: Sequence[str], repeats: int) -> tuple[float, Any]:
    encode(texts[:64])  # warm-up: first-call allocations, OpenVINO's shape compilation
    best, vectors = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = encode(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best, vectors


def scifact_ndcg(encode: Encode, documents: list[dict[str, Any]], claims: dict[str, str],
                 qrels: dict[str, dict[str, int]]) -> float:
    vectors = _unit(encode([f"{doc['title']} {doc['text']}" for doc in documents]))
    queries = _unit(encode(list(claims.values())))
    top = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    ids = [doc["_id"] for doc in documents]
    return ndcg({query: [ids[i] for i in row] for query, row in zip(claims, top, strict=True)},
                qrels)


def _unit(vectors: Any) -> Any:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ndcg_documents(limit: int, qrels: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Every judged abstract, then the corpus in order, up to ``limit`` documents."""
    corpus = list(read_jsonl(SCIFACT / "corpus.jsonl"))
    judged = {doc for grades in qrels.values() for doc in grades}
    chosen = [doc for doc in corpus if doc["_id"] in judged]
    chosen += [doc for doc in corpus if doc["_id"] not in judged][:max(0, limit - len(chosen))]
    return chosen


def worker_run(databases: Databases, name: str, texts: Sequence[str], backend: str,
               override: str | None, threads: int) -> float:
    """Rows/s of the worker from COPY to every vector stored, on a fresh table."""
    with documents_database(databases, f"embeddb_bench_backends_{name}", MINILM,
                            backend=backend) as url:
        # "torch" keeps what the column declares (an int8 column stays int8)
        load = worker_backends.embedder_for(override or backends.TORCH)
        with Worker(url, WorkerConfig(threads=threads), embedder_for=load) as worker:
            worker_backends.check_at_start(worker.engine, load)  # model loaded, not timed
            started = time.perf_counter()
            copy_rows(url, texts)
            worker.run_once()
            seconds = time.perf_counter() - started
            with worker.engine.connect() as conn:
                missing = conn.execute(sa.text(
                    f"SELECT count(*) FROM {TABLE} WHERE embedding IS NULL")).scalar_one()
    if missing:
        raise SystemExit(f"{name}: {missing} rows were not embedded")
    return len(texts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scifact", type=int, default=400)
    parser.add_argument("--wordnet", type=int, default=3000)
    parser.add_argument("--ndcg-documents", type=int, default=5183)
    parser.add_argument("--worker-rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--database-url", help="a database to use (default: fresh databases on"
                        " the benchmarks' embedded server)")
    args = parser.parse_args()

    corpora = {"scifact": load_corpus("scifact", args.scifact),
               "wordnet": load_corpus("wordnet", args.wordnet)}
    qrels = relevance(SCIFACT / "qrels" / "test.tsv")
    claims = {q["_id"]: q["text"] for q in read_jsonl(SCIFACT / "queries.jsonl")
              if q["_id"] in qrels}
    documents = ndcg_documents(args.ndcg_documents, qrels)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        encoders = variants(args.threads, Path(scratch))
        reference: dict[str, Any] = {}
        for name, encode in encoders.items():
            record: dict[str, Any] = {}
            for corpus, texts in corpora.items():
                rate, vectors = throughput(encode, texts, args.repeats)
                reference.setdefault(corpus, vectors)
                cosines = backends.row_cosines(reference[corpus], vectors)
                record[corpus] = {"texts_per_second": rate, "cosine_mean": float(cosines.mean()),
                                  "cosine_min": float(cosines.min())}
            record["ndcg_at_10"] = scifact_ndcg(encode, documents, claims, qrels)
            results[name] = record
            print(f"{name}: {record}", flush=True)

    base = results["torch"]

    def rate(record: dict[str, Any], corpus: str) -> str:
        texts_per_second = record[corpus]["texts_per_second"]
        ratio = texts_per_second / base[corpus]["texts_per_second"]
        return f"{texts_per_second:.1f} ({ratio:.2f}x)"

    rows = [[name, *[rate(r, c) for c in corpora],
             *[f"{r[c]['cosine_mean']:.4f} / {r[c]['cosine_min']:.4f}" for c in corpora],
             f"{r['ndcg_at_10']:.4f}"] for name, r in results.items()]
    print()
    print_table(["variant", *[f"{c} texts/s" for c in corpora],
                 *[f"{c} cosine mean / min" for c in corpora], "SciFact nDCG@10"], rows)

    def speed(name: str) -> float:
        return float(np.mean([results[name][c]["texts_per_second"] for c in corpora]))

    fastest_float = max(("onnx", "openvino"), key=speed)
    within = [name for name in results
              if base["ndcg_at_10"] - results[name]["ndcg_at_10"] <= NDCG_TOLERANCE]
    target = max(within, key=speed)
    print(f"\nfastest float32: {fastest_float}; fastest within {NDCG_TOLERANCE} nDCG@10 of"
          f" PyTorch's: {target}")

    databases = Databases.choose(args.database_url)
    texts = load_corpus("wordnet", args.worker_rows)
    workers = {"torch": worker_run(databases, "torch", texts, "torch", None, args.threads),
               fastest_float: worker_run(databases, "float", texts, "torch", fastest_float,
                                         args.threads),
               "onnx-int8": worker_run(databases, "int8", texts, "onnx-int8", None,
                                       args.threads)}
    print()
    print_table(["worker (WordNet rows, COPY to stored)", "rows/s", "ratio to torch worker"],
                [[name, f"{rate:.1f}", f"{rate / workers['torch']:.2f}x"]
                 for name, rate in workers.items()])
    payload = {
        "benchmark": "inference_backends",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "arguments": vars(args),
        "ndcg_documents": len(documents),
        "queries": len(claims),
        "variants": results,
        "fastest_float32": fastest_float,
        "fastest_within_ndcg_tolerance": target,
        "worker_rows_per_second": workers,
        "machine": machine_facts(),
    }
    print(f"written to {write_json(OUTPUT, payload)}")


if __name__ == "__main__":
    main()
