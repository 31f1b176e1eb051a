"""search(recall=...) on WordNet: recall@10 and p50/p95 at targets 0.9/0.95/0.99, per filter.

Run: ``.venv/bin/python benchmarks/recall_targets.py [--synsets 12000] [--scale 0]
[--queries 200] [--database-url URL]``. Prints a table and writes every figure to
``benchmarks/results/recall_targets.json``.

Data: ``--synsets`` WordNet synsets drawn at random (seed 13; 0: all 117,659), with their
all-MiniLM-L6-v2 vectors from ``wordnet_vectors.py``'s cache (encoded if missing). ``--queries``
of them are held out as queries. ``--scale N`` grows the table to N rows by copying drawn
synsets (their ``pos`` and ``lexname`` kept) with their vector perturbed by Gaussian noise
(``--noise``, then renormalised), so a big table keeps the corpus' category clusters without
encoding every text; say so when quoting its figures. The table is loaded as in
``filtered_search.py`` (one COPY, HNSW m=16 ef_construction=64 built after, ANALYZE).

Measured per filter, over the held-out queries, after a warm-up pass:

plain
    ``nearest()`` unfiltered with pgvector's defaults (ef_search 40): the baseline p95.
uncalibrated
    ``search()`` before any calibration: ``ef_search = clamp(4k, 64, 1000)``, as before.
recall=T
    ``search(..., recall=T)`` after ``calibration.calibrate`` (``--samples`` stored vectors).

Recall@10 is against numpy brute force over the stored vectors (ties count as hits).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
import wordnet_vectors
from common import RESULTS_DIR, Databases, machine_facts, print_table, server_versions, write_json
from filtered_search import Synset, exact_answers, load, plain, timed
from sqlalchemy.orm import Session

from embeddb import calibration, catalog, search
from embeddb.database import create_engine
from embeddb.query import _planner as planner

OUTPUT = RESULTS_DIR / "recall_targets.json"
K = 10
TARGETS = (0.9, 0.95, 0.99)
#: (label, condition on Synset, predicate on a synset)
FILTERS: list[tuple[str, Any, Callable[[wordnet_vectors.Synset], bool]]] = [
    ("none", None, lambda s: True),
    ("pos=noun", Synset.pos == "noun", lambda s: s.pos == "noun"),
    ("pos=adjective", Synset.pos == "adjective", lambda s: s.pos == "adjective"),
    ("pos IN (verb, adverb)", Synset.pos.in_(["verb", "adverb"]),
     lambda s: s.pos in ("verb", "adverb")),
    ("lexname=noun.artifact", Synset.lexname == "noun.artifact",
     lambda s: s.lexname == "noun.artifact"),
    ("lexname=noun.quantity", Synset.lexname == "noun.quantity",
     lambda s: s.lexname == "noun.quantity"),
]


def drawn(count: int) -> list[int]:
    """The synsets measured: ``count`` drawn at random (seed 13), in file order; 0: all."""
    total = len(wordnet_vectors.synsets())
    if count <= 0 or count >= total:
        return list(range(total))
    return sorted(random.Random(13).sample(range(total), count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--synsets", type=int, default=12000, help="synsets drawn (0: all)")
    parser.add_argument("--scale", type=int, default=0,
                        help="grow the table to this many rows with perturbed copies (0: no)")
    parser.add_argument("--noise", type=float, default=0.02,
                        help="per-dimension Gaussian noise of a copy's vector (0.02)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--samples", type=int, default=calibration.DEFAULT_SAMPLES)
    parser.add_argument("--partial", action="store_true",
                        help="then create partial HNSW indexes for the 10-20%% band's filters"
                             " and measure those filters again at the default recall")
    parser.add_argument("--database-url")
    args = parser.parse_args()

    every = wordnet_vectors.synsets()
    chosen = drawn(args.synsets)
    synsets = [every[i] for i in chosen]
    vectors = wordnet_vectors.load([s.text for s in synsets]).astype(np.float32)
    if args.scale > len(synsets):
        synsets, vectors = grown(synsets, vectors, args.scale, args.noise)
    held_out = sorted(random.Random(42).sample(range(len(chosen)), args.queries))
    in_table = np.setdiff1d(np.arange(len(synsets)), held_out)
    databases = Databases.choose(args.database_url)
    with databases.fresh("embeddb_bench_recall") as url:
        engine = create_engine(url)
        load_facts = load(engine, url, synsets, vectors, in_table)  # type: ignore[arg-type]
        results, calibrated, truths = measure(engine, synsets, vectors, in_table, held_out,
                                              args.samples)
        if args.partial:
            load_facts["partial_indexes"] = with_partial_indexes(engine, vectors, held_out,
                                                                 results, truths)
        engine.dispose()
    report(results)
    payload = {
        "benchmark": "recall_targets",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "k": K, "queries": args.queries, "rows": len(in_table), "synsets": len(chosen),
        "scale": args.scale, "noise": args.noise if args.scale else None,
        "load": load_facts, "calibration": calibrated,
        "machine": machine_facts(), "versions": server_versions(databases.url),
        "results": results,
    }
    print(f"\nwritten to {write_json(OUTPUT, payload)}")


def grown(synsets: list[wordnet_vectors.Synset], vectors: npt.NDArray[np.float32], rows: int,
          noise: float) -> tuple[list[wordnet_vectors.Synset], npt.NDArray[np.float32]]:
    """``rows`` rows: the originals, then perturbed copies of synsets drawn at random."""
    rng = np.random.default_rng(5)
    sources = rng.integers(0, len(synsets), rows - len(synsets))
    copies = vectors[sources] + rng.normal(0, noise, (len(sources), vectors.shape[1]))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    more = [synsets[i] for i in sources]
    return synsets + more, np.concatenate([vectors, copies.astype(np.float32)])


def measure(engine: sa.Engine, synsets: list[wordnet_vectors.Synset],
            vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], queries: list[int],
            samples: int) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    truths: dict[str, Any] = {}
    with Session(engine) as session:
        base = timed(session, lambda q: plain(session, q, None), vectors, queries,
                     exact_answers(vectors, rows, queries))
        for label, where, keeps in FILTERS:
            matching = np.array([i for i in rows if keeps(synsets[i])])
            truths[label] = exact_answers(vectors, matching, queries)
            figures = timed(session, lambda q, w=where: search(session, Synset.embedding, q,
                                                               k=K, where=w),
                            vectors, queries, truths[label])
            results.append({"filter": label, "selectivity": len(matching) / len(rows),
                            "matching_rows": len(matching), "uncalibrated": figures,
                            "plain_unfiltered": base})
            print(f"{label:24} uncalibrated p95 {figures['p95_ms']:6.2f} ms"
                  f" recall {figures['recall']:.3f}")
    with engine.begin() as conn:
        entry = catalog.get_entry(conn, "public", "synsets", "embedding")
        assert entry is not None
        started = time.perf_counter()
        measured = calibration.calibrate(conn, entry, samples=samples)
        seconds = time.perf_counter() - started
    print(f"calibrated in {seconds:.1f} s:\n{measured.describe()}")
    planner.forget_calibrations(engine)
    with Session(engine) as session:
        for (label, where, _), figures in zip(FILTERS, results, strict=True):
            for target in TARGETS:
                run = timed(session, lambda q, w=where, t=target: search(
                    session, Synset.embedding, q, k=K, where=w, recall=t),
                    vectors, queries, truths[label])
                run["ef_search"] = planner.calibrated_ef(measured, target, K)
                figures[f"recall={target}"] = run
                print(f"{label:24} recall={target}: p95 {run['p95_ms']:6.2f} ms"
                      f" recall {run['recall']:.3f} {run['plans']}")
    return results, {"seconds": seconds, "k": measured.k, "samples": measured.samples,
                     "exact_ms": measured.exact_ms,
                     "curve": [p.__dict__ for p in measured.points]}, truths


#: The band's filters, as the WHERE of a partial index.
PARTIAL = {
    "pos=adjective": "pos = 'adjective'",
    "pos IN (verb, adverb)": "pos IN ('verb', 'adverb')",
    "lexname=noun.artifact": "lexname = 'noun.artifact'",
}


def with_partial_indexes(engine: sa.Engine, vectors: npt.NDArray[np.float32],
                         queries: list[int], results: list[dict[str, Any]],
                         truths: dict[str, Any]) -> dict[str, Any]:
    """Create a partial HNSW index per band filter; measure those filters again."""
    facts: dict[str, Any] = {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        for number, (label, predicate) in enumerate(PARTIAL.items()):
            started = time.perf_counter()
            conn.exec_driver_sql(
                f"CREATE INDEX synsets_partial_{number} ON synsets USING hnsw"
                f" (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                f" WHERE {predicate}")
            size = conn.exec_driver_sql(
                f"SELECT pg_relation_size('synsets_partial_{number}')").scalar_one()
            facts[label] = {"seconds": time.perf_counter() - started, "bytes": size}
        conn.exec_driver_sql("ANALYZE synsets")
    planner.forget_calibrations(engine)  # and the partial indexes known
    filters = {label: where for label, where, _ in FILTERS}
    with Session(engine) as session:
        for figures in results:
            label = figures["filter"]
            if label not in PARTIAL:
                continue
            run = timed(session, lambda q, w=filters[label]: search(
                session, Synset.embedding, q, k=K, where=w), vectors, queries, truths[label])
            run["ef_search"] = results[0]["recall=0.95"]["ef_search"]
            figures["partial index"] = run
            print(f"{label:24} partial index: p95 {run['p95_ms']:6.2f} ms"
                  f" recall {run['recall']:.3f} {run['plans']}")
    return facts


def report(results: list[dict[str, Any]]) -> None:
    baseline = results[0]["plain_unfiltered"]["p95_ms"]
    headers = ["filter", "selectivity", "run", "plans", "ef_search", "recall@10", "p50 ms",
               "p95 ms", "p95/base"]
    table = []
    for r in results:
        for name in ("uncalibrated", *(f"recall={t}" for t in TARGETS), "partial index"):
            run = r.get(name)
            if run is None:
                continue
            table.append([
                r["filter"], f"{100 * r['selectivity']:.2f}%", name,
                " ".join(f"{p}:{c}" for p, c in sorted(run["plans"].items())),
                str(run.get("ef_search", planner.ef_search(K))), f"{run['recall']:.3f}",
                f"{run['p50_ms']:.2f}", f"{run['p95_ms']:.2f}", f"{run['p95_ms'] / baseline:.2f}",
            ])
    print()
    print_table(headers, table, left=3)
    print(f"\nbaseline: plain unfiltered HNSW (ef_search 40) p95 {baseline:.2f} ms, recall"
          f" {results[0]['plain_unfiltered']['recall']:.3f}")


if __name__ == "__main__":
    main()
