"""The BM25 text leg: scores against a direct computation, statistics kept in step, bad input.

The direct computation takes each row's lexemes and positions from PostgreSQL's own
``to_tsvector`` and does the BM25 arithmetic in Python, so it shares nothing with embeddb's
SQL but the stemmer.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import QueryError, SpecError
from embeddb.query._bm25 import BM25, bm25_leg
from embeddb.query._hybrid import hybrid_search
from embeddb.query._target import resolve

from .models import HASH_MODEL, drain, ticket_model

BODIES = {
    1: "the printer jams on every page, the printer is broken",
    2: "printer out of toner",
    3: "cannot log in after the password reset",
    4: "password reset link expired; reset it again",
    5: "wifi drops every hour in the office",
    6: "office printer and office wifi both down",
    7: "billing: duplicate invoice for March",
}


def rows() -> list[dict[str, Any]]:
    return [{"id": i, "subject": None, "body": body, "status": "open" if i % 2 else "closed"}
            for i, body in BODIES.items()]


def lexemes(conn: sa.Connection, text: str) -> dict[str, int]:
    """PostgreSQL's lexemes of ``text`` with their number of positions."""
    found = conn.execute(sa.text(
        "SELECT lexeme, cardinality(positions) FROM unnest(to_tsvector('english', :t))"),
        {"t": text}).all()
    return dict(found)  # type: ignore[arg-type]


def direct_bm25(conn: sa.Connection, documents: dict[int, str], query: str,
                k1: float = 1.2, b: float = 0.75) -> dict[int, float]:
    vectors = {key: lexemes(conn, text) for key, text in documents.items()}
    frequency = Counter(lexeme for vector in vectors.values() for lexeme in vector)
    average = sum(len(vector) for vector in vectors.values()) / len(vectors)
    scores: dict[int, float] = {}
    for key, vector in vectors.items():
        score = 0.0
        for term in lexemes(conn, query):
            if term in vector:
                n, tf = frequency[term], vector[term]
                idf = math.log(1 + (len(vectors) - n + 0.5) / (n + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(vector) / average))
        if score:
            scores[key] = score
    return scores


@pytest.fixture
def tickets(engine: sa.Engine) -> Any:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows())
    return Ticket


def text_leg(conn: sa.Connection, column: Any, query: str, **options: Any) -> dict[int, float]:
    leg = bm25_leg(resolve(column), query, [], 100, BM25(**options))
    return {row.id: row.score for row in conn.execute(sa.select(leg))}


def stored_statistics(conn: sa.Connection) -> tuple[dict[str, int], tuple[int, int]]:
    terms = conn.execute(sa.text(
        "SELECT lexeme, documents FROM embeddb.fulltext_terms WHERE documents > 0")).all()
    totals = conn.execute(sa.text("SELECT documents, lexemes FROM embeddb.fulltext_totals")).one()
    return dict(terms), (totals.documents, totals.lexemes)  # type: ignore[arg-type]


def counted_statistics(conn: sa.Connection) -> tuple[dict[str, int], tuple[int, int]]:
    bodies = conn.execute(sa.text("SELECT body FROM tickets WHERE body <> ''")).scalars().all()
    vectors = [lexemes(conn, body) for body in bodies]
    frequency = Counter(lexeme for vector in vectors for lexeme in vector)
    return dict(frequency), (len(vectors), sum(len(vector) for vector in vectors))


def test_scores_are_bm25_as_computed_directly(engine: sa.Engine, tickets: Any) -> None:
    with engine.connect() as conn:
        for query, options in [("printer", {}), ("office printer wifi", {}),
                               ("password reset", {"k1": 2.0, "b": 0.3})]:
            expected = direct_bm25(conn, BODIES, query, **options)
            assert text_leg(conn, tickets.embedding, query, **options) == pytest.approx(expected)
    with Session(engine) as session:
        hits = hybrid_search(session, tickets.embedding, "office printer wifi", k=3,
                             vector_weight=0.0)
    with engine.connect() as conn:
        expected = direct_bm25(conn, BODIES, "office printer wifi")
    assert [hit.row.id for hit in hits] == sorted(expected, key=lambda key: -expected[key])[:3]
    assert [hit.text_rank for hit in hits] == [1, 2, 3]


def test_statistics_follow_inserts_updates_deletes_and_truncate(
        engine: sa.Engine, tickets: Any) -> None:
    steps = [
        "INSERT INTO tickets (id, body, status) VALUES (8, 'printer on fire', 'open'),"
        " (9, 'toner everywhere', 'open')",
        "UPDATE tickets SET body = 'keyboard missing keys' WHERE id IN (1, 2)",
        "UPDATE tickets SET status = 'closed'",  # not the text: nothing changes
        "UPDATE tickets SET id = id + 100 WHERE id = 3",  # a new key, the same text
        "UPDATE tickets SET body = NULL WHERE id = 5",  # nothing to index
        "DELETE FROM tickets WHERE id IN (4, 6)",
        "TRUNCATE tickets",
        "INSERT INTO tickets (id, body, status) VALUES (1, 'printer again', 'open')",
    ]
    with engine.begin() as conn:
        assert stored_statistics(conn) == counted_statistics(conn)
    for step in steps:
        with engine.begin() as conn:
            conn.execute(sa.text(step))
        with engine.connect() as conn:
            assert stored_statistics(conn) == counted_statistics(conn), step


def test_installing_on_a_table_with_rows_indexes_and_counts_them(engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows())
    _, Indexed = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    embeddb.install(engine, Indexed)
    with engine.connect() as conn:
        assert stored_statistics(conn) == counted_statistics(conn)
        assert text_leg(conn, Indexed.embedding, "printer") == pytest.approx(
            direct_bm25(conn, BODIES, "printer"))


def test_empty_and_stop_word_queries(engine: sa.Engine, database_url: str,
                                     tickets: Any) -> None:
    drain(database_url)
    with Session(engine) as session:
        for empty in ("", "   \n"):
            with pytest.raises(QueryError, match="needs a query text with words"):
                hybrid_search(session, tickets.embedding, empty)
        # only stop words: no text leg, the vector leg alone answers
        hits = hybrid_search(session, tickets.embedding, "the and of", k=3)
    assert len(hits) == 3
    assert all(hit.text_rank is None and hit.vector_rank is not None for hit in hits)


def test_unknown_language(engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL, fulltext="klingon")
    with pytest.raises(SpecError, match="fulltext='klingon' is not a text search configuration"):
        Base.metadata.create_all(engine)
    with pytest.raises(SpecError, match="must be True or the name of"):
        ticket_model(model=HASH_MODEL, fulltext="english; drop table x")
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        with pytest.raises(QueryError, match="language='klingon' is not a text search"):
            hybrid_search(session, Ticket.embedding, "printer", fulltext=[Ticket.body],
                          language="klingon")
        with pytest.raises(QueryError, match=r"declare the column with Embedding\(\.\.\., fulltext"):
            hybrid_search(session, Ticket.embedding, "printer")


def test_a_row_beyond_the_tsvector_limit_is_indexed_by_its_beginning(
        engine: sa.Engine, tickets: Any) -> None:
    # ~1.3 MB of distinct words: to_tsvector alone fails with "string is too long for tsvector"
    huge = "zeppelin " + " ".join(f"w{i:x}q" for i in range(200_000))
    with engine.begin() as conn:
        conn.execute(sa.insert(tickets.__table__), [{"id": 50, "body": huge, "status": "open"}])
        with pytest.raises(sa.exc.DBAPIError, match="too long for tsvector"), \
                conn.begin_nested():
            conn.execute(sa.text("SELECT to_tsvector('english', :t)"), {"t": huge})
    with Session(engine) as session:
        found = hybrid_search(session, tickets.embedding, "zeppelin", k=2, vector_weight=0.0)
        others = hybrid_search(session, tickets.embedding, "printer", k=2)
        given = hybrid_search(session, tickets.embedding, "zeppelin", k=1, vector_weight=0.0,
                              fulltext=[tickets.body])
    assert found[0].row.id == 50 and found[0].text_rank == 1
    assert others[0].text_rank == 1 and others[0].row.id != 50
    assert given[0].row.id == 50
