"""The plan search() chooses is the plan that runs, even through prepared statements.

psycopg prepares a statement on the server once it has run ``prepare_threshold`` times, and
PostgreSQL may then reuse a generic plan, made once, whatever planner settings change later.
These tests run the same search many times on one connection with ``prepare_threshold=1``,
alternating a selective filter (exact plan) and a broad one (index plan), and read the plan of
every execution from ``auto_explain``, which reports it to the client as a NOTICE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from embeddb import nearest, search
from embeddb.database import create_engine
from embeddb.embedders import load_embedder

from .models import HASH_MODEL, drain, ticket_model
from .searching import ids, recall

ROUNDS = 12


@pytest.fixture(scope="module")
def tickets(module_url: str) -> Any:
    """3,000 tickets: 15 'rare' (exact plan), the rest 'open' (index plan)."""
    Base, Ticket = ticket_model(model=HASH_MODEL, template="{body}")
    engine = create_engine(module_url, poolclass=sa.pool.NullPool)
    Base.metadata.create_all(engine)
    words = ["printer", "login", "invoice", "crash", "refund", "network", "password", "upload"]
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "body": f"{words[i % 8]} {words[i * 5 % 8]} {words[i * 3 % 7]} {i % 13}",
             "status": "rare" if i % 200 == 0 else "open"} for i in range(1, 3001)])
    drain(module_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE tickets"))
    engine.dispose()
    return Ticket


@pytest.fixture
def prepared(module_url: str) -> Iterator[sa.Engine]:
    """An engine whose statements psycopg prepares on their second execution."""
    engine = create_engine(module_url, poolclass=sa.pool.StaticPool,
                           connect_args={"prepare_threshold": 1})
    yield engine
    engine.dispose()


def explained(session: Session) -> list[str]:
    """Turn on auto_explain for this session; returns the list its plans are appended to."""
    plans: list[str] = []
    driver = session.connection().connection.driver_connection
    assert driver is not None
    driver.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    try:
        session.execute(sa.text("LOAD 'auto_explain'"))
    except sa.exc.DBAPIError:
        pytest.skip("auto_explain cannot be loaded here (it needs a superuser)")
    session.execute(sa.text("SET auto_explain.log_min_duration = 0"))
    session.execute(sa.text("SET auto_explain.log_level = notice"))
    return plans


def searches(plans: list[str]) -> list[tuple[str, str]]:
    """(statement, plan) of each search statement auto_explain reported, in order."""
    found = []
    for message in plans:
        _, _, rest = message.partition("Query Text: ")
        top = re.search(r"^Limit  \(cost=", rest, re.MULTILINE)  # a search's plan starts here
        if top and "AS similarity" in rest[:top.start()] and not rest.startswith("EXPLAIN"):
            found.append((rest[:top.start()], rest[top.start():]))
    return found


@pytest.mark.parametrize("plan_cache_mode", ["auto", "force_generic_plan"])
def test_alternating_plans_on_one_prepared_connection(
        prepared: sa.Engine, tickets: Any, plan_cache_mode: str) -> None:
    query = load_embedder(HASH_MODEL).embed_query("printer crash refund")
    filters = {"exact": tickets.status == "rare", "index": tickets.status == "open"}
    with Session(prepared) as session:
        truth = {name: search(session, tickets.embedding, query, k=10, where=where, plan="exact")
                 for name, where in filters.items()}
        plans = explained(session)
        # "force_generic_plan": the server reuses one plan per statement, made once
        session.execute(sa.text(f"SET plan_cache_mode = {plan_cache_mode}"))
        for round_ in range(ROUNDS):
            name = ["exact", "index"][round_ % 2]
            hits = search(session, tickets.embedding, query, k=10, where=filters[name])
            assert hits.plan == name and len(hits) == 10
            if name == "exact":
                assert ids(hits) == ids(truth[name])
            else:
                assert recall(hits, truth[name]) >= 0.9
        session.execute(sa.text("SELECT 1"))  # auto_explain reports a portal when it closes
        prepared_plans = session.execute(sa.text(
            "SELECT generic_plans + custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE '%AS similarity%'")).scalars().all()
    ran = searches(plans)[-ROUNDS:]  # (a statement before may report as its portal closes)
    assert len(ran) == ROUNDS
    for round_, (statement, plan) in enumerate(ran):
        if round_ % 2 == 0:  # exact: no HNSW anywhere in the plan
            assert "hnsw" not in plan and ") + 0" in statement
        else:  # index: the HNSW index, and no sort that could stand in for it
            assert "Index Scan using tickets_embedding_hnsw" in plan and "Sort" not in plan
    assert sum(prepared_plans) >= ROUNDS - 2  # they really ran as prepared statements


def test_a_generic_plan_ignores_later_settings(prepared: sa.Engine, tickets: Any) -> None:
    """Why the exact plan is in the SQL itself: with the same text, a cached plan made with
    the index enabled keeps using it after ``SET enable_indexscan = off``."""
    query = load_embedder(HASH_MODEL).embed_query("printer crash refund")
    stmt = nearest(tickets.embedding, query, k=10, where=tickets.id % 200 == 0)  # no B-tree
    with Session(prepared) as session:
        plans = explained(session)
        session.execute(sa.text("SET plan_cache_mode = force_generic_plan"))
        session.execute(sa.text("SET enable_seqscan = off"))  # plan like a large table
        session.execute(stmt).all()
        session.execute(stmt).all()  # prepared now, with a generic plan
        session.execute(sa.text("SET enable_indexscan = off"))
        short = session.execute(stmt).all()
        session.execute(sa.text("SELECT 1"))
    ran = searches(plans)
    assert "tickets_embedding_hnsw" in ran[-1][1]  # still the index, though it is "off"
    assert len(short) < 10  # and so still short
