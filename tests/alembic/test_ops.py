"""The operations do what they say on a real database, and never leave vectors silently wrong."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from embeddb import EmbeddbError, SchemaError, SpecError, catalog
from embeddb.alembic import AlterEmbeddingOp, CreateEmbeddingOp, Definition
from embeddb.spec import EncodeOptions
from embeddb.testing import HashEmbedder
from tests.integration.models import HASH_MODEL, drain

from .inspect_db import catalog_rows

KEYS = ["id"]


@contextmanager
def migration(engine: sa.Engine) -> Iterator[tuple[Any, sa.Connection]]:
    """``op`` as a migration script has it, on one transaction."""
    with engine.begin() as conn:
        yield Operations(MigrationContext.configure(conn)), conn


def make_tickets(engine: sa.Engine, count: int = 3) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE tickets (id int PRIMARY KEY, subject text, body text, status text)"))
        conn.execute(sa.text(
            "INSERT INTO tickets SELECT g, 'subject ' || g, 'body ' || g, 'open'"
            " FROM generate_series(1, :count) g"), {"count": count})


def create(engine: sa.Engine, **options: Any) -> None:
    arguments = {"template": "{subject}\n\n{body}", "model": HASH_MODEL, "dimensions": 32,
                 "key_columns": KEYS, **options}
    with migration(engine) as (op, _):
        op.create_embedding("tickets", "embedding", **arguments)


def scalar(engine: sa.Engine, query: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(query)).scalar()


def pending_count(engine: sa.Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM embeddb.pending"))


def vectors(engine: sa.Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {row.id: None if row.v is None else np.array(
            row.v.strip("[]").split(","), dtype=np.float32)
            for row in conn.execute(sa.text("SELECT id, embedding::text AS v FROM tickets"))}


def index_definition(engine: sa.Engine) -> str | None:
    return scalar(engine, "SELECT indexdef FROM pg_indexes"
                          " WHERE indexname = 'tickets_embedding_hnsw'")


def entry(engine: sa.Engine) -> catalog.CatalogEntry:
    with engine.connect() as conn:
        found = catalog.get_entry(conn, "public", "tickets", "embedding")
    assert found is not None
    return found


def test_create_installs_everything_and_queues_existing_rows(engine: sa.Engine) -> None:
    make_tickets(engine)
    create(engine, m=8, ef_construction=32)
    assert scalar(engine, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                          " WHERE attrelid = 'tickets'::regclass AND attname = 'embedding'") \
        == "vector(32)"
    assert "m='8', ef_construction='32'" in (index_definition(engine) or "")
    assert scalar(engine, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'embeddb_%'") == 4
    assert pending_count(engine) == 3
    assert entry(engine).spec.template.source == "{subject}\n\n{body}"


def test_drop_removes_it_all_and_its_reverse_puts_it_back(engine: sa.Engine) -> None:
    make_tickets(engine)
    create(engine)
    with engine.connect() as conn:
        before = catalog_rows(conn)
    definition = Definition.from_spec(entry(engine).spec)
    with migration(engine) as (op, _):
        op.invoke(CreateEmbeddingOp("tickets", "embedding", definition).reverse())
    with engine.connect() as conn:
        assert catalog_rows(conn) == set()
        assert {c["name"] for c in sa.inspect(conn).get_columns("tickets")} == \
            {"id", "subject", "body", "status"}
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_proc WHERE proname ~ '^(render|enqueue)_'")).scalar() == 0
    with migration(engine) as (op, _):
        op.invoke(CreateEmbeddingOp("tickets", "embedding", definition))
    with engine.connect() as conn:
        assert [dict(r)["template"] for r in map(dict, catalog_rows(conn))] == \
            [dict(r)["template"] for r in map(dict, before)]
    assert pending_count(engine) == 3


def test_a_new_template_requeues_the_rows_and_the_worker_re_embeds_them(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    create(engine)
    drain(database_url)
    old = vectors(engine)
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", template="{subject}: {status}",
                           existing_template="{subject}\n\n{body}")
    assert pending_count(engine) == 3
    assert all(v is not None for v in vectors(engine).values())  # old ones stay until replaced
    drain(database_url)
    embedder = HashEmbedder(HASH_MODEL, EncodeOptions())
    for ticket_id, vector in vectors(engine).items():
        expected = embedder.embed_documents([f"subject {ticket_id}: open"])[0]
        assert np.allclose(vector, expected, atol=1e-6)
        assert not np.allclose(vector, old[ticket_id])


def column_type(engine: sa.Engine, column: str) -> str | None:
    return scalar(engine, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
                          f" attrelid = 'tickets'::regclass AND attname = '{column}'"
                          " AND NOT attisdropped")


def test_a_new_model_identity_is_built_beside_the_live_vectors_then_swapped_in(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    create(engine)
    drain(database_url)
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", query_prompt="query: ")
    assert pending_count(engine) == 0  # the query prompt is not part of stored vectors
    before = vectors(engine)
    assert all(v is not None for v in before.values())
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", normalize=False, existing_normalize=True)
    # the live vectors and model stay while the next generation is queued beside them
    assert {k: v.tolist() for k, v in vectors(engine).items()} == \
        {k: v.tolist() for k, v in before.items()}
    assert entry(engine).identity.normalize is True
    assert column_type(engine, "embedding__next") == "vector(32)"
    assert pending_count(engine) == 3
    drain(database_url)  # fills the next generation, builds its index, swaps it in
    assert entry(engine).identity.normalize is False
    assert all(v is not None for v in vectors(engine).values())
    assert column_type(engine, "embedding__next") is None
    assert column_type(engine, "embedding__previous") == "vector(32)"
    assert "(embedding vector_cosine_ops)" in (index_definition(engine) or "")


def test_a_new_dimension_gets_its_own_column_type_and_index(
        engine: sa.Engine, database_url: str) -> None:
    make_tickets(engine)
    create(engine)
    drain(database_url)
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", model="embeddb-testing/hash-384",
                           dimensions=384, existing_model=HASH_MODEL, existing_dimensions=32)
    assert (column_type(engine, "embedding"), column_type(engine, "embedding__next")) == \
        ("vector(32)", "vector(384)")
    assert {len(v) for v in vectors(engine).values()} == {32} and pending_count(engine) == 3
    assert entry(engine).spec.dimensions == 32
    drain(database_url)
    assert (column_type(engine, "embedding"), column_type(engine, "embedding__previous")) == \
        ("vector(384)", "vector(32)")
    assert index_definition(engine) is not None
    assert (entry(engine).identity.name, entry(engine).spec.dimensions) == \
        ("embeddb-testing/hash-384", 384)
    assert {len(v) for v in vectors(engine).values()} == {384}


def test_index_parameters_distance_and_presence(engine: sa.Engine) -> None:
    make_tickets(engine)
    create(engine)
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", m=24, ef_construction=100,
                           existing_m=16, existing_ef_construction=64)
    assert "m='24', ef_construction='100'" in (index_definition(engine) or "")
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", distance="l2", existing_distance="cosine")
    assert "vector_l2_ops" in (index_definition(engine) or "")
    assert entry(engine).spec.distance.value == "l2"
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", index_method=None, existing_index_method="hnsw")
    assert index_definition(engine) is None and entry(engine).spec.index is None
    with migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", index_method="hnsw", m=12,
                           existing_index_method=None)
    assert "USING hnsw (embedding vector_l2_ops) WITH (m='12', ef_construction='64')" in \
        (index_definition(engine) or "")
    assert pending_count(engine) == 3  # index changes leave the queue alone


@pytest.mark.parametrize(("changes", "error"), [
    ({"opclass": "vector_l2_ops"}, r"indexes distance 'cosine' with vector_cosine_ops"),
    ({"index_method": "ivfflat"}, r"builds hnsw indexes, not ivfflat"),
    ({"colour": "blue"}, r"cannot change colour"),
    ({"template": "{subject} {nope}"}, r"has no column 'nope'"),
])
def test_refused_alterations_change_nothing(
        engine: sa.Engine, changes: dict[str, Any], error: str) -> None:
    make_tickets(engine)
    create(engine)
    with engine.connect() as conn:
        before = catalog_rows(conn)
    with pytest.raises((SpecError, SchemaError), match=error), migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", **changes)
    with engine.connect() as conn:
        assert catalog_rows(conn) == before
    assert "vector_cosine_ops" in (index_definition(engine) or "")


def test_altering_or_dropping_what_is_not_embedded_says_so(engine: sa.Engine) -> None:
    make_tickets(engine)
    with pytest.raises(SchemaError, match=r"public\.tickets\.embedding is not an embedded"), \
            migration(engine) as (op, _):
        op.alter_embedding("tickets", "embedding", template="{subject}")
    with pytest.raises(SchemaError, match=r"nothing to drop"), migration(engine) as (op, _):
        op.drop_embedding("tickets", "embedding")


def test_alter_reverses_to_what_it_was(engine: sa.Engine) -> None:
    make_tickets(engine)
    create(engine)
    with engine.connect() as conn:
        before = catalog_rows(conn)
    change = AlterEmbeddingOp("tickets", "embedding", {"template": "{body}", "m": 30},
                              {"template": "{subject}\n\n{body}", "m": 16})
    with migration(engine) as (op, _):
        op.invoke(change)
        op.invoke(change.reverse())
    with engine.connect() as conn:
        assert catalog_rows(conn) == before


def test_operations_need_a_connection() -> None:
    op = Operations(MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True}))
    with pytest.raises(EmbeddbError, match=r"offline \(--sql\) migrations are not supported"):
        op.create_embedding("tickets", "embedding", template="{body}", model=HASH_MODEL,
                            dimensions=32, key_columns=KEYS)


def test_a_template_reading_the_embedding_column_is_refused_before_any_sql() -> None:
    op = Operations(MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True}))
    with pytest.raises(SpecError, match=r"cannot read the embedding column itself"):
        op.create_embedding("tickets", "embedding", template="{embedding}", model=HASH_MODEL,
                            dimensions=32, key_columns=KEYS)
