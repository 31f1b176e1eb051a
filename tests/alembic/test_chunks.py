"""Alembic and chunked columns: the operations carry the chunk settings, autogenerate sees a
change of them, and applying it splits every row again while searches keep working."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import Session

import embeddb.alembic  # noqa: F401 (registers the operations)
from embeddb import Chunking, search
from embeddb.worker import Worker
from tests.integration.chunked import CHUNKS, check_chunk_invariant, doc_model, paragraphs

OLD = Chunking(max_tokens=12, overlap=3)
NEW = Chunking(max_tokens=30, overlap=5)


def upgrade_ops(engine: sa.Engine, metadata: sa.MetaData) -> Any:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "autogenerate_plugins": ["alembic.autogenerate.*", "embeddb"],
            "target_metadata": metadata})
        return produce_migrations(context, metadata).upgrade_ops


def test_a_change_of_chunk_settings_is_detected_rendered_and_applied(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    Base, Doc = doc_model(chunking=OLD)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [{"id": i, "title": f"t{i}", "body": paragraphs(i, 6)}
                                      for i in range(1, 6)])
    with Worker(database_url) as worker:
        worker.run_once()
    assert upgrade_ops(engine, Base.metadata).as_diffs() == []  # in step: alembic check passes

    NewBase, NewDoc = doc_model(chunking=NEW)
    ops = upgrade_ops(engine, NewBase.metadata)
    [diff] = ops.as_diffs()
    assert diff[0] == "modify_embedding" and diff[4] == {"chunks": (
        {"max_tokens": 12, "overlap": 3, "max_chars": 1_000_000},
        {"max_tokens": 30, "overlap": 5, "max_chars": 1_000_000})}
    script = render_python_code(ops)
    assert "chunks={'max_tokens': 30, 'overlap': 5, 'max_chars': 1000000}" in script
    assert "existing_chunks={'max_tokens': 12" in script

    with engine.begin() as conn:
        operations = Operations(MigrationContext.configure(conn))
        operations.alter_embedding(  # type: ignore[attr-defined]
            "docs", "embedding", chunks={"max_tokens": 30, "overlap": 5},
            existing_chunks={"max_tokens": 12, "overlap": 3})
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar_one() == 5
    with Session(engine) as session:  # meanwhile the old chunks answer
        assert len(search(session, NewDoc.embedding, "d3p2w1 d3p2w2", k=3)) == 3
    with Worker(database_url) as worker:
        worker.run_once()
    with engine.connect() as conn:
        check_chunk_invariant(conn, chunking=NEW)
        assert conn.execute(sa.text(f"SELECT max(chunk_no) FROM {CHUNKS}")).scalar_one() < 5
    assert upgrade_ops(engine, NewBase.metadata).as_diffs() == []


def test_create_embedding_with_chunks_makes_the_chunk_table(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE docs (id int PRIMARY KEY, title text, body text,"
                             " kind text)"))
        conn.execute(sa.text("INSERT INTO docs VALUES (1, 'a', 'b c d', 'note')"))
        operations = Operations(MigrationContext.configure(conn))
        operations.create_embedding(  # type: ignore[attr-defined]
            "docs", "embedding", template="{title}\n\n{body}", model="embeddb-testing/hash-32",
            dimensions=32, key_columns=["id"], chunks={"max_tokens": 12, "overlap": 3})
    with Worker(database_url) as worker:
        worker.run_once()
    with engine.connect() as conn:
        assert check_chunk_invariant(conn) == 1
    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).drop_embedding(  # type: ignore[attr-defined]
            "docs", "embedding")
        assert conn.execute(sa.text(f"SELECT to_regclass('{CHUNKS}')")).scalar() is None
