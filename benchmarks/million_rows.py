"""A million rows of 384 dimensions: index builds, sizes, search at four selectivities, a backfill.

Run (one command; ``--rows`` defaults to 1,000,000)::

    flock /tmp/embeddb-bench.lock .venv/bin/python benchmarks/million_rows.py [--rows N]

Figures print as they are measured and go to ``benchmarks/results/million_rows.json``.

Data. WordNet synsets' all-MiniLM-L6-v2 vectors are the real base: ``wordnet_vectors.py``'s
cache of all 117,659, or ``--base-vectors`` (a .npy, or the directory of parts that script
saves while encoding: the first N synsets). Row i is ``w * base[i mod N] + (1 - w) * base[j]``
for a random synset j and w uniform in 0.6..1, plus Gaussian noise of norm ``--noise`` (0.2),
renormalised, with synset ``i mod N``'s text and ``#i`` appended: every row lies near a real
vector, pulled toward another, and no two rows are alike (plain noisy copies of a few thousand
bases would make each query's neighbours a crowd of near-ties). ``bucket`` is uniform in
0..999 (B-tree index), so ``bucket < 100``, ``< 10`` and ``< 1`` keep 10%, 1% and 0.1% of the
rows. Queries are made the same way from random synsets, with other random draws (no query is
a row). Rows go in with one binary ``COPY`` (vectors and source
hashes included, so nothing is queued), then ``embeddb.install`` builds each index.

The column's model is embeddb's deterministic testing embedder (``embeddb-testing/hash-384``),
so the backfill (``--backfill`` new rows inserted without vectors, embedded by one
``embeddb worker --once`` with the index kept: ``--defer-index-rows 0``) measures the
database's cost of writing into a big HNSW index, not the model's. The worker's peak RSS is its
``VmHWM``.

For each index (float ``vector_cosine_ops``; ``quantize="binary"`` with several re-rank factors;
``quantize="halfvec"``): build time (``install``, ``maintenance_work_mem`` as given, one
parallel maintenance worker), index size, and through ``embeddb.search(..., k=10)`` p50/p95
over ``--queries`` queries (after a warm-up pass) and recall@10 against numpy's exact answer
over the same stored vectors, unfiltered and at each selectivity, with the plans embeddb chose.
No calibration is recorded, so the index plan runs with embeddb's default ``ef_search``
(``clamp(4 * candidates, 64, 1000)``).

The server is an embedded PostgreSQL whose data directory is ``--home`` (default under /tmp),
deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import sqlalchemy as sa
import wordnet_vectors
from common import REPO_ROOT, RESULTS_DIR, machine_facts, server_versions, write_json
from pgvector.psycopg import register_vector
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import embeddb
from embeddb.database import create_engine, libpq_conninfo
from embeddb.server import EmbeddedServer

MODEL = "embeddb-testing/hash-384"
DIMENSIONS = 384
TABLE = "million"
SELECTIVITIES: dict[str, Any] = {
    "unfiltered": None, "10%": 100, "1%": 10, "0.1%": 1,  # bucket < value
}
Vectors = npt.NDArray[np.float32]


def model_class(quantize: str | None, rerank: int = 10) -> Any:
    """The table mapped with one index declaration (each in its own registry)."""

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = TABLE
        id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
        bucket: Mapped[int]
        body: Mapped[str]
        embedding = embeddb.Embedding("{body}", model=MODEL, quantize=quantize, rerank=rerank)

    return Row


def derived_vectors(base: Vectors, rows: int, noise: float, seed: int) -> Vectors:
    """Row i: ``w * base[i mod n] + (1 - w) * base[j]`` (j random, w uniform in 0.6..1) plus
    Gaussian noise of norm ``noise``, renormalised: near real vectors, but no two alike."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, base.shape[1]), dtype=np.float32)
    step = 100_000
    for start in range(0, rows, step):
        count = min(rows, start + step) - start
        primary = base[np.arange(start, start + count) % len(base)]
        secondary = base[rng.integers(0, len(base), count)]
        weight = rng.uniform(0.6, 1.0, (count, 1)).astype(np.float32)
        chunk = weight * primary + (1 - weight) * secondary + rng.normal(
            0, noise / np.sqrt(base.shape[1]), (count, base.shape[1])).astype(np.float32)
        out[start:start + count] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def base_vectors(path: Path | None, texts: list[str]) -> Vectors:
    """Real vectors: a .npy file, a directory of .npy parts (concatenated in name order, as
    ``wordnet_vectors.py`` saves them while it encodes), or the WordNet cache."""
    if path is None:
        return wordnet_vectors.load(texts)
    if path.is_dir():
        return np.concatenate([np.load(p) for p in sorted(path.glob("*.npy"))])
    return np.load(path).astype(np.float32)


def load(url: str, vectors: Vectors, texts: list[str], buckets: npt.NDArray[np.int32],
         start: int = 0) -> float:
    """COPY the rows (binary), vectors and source hashes included; returns seconds."""
    began = time.perf_counter()
    with psycopg.connect(libpq_conninfo(url)) as conn:
        register_vector(conn)
        with conn.cursor().copy(
                f"COPY {TABLE} (id, bucket, body, embedding, embedding_source_hash)"
                " FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int4", "text", "vector", "uuid"])
            for i in range(len(vectors)):
                row_id = start + i
                body = f"{texts[row_id % len(texts)]} #{row_id}"
                digest = uuid.UUID(hashlib.md5(body.encode()).hexdigest())
                copy.write_row((row_id, int(buckets[i]), body, vectors[i], digest))
    return time.perf_counter() - began


def sql_value(engine: sa.Engine, statement: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(statement)).scalar()


def mb(size: float) -> str:
    return f"{size / 2**20:,.0f} MB"


def exact_tops(vectors: Vectors, buckets: npt.NDArray[np.int32], queries: Vectors,
               k: int = 10) -> dict[str, list[set[int]]]:
    """numpy's exact k nearest row ids of each query, at each selectivity (row id = index)."""
    scores = np.empty((len(vectors), len(queries)), dtype=np.float32)
    for start in range(0, len(vectors), 200_000):  # in slices: no full-size temporaries
        scores[start:start + 200_000] = vectors[start:start + 200_000] @ queries.T
    tops: dict[str, list[set[int]]] = {}
    for name, below in SELECTIVITIES.items():
        ids = np.arange(len(vectors)) if below is None else np.flatnonzero(buckets < below)
        kept = scores[ids]
        best = np.argpartition(-kept, k, axis=0)[:k]
        tops[name] = [set(ids[best[:, q]].tolist()) for q in range(len(queries))]
    return tops


def measure_search(engine: sa.Engine, row: Any, queries: Vectors, truth: dict[str, list[set[int]]],
                   label: str) -> dict[str, Any]:
    """p50/p95, recall@10 and plans through embeddb.search at each selectivity."""
    figures: dict[str, Any] = {}
    for name, below in SELECTIVITIES.items():
        where = None if below is None else row.bucket < below
        times, recalls, plans = [], [], Counter[str]()
        short = 0
        with Session(engine) as session:
            for rounds in (0, 1):  # a warm-up pass, then the timed one
                for query, best in zip(queries, truth[name], strict=True):
                    began = time.perf_counter()
                    hits = embeddb.search(session, row.embedding, query, k=10, where=where)
                    elapsed = (time.perf_counter() - began) * 1000
                    if rounds:
                        times.append(elapsed)
                        recalls.append(len({h.row.id for h in hits} & best) / 10)
                        plans[hits.plan] += 1
                        short += len(hits) < 10
                session.rollback()
        times.sort()
        figures[name] = {
            "p50_ms": statistics.median(times),
            "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
            "recall_at_10": statistics.fmean(recalls), "plans": dict(plans), "short": short,
        }
        f = figures[name]
        print(f"  {label:<16} {name:>10}: p50 {f['p50_ms']:7.1f} ms  p95 {f['p95_ms']:7.1f} ms"
              f"  recall@10 {f['recall_at_10']:.3f}  plans {dict(plans)}  short {short}",
              flush=True)
    return figures


def build(engine: sa.Engine, row: Any, label: str) -> dict[str, Any]:
    """install() with this declaration: drops a different index and builds this one."""
    began = time.perf_counter()
    embeddb.install(engine, row, enqueue_existing=False)
    seconds = time.perf_counter() - began
    size = sql_value(engine, f"SELECT pg_relation_size('{TABLE}_embedding_hnsw')")
    opclass = sql_value(engine, "SELECT opc.opcname FROM pg_index i JOIN pg_opclass opc"
                                f" ON opc.oid = i.indclass[0] WHERE i.indexrelid ="
                                f" '{TABLE}_embedding_hnsw'::regclass")
    print(f"{label}: index built in {seconds:,.1f} s, {mb(size)} ({opclass})", flush=True)
    return {"build_s": seconds, "index_bytes": size, "opclass": opclass}


def backfill(url: str, engine: sa.Engine, base: Vectors, texts: list[str], rows: int,
             start: int, seed: int) -> dict[str, Any]:
    """Insert ``rows`` rows without vectors; one worker embeds them, the index kept."""
    rng = np.random.default_rng(seed)
    buckets = rng.integers(0, 1000, rows, dtype=np.int32)
    began = time.perf_counter()
    with psycopg.connect(libpq_conninfo(url)) as conn, conn.cursor().copy(
            f"COPY {TABLE} (id, bucket, body) FROM STDIN") as copy:
        for i in range(rows):
            copy.write_row((start + i, int(buckets[i]), f"{texts[(start + i) % len(texts)]}"
                                                        f" #{start + i}"))
    copied = time.perf_counter() - began
    queued = sql_value(engine, "SELECT count(*) FROM embeddb.pending")
    command = [sys.executable, "-m", "embeddb.cli", "worker", "--once", "--database-url", url,
               "--defer-index-rows", "0"]
    began = time.perf_counter()
    worker = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:  # VmHWM is gone once the process exits: read it while it runs
        status = Path(f"/proc/{worker.pid}/status")
        while worker.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.5)  # a sampling interval, not synchronisation

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = worker.communicate()
    sampler.join()
    seconds = time.perf_counter() - began
    if worker.returncode != 0:
        raise SystemExit(f"worker failed: {stderr[-2000:]}")
    left = sql_value(engine, "SELECT count(*) FROM embeddb.pending")
    index_valid = sql_value(engine, f"SELECT indisvalid FROM pg_index WHERE indexrelid ="
                                    f" '{TABLE}_embedding_hnsw'::regclass")
    figures = {"rows": rows, "copy_s": copied, "queued": queued, "worker_s": seconds,
               "rows_per_s": rows / seconds, "worker_peak_rss_bytes": peak[0],
               "pending_after": left, "index_kept_valid": index_valid}
    print(f"backfill: {rows:,} rows COPY {copied:.1f} s, queued {queued:,}; worker embedded"
          f" them in {seconds:,.1f} s ({rows / seconds:,.0f} rows/s), peak RSS {mb(peak[0])},"
          f" {left} left pending, index valid {index_valid}", flush=True)
    return figures


def stored_vectors(url: str, start: int) -> Vectors:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        register_vector(conn)
        rows = conn.execute(f"SELECT embedding FROM {TABLE} WHERE id >= %s ORDER BY id",
                            (start,)).fetchall()
    return np.array([r[0].to_numpy() for r in rows], dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backfill", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--reranks", default="4,10,20", help="binary index re-rank factors")
    parser.add_argument("--maintenance-work-mem", default="4GB")
    parser.add_argument("--base-vectors", type=Path, help="a .npy of real vectors (default:"
                        " the WordNet cache of wordnet_vectors.py)")
    parser.add_argument("--home", type=Path, default=Path("/tmp/embeddb-million"))
    parser.add_argument("--keep", action="store_true", help="keep the server and its data")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()

    texts = [s.text for s in wordnet_vectors.synsets()]
    base = base_vectors(args.base_vectors, texts)
    texts = texts[:len(base)]
    rng = np.random.default_rng(args.seed)
    print(f"{args.rows:,} rows from {len(base):,} real base vectors, noise {args.noise};"
          f" load average {os.getloadavg()}", flush=True)
    vectors = derived_vectors(base, args.rows, args.noise, args.seed)
    buckets = rng.integers(0, 1000, args.rows, dtype=np.int32)
    picks = rng.integers(0, len(base), args.queries)
    queries = derived_vectors(base[picks], args.queries, args.noise, args.seed + 1)

    server = EmbeddedServer(args.home)
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args),
                               "machine": machine_facts()}
    out = RESULTS_DIR / "million_rows.json"
    try:
        url = server.start()
        results["versions"] = server_versions(url)
        admin = psycopg.connect(libpq_conninfo(url), autocommit=True)
        database = admin.info.dbname
        for setting, value in [("maintenance_work_mem", args.maintenance_work_mem),
                               ("max_parallel_maintenance_workers", "1")]:
            admin.execute(f"ALTER DATABASE {database} SET {setting} = '{value}'")
        results["shared_buffers"] = admin.execute("SHOW shared_buffers").fetchone()
        admin.close()
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            conn.execute(sa.text(
                f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, bucket int NOT NULL,"
                f" body text NOT NULL, embedding vector({DIMENSIONS}),"
                " embedding_source_hash uuid)"))
        seconds = load(url, vectors, texts, buckets)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE INDEX ON {TABLE} (bucket)"))
            conn.execute(sa.text(f"ANALYZE {TABLE}"))
        table_bytes = sql_value(engine, f"SELECT pg_table_size('{TABLE}')")
        results["load"] = {"rows": args.rows, "copy_s": seconds, "table_bytes": table_bytes}
        print(f"COPY {args.rows:,} rows in {seconds:,.1f} s ({args.rows / seconds:,.0f} rows/s);"
              f" table {mb(table_bytes)}", flush=True)

        truth = exact_tops(vectors, buckets, queries)
        indexes: dict[str, Any] = {}
        results["indexes"] = indexes
        float_row = model_class(None)
        indexes["float"] = build(engine, float_row, "float (vector_cosine_ops)")
        catalog_rows = sql_value(engine, "SELECT count(*) FROM embeddb.pending")
        assert catalog_rows == 0, f"{catalog_rows} rows queued by the load"
        indexes["float"]["search"] = measure_search(engine, float_row, queries, truth, "float")
        write_json(out, results)

        if args.backfill:
            results["backfill"] = backfill(url, engine, base, texts, args.backfill, args.rows,
                                           args.seed + 2)
            added = stored_vectors(url, args.rows)
            vectors = np.concatenate([vectors, added])
            buckets = np.concatenate([buckets, np.asarray(sql_value_list(
                engine, f"SELECT bucket FROM {TABLE} WHERE id >= {args.rows} ORDER BY id"),
                dtype=np.int32)])
            truth = exact_tops(vectors, buckets, queries)
            results["table_bytes_after_backfill"] = sql_value(
                engine, f"SELECT pg_table_size('{TABLE}')")
            results["float_index_bytes_after_backfill"] = sql_value(
                engine, f"SELECT pg_relation_size('{TABLE}_embedding_hnsw')")
            write_json(out, results)

        reranks = [int(r) for r in args.reranks.split(",") if r]
        binary: dict[str, Any] = build(engine, model_class("binary"), "binary (bit_hamming_ops)")
        indexes["binary"] = binary
        binary["search"] = {}
        for rerank in reranks:
            binary["search"][str(rerank)] = measure_search(
                engine, model_class("binary", rerank), queries, truth, f"binary rerank {rerank}")
            write_json(out, results)
        halfvec_row = model_class("halfvec")
        indexes["halfvec"] = build(engine, halfvec_row, "halfvec (halfvec_cosine_ops)")
        indexes["halfvec"]["search"] = measure_search(engine, halfvec_row, queries, truth,
                                                      "halfvec")
        results["finished"] = datetime.now(UTC).isoformat()
        write_json(out, results)
        summarise(results)
        engine.dispose()
    finally:
        if not args.keep:
            server.stop()
            shutil.rmtree(args.home, ignore_errors=True)
    print(f"written {out}")


def sql_value_list(engine: sa.Engine, statement: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(statement)).scalars())


def summarise(results: dict[str, Any]) -> None:
    indexes = results["indexes"]
    float_size = indexes["float"]["index_bytes"]
    print("\nindex    build s   size      ratio to float")
    for name, figures in indexes.items():
        print(f"{name:<8} {figures['build_s']:7.1f}  {mb(figures['index_bytes']):>9}"
              f"  {figures['index_bytes'] / float_size:.3f}")
    best = max(indexes["binary"]["search"].items(),
               key=lambda item: min(s["recall_at_10"] for s in item[1].values()))
    worst = min(s["recall_at_10"] for s in best[1].values())
    ratio = indexes["binary"]["index_bytes"] / float_size
    print(f"target: binary index <= 0.2 x float ({ratio:.3f}) with recall@10 >= 0.95 after"
          f" re-rank (best re-rank {best[0]}: lowest recall over selectivities {worst:.3f})")


if __name__ == "__main__":
    main()
