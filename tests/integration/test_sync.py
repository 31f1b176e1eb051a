"""Rows written any way at all are embedded by a worker that knows only the database URL,
with the real model, and stay in step with their text."""

from __future__ import annotations

import io

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from embeddb.database import libpq_conninfo
from embeddb.embedders import load_embedder

from .models import MINILM, cosine, drain, pending, run_worker, stored, ticket_model


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return load_embedder(MINILM)


def encode(minilm, text: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    return minilm.embed_documents([text])[0]


def test_raw_sql_rows_are_embedded_by_a_worker_process(engine, database_url, minilm) -> None:  # type: ignore[no-untyped-def]
    Base, _ = ticket_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tickets (id, subject, body, status) VALUES"
            " (1, 'Locked out', 'I cannot log in since the password reset', 'open'),"
            " (2, 'Invoice', 'Please send last month''s invoice again', 'closed')"))
    # COPY, as a bulk loader or another service would write
    with psycopg.connect(libpq_conninfo(database_url)) as conn, conn.cursor() as cursor, \
            cursor.copy("COPY tickets (id, subject, body, status) FROM STDIN") as copy:
        copy.write_row((3, "Crash", "The app crashes when I upload a photo", "open"))
    finished = run_worker(database_url)
    assert finished.returncode == 0, finished.stderr
    assert "embedded 3 rows" in finished.stderr
    with engine.connect() as conn:
        assert pending(conn) == []
        for ticket_id, text in [(1, "Locked out\n\nI cannot log in since the password reset"),
                                (2, "Invoice\n\nPlease send last month's invoice again"),
                                (3, "Crash\n\nThe app crashes when I upload a photo")]:
            vector, source_hash = stored(conn, ticket_id)
            assert cosine(vector, encode(minilm, text)) >= 0.9999
            assert source_hash is not None
    # the worker logs counts and rates, never row text
    assert "password" not in finished.stderr and "invoice" not in finished.stderr


def test_update_of_a_source_column_re_embeds_the_new_text(engine, database_url, minilm) -> None:  # type: ignore[no-untyped-def]
    Base, Ticket = ticket_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "Printer", "body": "It jams"}])
    drain(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET body = 'It prints blank pages' WHERE id = 1"))
        assert len(pending(conn)) == 1
    finished = run_worker(database_url)
    assert finished.returncode == 0, finished.stderr
    with engine.connect() as conn:
        vector, _ = stored(conn, 1)
        assert cosine(vector, encode(minilm, "Printer\n\nIt prints blank pages")) >= 0.9999
        assert cosine(vector, encode(minilm, "Printer\n\nIt jams")) < 0.99
        assert pending(conn) == []


def test_update_of_other_columns_or_to_the_same_text_does_not_re_embed(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    Base, Ticket = ticket_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "Printer", "body": "It jams"}])
    drain(database_url)
    with engine.connect() as conn:
        before = stored(conn, 1)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET status = 'closed' WHERE id = 1"))
        conn.execute(sa.text("UPDATE tickets SET body = 'It jams' WHERE id = 1"))
        assert pending(conn) == []
    assert drain(database_url).embedded == 0
    with engine.connect() as conn:
        after = stored(conn, 1)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]


def test_a_deleted_row_leaves_nothing_pending(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    Base, Ticket = ticket_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": f"s{i}", "body": "b"} for i in (1, 2)])
        conn.execute(sa.text("UPDATE tickets SET body = 'changed' WHERE id = 2"))
        conn.execute(sa.text("DELETE FROM tickets"))
        assert pending(conn) == []
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 3, "subject": "s3", "body": "b"}])
        conn.execute(sa.text("TRUNCATE tickets"))
        assert pending(conn) == []


def test_empty_null_long_and_non_ascii_texts(engine, database_url, minilm) -> None:  # type: ignore[no-untyped-def]
    """Documented behaviour: a row whose source columns are all NULL or empty has no text and
    gets a NULL vector (it is neither pending nor failed); text beyond the model's window is
    embedded from its start, as the model truncates it; any Unicode text is embedded as is."""
    Base, Ticket = ticket_model()
    Base.metadata.create_all(engine)
    long_body = " ".join(f"word{i}" for i in range(3000))
    rows = [
        {"id": 1, "subject": None, "body": None},
        {"id": 2, "subject": "", "body": ""},
        {"id": 3, "subject": "Long", "body": long_body},
        {"id": 4, "subject": "Überweisung", "body": "支払いが失敗しました 🙁 — ошибка"},
        {"id": 5, "subject": None, "body": "only a body"},
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows)
        assert sorted(r.row_key["id"] for r in pending(conn)) == [3, 4, 5]
    drain(database_url)
    with engine.connect() as conn:
        assert pending(conn) == []
        assert stored(conn, 1) == (None, None) and stored(conn, 2) == (None, None)
        assert cosine(stored(conn, 3)[0], encode(minilm, f"Long\n\n{long_body}")) >= 0.9999
        text = "Überweisung\n\n支払いが失敗しました 🙁 — ошибка"
        assert cosine(stored(conn, 4)[0], encode(minilm, text)) >= 0.9999
        assert cosine(stored(conn, 5)[0], encode(minilm, "\n\nonly a body")) >= 0.9999
    # emptying a row's text clears its vector
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET subject = NULL, body = '' WHERE id = 4"))
    drain(database_url)
    with engine.connect() as conn:
        assert stored(conn, 4) == (None, None) and pending(conn) == []


def test_copy_of_rows_with_their_vectors_is_not_re_embedded(engine, database_url) -> None:  # type: ignore[no-untyped-def]
    Base, Ticket = ticket_model()
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "Printer", "body": "It jams"}])
    drain(database_url)
    dump = io.StringIO()
    with psycopg.connect(libpq_conninfo(database_url)) as conn, conn.cursor() as cursor:
        with cursor.copy("COPY tickets TO STDOUT") as copy:
            for chunk in copy:
                dump.write(bytes(chunk).decode())
        cursor.execute("DELETE FROM tickets")
        with cursor.copy("COPY tickets FROM STDIN") as copy:
            copy.write(dump.getvalue())
    with engine.connect() as conn:
        assert pending(conn) == []
        assert stored(conn, 1)[0] is not None
