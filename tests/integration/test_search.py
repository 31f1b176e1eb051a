"""search(): k rows whenever k rows match, exact-scan recall, scoped settings, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from embeddb import nearest, search
from embeddb.models import load_embedder
from embeddb.search import asearch

from .models import HASH_MODEL, MINILM, drain, ticket_model

ROWS = 4000


@pytest.fixture
def tickets(engine: sa.Engine, database_url: str) -> Any:
    """4,000 embedded tickets: 12 'rare', 400 'common' (10%), the rest 'open'."""
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    words = ["printer", "login", "invoice", "crash", "refund", "network", "password", "upload"]
    rows = [{"id": i, "subject": f"{words[i % 8]} {words[(i * 7) % 8]} issue {i % 97}",
             "body": f"{words[(i * 3) % 8]} problem number {i}",
             "status": "rare" if i % 333 == 0 else "common" if i % 10 == 1 else "open"}
            for i in range(1, ROWS + 1)]
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), rows)
    drain(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE tickets"))
    return Ticket


def ids(hits: Any) -> list[int]:
    return [ticket.id for ticket, _ in hits]


def test_selective_filter_returns_k_rows_where_the_naive_query_does_not(
        engine: sa.Engine, tickets: Any) -> None:
    query = load_embedder(HASH_MODEL).embed_query("printer login crash")
    rare = tickets.id % 333 == 0  # 12 rows; no index serves this filter
    with Session(engine) as session:
        # what every library does: WHERE ... ORDER BY distance LIMIT k through the HNSW index
        # (seq scans are discouraged so this small table plans like a large one)
        session.execute(sa.text("SET enable_seqscan = off"))
        naive = session.execute(nearest(tickets.embedding, query, k=10, where=rare)).all()
        session.execute(sa.text("RESET enable_seqscan"))
        assert len(naive) < 10
        hits = search(session, tickets.embedding, query, k=10, where=rare)
        assert len(hits) == 10 and hits.plan == "exact"
        assert all(ticket.id % 333 == 0 for ticket, _ in hits)
        exact = search(session, tickets.embedding, query, k=10, where=rare, plan="exact")
        assert ids(hits) == ids(exact)
        similarities = [s for _, s in hits]
        assert similarities == sorted(similarities, reverse=True)


def test_broad_filter_uses_the_index_with_high_recall(engine: sa.Engine, tickets: Any) -> None:
    embedder = load_embedder(HASH_MODEL)
    common = tickets.status == "common"
    recalls = []
    with Session(engine) as session:
        for text in ["printer crash", "refund invoice", "network password", "upload login issue"]:
            query = embedder.embed_query(text)
            hits = search(session, tickets.embedding, query, k=10, where=common, plan="index")
            exact = search(session, tickets.embedding, query, k=10, where=common, plan="exact")
            assert len(hits) == 10 and hits.plan in ("index", "index+exact")
            exact_floor = min(s for _, s in exact)
            recalls.append(sum(s >= exact_floor - 1e-6 for _, s in hits) / 10)
    assert sum(recalls) / len(recalls) >= 0.9


def test_forced_index_plan_falls_back_to_exact_when_short(engine: sa.Engine, tickets: Any) -> None:
    query = load_embedder(HASH_MODEL).embed_query("printer")
    with Session(engine) as session:
        hits = search(session, tickets.embedding, query, k=20,
                      where=tickets.status == "rare", plan="index")
        assert len(hits) == 12  # every matching row, since fewer than k match


def test_settings_do_not_leak_into_the_callers_transaction(engine: sa.Engine, tickets: Any) -> None:
    with Session(engine) as session:
        before = session.execute(sa.text("SELECT current_setting('enable_indexscan')")).scalar()
        search(session, tickets.embedding, "printer", k=5, where=tickets.status == "rare")
        search(session, tickets.embedding, "printer", k=5, plan="index")
        assert session.execute(sa.text("SHOW enable_indexscan")).scalar() == before == "on"
        assert session.execute(sa.text("SHOW hnsw.iterative_scan")).scalar() == "off"
        assert session.execute(sa.text("SHOW hnsw.ef_search")).scalar() == "40"


def test_unreachable_threshold_returns_empty(engine: sa.Engine, tickets: Any) -> None:
    with Session(engine) as session:
        hits = search(session, tickets.embedding, "printer", k=10, min_similarity=1.01)
        assert list(hits) == []


def test_nearest_composes_like_any_select(engine: sa.Engine, tickets: Any) -> None:
    query = load_embedder(HASH_MODEL).embed_query("refund invoice")
    stmt = nearest(tickets.embedding, query, k=5).add_columns(tickets.subject.label("s"))
    with Session(engine) as session:
        rows = session.execute(stmt.where(tickets.id < 1000)).all()
    assert len(rows) == 5 and all(row[0].id < 1000 and row.s == row[0].subject for row in rows)


def test_a_query_vector_of_the_wrong_size_is_refused(engine: sa.Engine, tickets: Any) -> None:
    with Session(engine) as session, pytest.raises(ValueError, match="3 dimensions, the column 32"):
        search(session, tickets.embedding, [0.1, 0.2, 0.3])


def test_async_session(database_url: str, tickets: Any) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from embeddb.database import sqlalchemy_url

    async def run() -> Any:
        engine = create_async_engine(sqlalchemy_url(database_url))
        try:
            async with AsyncSession(engine) as session:
                return await asearch(session, tickets.embedding, "printer", k=7,
                                     where=tickets.status == "common")
        finally:
            await engine.dispose()

    hits = asyncio.run(run())
    assert len(hits) == 7 and all(t.status == "common" for t, _ in hits)


def test_real_model_finds_the_ticket_by_meaning(engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=MINILM)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([
            Ticket(id=1, subject="Locked out", body="I can't log in to my account", status="open"),
            Ticket(id=2, subject="Invoice", body="Please resend last month's bill", status="open"),
            Ticket(id=3, subject="Crash", body="The app closes when I open a photo",
                   status="closed"),
            Ticket(id=4, subject="Refund", body="I want my money back", status="closed"),
        ])
        session.commit()
    drain(database_url)
    with Session(engine) as session:
        hits = search(session, Ticket.embedding, "how do I reset my password", k=2)
        assert ids(hits) [0] == 1 and hits.plan == "index"
        closed = search(session, Ticket.embedding, "billing question", k=3,
                        where=Ticket.status == "closed")
        assert [t.id for t, _ in closed] == [4, 3]
        assert 0 < closed[0].similarity <= 1
