"""PartialIndex: declared with the model, created by create_all, walked by search().

4,000 tickets embedded by the hash test model; 15% are ``hot``. A filter on them matches 600
rows, which the planner answers exactly (below EXACT_ROWS_FLOOR) unless a partial index covers
it; with the declared one it walks that index, returns k rows and meets the recall target.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from embeddb import PartialIndex, calibration, catalog, explain, search
from embeddb.database import create_engine
from embeddb.embedders import load_embedder
from embeddb.query import _planner as planner

from .models import HASH_MODEL, drain, ticket_model

ROWS = 4000
VOCABULARY = [f"w{i}" for i in range(600)]


def salad(rng: random.Random) -> str:
    return " ".join(rng.choices(VOCABULARY, k=6))


@pytest.fixture(scope="module")
def tickets(module_url: str) -> Any:
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}")
    PartialIndex("tickets_hot_hnsw", Ticket.embedding, Ticket.status.in_(["hot"]))
    engine = create_engine(module_url, poolclass=sa.pool.NullPool)
    Base.metadata.create_all(engine)
    rng = random.Random(5)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "body": salad(rng), "status": "hot" if i % 20 < 3 else "cold"}
            for i in range(1, ROWS + 1)])
    assert drain(module_url).embedded == ROWS
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE tickets"))
        entry = catalog.get_entry(conn, "public", "tickets", "embedding")
        assert entry is not None
        calibration.calibrate(conn, entry, samples=50)
    planner.forget_calibrations(engine)
    engine.dispose()
    return Ticket


def test_create_all_makes_the_partial_index_with_the_columns_opclass(
        tickets: Any, db: sa.Engine) -> None:
    with db.connect() as conn:
        definition = conn.execute(sa.text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'tickets_hot_hnsw'")).scalar_one()
    assert "USING hnsw (embedding vector_cosine_ops)" in definition
    assert "m='16'" in definition.replace(" ", "") and "WHERE" in definition
    assert "'hot'" in definition


def test_the_planner_walks_it_for_its_filter_and_meets_the_target(
        tickets: Any, db: sa.Engine) -> None:
    rng = random.Random(9)
    vectors = [list(map(float, v)) for v in
               load_embedder(HASH_MODEL).embed_documents([salad(rng) for _ in range(40)])]
    hot, cold = tickets.status == "hot", tickets.status == "cold"
    recalls = []
    with Session(db) as session:
        # the same 600 rows without a covering index: exact; 'cold': the full index
        assert explain(session, tickets.embedding, vectors[0], where=tickets.id <= 600
                       ).plan == "exact"
        full = explain(session, tickets.embedding, vectors[0], where=cold, plan="index")
        assert "tickets_hot_hnsw" not in full.postgres_plan
        plan = explain(session, tickets.embedding, vectors[0], where=hot)
        assert plan.plan == "index" and "tickets_hot_hnsw" in plan.postgres_plan
        for vector in vectors:
            hits = search(session, tickets.embedding, vector, k=10, where=hot, recall=0.95)
            assert hits.plan == "index" and len(hits) == 10
            assert all(hit.row.status == "hot" for hit in hits)
            exact = search(session, tickets.embedding, vector, k=10, where=hot, plan="exact")
            floor = list(exact)[-1].similarity - 1e-6
            recalls.append(sum(hit.similarity >= floor for hit in hits) / 10)
    assert float(np.mean(recalls)) >= 0.95, recalls
