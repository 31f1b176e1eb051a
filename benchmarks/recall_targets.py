"""search(recall=...) on WordNet and SciFact: recall@10 and p50/p95 at targets 0.9/0.95/0.99.

Run: ``.venv/bin/python benchmarks/recall_targets.py [--corpus wordnet scifact]
[--synsets 0] [--scale 0] [--queries 200] [--samples 100] [--partial] [--band]
[--database-url URL]``.
Prints a table per corpus and writes every figure to ``benchmarks/results/recall_targets.json``.

Data, with all-MiniLM-L6-v2 vectors cached by ``wordnet_vectors.py`` (encoded if missing):

wordnet
    ``--synsets`` WordNet synsets drawn at random (seed 13; 0, the default: all 117,659);
    ``--queries`` of them are held out of the table and are the queries. MiniLM has no query
    prompt, so a held-out synset's vector is exactly the query vector ``search()`` would embed.
    Filters: those of ``filtered_search.py`` plus the 10-20% band (``pos``, ``lexname``).
    The vectors are those cached so far (all once ``wordnet_vectors.py`` has finished);
    ``--scale N`` grows the table to N rows with perturbed copies of cached synsets (Gaussian
    ``--noise`` per dimension, renormalised, ``pos`` and ``lexname`` kept), drawn per ``pos``
    so the table has the corpus' ``pos`` shares: a 117k-row table before every gloss is
    encoded. Say so when quoting its figures; the queries are always real held-out synsets.
scifact
    The 5,183 abstracts (``title + " " + text``, as the worker renders ``"{title} {body}"``);
    the queries are the 300 test claims, encoded by the same model: real queries, which sit
    farther from the corpus than any stored vector. SciFact has no filter column, so each
    abstract gets ``bucket`` = a hash of its id mod 100, and the filters keep ``bucket < N``.

Both tables are loaded as in ``filtered_search.py`` (one COPY, HNSW m=16 ef_construction=64
built after, ANALYZE). Measured per filter, over the queries, after a warm-up pass:

plain
    ``nearest()`` unfiltered with pgvector's defaults (ef_search 40): the baseline p95.
uncalibrated
    ``search()`` before any calibration: ``ef_search = clamp(4k, 64, 1000)``, as before.
recall=T
    ``search(..., recall=T)`` after ``calibration.calibrate`` (``--samples`` queries).

Recall@10 is against numpy brute force over the stored vectors with the same query vectors,
which is what the exact scan returns (ties at the 10th similarity count as hits). ``meets``
says whether the mean recall reached the target. The calibration's own estimate at the chosen
``ef_search`` is printed beside it, so its optimism (stored vectors as queries) shows.

``--partial`` then creates a partial HNSW index per 10-20% filter and measures those filters
again. ``--band`` measures, per 10-20% filter, the plans the planner could take there (exact,
iterative scan at several ``ef_search``, strict order, ``hnsw.max_scan_tuples``), for the
planner's constants.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
import wordnet_vectors
from common import (
    DATA_DIR,
    RESULTS_DIR,
    Databases,
    machine_facts,
    print_table,
    read_jsonl,
    server_versions,
    write_json,
)
from filtered_search import Synset, exact_answers, load, load_rows, plain, timed
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import calibration, catalog, nearest, search
from embeddb.database import create_engine
from embeddb.embedders import MINILM
from embeddb.orm import Embedding
from embeddb.query import _planner as planner

OUTPUT = RESULTS_DIR / "recall_targets.json"
K = 10
TARGETS = (0.9, 0.95, 0.99)
Keeps = Callable[[Any], bool]
#: (label, condition on Synset, predicate on a synset)
WORDNET_FILTERS: list[tuple[str, Any, Keeps]] = [
    ("none", None, lambda s: True),
    ("pos=noun", Synset.pos == "noun", lambda s: s.pos == "noun"),
    ("pos IN (adjective, adverb)", Synset.pos.in_(["adjective", "adverb"]),
     lambda s: s.pos in ("adjective", "adverb")),
    ("pos=adjective", Synset.pos == "adjective", lambda s: s.pos == "adjective"),
    ("pos IN (verb, adverb)", Synset.pos.in_(["verb", "adverb"]),
     lambda s: s.pos in ("verb", "adverb")),
    ("lexname=adj.all", Synset.lexname == "adj.all", lambda s: s.lexname == "adj.all"),
    ("pos=verb", Synset.pos == "verb", lambda s: s.pos == "verb"),
    ("lexname=noun.artifact", Synset.lexname == "noun.artifact",
     lambda s: s.lexname == "noun.artifact"),
    ("lexname=noun.quantity", Synset.lexname == "noun.quantity",
     lambda s: s.lexname == "noun.quantity"),
    ("lexname=verb.consumption", Synset.lexname == "verb.consumption",
     lambda s: s.lexname == "verb.consumption"),
    ("lexname=verb.weather", Synset.lexname == "verb.weather",
     lambda s: s.lexname == "verb.weather"),
]
#: The 10-20% band's filters, as the WHERE of a partial index.
PARTIAL = {
    "pos IN (adjective, adverb)": "pos IN ('adjective', 'adverb')",
    "pos=adjective": "pos = 'adjective'",
    "pos IN (verb, adverb)": "pos IN ('verb', 'adverb')",
    "lexname=adj.all": "lexname = 'adj.all'",
    "pos=verb": "pos = 'verb'",
    "lexname=noun.artifact": "lexname = 'noun.artifact'",
}


class ScifactBase(DeclarativeBase):
    pass


class Abstract(ScifactBase):
    __tablename__ = "abstracts"
    id: Mapped[int] = mapped_column(primary_key=True)
    doc_id: Mapped[str]
    title: Mapped[str]
    body: Mapped[str]
    bucket: Mapped[int] = mapped_column(index=True)
    embedding = Embedding("{title} {body}", model=MINILM)


def _bucket(doc_id: str) -> int:
    return int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 100


SCIFACT_FILTERS: list[tuple[str, Any, Keeps]] = [
    ("none", None, lambda d: True),
    *[(f"bucket<{n}", Abstract.bucket < n, lambda d, n=n: d["bucket"] < n)
      for n in (70, 20, 15, 10, 1)],
]


@dataclass
class Corpus:
    """One corpus as measured: the stored rows and the queries index one vector array (a
    row's ``id`` is its index), so ``filtered_search``'s recall and timing apply unchanged."""

    name: str
    column: Any
    items: list[Any]  # what the filters' predicates see, by index
    vectors: npt.NDArray[np.float32]
    rows: npt.NDArray[np.int64]
    queries: list[int]
    filters: list[tuple[str, Any, Keeps]]
    load: Callable[[sa.Engine, str], dict[str, float]]
    real_rows: int  # the rest are perturbed copies (--scale)


def wordnet(synset_count: int, query_count: int, scale: int, noise: float) -> Corpus:
    every = wordnet_vectors.synsets()
    cached, cached_vectors = wordnet_vectors.encoded([s.text for s in every])
    total = len(cached)
    picked = np.arange(total) if synset_count <= 0 or synset_count >= total else \
        np.array(sorted(random.Random(13).sample(range(total), synset_count)))
    synsets = [every[i] for i in cached[picked]]
    vectors = cached_vectors[picked]
    queries = sorted(random.Random(42).sample(range(len(synsets)), query_count))
    if scale > len(synsets):
        synsets, vectors = grown(synsets, vectors, queries, every, scale, noise)
    rows = np.setdiff1d(np.arange(len(synsets)), queries)
    return Corpus("wordnet", Synset.embedding, synsets, vectors, rows, queries,
                  WORDNET_FILTERS, lambda engine, url: load(engine, url, synsets, vectors, rows),
                  len(picked) - len(queries))


def grown(synsets: list[wordnet_vectors.Synset], vectors: npt.NDArray[np.float32],
          queries: list[int], every: list[wordnet_vectors.Synset], rows: int, noise: float
          ) -> tuple[list[wordnet_vectors.Synset], npt.NDArray[np.float32]]:
    """``rows`` rows: the real ones, then perturbed copies (Gaussian ``noise`` per dimension,
    renormalised; ``pos`` and ``lexname`` kept) of real rows that are not queries, drawn per
    ``pos`` so the table has the whole corpus' ``pos`` shares whatever was encoded."""
    rng = np.random.default_rng(5)
    share = {pos: count / len(every) for pos, count in Counter(s.pos for s in every).items()}
    held = set(queries)
    by_pos: dict[str, list[int]] = {}
    for i, s in enumerate(synsets):
        if i not in held:
            by_pos.setdefault(s.pos, []).append(i)
    have = Counter(synsets[i].pos for i in range(len(synsets)) if i not in held)
    table = rows - len(queries)
    sources = np.concatenate([rng.choice(by_pos[pos], max(0, round(share[pos] * table)
                                                         - have[pos]))
                              for pos in share if pos in by_pos]).astype(np.int64)
    copies = vectors[sources] + rng.normal(0, noise, (len(sources), vectors.shape[1]))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return synsets + [synsets[i] for i in sources], \
        np.concatenate([vectors, copies.astype(np.float32)])


def scifact() -> Corpus:
    docs = list(read_jsonl(DATA_DIR / "scifact" / "corpus.jsonl"))
    tested = {line.split("\t")[0] for line in
              (DATA_DIR / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    claims = [q["text"] for q in read_jsonl(DATA_DIR / "scifact" / "queries.jsonl")
              if q["_id"] in tested]
    stored = wordnet_vectors.load([f"{d['title']} {d['text']}" for d in docs],
                                  corpus="scifact-corpus")
    asked = wordnet_vectors.load(claims, corpus="scifact-claims")
    vectors = np.concatenate([stored, asked]).astype(np.float32)
    items = [{"bucket": _bucket(d["_id"])} for d in docs]
    rows = np.arange(len(docs))
    queries = list(range(len(docs), len(vectors)))

    def load_abstracts(engine: sa.Engine, url: str) -> dict[str, float]:
        ScifactBase.metadata.create_all(engine)
        return load_rows(engine, url, "abstracts",
                         ("id", "doc_id", "title", "body", "bucket", "embedding"),
                         ((i, d["_id"], d["title"], d["text"], items[i]["bucket"], stored[i])
                          for i, d in enumerate(docs)))

    return Corpus("scifact", Abstract.embedding, items, vectors, rows, queries,
                  SCIFACT_FILTERS, load_abstracts, len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--corpus", nargs="+", choices=["wordnet", "scifact"],
                        default=["wordnet", "scifact"])
    parser.add_argument("--synsets", type=int, default=0, help="synsets drawn (0: all)")
    parser.add_argument("--queries", type=int, default=200, help="held-out synsets (200)")
    parser.add_argument("--scale", type=int, default=0,
                        help="grow the WordNet table to this many rows with perturbed copies")
    parser.add_argument("--noise", type=float, default=0.02,
                        help="per-dimension Gaussian noise of a copy's vector (0.02)")
    parser.add_argument("--samples", type=int, default=calibration.DEFAULT_SAMPLES)
    parser.add_argument("--partial", action="store_true",
                        help="then create partial HNSW indexes for the 10-20%% band's filters"
                             " and measure those filters again at the default recall")
    parser.add_argument("--band", action="store_true",
                        help="measure the plans possible in the 10-20%% band (WordNet)")
    parser.add_argument("--filters", nargs="+", help="measure only these filter labels")
    parser.add_argument("--database-url")
    args = parser.parse_args()

    databases = Databases.choose(args.database_url)
    payload: dict[str, Any] = {
        "benchmark": "recall_targets", "k": K, "machine": machine_facts(),
        "versions": server_versions(databases.url), "corpora": {},
    }
    for name in args.corpus:
        corpus = wordnet(args.synsets, args.queries, args.scale, args.noise) \
            if name == "wordnet" else scifact()
        if args.filters:
            corpus.filters = [f for f in corpus.filters if f[0] in {"none", *args.filters}]
        with databases.fresh(f"embeddb_bench_recall_{name}") as url:
            engine = create_engine(url)
            facts: dict[str, Any] = {"load": corpus.load(engine, url)}
            results, facts["calibration"], truths = measure(engine, corpus, args.samples)
            if args.band and name == "wordnet":
                facts["band"] = band(engine, corpus, truths)
            if args.partial and name == "wordnet":
                facts["partial_indexes"] = with_partial_indexes(engine, corpus, results,
                                                                truths)
            engine.dispose()
        report(name, results)
        payload["corpora"][name] = {"rows": len(corpus.rows), "queries": len(corpus.queries),
                                    "real_rows": corpus.real_rows,
                                    **facts, "results": results}
    payload["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"\nwritten to {write_json(OUTPUT, payload)}")


def measure(engine: sa.Engine, corpus: Corpus, samples: int
            ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Every filter uncalibrated, then calibrate, then every filter at every target."""
    vectors, queries, column = corpus.vectors, corpus.queries, corpus.column
    results: list[dict[str, Any]] = []
    truths: dict[str, Any] = {}
    with Session(engine) as session:
        base = timed(session, lambda q: plain_on(session, column, q), vectors, queries,
                     exact_answers(vectors, corpus.rows, queries))
        for label, where, keeps in corpus.filters:
            matching = np.array([i for i in corpus.rows if keeps(corpus.items[i])],
                                dtype=np.int64)
            if len(matching) < K:
                print(f"{corpus.name} {label}: {len(matching)} rows, not measured")
                continue
            truths[label] = exact_answers(vectors, matching, queries)
            figures = timed(session, lambda q, w=where: search(session, column, q, k=K,
                                                               where=w),
                            vectors, queries, truths[label])
            results.append({"filter": label, "selectivity": len(matching) / len(corpus.rows),
                            "matching_rows": len(matching), "uncalibrated": figures,
                            "plain_unfiltered": base})
            print(f"{corpus.name} {label:26} uncalibrated p95 {figures['p95_ms']:6.2f} ms"
                  f" recall {figures['recall']:.3f} {figures['plans']}")
    with engine.begin() as conn:
        entry = catalog.get_entry(conn, "public", column.class_.__tablename__, "embedding")
        assert entry is not None
        started = time.perf_counter()
        measured = calibration.calibrate(conn, entry, samples=samples)
        seconds = time.perf_counter() - started
    print(f"calibrated in {seconds:.1f} s:\n{measured.describe()}")
    planner.forget_calibrations(engine)
    with Session(engine) as session:
        filters = {label: where for label, where, _ in corpus.filters}
        for figures in results:
            label, where = figures["filter"], filters[figures["filter"]]
            for target in TARGETS:
                run = timed(session, lambda q, w=where, t=target: search(
                    session, column, q, k=K, where=w, recall=t),
                    vectors, queries, truths[label])
                run["ef_search"] = planner.calibrated_ef(measured, target, K)
                run["calibrated_recall"] = _estimate(measured, run["ef_search"])
                run["meets"] = run["recall"] >= target
                figures[f"recall={target}"] = run
                print(f"{corpus.name} {label:26} recall={target}: p95 {run['p95_ms']:6.2f} ms"
                      f" recall {run['recall']:.3f} {run['plans']}")
    return results, {"seconds": seconds, "k": measured.k, "samples": measured.samples,
                     "exact_ms": measured.exact_ms,
                     "curve": [p.__dict__ for p in measured.points],
                     "filtered": [p.__dict__ for p in measured.filtered]}, truths


def _estimate(measured: calibration.Calibration, ef: int | None) -> float | None:
    """The calibration's recall at ``ef`` (None: the exact plan)."""
    return next((p.recall for p in measured.points if p.ef_search == ef), None)


def plain_on(session: Session, column: Any, query: Any) -> list[Any]:
    if column is Synset.embedding:
        return plain(session, query, None)
    return session.execute(nearest(column, query, k=K)).all()


#: The plans measured by ``--band``: label -> transaction-local settings (None: exact).
BAND_PLANS: dict[str, dict[str, str] | None] = {
    "exact": None,
    **{f"relaxed ef {ef}": {"enable_sort": "off", "hnsw.iterative_scan": "relaxed_order",
                             "hnsw.ef_search": str(ef)}
       for ef in (40, 100, 400)},
    "relaxed ef 64 max_scan 5000": {"enable_sort": "off", "hnsw.iterative_scan": "relaxed_order",
                                    "hnsw.ef_search": "64", "hnsw.max_scan_tuples": "5000"},
    "strict ef 64": {"enable_sort": "off", "hnsw.iterative_scan": "strict_order",
                     "hnsw.ef_search": "64"},
}


def band(engine: sa.Engine, corpus: Corpus, truths: dict[str, Any]) -> list[dict[str, Any]]:
    """Per 10-20% filter, each plan of :data:`BAND_PLANS` forced: rows, recall, p50/p95."""
    found = []
    filters = {label: where for label, where, _ in corpus.filters}
    with Session(engine) as session:
        for label in (label for label in PARTIAL if label in truths):
            for plan, settings in BAND_PLANS.items():
                def run(q: Any, w: Any = filters[label],
                        s: dict[str, str] | None = settings) -> Any:
                    if s is None:
                        return search(session, corpus.column, q, k=K, where=w, plan="exact")
                    session.execute(sa.select(*(sa.func.set_config(name, value, True)
                                                for name, value in s.items())))
                    return plain(session, q, w)
                figures = timed(session, run, corpus.vectors, corpus.queries, truths[label])
                found.append({"filter": label, "plan": plan, **figures})
                print(f"band {label:26} {plan:28} rows>={figures['rows_min']:2d}"
                      f" recall {figures['recall']:.3f} p50 {figures['p50_ms']:6.2f}"
                      f" p95 {figures['p95_ms']:6.2f}")
    return found


def with_partial_indexes(engine: sa.Engine, corpus: Corpus, results: list[dict[str, Any]],
                         truths: dict[str, Any]) -> dict[str, Any]:
    """Create a partial HNSW index per band filter; measure those filters again."""
    facts: dict[str, Any] = {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        measured = {r["filter"] for r in results}
        for number, (label, predicate) in enumerate(PARTIAL.items()):
            if label not in measured:
                continue
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
    filters = {label: where for label, where, _ in corpus.filters}
    with Session(engine) as session:
        for figures in results:
            label = figures["filter"]
            if label not in PARTIAL:
                continue
            for target in TARGETS:
                run = timed(session, lambda q, w=filters[label], t=target: search(
                    session, corpus.column, q, k=K, where=w, recall=t),
                    corpus.vectors, corpus.queries, truths[label])
                run["ef_search"] = results[0][f"recall={target}"]["ef_search"]
                run["meets"] = run["recall"] >= target
                figures[f"partial index, recall={target}"] = run
                print(f"{label:26} partial index recall={target}: p95 {run['p95_ms']:6.2f} ms"
                      f" recall {run['recall']:.3f} {run['plans']}")
    return facts


def _ef_shown(run: dict[str, Any]) -> str:
    if set(run["plans"]) == {"exact"}:
        return "-"
    return str(run.get("ef_search") or planner.ef_search(K))


def report(name: str, results: list[dict[str, Any]]) -> None:
    baseline = results[0]["plain_unfiltered"]["p95_ms"]
    headers = ["filter", "selectivity", "run", "plans", "ef_search", "recall@10",
               "calibrated", "meets", "p50 ms", "p95 ms", "p95/base"]
    runs = ("uncalibrated", *(f"recall={t}" for t in TARGETS),
            *(f"partial index, recall={t}" for t in TARGETS))
    table = []
    for r in results:
        for run_name in runs:
            run = r.get(run_name)
            if run is None:
                continue
            estimate = run.get("calibrated_recall")
            table.append([
                r["filter"], f"{100 * r['selectivity']:.2f}%", run_name,
                " ".join(f"{p}:{c}" for p, c in sorted(run["plans"].items())),
                _ef_shown(run), f"{run['recall']:.3f}",
                "" if estimate is None else f"{estimate:.3f}",
                {True: "yes", False: "NO"}.get(run.get("meets"), ""),  # type: ignore[call-overload]
                f"{run['p50_ms']:.2f}", f"{run['p95_ms']:.2f}", f"{run['p95_ms'] / baseline:.2f}",
            ])
    print(f"\n{name}:")
    print_table(headers, table, left=4)
    print(f"\nbaseline: plain unfiltered HNSW (ef_search 40) p95 {baseline:.2f} ms, recall"
          f" {results[0]['plain_unfiltered']['recall']:.3f}")


if __name__ == "__main__":
    main()
