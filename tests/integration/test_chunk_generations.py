"""New chunk settings go through the blue/green generations path: the new chunks are built in
their own table beside the live ones, searches keep reading the live chunks until the swap, and
finish / rollback work as for a model change."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import catalog, generations, search, search_chunks
from embeddb.chunking import Chunking, Splitter

from .chunked import CHUNKS, HASH_MODEL, doc_model
from .models import drain

OLD, NEW = Chunking(max_tokens=12, overlap=3), Chunking(max_tokens=20, overlap=5)
NEXT_CHUNKS, PREVIOUS_CHUNKS = "docs_embedding__next_chunks", "docs_embedding__previous_chunks"
QUERY = "w3 w7 w11"


def make_docs(engine: sa.Engine, count: int = 24) -> Any:
    """Documents of one 60-word paragraph: every chunk span differs between OLD and NEW."""
    Base, Doc = doc_model(chunking=OLD)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [
            {"id": i, "title": f"T{i}", "body": " ".join(f"d{i} w{(i * w) % 40}" for w in range(30))}
            for i in range(1, count + 1)])
    return Doc


def spans(engine: sa.Engine, chunking: Chunking) -> dict[int, set[tuple[int, int, int]]]:
    """Each document's chunk spans (number, start, end) under ``chunking``."""
    splitter = Splitter(HASH_MODEL, chunking)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, title || E'\\n\\n' || body AS text FROM docs"))
        return {row.id: {(c.number, c.start, c.end) for c in splitter.split(row.text)}
                for row in rows}


def live(engine: sa.Engine) -> catalog.CatalogEntry:
    with engine.connect() as conn:
        entry = catalog.get_entry(conn, "public", "docs", "embedding")
    assert entry is not None
    return entry


def tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'docs%chunks'")).scalars())


def chunk_count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def start_change(engine: sa.Engine) -> Any:
    _, Changed = doc_model(chunking=NEW)
    embeddb.install(engine, Changed)
    return Changed


def test_searches_read_one_generation_of_chunks_while_new_chunk_settings_are_built(
        engine: sa.Engine, database_url: str) -> None:
    Doc = make_docs(engine)
    drain(database_url)
    old_chunks = chunk_count(engine, CHUNKS)
    old_spans, new_spans = spans(engine, OLD), spans(engine, NEW)
    Changed = start_change(engine)
    upcoming = generations.generations(engine.connect(), live(engine))["next"]
    assert upcoming.spec.chunking == NEW and live(engine).spec.chunking == OLD
    assert tables(engine) == {CHUNKS, NEXT_CHUNKS} and chunk_count(engine, NEXT_CHUNKS) == 0
    assert chunk_count(engine, CHUNKS) == old_chunks  # the live chunks are left as they are

    seen: list[str] = []  # per query: the generation its best chunks all came from
    failures: list[str] = []
    stop = threading.Event()

    def query() -> None:
        with Session(engine) as session:
            while not stop.is_set():
                try:
                    hits = search(session, Changed.embedding, QUERY, k=10)
                    chunks = search_chunks(session, Doc.embedding, QUERY, k=10, per_document=1)
                    session.commit()
                except Exception as exc:  # reported below: a thread's exception is lost
                    failures.append(repr(exc))
                    return
                assert hits.best_chunks is not None
                found = [(doc.id, span) for (doc, _), span in zip(hits, hits.best_chunks,
                                                                   strict=True)]
                found += [(hit.row.id, (hit.chunk_no, hit.start, hit.end)) for hit in chunks]
                # the generations every hit's span belongs to (a title chunk is in both)
                kinds = {"old", "new"}
                for doc_id, span in found:
                    kinds &= {kind for kind, split in (("old", old_spans), ("new", new_spans))
                              if tuple(span) in split[doc_id]}
                if len(hits) != 10 or len({doc.id for doc, _ in hits}) != 10 or len(chunks) != 10:
                    failures.append(f"short answer: {len(hits)} documents, {len(chunks)} chunks")
                elif len(kinds) != 1:
                    failures.append(f"chunks of both generations, or of neither: {found}")
                else:
                    seen.append(kinds.pop())

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(seen) + len(failures) < count and time.monotonic() < deadline:
            stop.wait(0.01)  # polls the condition; the thread does the work
        assert len(seen) + len(failures) >= count, "the queries did not run"

    thread = threading.Thread(target=query)
    thread.start()
    try:
        wait_for(5)
        drain(database_url)  # fills the next generation, then swaps it in
        before_swap_done = len(seen)
        wait_for(len(seen) + len(failures) + 5)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert set(seen[:before_swap_done]) >= {"old"} and seen[-1] == "new"
    assert seen == sorted(seen, key=lambda kind: kind == "new")  # old ... old, new ... new
    assert live(engine).id == upcoming.id and live(engine).spec.chunking == NEW
    assert tables(engine) == {CHUNKS, PREVIOUS_CHUNKS}
    assert chunk_count(engine, PREVIOUS_CHUNKS) == old_chunks
    assert chunk_count(engine, CHUNKS) == sum(map(len, new_spans.values()))
    # the swapped tables' cleanup triggers follow them: a deleted row loses both its chunk sets
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM docs WHERE id = 1"))
    assert chunk_count(engine, CHUNKS) == sum(len(new_spans[i]) for i in new_spans if i != 1)
    assert chunk_count(engine, PREVIOUS_CHUNKS) == old_chunks - len(old_spans[1])
    with engine.begin() as conn:
        generations.finish(conn, live(engine))
    assert tables(engine) == {CHUNKS}


def test_rollback_before_the_swap_drops_the_new_chunk_table_and_keeps_the_live_one(
        engine: sa.Engine, database_url: str) -> None:
    make_docs(engine)
    drain(database_url)
    with engine.connect() as conn:
        before = conn.execute(sa.text(f"SELECT * FROM {CHUNKS} ORDER BY id, chunk_no")).all()
    start_change(engine)
    assert tables(engine) == {CHUNKS, NEXT_CHUNKS}
    with engine.begin() as conn:
        generations.rollback(conn, live(engine))
    assert tables(engine) == {CHUNKS} and live(engine).spec.chunking == OLD
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT * FROM {CHUNKS} ORDER BY id, chunk_no")).all() == before
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar() == 0


def test_rollback_after_the_swap_brings_the_old_chunks_back(
        engine: sa.Engine, database_url: str) -> None:
    make_docs(engine)
    drain(database_url)
    old_spans = spans(engine, OLD)
    start_change(engine)
    drain(database_url)
    assert live(engine).spec.chunking == NEW
    with engine.begin() as conn:
        generations.rollback(conn, live(engine))
    assert live(engine).spec.chunking == OLD and tables(engine) == {CHUNKS}
    with engine.connect() as conn:
        stored = conn.execute(sa.text(f"SELECT id, chunk_no, char_start, char_end FROM {CHUNKS}"))
        by_document: dict[int, set[tuple[int, int, int]]] = {}
        for row in stored:
            by_document.setdefault(row.id, set()).add((row.chunk_no, row.char_start, row.char_end))
    assert by_document == old_spans


def test_a_chunk_change_says_which_settings_change(
        engine: sa.Engine, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A new default of ``Chunking()`` in an upgrade re-chunks columns declared with it: the
    warning names the old and new settings, so the re-embedding is not a surprise."""
    make_docs(engine)
    drain(database_url)
    with caplog.at_level(logging.WARNING, logger="embeddb.generations"):
        start_change(engine)
    assert ("public.docs.embedding: change of chunk settings started (chunks max_tokens=12,"
            " overlap=3 vs max_tokens=20, overlap=5); 24 rows" in caplog.text)
    assert "model change" not in caplog.text  # the model stays
