"""Searching chunked columns: k distinct documents by best chunk, and chunk retrieval for RAG."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from embeddb import asearch, asearch_chunks, search, search_chunks
from embeddb.embedders import load_embedder
from embeddb.worker import Worker

from .chunked import CHUNKS, HASH_MODEL, doc_model

QUERY = "alpha beta gamma delta"


@pytest.fixture(scope="module")
def loaded(module_url, db):  # type: ignore[no-untyped-def]
    """Doc 1: 30 chunks that all match the query well; docs 2..41: one good chunk each among
    unrelated ones, half of kind 'rare' ... every third of kind 'x'."""
    Base, Doc = doc_model(fulltext=True)
    Base.metadata.create_all(db)
    rows = [{"id": 1, "title": "Flood", "kind": "note",
             "body": "\n\n".join(f"alpha beta gamma delta flood{i}." for i in range(30))}]
    for i in range(2, 42):
        body = "\n\n".join([f"filler{i} words{i} only{i} here{i} and{i}.",
                            f"alpha beta gamma other{i} w{i}.", f"unrelated{i} text{i}."])
        rows.append({"id": i, "title": f"T{i}", "body": body, "kind": "x" if i % 3 == 0 else "note"})
    with db.begin() as conn:
        conn.execute(sa.insert(Doc), rows)
        conn.execute(sa.text("ANALYZE docs"))
    with Worker(module_url) as worker:
        worker.run_once()
    with db.begin() as conn:
        conn.execute(sa.text(f"ANALYZE {CHUNKS}"))
    return Doc


def brute_force(db, k: int, kinds: set[str] | None = None, *,  # type: ignore[no-untyped-def]
                documents: bool = False) -> list[tuple[int, float]]:
    """Documents by the better of their best chunk's cosine similarity and their own vector's
    (``documents=False``: the best chunk's alone), computed here from the stored vectors."""
    query = load_embedder(HASH_MODEL).embed_query(QUERY)
    best: dict[int, float] = {}
    statement = f"SELECT c.id, d.kind, c.embedding::text FROM {CHUNKS} c JOIN docs d USING (id)"
    if documents:
        statement += " UNION ALL SELECT id, kind, embedding::text FROM docs WHERE embedding IS NOT NULL"
    with db.connect() as conn:
        for doc_id, kind, text_vector in conn.execute(sa.text(statement)):
            if kinds is not None and kind not in kinds:
                continue
            vector = np.array(text_vector.strip("[]").split(","), np.float32)
            score = float(vector @ query / np.linalg.norm(vector) / np.linalg.norm(query))
            best[doc_id] = max(best.get(doc_id, -1.0), score)
    return sorted(best.items(), key=lambda item: -item[1])[:k]


@pytest.mark.parametrize("plan", ["index", "exact", "auto"])
def test_search_returns_k_distinct_documents_ranked_by_best_chunk(loaded, db, plan) -> None:  # type: ignore[no-untyped-def]
    Doc = loaded
    with db.connect() as conn:
        naive = conn.execute(sa.text(  # top k chunks, then group: one document
            f"SELECT DISTINCT id FROM (SELECT id FROM {CHUNKS} ORDER BY embedding <=> :q LIMIT 10) t"
        ), {"q": str(load_embedder(HASH_MODEL).embed_query(QUERY).tolist())}).scalars().all()
    assert naive == [1]
    with Session(db) as session:
        hits = search(session, Doc.embedding, QUERY, k=10, plan=plan)
        assert len({doc.id for doc, _ in hits}) == 10
        expected = brute_force(db, 10)
        assert [doc.id for doc, _ in hits][:1] == [1]
        assert [round(s, 4) for _, s in hits] == [round(s, 4) for _, s in expected]
        assert hits.plan in (("exact",) if plan == "exact" else ("index", "index+exact", "exact"))
        assert hits.best_chunks is not None and len(hits.best_chunks) == 10
        span = hits.best_chunks[0]
        rendered = f"{hits[0].row.title}\n\n{hits[0].row.body}"
        assert "alpha beta gamma delta" in rendered[span.start:span.end]


def test_a_filter_on_the_parent_still_gets_k_documents(loaded, db) -> None:  # type: ignore[no-untyped-def]
    Doc = loaded
    with Session(db) as session:
        for plan in ("auto", "index"):
            hits = search(session, Doc.embedding, QUERY, k=8, where=Doc.kind == "x", plan=plan)  # type: ignore[arg-type]
            assert len(hits) == 8 and all(doc.kind == "x" for doc, _ in hits)
            assert [round(s, 4) for _, s in hits] == [
                round(s, 4) for _, s in brute_force(db, 8, {"x"})]


def test_chunk_search_caps_chunks_per_document_and_adds_neighbours(loaded, db) -> None:  # type: ignore[no-untyped-def]
    Doc = loaded
    with Session(db) as session:
        flooded = search_chunks(session, Doc.embedding, QUERY, k=6)
        assert len(flooded) == 6 and {hit.row.id for hit in flooded} == {1}
        capped = search_chunks(session, Doc.embedding, QUERY, k=6, per_document=2, neighbours=1)
        ids = [hit.row.id for hit in capped]
        assert len(capped) == 6 and ids.count(1) == 2 and len(set(ids)) == 5
        for hit in capped:
            rendered = f"{hit.row.title}\n\n{hit.row.body}"
            assert rendered[hit.start:hit.end] == hit.text
            assert hit.context is not None and hit.text in hit.context
            # overlaps removed; a line break stands for whitespace the splitter trimmed
            assert " ".join(hit.context.split()) in " ".join(rendered.split())
        other = next(hit for hit in capped if hit.row.id != 1)
        assert other.text in other.context and f"unrelated{other.row.id}" in other.context
        assert f"unrelated{other.row.id}" not in other.text  # ... from the next chunk


def test_a_connection_gets_each_hit_as_a_row_of_the_mapped_columns(loaded, db) -> None:  # type: ignore[no-untyped-def]
    Doc = loaded
    with Session(db) as session:
        orm_docs = search(session, Doc.embedding, QUERY, k=5, plan="exact")
        orm_chunks = search_chunks(session, Doc.embedding, QUERY, k=4, per_document=1,
                                   neighbours=1)
    with db.connect() as conn:
        docs = search(conn, Doc.embedding, QUERY, k=5, plan="exact")
        chunks = search_chunks(conn, Doc.embedding, QUERY, k=4, per_document=1, neighbours=1)
    assert all(isinstance(hit.row, sa.Row) for hit in [*docs, *chunks])
    assert [(h.row.id, h.row.title) for h in docs] == [(h.row.id, h.row.title) for h in orm_docs]
    assert [(h.row.id, h.text, h.context) for h in chunks] == \
        [(h.row.id, h.text, h.context) for h in orm_chunks]


def test_async_twins(loaded, module_url) -> None:  # type: ignore[no-untyped-def]
    Doc = loaded

    async def main() -> tuple[int, int]:
        engine = create_async_engine(module_url.replace("postgresql://", "postgresql+psycopg://"))
        async with AsyncSession(engine) as session:
            documents = await asearch(session, Doc.embedding, QUERY, k=4)
            chunks = await asearch_chunks(session, Doc.embedding, QUERY, k=4, per_document=1)
        await engine.dispose()
        return len({d.id for d, _ in documents}), len({h.row.id for h in chunks})

    assert asyncio.run(main()) == (4, 4)


def test_hybrid_ranks_by_both_legs_and_more_like_this_and_near_duplicates_use_the_mean_vector(loaded, db) -> None:  # type: ignore[no-untyped-def]
    from embeddb import hybrid_search, more_like_this, near_duplicates

    Doc = loaded
    with Session(db) as session:
        hybrid = hybrid_search(session, Doc.embedding, "flood0 alpha", k=3)
        assert hybrid[0].row.id == 1  # both legs: the words are only in doc 1
        doc = session.get(Doc, 5)
        similar = more_like_this(session, Doc.embedding, doc, k=5)
        assert len(similar) == 5 and 5 not in {d.id for d, _ in similar}
        # the stored document vector is the normalised mean of its chunk vectors
        mean = session.execute(sa.text(
            f"SELECT avg(embedding)::text FROM {CHUNKS} WHERE id = 5")).scalar_one()
        mean = np.array(mean.strip("[]").split(","), np.float32)
        stored = session.execute(sa.text("SELECT embedding::text FROM docs WHERE id = 5")).scalar_one()
        stored = np.array(stored.strip("[]").split(","), np.float32)
        assert np.allclose(stored, mean / np.linalg.norm(mean), atol=1e-5)
        pairs = near_duplicates(session, Doc.embedding, min_similarity=0.3)
        assert all(pair.similarity >= 0.3 for pair in pairs)


def test_the_index_plan_of_chunk_search_with_a_cap_is_served_by_the_hnsw_index(loaded, db) -> None:  # type: ignore[no-untyped-def]
    """The per-document cap is ranked over the index's nearest chunks: a window function inside
    their query would need every chunk first (a full scan, 51 ms on SciFact's 19,470 chunks)."""
    from embeddb.query import _rag
    from embeddb.query._planner import Explain
    from embeddb.query._target import resolve, vector_text

    target = resolve(loaded.embedding)
    stmt = _rag._statement(target, None, 2, exact=False)
    vector = vector_text(load_embedder(HASH_MODEL).embed_query(QUERY).tolist())
    with db.begin() as conn:
        hnsw = conn.execute(sa.text(
            "SELECT indexname FROM pg_indexes WHERE tablename = :t AND indexdef LIKE '%hnsw%'"),
            {"t": CHUNKS}).scalar_one()
        for setting in ("enable_seqscan", "enable_sort"):  # a tiny table: ask for the index
            conn.execute(sa.text(f"SET LOCAL {setting} = off"))
        plan = "\n".join(conn.execute(Explain(stmt, "FORMAT TEXT"),
                                      {"query_vector": vector, "k": 6, "n": 48}).scalars())
    assert hnsw in plan, plan


def test_within_narrows_the_documents_of_both_searches(loaded, db) -> None:  # type: ignore[no-untyped-def]
    Doc = loaded
    within = sa.select(Doc).where(Doc.kind == "x")
    with Session(db) as session:
        for plan in ("auto", "index", "exact"):
            hits = search(session, Doc.embedding, QUERY, k=8, within=within, plan=plan)  # type: ignore[arg-type]
            assert [round(s, 4) for _, s in hits] == [
                round(s, 4) for _, s in brute_force(db, 8, {"x"})]
            assert all(doc.kind == "x" for doc, _ in hits)
            chunks = search_chunks(session, Doc.embedding, QUERY, k=5, within=within,
                                   per_document=1, plan=plan)  # type: ignore[arg-type]
            assert [round(hit.similarity, 4) for hit in chunks] == [  # per_document=1: ties
                round(s, 4) for _, s in brute_force(db, 5, {"x"})]
            assert len({hit.row.id for hit in chunks}) == 5
            assert all(hit.row.kind == "x" for hit in chunks)



@pytest.mark.parametrize("plan", ["index", "exact"])
def test_documents_scored_by_the_better_of_their_best_chunk_and_their_own_vector(loaded, db, plan, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from embeddb.query import _chunks

    monkeypatch.setattr(_chunks, "DOCUMENT_VECTOR_COUNTS", True)
    Doc = loaded
    with Session(db) as session:
        hits = search(session, Doc.embedding, QUERY, k=10, plan=plan, where=Doc.kind == "note")  # type: ignore[arg-type]
    assert [round(s, 4) for _, s in hits] == [
        round(s, 4) for _, s in brute_force(db, 10, {"note"}, documents=True)]
    assert brute_force(db, 10, {"note"}, documents=True) != brute_force(db, 10, {"note"})
    assert hits.best_chunks is not None and len(hits.best_chunks) == 10
