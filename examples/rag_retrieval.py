"""Retrieval for RAG over long documents: a question in, the context for an LLM out, with citations.

Run: ``.venv/bin/python examples/rag_retrieval.py ["how do I run coroutines at once?"]
[--modules 60] [--database-url URL]`` (with no URL, embeddb's embedded PostgreSQL).

Each document is one stdlib module's documentation: its docstring followed by those of its
public classes and functions, often thousands of words, far past the model's 256-token window.
The column is chunked (``Chunking()``: 128 word pieces with 32 of overlap), so the worker
stores every chunk with its vector and span. For a question, ``search_chunks`` returns the best
chunks (at most 2 per module, each with its neighbours for context); the script assembles them
into a context with citations ``[module #chunk chars start-end]``. No LLM is called: the prompt
is printed where one would go.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Chunking, Embedding, Worker, search, search_chunks
from embeddb.database import create_engine, database_url
from embeddb.demo import stdlib_docs

# answerable from the default 60 modules (abc .. copyreg: asyncio, base64, calendar, ...)
QUESTION = "how do I run several coroutines at once and wait for all of them?"


class Base(DeclarativeBase):
    pass


class ModuleDoc(Base):
    __tablename__ = "rag_module_docs"
    module: Mapped[str] = mapped_column(primary_key=True)
    text: Mapped[str]
    embedding = Embedding("{module}\n\n{text}", chunks=Chunking())


def module_documents(limit: int) -> dict[str, str]:
    """One long text per stdlib module (the first ``limit`` modules with documentation)."""
    parts: dict[str, list[str]] = {}
    for record in stdlib_docs():
        if record.module not in parts and len(parts) >= limit:
            continue
        heading = "" if record.kind == "module" else f"{record.qualname}\n"
        parts.setdefault(record.module, []).append(heading + record.doc)
    return {module: "\n\n".join(texts) for module, texts in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("question", nargs="?", default=QUESTION)
    parser.add_argument("--modules", type=int, default=60, help="how many modules to index")
    parser.add_argument("--database-url", help="default: $EMBEDDB_DATABASE_URL or embedded")
    args = parser.parse_args()

    url = database_url(args.database_url)
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    documents = module_documents(args.modules)
    with engine.begin() as conn:
        conn.execute(sa.insert(ModuleDoc), [{"module": m, "text": t} for m, t in documents.items()])
    with Worker(url) as worker:
        worker.run_once()
        print(f"{len(documents)} modules split into {worker.stats.chunks_encoded} chunks\n")

    with Session(engine) as session:
        hits = search_chunks(session, ModuleDoc.embedding, args.question, k=6, per_document=2,
                             neighbours=1)
        context = "\n\n".join(
            f"[{hit.row.module} #{hit.chunk_no} chars {hit.start}-{hit.end}]"
            f" (similarity {hit.similarity:.2f})\n{hit.context}" for hit in hits)
        documents_hit = search(session, ModuleDoc.embedding, args.question, k=3)
        print("Modules whose best chunk answers best:",
              ", ".join(f"{doc.module} ({similarity:.2f})" for doc, similarity in documents_hit))
    prompt = (f"Answer the question from the context; cite the [sources].\n\n"
              f"Context:\n{context}\n\nQuestion: {args.question}")
    # an LLM call would go here, e.g. answer = client.complete(prompt)
    print(f"\n--- prompt for the LLM ({len(prompt)} characters) ---\n{prompt}")
    engine.dispose()


if __name__ == "__main__":
    main()
