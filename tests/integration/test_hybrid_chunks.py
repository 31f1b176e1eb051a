"""Hybrid search on a chunked column: documents fused, each ranked by its best chunk (vector
leg) and its whole text (text leg)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from embeddb import hybrid_search
from embeddb.embedders import load_embedder
from embeddb.worker import Worker

from .chunked import CHUNKS, HASH_MODEL, doc_model

QUERY = "alpha beta gamma delta"


@pytest.fixture(scope="module")
def loaded(module_url: str, db: sa.Engine) -> Any:
    """Needles: one chunk that is the query among many unrelated ones (a diluted mean vector).
    Haystacks: every chunk half like the query (a mean vector close to it). Doc 3 holds
    ``zebra`` in its first chunk and ``quokka`` in its last, no chunk both."""
    Base, Doc = doc_model(fulltext=True)
    Base.metadata.create_all(db)
    rows = []
    for i in range(1, 31):
        if i % 2:  # a needle
            parts = [" ".join(f"n{i}w{p}x{w}" for w in range(12)) for p in range(8)]
            parts.insert(i % 8, "alpha beta gamma delta")
        else:  # a haystack
            parts = ["alpha beta " + " ".join(f"h{i}w{p}x{w}" for w in range(10))
                     for p in range(4)]
        if i == 3:
            parts = ["zebra " + parts[0], *parts[1:-1], parts[-1] + " quokka"]
        rows.append({"id": i, "title": f"T{i}", "body": "\n\n".join(parts),
                     "kind": "x" if i % 3 == 0 else "note"})
    with db.begin() as conn:
        conn.execute(sa.insert(Doc), rows)
    with Worker(module_url) as worker:
        worker.run_once()
    with db.begin() as conn:
        conn.execute(sa.text(f"ANALYZE docs; ANALYZE {CHUNKS}"))
    return Doc


def best_chunk_order(db: sa.Engine, text: str = QUERY, kinds: set[str] | None = None
                     ) -> list[int]:
    """Documents by their best chunk's cosine similarity to ``text``, from the stored chunks."""
    query = load_embedder(HASH_MODEL).embed_query(text)
    best: dict[int, float] = {}
    with db.connect() as conn:
        for doc_id, kind, text in conn.execute(sa.text(
                f"SELECT c.id, d.kind, c.embedding::text FROM {CHUNKS} c JOIN docs d USING (id)")):
            if kinds is None or kind in kinds:
                vector = np.array(text.strip("[]").split(","), np.float32)
                similarity = float(vector @ query / np.linalg.norm(vector) / np.linalg.norm(query))
                best[doc_id] = max(best.get(doc_id, -1.0), round(similarity, 6))
    return sorted(best, key=lambda doc_id: (-best[doc_id], doc_id))


@pytest.mark.parametrize("plan", ["index", "exact"])
def test_the_vector_leg_ranks_documents_by_their_best_chunk(loaded: Any, db: sa.Engine,
                                                           plan: str) -> None:
    expected = best_chunk_order(db)
    # the documents' mean vectors would put the haystacks first
    assert set(expected[:15]) == set(range(1, 31, 2))
    with Session(db) as session:
        hits = hybrid_search(session, loaded.embedding, QUERY, k=10, text_weight=0.0, plan=plan)
    assert [hit.row.id for hit in hits] == expected[:10]
    assert [hit.vector_rank for hit in hits] == list(range(1, 11))
    assert hits.plan in (("exact",) if plan == "exact" else ("index", "index+exact"))


def test_the_text_leg_is_the_whole_document(loaded: Any, db: sa.Engine) -> None:
    with db.connect() as conn:
        both = conn.execute(sa.text(f"SELECT count(*) FROM {CHUNKS}"
                                    " WHERE text LIKE '%zebra%' AND text LIKE '%quokka%'"))
        assert both.scalar_one() == 0
    with Session(db) as session:
        hits = hybrid_search(session, loaded.embedding, "zebra quokka", k=3, vector_weight=0.0)
    assert hits[0].row.id == 3 and hits[0].text_rank == 1
    assert [hit.text_rank for hit in hits[1:]] == [None, None]  # no other document has them


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_fused_per_document_k_distinct_under_a_filter(loaded: Any, db: sa.Engine,
                                                      fusion: str) -> None:
    with Session(db) as session:
        hits = hybrid_search(session, loaded.embedding, QUERY + " zebra", k=8, fusion=fusion,
                             where=loaded.kind == "x", plan="index")
    ids = [hit.row.id for hit in hits]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert all(hit.row.kind == "x" for hit in hits)
    assert 3 in ids and hits[ids.index(3)].text_rank == 1  # the only one with "zebra"
    # the vector leg under the filter: the kind-x documents by their best chunk
    ranked = [hit for hit in hits if hit.vector_rank is not None]
    by_rank = [hit.row.id for hit in sorted(ranked, key=lambda hit: hit.vector_rank or 0)]
    order = best_chunk_order(db, QUERY + " zebra", {"x"})
    assert by_rank == [doc_id for doc_id in order if doc_id in by_rank]
    assert len({hit.vector_rank for hit in ranked}) == len(ranked)  # one rank per document
