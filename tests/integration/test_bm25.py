"""The BM25 text leg: scores against a direct computation after every kind of write, bad input.

The direct computation takes each row's lexemes and positions from PostgreSQL's own
``to_tsvector`` and does the BM25 arithmetic in Python, so it shares nothing with embeddb's
SQL but the stemmer.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import QueryError, SpecError, catalog
from embeddb.query._bm25 import BM25, bm25_leg, sample_percent, statistics, totals
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
    if not vectors:
        return {}
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
def tickets(engine: sa.Engine, database_url: str) -> Any:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows())
    drain(database_url)  # the worker writes each row's tsvector with its vector
    return Ticket


def text_leg(conn: sa.Connection, column: Any, query: str, **options: Any) -> dict[int, float]:
    parameters = BM25(**options, totals_max_age=0)  # counted afresh: the test just wrote
    target = resolve(column)
    leg = bm25_leg(target, statistics(conn, target, query, parameters), [], 100, parameters)
    return {row.id: row.score for row in conn.execute(sa.select(leg))}


def postings(conn: sa.Connection, table: str = "tickets") -> list[tuple[Any, ...]]:
    """The column's postings table, sorted."""
    return sorted(tuple(row) for row in conn.execute(sa.text(
        f"SELECT id, lexeme, tf, doc_length FROM {table}_embedding_postings")))


def postings_of_the_tsvectors(conn: sa.Connection, table: str = "tickets") -> list[tuple[Any, ...]]:
    """What the postings should hold: each stored tsvector's lexemes, positions and length."""
    return sorted(tuple(row) for row in conn.execute(sa.text(
        f"SELECT t.id, u.lexeme, cardinality(u.positions), length(t.embedding_fulltext)"
        f" FROM {table} AS t, unnest(t.embedding_fulltext) AS u")))


def current_bodies(conn: sa.Connection) -> dict[int, str]:
    found = conn.execute(sa.text("SELECT id, body FROM tickets WHERE body IS NOT NULL")).all()
    return dict(found)  # type: ignore[arg-type]


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
        engine: sa.Engine, database_url: str, tickets: Any) -> None:
    steps = [
        "INSERT INTO tickets (id, body, status) VALUES (8, 'printer on fire', 'open'),"
        " (9, 'toner everywhere', 'open')",
        "UPDATE tickets SET body = 'keyboard missing keys printer' WHERE id IN (1, 2)",
        "UPDATE tickets SET status = 'closed'",  # not the text: nothing changes
        "UPDATE tickets SET id = id + 100 WHERE id = 3",  # a new key, the same text
        "UPDATE tickets SET body = NULL WHERE id = 5",  # nothing to index
        "DELETE FROM tickets WHERE id IN (4, 6)",
        "TRUNCATE tickets",
        "INSERT INTO tickets (id, body, status) VALUES (1, 'printer again', 'open'),"
        " (2, 'the office wifi again', 'open')",
    ]
    query = "printer office wifi reset keys toner"
    for step in steps:
        with engine.begin() as conn:
            conn.execute(sa.text(step))
        drain(database_url)
        with engine.connect() as conn:
            expected = direct_bm25(conn, current_bodies(conn), query)
            assert text_leg(conn, tickets.embedding, query) == pytest.approx(expected), step
            # the postings mirror the stored tsvectors after every kind of write
            assert postings(conn) == postings_of_the_tsvectors(conn), step
            assert (len(postings(conn)) == 0) == (not current_bodies(conn)), step


def test_a_filter_chooses_the_rows_not_the_statistics(engine: sa.Engine, tickets: Any) -> None:
    with engine.connect() as conn:
        expected = direct_bm25(conn, BODIES, "office printer wifi")
        target = resolve(tickets.embedding)
        leg = bm25_leg(target, statistics(conn, target, "office printer wifi", BM25()),
                       [tickets.status == "open"], 100, BM25())
        found = {row.id: row.score for row in conn.execute(sa.select(leg))}
    assert found == pytest.approx({key: score for key, score in expected.items() if key % 2})


def test_a_big_table_samples_its_totals(engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    Base.metadata.create_all(engine)
    # every row four distinct lexemes: the average is exact on any sample, only N is estimated
    bodies = {i: f"alpha{i % 7} beta{i % 11} gamma{i % 13} item{i}" for i in range(1, 8001)}
    with engine.begin() as conn:
        # a long subject outside the template: few rows a page, so a sample of pages is big
        conn.execute(sa.insert(Ticket), [{"id": i, "body": body, "status": "open",
                                          "subject": "x" * 500} for i, body in bodies.items()])
    drain(database_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM FULL ANALYZE tickets"))  # the worker left dead rows
    target = resolve(Ticket.embedding)
    parameters = BM25(sample_above=2000)
    query = "alpha3 gamma5"
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sample_percent(target, parameters))) == pytest.approx(
            25.0, rel=0.05)
        assert conn.scalar(sa.select(sample_percent(target, BM25()))) == 100.0  # counted
        leg = bm25_leg(target, statistics(conn, target, query, parameters), [], 8000,
                       parameters)
        sampled = {row.id: row.score for row in conn.execute(sa.select(leg))}
        expected = direct_bm25(conn, bodies, query)
    assert sampled.keys() == expected.keys()
    # rows holding both words, alpha3 only, gamma5 only: each group one score, in this order
    groups = [sorted({round(expected[key], 9) for key in expected}, reverse=True)]
    by_group = {value: {round(sampled[key], 9) for key in expected
                        if round(expected[key], 9) == value} for value in groups[0]}
    assert all(len(scores) == 1 for scores in by_group.values())
    ordered = [next(iter(by_group[value])) for value in groups[0]]
    assert ordered == sorted(ordered, reverse=True) and len(ordered) == 3
    # N from a quarter of ~600 pages: close, not exact
    assert sampled == pytest.approx(expected, rel=0.1)


def test_installing_on_a_table_with_rows_indexes_and_counts_them(engine: sa.Engine) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows())
    _, Indexed = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    embeddb.install(engine, Indexed)
    with engine.connect() as conn:
        assert text_leg(conn, Indexed.embedding, "printer") == pytest.approx(
            direct_bm25(conn, BODIES, "printer"))
        assert postings(conn) == postings_of_the_tsvectors(conn) and postings(conn)
    embeddb.install(engine, Indexed)  # again: nothing written twice
    with engine.connect() as conn:
        assert postings(conn) == postings_of_the_tsvectors(conn)
    with engine.begin() as conn:  # uninstalling takes the postings, their function, triggers
        entry = catalog.get_entry(conn, "public", "tickets", "embedding")
        assert entry is not None and catalog.uninstall(conn, entry.spec)
        assert conn.scalar(sa.text("SELECT to_regclass('tickets_embedding_postings')")) is None
        assert conn.scalar(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE"
                                   " 'embeddb_embedding_p%'")) == 0
        conn.execute(sa.text("DELETE FROM tickets"))  # no trigger left to fail


def test_empty_and_stop_word_queries(engine: sa.Engine, database_url: str,
                                     tickets: Any) -> None:
    drain(database_url)
    with Session(engine) as session:
        for empty in ("", "   \n"):
            with pytest.raises(QueryError, match="the query text is empty"):
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
        engine: sa.Engine, database_url: str, tickets: Any) -> None:
    # ~1.3 MB of distinct words: to_tsvector alone fails with "string is too long for tsvector"
    huge = "zeppelin " + " ".join(f"w{i:x}q" for i in range(200_000))
    with engine.begin() as conn:
        conn.execute(sa.insert(tickets.__table__), [{"id": 50, "body": huge, "status": "open"}])
        with pytest.raises(sa.exc.DBAPIError, match="too long for tsvector"), \
                conn.begin_nested():
            conn.execute(sa.text("SELECT to_tsvector('english', :t)"), {"t": huge})
    drain(database_url)
    with Session(engine) as session:
        found = hybrid_search(session, tickets.embedding, "zeppelin", k=2, vector_weight=0.0)
        others = hybrid_search(session, tickets.embedding, "printer", k=2)
        given = hybrid_search(session, tickets.embedding, "zeppelin", k=1, vector_weight=0.0,
                              fulltext=[tickets.body])
    assert found[0].row.id == 50 and found[0].text_rank == 1
    assert others[0].text_rank == 1 and others[0].row.id != 50
    assert given[0].row.id == 50


def test_concurrent_writers_of_the_same_words_do_not_wait_for_each_other(
        engine: sa.Engine, database_url: str, tickets: Any) -> None:
    # statistics kept per lexeme would make the second writer wait for the first's commit
    with engine.connect() as first, engine.connect() as second:
        first.execute(sa.text("INSERT INTO tickets (id, body, status)"
                              " VALUES (20, 'printer toner office', 'open')"))
        second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        second.execute(sa.text("INSERT INTO tickets (id, body, status)"
                               " VALUES (21, 'printer toner office', 'open')"))
        second.execute(sa.text("UPDATE tickets SET body = 'office printer' WHERE id = 2"))
        second.execute(sa.text("DELETE FROM tickets WHERE id = 6"))
        second.commit()
        first.commit()
    drain(database_url)
    with engine.connect() as conn:
        expected = direct_bm25(conn, current_bodies(conn), "printer office")
        assert text_leg(conn, tickets.embedding, "printer office") == pytest.approx(expected)


def test_the_application_writes_no_tsvector_the_worker_does(
        engine: sa.Engine, database_url: str, tickets: Any) -> None:
    # to_tsvector costs more than the rest of embeddb's trigger: it is the worker's job
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tickets (id, body, status)"
                             " VALUES (30, 'zeppelin printer', 'open')"))
        conn.execute(sa.text("UPDATE tickets SET body = 'zeppelin toner' WHERE id = 2"))
    with engine.connect() as conn:
        assert 30 not in text_leg(conn, tickets.embedding, "zeppelin")
        assert conn.execute(sa.text(
            "SELECT embedding_fulltext IS NULL FROM tickets WHERE id = 30")).scalar_one()
    drain(database_url)
    with engine.connect() as conn:
        bodies = current_bodies(conn)
        assert text_leg(conn, tickets.embedding, "zeppelin") == pytest.approx(
            direct_bm25(conn, bodies, "zeppelin"))
        assert set(text_leg(conn, tickets.embedding, "zeppelin")) == {2, 30}


def test_the_totals_are_reused_for_their_max_age(engine: sa.Engine, database_url: str,
                                                 tickets: Any) -> None:
    target = resolve(tickets.embedding)
    with engine.connect() as conn:
        before = totals(conn, target, BM25())
        assert before == (len(BODIES), pytest.approx(
            sum(len(lexemes(conn, body)) for body in BODIES.values()) / len(BODIES)))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tickets WHERE id IN (1, 2)"))
    with engine.connect() as conn:
        assert totals(conn, target, BM25()) == before  # within a minute: reused
        assert totals(conn, target, BM25(totals_max_age=0)).documents == len(BODIES) - 2


def test_the_pruned_top_rows_are_the_top_rows_of_a_full_scoring(
        engine: sa.Engine, database_url: str) -> None:
    # common words in most rows, rare ones in few: the text leg scores only the rows that can
    # reach its top (bounds and set-aside lexemes), and must return what scoring all would
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    Base.metadata.create_all(engine)
    chosen = random.Random(16)
    common = [f"common{i}" for i in range(6)]
    rare = [f"rare{i}" for i in range(40)]
    bodies = {}
    for i in range(1, 301):
        words = chosen.choices(common, k=chosen.randint(3, 25))
        words += chosen.sample(rare, k=chosen.randint(0, 3))
        bodies[i] = " ".join(chosen.sample(words, k=len(words)))
    # "unique" only in long rows (low scores), so rows of common words alone beat them
    for i in range(301, 304):
        bodies[i] = "unique " + " ".join(f"filler{i}x{j}" for j in range(150))
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "body": body, "status": "open"}
                                         for i, body in bodies.items()])
    drain(database_url)
    target = resolve(Ticket.embedding)
    parameters = BM25(totals_max_age=0)
    queries = ["common0 common1 common2 rare3", "common4 common5", "rare1 rare2 common3",
               "common0 common1 common2 common3 common4 common5 rare7 rare8 rare9", "rare30",
               "common0 common1 common2 unique"]
    with engine.connect() as conn:
        for query in queries:
            expected = direct_bm25(conn, bodies, query)
            ranked = sorted(expected, key=lambda key: (-expected[key], key))
            for limit in (1, 3, 10):
                leg = bm25_leg(target, statistics(conn, target, query, parameters), [], limit,
                               parameters)
                found = [(row.id, row.score) for row in conn.execute(
                    sa.select(leg).order_by(leg.c.score.desc(), leg.c.id))]
                assert [score for _, score in found] == pytest.approx(
                    [expected[key] for key in ranked[:limit]]), (query, limit)
                assert [key for key, _ in found] == ranked[:limit], (query, limit)
