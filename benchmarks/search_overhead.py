"""What embeddb's search helper costs over the same SQL written by hand.

Run: ``.venv/bin/python benchmarks/search_overhead.py [--rows 30000] [--iterations 1000]
[--database-url URL]``. Prints a table and writes ``benchmarks/results/search_overhead.json``.

The table is ``--rows`` WordNet synsets drawn at random, loaded as ``filtered_search.py`` loads
them (same cached MiniLM vectors, same loader); the queries are 200 other synsets. Each case
runs the helper and two hand-written versions of the SQL it sends, in rotating order,
``--iterations`` times each, each call in its own transaction on one SQLAlchemy Core
connection, with a vector as the query (embedding a text costs the same either way; every side
formats the vector the same way). The two hand-written versions:

SQL text
    the statement as a string (``sqlalchemy.text``): the floor for anything on SQLAlchemy;
Core
    the same statement built per call with ``select()`` and pgvector's comparator, as a
    SQLAlchemy user writes it: it pays what any new ``Select`` pays (its cache key, result
    metadata), so the difference to it is the helper's own work.

With a filter (exact, auto) a third hand-written side, *SQL text + filter*, builds the filter
expression ``lexname == "verb.motion"`` as a caller of the helper (or of Core) does, leaves it
unused and runs the SQL text: what the expression API itself costs, before any helper work.

Per case, both send what a careful user would send for the plan:

index
    ``SELECT set_config(...)`` for the same three settings, then the same ``SELECT ...
    ORDER BY embedding <=> :q LIMIT 10``. (The helper also saves the old values, in the same
    statement, and would put them back before a next statement in the transaction; here
    ``COMMIT`` comes next, as in the hand-written case.)
exact
    the same ``SELECT ... WHERE lexname = :l ORDER BY (embedding <=> :q) + 0 LIMIT 10``.
auto
    the helper choosing the plan for a selective filter (its row estimate cached, the steady
    state of an application), against the hand-written SQL of the plan it chooses.
auto, uncached
    the same with the estimate cache off: one ``EXPLAIN`` per call.

Overhead is helper / hand-written - 1, on the median and on the mean. Target: at most 5%.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
import wordnet_vectors
from common import RESULTS_DIR, Databases, machine_facts, print_table, server_versions, write_json
from filtered_search import Synset, load

from embeddb import search
from embeddb.database import create_engine
from embeddb.query import _planner as planner
from embeddb.query._target import VectorText, vector_text

OUTPUT = RESULTS_DIR / "search_overhead.json"
K = 10
COLUMNS = "id, synset, pos, lexname, lemmas, gloss, embedding_source_hash"
INDEX_SQL = sa.text(
    f"SELECT {COLUMNS}, 1 - (embedding <=> CAST(:q AS vector)) AS similarity FROM synsets"
    " WHERE embedding IS NOT NULL ORDER BY embedding <=> CAST(:q AS vector) LIMIT :k")
EXACT_SQL = sa.text(
    f"SELECT {COLUMNS}, 1 - (embedding <=> CAST(:q AS vector)) AS similarity FROM synsets"
    " WHERE embedding IS NOT NULL AND lexname = :lexname"
    " ORDER BY (embedding <=> CAST(:q AS vector)) + 0 LIMIT :k")
SETTINGS_SQL = sa.text(
    "SELECT set_config('enable_sort', 'off', true),"
    " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
    " set_config('hnsw.ef_search', :ef, true)")
SELECTIVE = "verb.motion"  # 1.2% of WordNet: the exact plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--database-url", help="a database to use (default: the benchmarks'"
                        " embedded server, a fresh database)")
    args = parser.parse_args()

    synsets = wordnet_vectors.synsets()
    vectors = wordnet_vectors.load([s.text for s in synsets])
    drawn = random.Random(7).sample(range(len(synsets)), args.rows + 200)
    rows = np.array(sorted(drawn[:args.rows]))
    queries = [vectors[i] for i in drawn[args.rows:]]  # not in the table
    databases = Databases.choose(args.database_url)
    with databases.fresh("embeddb_bench_overhead") as url:
        engine = create_engine(url)
        load(engine, url, synsets, vectors, rows)
        with engine.connect() as conn:
            results = measure(conn, queries, args.iterations)
        engine.dispose()
    report(results)
    payload = {
        "benchmark": "search_overhead",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "iterations": args.iterations,
        "machine": machine_facts(),
        "versions": server_versions(databases.url),
        "results": results,
    }
    print(f"\nwritten to {write_json(OUTPUT, payload)}")


def measure(conn: sa.Connection, queries: list[Any], iterations: int) -> list[dict[str, Any]]:
    table = Synset.__table__
    column, lexname = table.c.embedding, table.c.lexname
    ef = str(planner.ef_search(K))

    def text_index(q: Any) -> Any:
        conn.execute(SETTINGS_SQL, {"ef": ef})
        return conn.execute(INDEX_SQL, {"q": text(q), "k": K}).all()

    def text_exact(q: Any) -> Any:
        return conn.execute(EXACT_SQL, {"q": text(q), "lexname": SELECTIVE, "k": K}).all()

    def core(q: Any, where: Any, exact: bool) -> Any:
        """The same statement built by hand with SQLAlchemy Core and pgvector's comparator."""
        vector = sa.bindparam("q", text(q), type_=VectorText())
        apart = column.cosine_distance(vector)
        stmt = (sa.select(*(c for c in table.c if c is not column),
                          (sa.literal_column("1") - apart).label("similarity"))
                .where(column.is_not(None)))
        if where is not None:
            stmt = stmt.where(where)
        ordering = apart + sa.literal_column("0") if exact else apart
        return conn.execute(stmt.order_by(ordering).limit(K)).all()

    def core_index(q: Any) -> Any:
        conn.execute(SETTINGS_SQL, {"ef": ef})
        return core(q, None, False)

    def core_exact(q: Any) -> Any:
        return core(q, lexname == SELECTIVE, True)

    def text_exact_filter(q: Any) -> Any:
        lexname == SELECTIVE  # noqa: B015 (built as the helper's caller builds it, then unused)
        return text_exact(q)

    def auto(q: Any) -> Any:
        return search(conn, column, q, k=K, where=lexname == SELECTIVE)

    cases: list[tuple[str, dict[str, Callable[[Any], Any]]]] = [
        ("index", {"helper": lambda q: search(conn, column, q, k=K, plan="index"),
                   "text": text_index, "core": core_index}),
        ("exact", {"helper": lambda q: search(conn, column, q, k=K,
                                              where=lexname == SELECTIVE, plan="exact"),
                   "text": text_exact, "core": core_exact, "text_filter": text_exact_filter}),
        ("auto", {"helper": auto, "text": text_exact, "core": core_exact,
                  "text_filter": text_exact_filter}),
    ]
    results = [compare(conn, name, sides, queries, iterations) for name, sides in cases]
    ttl = planner.ESTIMATE_TTL_SECONDS
    planner.ESTIMATE_TTL_SECONDS = -1.0  # every call asks the planner again
    try:
        results.append(compare(conn, "auto, uncached", cases[2][1], queries, iterations))
    finally:
        planner.ESTIMATE_TTL_SECONDS = ttl
    return results


def text(vector: Any) -> str:
    """The vector as the hand-written side sends it: the same text the helper sends."""
    return vector_text(vector.tolist())


def compare(conn: sa.Connection, name: str, sides: dict[str, Callable[[Any], Any]],
            queries: list[Any], iterations: int) -> dict[str, Any]:
    timings: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for i in range(iterations + 50):
        query = queries[i % len(queries)]
        turn = i % len(order)
        for side in order[turn:] + order[:turn]:  # each side first as often as the others
            started = time.perf_counter()
            with conn.begin():
                rows = sides[side](query)
            elapsed = (time.perf_counter() - started) * 1000
            assert len(rows) == K, (name, side, len(rows))
            if i >= 50:  # the first 50 warm caches, prepared statements, index pages
                timings[side].append(elapsed)
    figures: dict[str, Any] = {"case": name}
    for side, values in timings.items():
        figures[f"{side}_median_ms"] = statistics.median(values)
        figures[f"{side}_mean_ms"] = statistics.fmean(values)
    for side in (side for side in sides if side != "helper"):
        figures[f"overhead_vs_{side}_median"] = (
            figures["helper_median_ms"] / figures[f"{side}_median_ms"] - 1)
        figures[f"overhead_vs_{side}_mean"] = (
            figures["helper_mean_ms"] / figures[f"{side}_mean_ms"] - 1)
    print(f"{name:15} helper {figures['helper_median_ms']:.3f} ms, SQL text"
          f" {figures['text_median_ms']:.3f} ms, Core {figures['core_median_ms']:.3f} ms")
    return figures


def report(results: list[dict[str, Any]]) -> None:
    def overhead(r: dict[str, Any], side: str) -> str:
        return (f"{100 * r[f'overhead_vs_{side}_median']:+.1f}% /"
                f" {100 * r[f'overhead_vs_{side}_mean']:+.1f}%")

    rows = [[r["case"], f"{r['text_median_ms']:.3f}", f"{r['core_median_ms']:.3f}",
             f"{r['helper_median_ms']:.3f}", overhead(r, "text"), overhead(r, "core"),
             overhead(r, "text_filter") if "text_filter_median_ms" in r else "-"]
            for r in results]
    print()
    print_table(["case", "SQL text p50 ms", "Core p50 ms", "helper p50 ms",
                 "vs SQL text p50 / mean", "vs Core p50 / mean",
                 "vs SQL text + filter p50 / mean"], rows)
    print("\ntarget: overhead at most +5%")


if __name__ == "__main__":
    main()
