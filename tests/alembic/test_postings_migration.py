"""Revision 0015 gives every full-text column the postings its BM25 leg reads, written from the
tsvectors already stored; its downgrade drops them and leaves the tsvectors."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from embeddb import hybrid_search, migrate
from tests.integration.models import HASH_MODEL, drain, ticket_model
from tests.integration.test_bm25 import (
    BODIES,
    direct_bm25,
    postings,
    postings_of_the_tsvectors,
    rows,
)


def postings_table(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        found = conn.scalar(sa.text("SELECT to_regclass('tickets_embedding_postings')::text"))
        return None if found is None else str(found)


def test_0015_writes_the_postings_of_stored_tsvectors_and_its_downgrade_drops_them(
        engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}", fulltext=True)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows())
    drain(database_url)
    assert "0015" in migrate.migrate(engine, downgrade_to="0014")
    assert postings_table(engine) is None
    with engine.begin() as conn:  # a write before the upgrade: no trigger left to fail on it
        conn.execute(sa.text("DELETE FROM tickets WHERE id = 7"))
        assert conn.scalar(sa.text("SELECT count(embedding_fulltext) FROM tickets")) == 6

    assert migrate.migrate(engine)[0] == "0015"
    with engine.connect() as conn:
        assert postings(conn) == postings_of_the_tsvectors(conn) and postings(conn)
    with engine.begin() as conn:  # kept in step from now on
        conn.execute(sa.text("DELETE FROM tickets WHERE id = 6"))
    with engine.connect() as conn:
        assert postings(conn) == postings_of_the_tsvectors(conn)
        bodies = {key: body for key, body in BODIES.items() if key < 6}
        expected = direct_bm25(conn, bodies, "printer office")
    with Session(engine) as session:
        hits = hybrid_search(session, Ticket.embedding, "printer office", k=3, vector_weight=0.0)
    assert [hit.row.id for hit in hits] == sorted(expected, key=lambda key: -expected[key])[:3]
