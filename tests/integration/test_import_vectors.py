"""import_vectors: precomputed vectors loaded in bulk, current for the worker, checked against
the column's model."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding, ImportRefused, import_vectors, importing
from embeddb.embedders import load_embedder
from embeddb.worker import Worker, WorkerConfig

from .models import HASH_MODEL, ticket_model

ROWS = [{"id": i, "subject": f"subject {i}", "body": f"body of ticket {i} about {w}"}
        for i, w in enumerate(["printers", "refunds", "passwords", "invoices"] * 10)]


def setup(engine: sa.Engine, **options: object) -> tuple[object, np.ndarray]:
    Base, Ticket = ticket_model(model=HASH_MODEL, **options)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), ROWS)
    texts = [f"{r['subject']}\n\n{r['body']}" for r in ROWS]
    return Ticket, load_embedder(HASH_MODEL).embed_documents(texts)


def queued(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar_one())


def test_imported_vectors_are_stored_current_and_the_worker_has_nothing_to_do(
        engine: sa.Engine, database_url: str) -> None:
    Ticket, vectors = setup(engine)
    assert queued(engine) == len(ROWS)
    result = import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), vectors, strict=True))
    assert result.rows == len(ROWS) and result.checked == 8 and result.min_cosine > 0.9999
    assert queued(engine) == 0
    with engine.connect() as conn:
        stale = conn.execute(sa.text(
            "SELECT count(*) FROM tickets WHERE embedding IS NULL OR embedding_source_hash"
            " IS DISTINCT FROM md5(embeddb.render_1(tickets))::uuid")).scalar_one()
        first = conn.execute(sa.text("SELECT embedding::text FROM tickets WHERE id = 3")).scalar_one()
    assert stale == 0
    assert np.allclose(np.array(eval(first)), vectors[3], atol=1e-6)
    with Worker(database_url, WorkerConfig()) as worker:
        assert worker.run_once().embedded == 0
    with engine.begin() as conn:  # a later edit is embedded as usual
        conn.execute(sa.text("UPDATE tickets SET body = 'new text' WHERE id = 3"))
    assert queued(engine) == 1


def test_vectors_of_another_model_are_refused_naming_the_rows_and_nothing_is_written(
        engine: sa.Engine) -> None:
    Ticket, vectors = setup(engine)
    wrong = vectors.copy()
    wrong[5] = load_embedder(HASH_MODEL).embed_documents(["something else entirely"])[0]
    with pytest.raises(ImportRefused, match=r'\{"id": 5\} \(cosine'):
        import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), wrong, strict=True), check=len(ROWS))
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL")).scalar_one() == 0
    assert queued(engine) == len(ROWS)


def test_a_halfvec_column_takes_imported_vectors(engine: sa.Engine) -> None:
    Ticket, vectors = setup(engine, vector_type="halfvec")
    result = import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), vectors, strict=True))
    assert result.rows == len(ROWS) and result.min_cosine > 0.999
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT embedding::text FROM tickets WHERE id = 3")).scalar_one()
    assert np.allclose(np.array(eval(first)), vectors[3], atol=1e-3)  # half precision
    assert queued(engine) == 0


def test_a_vector_of_another_dimension_is_refused_naming_the_row_and_column(
        engine: sa.Engine) -> None:
    Ticket, vectors = setup(engine)
    rows = [(k, vectors[k]) for k in range(len(ROWS))]
    rows[7] = (7, vectors[7][:31])
    with pytest.raises(ImportRefused, match=r"tickets\.embedding refused, nothing written: the"
                       r" vector of key 7 has shape \(31,\), the column holds 32 dimensions"):
        import_vectors(engine, Ticket.embedding, rows)
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL")).scalar_one() == 0
    assert queued(engine) == len(ROWS)


@pytest.mark.parametrize(("keys", "problem"), [
    ([0, 1, 999], r'no row in public.tickets: \{"id": 999\}'),
    ([0, 1, 1], r'given more than once: \{"id": 1\}'),
])
def test_unknown_or_repeated_keys_are_refused(engine: sa.Engine, keys: list[int],
                                              problem: str) -> None:
    Ticket, vectors = setup(engine)
    with pytest.raises(ImportRefused, match=problem):
        import_vectors(engine, Ticket.embedding, [(k, vectors[0]) for k in keys], check=0)
    assert queued(engine) == len(ROWS)


def test_estimate_counts_rows_and_tokens_with_the_models_tokenizer_and_prices_them(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from embeddb.cli import main

    setup(engine)
    texts = [f"{r['subject']}\n\n{r['body']}" for r in ROWS]
    tokens = sum(load_embedder(HASH_MODEL).count_tokens(texts))
    assert main(["estimate", "tickets.embedding", "--database-url", database_url,
                 "--price-per-million-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{len(ROWS)} rows with text, {tokens:,} tokens (counted by the model's tokenizer)" in out
    assert f"price: {tokens * 2 / 1e6:,.4f}" in out


INDEX = "public.tickets_embedding_hnsw"


def index_state(engine: sa.Engine) -> tuple[int, bool, str] | None:
    """The column's HNSW index: its oid (new after a rebuild), validity and definition."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT i.indexrelid::int, i.indisvalid, pg_get_indexdef(i.indexrelid)"
            " FROM pg_index i WHERE i.indexrelid = to_regclass(:name)"), {"name": INDEX}).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def table_state(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT id, embedding::text, embedding_source_hash FROM tickets ORDER BY id"))]


def test_a_large_import_sets_the_index_aside_and_builds_it_again_with_the_same_result(
        engine: sa.Engine, database_url: str) -> None:
    Ticket, vectors = setup(engine)
    before = index_state(engine)
    assert before is not None and before[1]
    kept = import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), vectors, strict=True),
                          set_index_aside=False)
    assert not kept.index_rebuilt and index_state(engine) == before
    with_index = table_state(engine)

    with engine.begin() as conn:  # the same rows again, as they were before the import
        conn.execute(sa.text("UPDATE tickets SET embedding = NULL, embedding_source_hash = NULL"))
        conn.execute(sa.text("INSERT INTO embeddb.pending (column_id, row_key)"
                             " SELECT 1, jsonb_build_object('id', id) FROM tickets"))
    # 40 rows of a 40-row table, but fewer than SET_ASIDE_ROWS: the index stays by default
    assert not import_vectors(engine, Ticket.embedding,
                              zip(range(len(ROWS)), vectors, strict=True)).index_rebuilt
    assert index_state(engine) == before

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET embedding = NULL, embedding_source_hash = NULL"))
    aside = import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), vectors, strict=True),
                           set_index_aside=True)
    after = index_state(engine)
    assert aside.index_rebuilt and aside.rows == len(ROWS) and aside.checked == 8
    assert after is not None and after[0] != before[0]  # a new index...
    assert after[1:] == before[1:]  # ...valid, with the same definition
    assert table_state(engine) == with_index
    assert queued(engine) == 0
    with Worker(database_url, WorkerConfig()) as worker:
        assert worker.run_once().embedded == 0
    with engine.connect() as conn:  # and searches use it
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = "\n".join(conn.execute(sa.text(
            "EXPLAIN SELECT id FROM tickets ORDER BY embedding <=> (SELECT embedding FROM tickets"
            " WHERE id = 1) LIMIT 3")).scalars())
    assert INDEX.split(".")[1] in plan


def test_an_import_that_is_most_of_a_big_enough_table_sets_the_index_aside_by_itself(
        engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    count = importing.SET_ASIDE_ROWS + 200
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"ticket {i}"}
                                         for i in range(count)])
    vectors = load_embedder(HASH_MODEL).embed_documents([f"s\n\nticket {i}" for i in range(count)])
    before = index_state(engine)
    # below half of the table: kept
    half = int(count * importing.SET_ASIDE_SHARE) - 1
    assert not import_vectors(engine, Ticket.embedding, zip(range(half), vectors[:half],
                                                            strict=True)).index_rebuilt
    assert index_state(engine) == before
    result = import_vectors(engine, Ticket.embedding, zip(range(count), vectors, strict=True))
    assert result.index_rebuilt and result.rows == count
    after = index_state(engine)
    assert after is not None and after[0] != before[0] and after[1]
    assert queued(engine) == 0


def test_a_failure_midway_with_the_index_aside_leaves_the_column_and_its_index_as_they_were(
        engine: sa.Engine) -> None:
    Ticket, vectors = setup(engine)
    half = len(ROWS) // 2
    import_vectors(engine, Ticket.embedding, zip(range(half), vectors[:half], strict=True))
    before, rows_before, queued_before = index_state(engine), table_state(engine), queued(engine)
    # a real failure from the database, raised only while the index is set aside
    with engine.begin() as conn:
        conn.execute(sa.text(f"""
            CREATE FUNCTION fail_midway() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.id = 30 AND to_regclass('{INDEX}') IS NULL THEN
                    RAISE EXCEPTION 'failing midway, the index set aside';
                END IF;
                RETURN NEW;
            END $$"""))
        conn.execute(sa.text("CREATE TRIGGER fail_midway BEFORE UPDATE OF embedding ON tickets"
                             " FOR EACH ROW EXECUTE FUNCTION fail_midway()"))
    with pytest.raises(sa.exc.DBAPIError, match="failing midway, the index set aside"):
        import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), vectors, strict=True),
                       set_index_aside=True)
    assert index_state(engine) == before  # the same index, valid
    assert table_state(engine) == rows_before and queued(engine) == queued_before == len(ROWS) - half


def test_a_partitioned_table_keeps_its_index_through_an_import(engine: sa.Engine) -> None:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "part_docs"
        __table_args__ = {"postgresql_partition_by": "LIST (tenant)"}  # noqa: RUF012
        tenant: Mapped[int] = mapped_column(primary_key=True)
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model=HASH_MODEL)

    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE part_docs_1 PARTITION OF part_docs FOR VALUES IN (1)"))
        conn.execute(sa.insert(Doc), [{"tenant": 1, "id": i, "body": f"doc {i}"} for i in range(20)])
        index = conn.execute(sa.text(
            "SELECT indexrelid::int FROM pg_index WHERE indrelid = 'part_docs'::regclass"
            " AND indexrelid::regclass::text LIKE '%embedding%'")).scalar_one()
    vectors = load_embedder(HASH_MODEL).embed_documents([f"doc {i}" for i in range(20)])
    result = import_vectors(engine, Doc.embedding, zip([(1, i) for i in range(20)], vectors,
                                                       strict=True), set_index_aside=True)
    assert result.rows == 20 and not result.index_rebuilt
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT indexrelid::int FROM pg_index WHERE indrelid = 'part_docs'::regclass"
            " AND indexrelid::regclass::text LIKE '%embedding%'")).scalar_one() == index


def test_the_check_finds_the_few_rows_that_have_text_among_many_that_have_none(
        engine: sa.Engine) -> None:
    # the sample is drawn from a few random staged rows; when those have too little text, it
    # is drawn again from all of them, so one wrong vector among 200 rows is still found
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": None, "body": None}
                                         for i in range(200)])
        conn.execute(sa.text("UPDATE tickets SET body = 'the only text' WHERE id = 137"))
    wrong = load_embedder(HASH_MODEL).embed_documents(["something else entirely"])[0]
    with pytest.raises(ImportRefused, match=r'\{"id": 137\} \(cosine'):
        import_vectors(engine, Ticket.embedding, [(i, wrong) for i in range(200)], check=1)
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL")).scalar_one() == 0


def test_rows_a_trigger_keeps_from_being_updated_refuse_the_import(engine: sa.Engine) -> None:
    # the keys are looked at only when the write missed rows: a trigger that skips one is
    # named too, and nothing is written
    Ticket, vectors = setup(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("""
            CREATE FUNCTION skip_three() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.id = 3 THEN RETURN NULL; END IF;
                RETURN NEW;
            END $$"""))
        conn.execute(sa.text("CREATE TRIGGER skip_three BEFORE UPDATE ON tickets"
                             " FOR EACH ROW EXECUTE FUNCTION skip_three()"))
    with pytest.raises(ImportRefused, match=r"40 rows given but 39 updated \(does a trigger on"
                       r" public.tickets skip updates\?\)"):
        import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), vectors, strict=True))
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL")).scalar_one() == 0
    assert queued(engine) == len(ROWS)


def test_a_refusal_by_the_check_after_the_index_was_rebuilt_leaves_everything_as_it_was(
        engine: sa.Engine) -> None:
    # the check's verdict comes while (or after) the database writes and builds the index: a
    # refusal then still undoes the write, the rebuilt index and the cleared queue
    Ticket, vectors = setup(engine)
    before, rows_before = index_state(engine), table_state(engine)
    wrong = vectors.copy()
    wrong[11] = load_embedder(HASH_MODEL).embed_documents(["something else entirely"])[0]
    with pytest.raises(ImportRefused, match=r'\{"id": 11\} \(cosine'):
        import_vectors(engine, Ticket.embedding, zip(range(len(ROWS)), wrong, strict=True),
                       check=len(ROWS), set_index_aside=True)
    assert index_state(engine) == before
    assert table_state(engine) == rows_before and queued(engine) == len(ROWS)
