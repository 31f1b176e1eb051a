"""The proof of "never empty" for chunk settings: searches run without pause through a change of
a chunked column's chunk size and overlap, built in ``docs_embedding__next_chunks`` by a real
`embeddb worker` that is killed with SIGKILL midway and restarted. Every search returns k
documents, each scored entirely in one generation: its spans are that generation's split and
its similarity is the best cosine of the query with that generation's stored chunk vectors.
Once the change is done, the chunk invariant holds for the new settings."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import catalog, search
from embeddb.chunking import Chunking, Splitter
from embeddb.embedders import load_embedder

from .chunked import CHUNKS, HASH_MODEL, check_chunk_invariant, doc_model
from .conftest import SpawnWorker
from .searching import SearchesWithoutPause
from .workers import nothing_pending, scalar, wait_until

DOCS, K = 100, 10
OLD, NEW = Chunking(max_tokens=12, overlap=3), Chunking(max_tokens=20, overlap=5)
#: 0.4 s of "model time" per claim of 5 documents: the change takes ~8 s, time to kill it midway
SLOW = f"{HASH_MODEL}?delay=0.4"
NEXT_CHUNKS, PREVIOUS_CHUNKS = "docs_embedding__next_chunks", "docs_embedding__previous_chunks"
QUERIES = ["w3 w7 w11", "w1 w2", "d7 w5 w30", "w13 w17 w19 w23"]
Spans = dict[int, set[tuple[int, int, int]]]


@dataclass
class Answer:
    query: str
    hits: list[tuple[int, float, tuple[int, int, int]]]  # document, similarity, best chunk span
    finished_at: float


def body(doc_id: int) -> str:
    """One 60-word paragraph: every chunk span differs between OLD and NEW."""
    return " ".join(f"d{doc_id} w{(doc_id * w) % 40}" for w in range(30))


def spans(engine: sa.Engine, chunking: Chunking) -> Spans:
    """Each document's chunk spans (number, start, end) under ``chunking``."""
    splitter = Splitter(HASH_MODEL, chunking)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, title || E'\\n\\n' || body AS text FROM docs"))
        return {row.id: {(c.number, c.start, c.end) for c in splitter.split(row.text)}
                for row in rows}


def stored(engine: sa.Engine, table: str) -> dict[int, dict[tuple[int, int, int], Any]]:
    """Each document's chunk vectors in ``table``, by span."""
    by_document: dict[int, dict[tuple[int, int, int], Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(sa.text(
                f"SELECT id, chunk_no, char_start, char_end, embedding::text AS v FROM {table}")):
            by_document.setdefault(row.id, {})[row.chunk_no, row.char_start, row.char_end] = (
                np.array(row.v.strip("[]").split(","), dtype=np.float64))
    return by_document


def live_chunking(engine: sa.Engine) -> Chunking | None:
    with engine.connect() as conn:
        entry = catalog.get_entry(conn, "public", "docs", "embedding")
    assert entry is not None
    return entry.spec.chunking


def scored_in(answer: Answer, query: Any, split: Spans,
              vectors: dict[int, dict[tuple[int, int, int], Any]]) -> bool:
    """Whether every hit of ``answer`` is a document scored by its best chunk of one generation:
    its span is of that generation's split and its similarity that generation's max-sim."""
    for doc_id, similarity, span in answer.hits:
        chunks = vectors.get(doc_id, {})
        if span not in split[doc_id] or not chunks:
            return False
        best = max(float(v @ query / (np.linalg.norm(v) * np.linalg.norm(query)))
                   for v in chunks.values())
        if abs(best - similarity) > 1e-4:
            return False
    return True


def test_searches_never_short_nor_mixed_through_a_chunk_change_with_a_killed_worker(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    Base, Doc = doc_model(model=SLOW, chunking=OLD)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [{"id": i, "title": f"T{i}", "body": body(i)}
                                      for i in range(1, DOCS + 1)])
    first = spawn_worker("--lease-seconds", "2", "--batch-size", "50")
    wait_until(lambda: nothing_pending(engine), 60, "the old chunks")
    assert first.stop() == 0
    _, Changed = doc_model(model=SLOW, chunking=NEW)
    embeddb.install(engine, Changed)  # the change begins: OLD stays live while NEW is built
    assert live_chunking(engine) == OLD
    assert scalar(engine, f"SELECT count(*) FROM {NEXT_CHUNKS}") == 0

    def search_once(turn: int) -> Answer:
        text = QUERIES[(turn - 1) % len(QUERIES)]
        with Session(engine) as session:
            declared = (Doc, Changed)[turn % 2]  # either declaration reads what is live
            hits = search(session, declared.embedding, text, k=K)
            assert hits.best_chunks is not None
            return Answer(text, [
                (doc.id, similarity, (span.chunk_no, span.start, span.end))
                for (doc, similarity), span in zip(hits, hits.best_chunks, strict=True)
            ], time.monotonic())

    searches = SearchesWithoutPause(search_once)
    answers, errors = searches.answers, searches.errors

    def built() -> int:
        return int(scalar(engine, f"SELECT count(DISTINCT id) FROM {NEXT_CHUNKS}"))

    with searches:
        doomed = spawn_worker("--lease-seconds", "2", "--batch-size", "5")
        wait_until(lambda: built() >= 20, 120, "the first worker to get going")
        doomed.signal(signal.SIGKILL)
        assert doomed.wait() == -signal.SIGKILL
        assert 20 <= built() < DOCS and live_chunking(engine) == OLD  # killed midway
        # nothing half-written: a document in the next chunk table has all its NEW chunks
        new_spans = spans(engine, NEW)
        for doc_id, chunks in stored(engine, NEXT_CHUNKS).items():
            assert set(chunks) == new_spans[doc_id], f"doc {doc_id}"
        killed_at = len(answers)
        second = spawn_worker("--lease-seconds", "2", "--batch-size", "5")
        wait_until(lambda: live_chunking(engine) == NEW, 180, "the swap")
        swapped_at = time.monotonic()
        wait_until(lambda: sum(a.finished_at > swapped_at for a in answers) >= 12 or bool(errors),
                   60, "searches after the swap")
        assert second.stop() == 0
    assert not errors, repr(errors[0])
    assert killed_at > 0 and len(answers) > killed_at + 12  # searches ran on both sides

    with engine.connect() as conn:
        assert check_chunk_invariant(conn, model=HASH_MODEL, chunking=NEW) == sum(
            map(len, new_spans.values()))
    old_spans = spans(engine, OLD)
    old, new = stored(engine, PREVIOUS_CHUNKS), stored(engine, CHUNKS)
    assert {d: set(c) for d, c in old.items()} == old_spans  # the old chunks, kept as they were
    embedder = load_embedder(HASH_MODEL)
    query_vectors = {text: np.asarray(embedder.embed_query(text), dtype=np.float64)
                     for text in QUERIES}
    kinds = []
    for answer in answers:
        assert len(answer.hits) == K and len({d for d, _, _ in answer.hits}) == K, answer
        query = query_vectors[answer.query]
        matching = {kind for kind, split, vectors in (("old", old_spans, old),
                                                      ("new", new_spans, new))
                    if scored_in(answer, query, split, vectors)}
        assert matching, f"{answer.query!r} was scored in neither generation: {answer.hits}"
        if len(matching) == 1:  # a title chunk is the same in both generations
            kinds.append(matching.pop())
    # the searches spanned the change: the old chunks before the swap, the new ones after, and
    # never back
    assert kinds[0] == "old" and kinds[-1] == "new"
    assert kinds == sorted(kinds, key=lambda kind: kind == "new")
