"""more_like_this() and near_duplicates(): through the index, checked against brute force.

The corpus is 400 tickets of five words each, drawn at random from a 40-word vocabulary, plus
planted near-copies whose pairs are known: a shuffled copy (the same words: similarity 1) and
copies with one word swapped (about 0.8 with the bag-of-words testing model).
"""

from __future__ import annotations

import asyncio
import random
from itertools import combinations
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from embeddb.database import sqlalchemy_url
from embeddb.embedders import load_embedder
from embeddb.query._neighbours import (
    DuplicatePair,
    amore_like_this,
    anear_duplicates,
    duplicate_groups,
    more_like_this,
    near_duplicates,
)
from embeddb.query._search import search

from .models import drain, ticket_model
from .searching import captured_statements

MODEL = "embeddb-testing/hash-64"
VOCABULARY = [f"word{i}" for i in range(40)]
THRESHOLD = 0.75


def corpus() -> tuple[dict[int, str], set[tuple[int, int]]]:
    """Texts by id, and the planted duplicate pairs (lower id first)."""
    rng = random.Random(7)
    texts = {i: " ".join(rng.sample(VOCABULARY, 5)) for i in range(1, 401)}
    planted: set[tuple[int, int]] = set()
    next_id = 1000
    for original in range(1, 400, 40):  # 10 originals, each with two near-copies
        words = texts[original].split()
        shuffled = words[::-1]
        swapped = [*words[:-1], next(w for w in VOCABULARY if w not in words)]
        for copy in (shuffled, swapped):
            texts[next_id] = " ".join(copy)
            planted.add((original, next_id))
            next_id += 1
        planted.add((next_id - 2, next_id - 1))
    return texts, planted


@pytest.fixture(scope="module")
def tickets(db: sa.Engine, module_url: str) -> Any:
    Base, Ticket = ticket_model(model=MODEL, template="{body}")
    Base.metadata.create_all(db)
    texts, _ = corpus()
    with db.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "subject": None, "body": text, "status": "open" if i % 3 else "closed"}
            for i, text in texts.items()])
    drain(module_url)
    with db.begin() as conn:
        conn.execute(sa.text("ANALYZE tickets"))
    return Ticket


def brute_force_pairs(ids: list[int], threshold: float) -> set[tuple[int, int]]:
    texts, _ = corpus()
    vectors = load_embedder(MODEL).embed_documents([texts[i] for i in ids])
    similarity = vectors @ vectors.T
    return {(min(ids[a], ids[b]), max(ids[a], ids[b]))
            for a, b in combinations(range(len(ids)), 2) if similarity[a, b] >= threshold - 1e-6}


def test_near_duplicates_finds_exactly_the_pairs_brute_force_finds(
        db: sa.Engine, tickets: Any) -> None:
    texts, planted = corpus()
    with Session(db) as session:
        pairs = near_duplicates(session, tickets.embedding, min_similarity=THRESHOLD)
        scans = session.execute(sa.text(
            "SELECT pg_stat_get_xact_numscans('tickets_embedding_hnsw'::regclass)")).scalar()
    found = {(pair.first, pair.second) for pair in pairs}
    truth = brute_force_pairs(sorted(texts), THRESHOLD)
    assert found == truth
    assert len(planted & found) >= 0.8 * len(planted)  # a hash collision can cost a swap copy
    assert scans and scans >= len(texts)  # one index scan per row: no all-pairs scan
    assert [p.similarity for p in pairs] == sorted((p.similarity for p in pairs), reverse=True)
    assert all(pair.first < pair.second for pair in pairs)


def test_near_duplicates_within_a_filter(db: sa.Engine, tickets: Any) -> None:
    texts, _ = corpus()
    with Session(db) as session:
        closed = near_duplicates(session, tickets.embedding, min_similarity=THRESHOLD,
                                 where=tickets.status == "closed")
    assert {(p.first, p.second) for p in closed} == brute_force_pairs(
        [i for i in sorted(texts) if i % 3 == 0], THRESHOLD)


def test_groups_join_pairs_into_components(db: sa.Engine, tickets: Any) -> None:
    _, planted = corpus()
    with Session(db) as session:
        groups = duplicate_groups(near_duplicates(session, tickets.embedding, min_similarity=0.99))
    # at 0.99 only the shuffled copies remain: each pairs with its original
    assert sorted(groups) == sorted([a, b] for a, b in planted if b - a > 1 and b % 2 == 0)
    assert duplicate_groups([DuplicatePair(1, 2, 0.9), DuplicatePair(3, 2, 0.9),
                             DuplicatePair(7, 8, 0.95)]) == [[1, 2, 3], [7, 8]]


def test_an_unreachable_threshold_is_empty_without_scanning(db: sa.Engine, tickets: Any) -> None:
    with Session(db) as session:
        assert near_duplicates(session, tickets.embedding, min_similarity=0.5, k=1)
        with captured_statements(db) as statements:
            assert near_duplicates(session, tickets.embedding, min_similarity=1.5, k=1) == []
    assert not [s for s in statements if "LATERAL" in s]


def test_more_like_this_is_the_nearest_other_rows(db: sa.Engine, tickets: Any) -> None:
    texts, _ = corpus()
    with Session(db) as session:
        original = session.get(tickets, 1)
        hits = more_like_this(session, tickets.embedding, original, k=5)
        by_key = more_like_this(session, tickets.embedding, 1, k=5, where=tickets.status == "open")
        query = load_embedder(MODEL).embed_documents([texts[1]])[0]
        exact = search(session, tickets.embedding, query, k=6, plan="exact")
    assert 1 not in [hit.row.id for hit in hits] and len(hits) == 5
    assert [hit.row.id for hit in hits][:2] == [1000, 1001]  # its planted copies first
    assert [hit.similarity for hit in hits] == pytest.approx(
        [hit.similarity for hit in exact if hit.row.id != 1][:5], abs=1e-5)
    assert all(hit.row.status == "open" and hit.row.id != 1 for hit in by_key)


def test_more_like_this_refuses_missing_and_unembedded_rows(db: sa.Engine, tickets: Any) -> None:
    with Session(db) as session:
        with pytest.raises(LookupError, match="no row with key 99999"):
            more_like_this(session, tickets.embedding, 99999)
        session.add(tickets(id=5000, body="not embedded yet", status="open"))
        session.flush()
        with pytest.raises(LookupError, match="has no embedding yet"):
            more_like_this(session, tickets.embedding, 5000)
        session.rollback()


def test_async_variants(module_url: str, tickets: Any) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def run() -> tuple[Any, Any]:
        engine = create_async_engine(sqlalchemy_url(module_url))
        try:
            async with AsyncSession(engine) as session:
                like = await amore_like_this(session, tickets.embedding, 1, k=2)
                pairs = await anear_duplicates(session, tickets.embedding, min_similarity=0.99)
                return like, pairs
        finally:
            await engine.dispose()

    like, pairs = asyncio.run(run())
    assert [hit.row.id for hit in like] == [1000, 1001]
    assert pairs and all(pair.similarity >= 0.99 for pair in pairs)
    assert np.isfinite([pair.similarity for pair in pairs]).all()
