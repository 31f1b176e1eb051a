"""Installing an embedded column creates exactly what it promises, and bad input changes nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import SchemaError, SpecError
from embeddb.database import require_pgvector
from embeddb.errors import ModelChangeInProgress, PgvectorMissing
from embeddb.orm import spec_for

from .models import HASH_MODEL, MINILM, cosine, drain, pending, stored, ticket_model


def catalog_rows(conn: sa.Connection) -> list[sa.Row]:
    return list(conn.execute(sa.text("SELECT * FROM embeddb.columns")))


def test_create_all_installs_column_index_trigger_and_catalog_row(engine: sa.Engine) -> None:
    Base, _ = ticket_model(m=24, ef_construction=100)
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        types = dict(conn.execute(sa.text(
            "SELECT column_name, udt_name FROM information_schema.columns"
            " WHERE table_name = 'tickets'")).all())
        assert types["embedding"] == "vector" and types["embedding_source_hash"] == "uuid"
        assert conn.execute(sa.text(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'tickets'::regclass AND attname = 'embedding'")).scalar() \
            == "vector(384)"
        index = conn.execute(sa.text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'tickets_embedding_hnsw'")).scalar()
        assert "USING hnsw (embedding vector_cosine_ops)" in index
        assert "m='24'" in index and "ef_construction='100'" in index
        triggers = set(conn.execute(sa.text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'tickets'::regclass"
            " AND NOT tgisinternal")).scalars())
        assert triggers == {f"embeddb_embedding_{e}" for e in ("ins", "upd", "del", "trunc")}
        (row,) = catalog_rows(conn)
        assert (row.table_name, row.column_name, row.template) == \
            ("tickets", "embedding", "{subject}\n\n{body}")
        assert row.source_columns == ["subject", "body"] and row.key_columns == ["id"]
        assert (row.model_name, row.dimensions, row.normalize) == (MINILM, 384, True)
        assert len(row.model_fingerprint) == 16
        assert row.index_options == {"m": 24, "ef_construction": 100}


def test_drop_all_removes_everything_embeddb_made(engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "a", "body": "b"}])
    Base.metadata.drop_all(engine)
    with engine.connect() as conn:
        assert catalog_rows(conn) == []
        assert pending(conn) == []
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'embeddb'::regnamespace"
            " AND proname ~ '^(render|enqueue)_'")).scalar() == 0


def test_install_on_an_existing_table_adds_columns_and_queues_its_rows(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE tickets (id int PRIMARY KEY, subject text,"
                             " body text, status text)"))
        conn.execute(sa.text("INSERT INTO tickets SELECT g, 's' || g, 'b' || g, 'open'"
                             " FROM generate_series(1, 5) g"))
    _, Ticket = ticket_model(model=HASH_MODEL)
    entries = embeddb.install(engine, Ticket)
    assert [e.spec.qualified_column for e in entries] == ["public.tickets.embedding"]
    with engine.connect() as conn:
        assert len(pending(conn)) == 5
    # installing again changes nothing and queues nothing twice
    embeddb.install(engine, Ticket)
    with engine.connect() as conn:
        assert len(pending(conn)) == 5 and len(catalog_rows(conn)) == 1


def test_template_naming_a_missing_column_is_refused_before_touching_the_database(
        engine: sa.Engine) -> None:
    Base, _ = ticket_model(model=HASH_MODEL, template="{subject} {bdy}")
    with pytest.raises(SpecError, match=r"names column 'bdy', which tickets does not have"):
        Base.metadata.create_all(engine)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("tickets")
        assert catalog_rows(conn) == []


def test_install_without_the_table_names_it(engine: sa.Engine) -> None:
    _, Ticket = ticket_model(model=HASH_MODEL)
    with pytest.raises(SchemaError, match=r"table public\.tickets does not exist"):
        embeddb.install(engine, Ticket)
    with engine.connect() as conn:
        assert catalog_rows(conn) == []


def test_install_when_the_database_lacks_a_source_column(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE tickets (id int PRIMARY KEY, subject text, status text)"))
    _, Ticket = ticket_model(model=HASH_MODEL)
    with pytest.raises(SchemaError, match=r"public\.tickets has no column 'body'"):
        embeddb.install(engine, Ticket)
    with engine.connect() as conn:
        assert catalog_rows(conn) == []
        assert "embedding" not in {c["name"] for c in sa.inspect(conn).get_columns("tickets")}


def test_dimension_mismatch_with_an_existing_vector_column(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE tickets (id int PRIMARY KEY, subject text, body text,"
                             " status text, embedding vector(768))"))
    _, Ticket = ticket_model()
    with pytest.raises(SchemaError, match=r"tickets\.embedding is vector\(768\).*needs vector\(384\)"):
        embeddb.install(engine, Ticket)
    with engine.connect() as conn:
        assert catalog_rows(conn) == []


def test_declared_dimensions_must_match_the_model(engine: sa.Engine) -> None:
    Base, _ = ticket_model(dimensions=512)
    with pytest.raises(SpecError, match=r"declared with 512 dimensions but model .* makes 384"):
        Base.metadata.create_all(engine)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("tickets")


def test_reinstalling_with_another_model_builds_it_beside_the_live_one(
        engine: sa.Engine) -> None:
    Base, _ = ticket_model(model="embeddb-testing/hash-384")
    Base.metadata.create_all(engine)
    _, Ticket = ticket_model(model=MINILM)
    (live,) = embeddb.install(engine, Ticket)
    assert live.identity.name == "embeddb-testing/hash-384"  # searches keep the live model
    embeddb.install(engine, Ticket)  # the change in progress, asked for again: unchanged
    with engine.connect() as conn:
        rows = sorted((r.column_name, r.model_name, r.generation) for r in catalog_rows(conn))
    assert rows == [("embedding", "embeddb-testing/hash-384", "live"),
                    ("embedding__next", MINILM, "next")]
    _, Third = ticket_model(model="embeddb-testing/hash-32")
    with pytest.raises(ModelChangeInProgress, match="already changing from embeddb-testing/hash-384"):
        embeddb.install(engine, Third)


def test_changing_the_template_requeues_rows_made_from_the_old_text(engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": "b"} for i in (1, 2)])
        conn.execute(sa.text("DELETE FROM embeddb.pending"))  # as if already embedded
        conn.execute(sa.text("UPDATE tickets SET embedding_source_hash ="
                             " md5(concat(subject, E'\\n\\n', body))::uuid"))
    _, Changed = ticket_model(model=HASH_MODEL, template="{subject}")
    embeddb.install(engine, Changed)
    with engine.connect() as conn:
        assert len(pending(conn)) == 2


def column_type_and_opclass(conn: sa.Connection) -> tuple[str, str]:
    row = conn.execute(sa.text(
        "SELECT format_type(a.atttypid, a.atttypmod), opc.opcname"
        " FROM pg_attribute a, pg_index i JOIN pg_opclass opc ON opc.oid = i.indclass[0]"
        " WHERE a.attrelid = 'tickets'::regclass AND a.attname = 'embedding'"
        " AND i.indexrelid = 'tickets_embedding_hnsw'::regclass")).one()
    return str(row[0]), str(row[1])


@pytest.mark.parametrize(("before", "after"), [("vector", "halfvec"), ("halfvec", "vector")])
def test_a_new_vector_type_casts_the_vectors_and_rebuilds_the_index(
        engine: sa.Engine, database_url: str, before: str, after: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL, vector_type=before)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": 1, "subject": "printer", "body": "paper jam in tray two"},
            {"id": 2, "subject": "login", "body": "locked out of my account"},
            {"id": 3, "subject": "invoice", "body": "refund a duplicate charge"}])
    drain(database_url)
    with engine.connect() as conn:
        assert column_type_and_opclass(conn) == (f"{before}(32)", f"{before}_cosine_ops")
        vectors = {i: stored(conn, i) for i in (1, 2, 3)}

    _, Changed = ticket_model(model=HASH_MODEL, vector_type=after)
    embeddb.install(engine, Changed)
    with engine.connect() as conn:
        assert column_type_and_opclass(conn) == (f"{after}(32)", f"{after}_cosine_ops")
        assert [r.vector_type for r in catalog_rows(conn)] == [after]
        assert pending(conn) == []  # nothing to re-embed
        for i, (vector, source_hash) in vectors.items():
            kept, kept_hash = stored(conn, i)
            assert kept_hash == source_hash and cosine(kept, vector) > 0.999  # halfvec rounding
    assert drain(database_url).embedded == 0
    with Session(engine) as session:
        for plan in ("index", "exact"):
            hits = embeddb.search(session, Changed.embedding, "paper jam", k=1, plan=plan)
            assert [ticket.id for ticket, _ in hits] == [1]

    with engine.begin() as conn:  # the worker writes the new type from now on
        conn.execute(sa.insert(Changed), [{"id": 4, "subject": "wifi", "body": "drops hourly"}])
    assert drain(database_url).embedded == 1
    with engine.connect() as conn:
        assert stored(conn, 4)[0] is not None


def test_pgvector_missing_or_too_old_says_which_version_and_what_to_do() -> None:
    where = "PostgreSQL 17.2, database appdb"
    with pytest.raises(PgvectorMissing, match=r"not available on PostgreSQL 17\.2, database appdb"):
        require_pgvector(None, "available", where)
    with pytest.raises(PgvectorMissing, match=r"pgvector 0\.7\.4 is installed .* ALTER EXTENSION"):
        require_pgvector("0.7.4", "installed", where)
    assert require_pgvector("0.8.1", "installed", where) == (0, 8, 1)


def test_a_database_without_the_extension_gets_it_created(server_url: str) -> None:
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    from embeddb.database import create_engine, libpq_conninfo

    name = f"embeddb_bare_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name)
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        Base, _ = ticket_model(model=HASH_MODEL)
        Base.metadata.create_all(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
            assert len(catalog_rows(conn)) == 1
    finally:
        engine.dispose()
        with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_spec_is_derived_from_the_model_class() -> None:
    _, Ticket = ticket_model(model=HASH_MODEL, distance="l2", m=8, ef_construction=32)
    spec = spec_for(Ticket.__table__.c.embedding, "public")
    assert spec.key_columns == ("id",) and spec.dimensions == 32
    assert spec.distance.value == "l2" and spec.index is not None and spec.index.m == 8
    assert "embedding_source_hash" in Ticket.__table__.c
