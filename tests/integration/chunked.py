"""A chunked test model and the invariant every chunked column keeps.

The invariant: every document's chunk rows are exactly the split of its current text (numbers,
spans, texts, hashes), and every chunk vector is the model's embedding of that chunk's text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding
from embeddb.chunking import Chunking, Splitter
from embeddb.embedders import load_embedder

HASH_MODEL = "embeddb-testing/hash-32"
CHUNKS = "docs_embedding_chunks"


def doc_model(model: str = HASH_MODEL, chunking: Chunking | None = None,
              **options: Any) -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "docs"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str | None]
        body: Mapped[str | None]
        kind: Mapped[str] = mapped_column(default="note", index=True)
        embedding = Embedding("{title}\n\n{body}", model=model,
                              chunks=chunking or Chunking(max_tokens=12, overlap=3), **options)

    return Base, Doc


def paragraphs(doc_id: int, count: int, words: int = 10) -> str:
    """``count`` paragraphs of distinct words, so every chunk text is unique."""
    return "\n\n".join(
        " ".join(f"d{doc_id}p{p}w{w}" for w in range(words)) + "." for p in range(count))


def stored_chunks(conn: sa.Connection, doc_id: int) -> list[sa.Row[Any]]:
    return list(conn.execute(sa.text(
        f"SELECT chunk_no, char_start, char_end, text, text_hash, embedding::text AS vector,"
        f" md5(text)::uuid AS md5 FROM {CHUNKS} WHERE id = :id ORDER BY chunk_no"),
        {"id": doc_id}))


def check_chunk_invariant(conn: sa.Connection, model: str = HASH_MODEL,
                          chunking: Chunking | None = None, tolerance: float = 1e-5) -> int:
    """Assert the invariant for every row of ``docs`` not waiting in the queue (a parked row
    keeps what it had); returns how many chunks were checked."""
    chunking = chunking or Chunking(max_tokens=12, overlap=3)
    splitter = Splitter(model, chunking)
    embedder = load_embedder(model)
    checked = 0
    column_id = conn.execute(sa.text(
        "SELECT id FROM embeddb.columns WHERE table_name = 'docs' AND generation = 'live'"
    )).scalar_one()
    rendered = conn.execute(sa.text(
        f"SELECT d.id, embeddb.render_{int(column_id)}(d) AS text FROM docs d ORDER BY d.id")).all()
    orphans = conn.execute(sa.text(
        f"SELECT count(*) FROM {CHUNKS} c WHERE NOT EXISTS (SELECT FROM docs d WHERE d.id = c.id)"
    )).scalar_one()
    assert orphans == 0, f"{orphans} chunks whose document is gone"
    waiting = {row_key["id"] for row_key in conn.execute(sa.text(
        "SELECT row_key FROM embeddb.pending WHERE column_id = :id"), {"id": column_id}).scalars()}
    for doc_id, text in rendered:
        if doc_id in waiting:
            continue
        expected = splitter.split(text) if text is not None else []
        rows = stored_chunks(conn, doc_id)
        assert [(r.chunk_no, r.char_start, r.char_end, r.text) for r in rows] == [
            (c.number, c.start, c.end, c.text) for c in expected], f"doc {doc_id}"
        for row in rows:
            assert row.text_hash == row.md5 and text[row.char_start:row.char_end] == row.text
        if rows:
            vectors = np.array([np.array(r.vector.strip("[]").split(","), np.float32)
                                for r in rows])
            want = embedder.embed_documents([r.text for r in rows])
            assert np.abs(vectors - want).max() <= tolerance, f"doc {doc_id}: stale chunk vector"
        checked += len(rows)
    return checked
