"""import_vectors: precomputed vectors loaded in bulk, current for the worker, checked against
the column's model."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from embeddb import ImportRefused, import_vectors
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
