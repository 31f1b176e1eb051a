"""A ``%`` in a template's literal text or in a table's or column's name reaches PostgreSQL
exactly as written, on every path: create_all, Alembic operations, the worker (whose
statements carry parameters), the index set aside and rebuilt, search, alter and drop."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Embedding, catalog, column_sql, search
from embeddb.migrate import sql_steps
from embeddb.testing import HashEmbedder

from .models import HASH_MODEL, run_worker

TEMPLATES = ["{body} %s", "{body} %b", "{body} 100% cotton", "{body} %(foo)s", "{body} %%s %"]
BODIES = ["hello", "linen shirt", "wool socks"]


def percent_model(table: str, column: str, template: str) -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(column)
        embedding = Embedding(template.replace("{body}", "{" + column + "}"), model=HASH_MODEL)

    return Base, Item


def check_embedded(engine: sa.Engine, table: str, column: str, template: str) -> None:
    """The catalog keeps the template as written, each row's text is it with the body in place,
    and its vector and hash are made from that text."""
    written = template.replace("{body}", "{" + column + "}")
    embedder = HashEmbedder(HASH_MODEL)
    with engine.connect() as conn:
        entry = catalog.get_entry(conn, "public", table, "embedding")
        assert entry is not None and entry.spec.template.source == written
        render = column_sql.render_function(entry.id).as_string(None)
        rows = conn.execute(sa.select(
            sa.literal_column(f"{render}(t)").label("text"),
            sa.literal_column("t.embedding::text").label("vector"),
            sa.literal_column("t.embedding_source_hash").label("hash"),
            sa.literal_column("t.id").label("id"),
        ).select_from(sa.table(table).alias("t")).order_by(sa.literal_column("t.id"))).all()
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar() == 0
    assert [row.text for row in rows] == [template.replace("{body}", body) for body in BODIES]
    for row in rows:
        assert row.hash.hex == hashlib.md5(row.text.encode()).hexdigest()
        stored = np.array(row.vector.strip("[]").split(","), dtype=np.float32)
        assert np.allclose(stored, embedder.embed_documents([row.text])[0], atol=1e-6)


@pytest.mark.parametrize(("table", "column", "template"), [
    *(("items", "body", template) for template in TEMPLATES),
    ("pct%s tab", "body %(x)s", "{body} 100% cotton"),
])
def test_create_all_worker_and_search_keep_percent_signs_as_written(  # type: ignore[no-untyped-def]
        engine, database_url, table: str, column: str, template: str) -> None:
    Base, Item = percent_model(table, column, template)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Item(id=key, body=body) for key, body in enumerate(BODIES, 1))
        session.commit()
    # every row at once: the index is set aside, then rebuilt CONCURRENTLY by name
    finished = run_worker(database_url, "--defer-index-rows", "1", "--defer-index-share", "0")
    assert finished.returncode == 0, finished.stderr
    assert "set aside" in finished.stderr and "HNSW index built" in finished.stderr
    check_embedded(engine, table, column, template)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = :name"),
                            {"name": f"{table}_embedding_hnsw"}).scalar() == 1
    with Session(engine) as session:
        hits = search(session, Item.embedding, template.replace("{body}", "linen shirt"), k=1)
        assert [(item.id, round(similarity, 5)) for item, similarity in hits] == [(2, 1.0)]
        with engine.connect() as conn:  # reconcile finds nothing stale
            entry = catalog.get_entry(conn, "public", table, "embedding")
            assert entry is not None and catalog.reconcile(conn, entry) == 0
    Base.metadata.drop_all(engine)
    with engine.connect() as conn:
        assert catalog.list_entries(conn) == []


def test_alembic_operations_keep_percent_signs_as_written(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    table, column = "pct%s tab", "body %(x)s"
    with engine.begin() as conn:
        sa.Table(table, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column(column, sa.Text)).create(conn)
        conn.execute(sa.table(table, sa.column("id"), sa.column(column)).insert(),
                     [{"id": key, column: body} for key, body in enumerate(BODIES, 1)])
        op = Operations(MigrationContext.configure(conn))
        op.create_embedding(table, "embedding", template="{body %(x)s} %(foo)s", model=HASH_MODEL,
                            dimensions=32, key_columns=["id"])
    assert run_worker(database_url).returncode == 0
    check_embedded(engine, table, column, "{body} %(foo)s")
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.alter_embedding(table, "embedding", template="{body %(x)s}: 50% off %d",
                           existing_template="{body %(x)s} %(foo)s")
    finished = run_worker(database_url)
    assert finished.returncode == 0, finished.stderr
    check_embedded(engine, table, column, "{body}: 50% off %d")
    with engine.begin() as conn:
        Operations(MigrationContext.configure(conn)).drop_embedding(table, "embedding")
        names = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    assert names == {"id", column}


def test_plain_sql_revision_steps_send_percent_signs_as_written(engine) -> None:  # type: ignore[no-untyped-def]
    upgrade_on, downgrade_on = sql_steps("COMMENT ON SCHEMA embeddb IS '100% %s %(x)s'",
                                         "COMMENT ON SCHEMA embeddb IS NULL")
    comment = "SELECT obj_description(CAST('embeddb' AS regnamespace), 'pg_namespace')"
    with engine.begin() as conn:
        upgrade_on(conn)
        assert conn.execute(sa.text(comment)).scalar() == "100% %s %(x)s"
        downgrade_on(conn)
        assert conn.execute(sa.text(comment)).scalar() is None
