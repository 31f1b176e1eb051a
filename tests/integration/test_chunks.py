"""Chunked columns: declaration errors, the chunk table, and the worker keeping it in step."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from embeddb import Embedding, SpecError
from embeddb.chunking import Chunking
from embeddb.worker import Worker, WorkerConfig

from .chunked import CHUNKS, check_chunk_invariant, doc_model, paragraphs, stored_chunks
from .models import MINILM, pending


def drain(database_url: str, **config: object) -> Worker:
    with Worker(database_url, WorkerConfig(**config)) as worker:  # type: ignore[arg-type]
        worker.run_once()
    return worker


def test_a_chunk_larger_than_the_models_window_is_refused_at_declaration() -> None:
    with pytest.raises(SpecError, match=r"larger than the window of .*all-MiniLM-L6-v2 \(256"):
        Embedding("{body}", model=MINILM, chunks=Chunking(max_tokens=300, overlap=10))


def test_an_overlap_not_smaller_than_the_chunk_is_refused() -> None:
    with pytest.raises(SpecError, match=r"overlap=64\) must be .* smaller than max_tokens \(64\)"):
        Chunking(max_tokens=64, overlap=64)


def test_documents_are_split_embedded_and_removed_with_their_parent(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    Base, Doc = doc_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [
            {"id": 1, "title": "One", "body": paragraphs(1, 6)},
            {"id": 2, "title": "Two", "body": paragraphs(2, 2)},
            {"id": 3, "title": None, "body": "   \n\n  "},   # whitespace: nothing to embed
            {"id": 4, "title": None, "body": None},
        ])
    drain(database_url)
    with engine.begin() as conn:
        assert pending(conn) == []
        assert check_chunk_invariant(conn) >= 8
        assert len(stored_chunks(conn, 1)) >= 6 and stored_chunks(conn, 3) == []
        # the parent's column holds the documents' mean chunk vector; none without chunks
        vectors = dict(conn.execute(sa.text("SELECT id, embedding IS NOT NULL FROM docs")).all())
        assert vectors == {1: True, 2: True, 3: False, 4: False}
        conn.execute(sa.text("DELETE FROM docs WHERE id = 2"))
        conn.execute(sa.text("UPDATE docs SET id = 10 WHERE id = 1"))
        assert conn.execute(sa.text(f"SELECT DISTINCT id FROM {CHUNKS}")).scalars().all() == [10]
        assert pending(conn) == []  # same text under a new key: its chunks moved with it
        check_chunk_invariant(conn)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE docs"))
        assert conn.execute(sa.text(f"SELECT count(*) FROM {CHUNKS}")).scalar_one() == 0


def test_an_edit_re_embeds_only_the_changed_chunks_and_a_shrunk_document_loses_its_tail(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    Base, Doc = doc_model()
    Base.metadata.create_all(engine)
    body = paragraphs(1, 20)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [{"id": 1, "title": "T", "body": body}])
    first = drain(database_url)
    with engine.begin() as conn:
        total = len(stored_chunks(conn, 1))
        assert first.stats.chunks_encoded == total >= 20
        edited = body.replace("d1p7w3", "changed")
        conn.execute(sa.text("UPDATE docs SET body = :b WHERE id = 1"), {"b": edited})
    second = drain(database_url)
    assert 1 <= second.stats.chunks_encoded <= 2
    assert second.stats.chunks_reused >= total - 2
    with engine.begin() as conn:
        check_chunk_invariant(conn)
        conn.execute(sa.text("UPDATE docs SET body = :b WHERE id = 1"), {"b": paragraphs(1, 3)})
    third = drain(database_url)
    assert third.stats.chunks_encoded == 0  # the first 3 paragraphs' chunks were all stored
    with engine.connect() as conn:
        assert len(stored_chunks(conn, 1)) < total
        check_chunk_invariant(conn)


def test_one_giant_word_is_cut_inside_and_an_oversized_document_is_parked(engine, database_url, caplog) -> None:  # type: ignore[no-untyped-def]
    Base, Doc = doc_model(chunking=Chunking(max_tokens=12, overlap=3, max_chars=5_000))
    Base.metadata.create_all(engine)
    blob = "QUJD" * 500  # a 2,000-character base64 "word"
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [
            {"id": 1, "title": "Blob", "body": f"see {blob} here"},
            {"id": 2, "title": "Huge", "body": "word " * 2_000},
            {"id": 3, "title": "Fine", "body": "a short note"},
        ])
    with caplog.at_level(logging.WARNING):
        drain(database_url, max_attempts=1)
    with engine.connect() as conn:
        blob_chunks = stored_chunks(conn, 1)
        assert "".join(r.text for r in blob_chunks).count("QUJD") >= 500
        check_chunk_invariant(conn, chunking=Chunking(max_tokens=12, overlap=3, max_chars=5_000))
        assert stored_chunks(conn, 2) == []
        [parked] = pending(conn)
        assert parked.row_key == {"id": 2} and parked.parked_at is not None
        assert "10,006 characters, more than this column's Chunking(max_chars=5,000)" in parked.last_error
        assert "public.docs.embedding" in parked.last_error
    assert "word word" not in caplog.text


def test_cli_search_shows_the_best_chunk_and_status_counts_documents_and_chunks(engine, database_url, capsys) -> None:  # type: ignore[no-untyped-def]
    from embeddb.cli import main

    Base, Doc = doc_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [
            {"id": 1, "title": "One", "body": paragraphs(1, 5)},
            {"id": 2, "title": "Two", "body": paragraphs(2, 3) + "\n\nzebra giraffe okapi."},
        ])
    drain(database_url)
    assert main(["search", "docs.embedding", "zebra giraffe", "-k", "2",
                 "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    first_hit = out.splitlines()[1:3]
    assert "id=2" in first_hit[0]
    assert "best chunk 3 [" in first_hit[1] and "zebra giraffe okapi." in first_hit[1]
    with engine.connect() as conn:
        chunks = conn.execute(sa.text(f"SELECT count(*) FROM {CHUNKS}")).scalar_one()
    assert main(["status", "--database-url", database_url]) == 0
    assert f"2 documents in {chunks} chunks" in capsys.readouterr().out


def test_a_large_backlog_is_embedded_with_the_chunk_index_set_aside_then_rebuilt(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    """An HNSW insert per chunk costs database CPU beside the model's on every core; one build
    at the end costs far less (see embeddb.backfill)."""
    Base, Doc = doc_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [{"id": i, "title": f"T{i}", "body": paragraphs(i, 3)}
                                      for i in range(1, 41)])

    def chunk_index() -> list[tuple[str, bool]]:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(
                "SELECT i.relname, x.indisvalid FROM pg_index x JOIN pg_class i"
                " ON i.oid = x.indexrelid WHERE x.indrelid = CAST(:t AS regclass)"
                " AND i.relname LIKE '%hnsw'"), {"t": CHUNKS})]

    assert chunk_index() == [(f"{CHUNKS}_hnsw", True)]
    during: list[list[tuple[str, bool]]] = []
    with Worker(database_url, WorkerConfig(batch_size=8, defer_index_rows=10)) as worker:
        worker.batch_listeners.append(lambda _: during.append(chunk_index()))
        worker.run_once()
    assert len(during) >= 5 and all(indexes == [] for indexes in during)
    assert chunk_index() == [(f"{CHUNKS}_hnsw", True)]
    with engine.connect() as conn:
        check_chunk_invariant(conn)
