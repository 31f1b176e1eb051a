"""hybrid_search(): full-text and vector legs fused in one statement (RRF here, by hand).

The fixture writes the vectors by hand (4 dimensions), so both legs' ranks are known:

====  ================================  ================  ===========  =========
 id   body                              vector            vector rank  text rank
====  ================================  ================  ===========  =========
 1    solar panel installation guide    [1, 0, 0, 0]      1            2
 2    wind turbine maintenance          [0.9, 0.3, 0, 0]  2            -
 3    solar panel solar panel           [0.6, 0.8, 0, 0]  4            1
 4    battery storage                   [0.8, 0, 0.6, 0]  3            -
 5    panel discussion on energy        [0, 1, 0, 0]      5            3
 6    hydro power                       [-1, 0, 0, 0]     6            -
====  ================================  ================  ===========  =========

for the query text "solar panel" and the query vector [1, 0, 0, 0] (cosine distance; the text
leg matches any of the query's words, and row 3, with both words twice, ranks above row 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Embedding
from embeddb.database import create_engine, sqlalchemy_url
from embeddb.query._hybrid import BM25, ahybrid_search, explain_hybrid, hybrid_search

from .searching import captured_statements, module_database

QUERY = [1.0, 0.0, 0.0, 0.0]
ROWS = [
    (1, "solar panel installation guide", [1, 0, 0, 0]),
    (2, "wind turbine maintenance", [0.9, 0.3, 0, 0]),
    (3, "solar panel solar panel", [0.6, 0.8, 0, 0]),
    (4, "battery storage", [0.8, 0, 0.6, 0]),
    (5, "panel discussion on energy", [0, 1, 0, 0]),
    (6, "hydro power", [-1, 0, 0, 0]),
]


def rrf(*ranks: int, k: int = 60) -> float:
    return sum(1 / (k + rank) for rank in ranks)


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    embedding = Embedding("{body}", model="embeddb-testing/hash-4", fulltext=True)


@pytest.fixture(scope="module")
def db(server_url: str, template_url: str) -> Iterator[sa.Engine]:
    with module_database(server_url) as url:
        engine = create_engine(url, poolclass=sa.pool.NullPool)
        Base.metadata.create_all(engine)
        with engine.begin() as conn:  # vectors written directly: the worker is not involved
            conn.execute(sa.insert(Doc), [{"id": i, "body": body, "embedding": vector}
                                          for i, body, vector in ROWS])
            # the tsvectors as the worker writes them with the vectors
            conn.execute(sa.text("UPDATE docs SET embedding_fulltext"
                                 " = embeddb.fulltext_vector('english', embeddb.render_1(docs))"))
        yield engine
        engine.dispose()


def fused(hits: Any) -> list[tuple[int, int | None, int | None]]:
    return [(hit.row.id, hit.vector_rank, hit.text_rank) for hit in hits]


def test_fusion_matches_the_hand_computed_ranks(db: sa.Engine) -> None:
    with Session(db) as session:
        hits = hybrid_search(session, Doc.embedding, "solar panel", fusion="rrf", k=6, vector=QUERY)
    # row 1 is 1st and 2nd: 1/61 + 1/62 beats row 3, 4th and 1st: 1/64 + 1/61
    assert fused(hits) == [(1, 1, 2), (3, 4, 1), (5, 5, 3), (2, 2, None), (4, 3, None),
                           (6, 6, None)]
    expected = [rrf(1, 2), rrf(4, 1), rrf(5, 3), rrf(2), rrf(3), rrf(6)]
    assert [hit.score for hit in hits] == pytest.approx(expected, abs=1e-9)


def test_weights_move_the_order_toward_one_leg(db: sa.Engine) -> None:
    with Session(db) as session:
        vector_only = hybrid_search(session, Doc.embedding, "solar panel",
                                    fusion="rrf", k=6, vector=QUERY,
                                    text_weight=0.0)
        text_only = hybrid_search(session, Doc.embedding, "solar panel",
                                  fusion="rrf", k=3, vector=QUERY,
                                  vector_weight=0.0)
        leaning = hybrid_search(session, Doc.embedding, "solar panel",
                                fusion="rrf", k=2, vector=QUERY,
                                text_weight=2.0, rrf_k=1)
    assert [hit.row.id for hit in vector_only] == [1, 2, 4, 3, 5, 6]
    assert [hit.row.id for hit in text_only] == [3, 1, 5]
    # rrf_k=1: row 3 gets 1/5 + 2/2, row 1 gets 1/2 + 2/3
    assert [hit.row.id for hit in leaning] == [3, 1]
    assert leaning[0].score == pytest.approx(1 / 5 + 2 / 2)


def test_a_connection_gets_each_hit_as_a_row_of_the_mapped_columns(db: sa.Engine) -> None:
    with db.connect() as conn:
        hits = hybrid_search(conn, Doc.embedding, "solar panel", fusion="rrf", k=6, vector=QUERY)
    assert all(isinstance(hit.row, sa.Row) for hit in hits)
    assert [(hit.row.id, hit.row.body) for hit in hits][:2] == [
        (1, "solar panel installation guide"), (3, "solar panel solar panel")]


def test_the_filter_applies_inside_both_legs(db: sa.Engine) -> None:
    with Session(db) as session:
        hits = hybrid_search(session, Doc.embedding, "solar panel", fusion="rrf", k=5, vector=QUERY,
                             where=Doc.id != 1)
    # without row 1 every rank below it moves up, in both legs
    assert fused(hits) == [(3, 3, 1), (5, 4, 2), (2, 1, None), (4, 2, None), (6, 5, None)]
    assert [hit.score for hit in hits] == pytest.approx(
        [rrf(3, 1), rrf(4, 2), rrf(1), rrf(2), rrf(5)], abs=1e-9)


def test_both_legs_and_the_fusion_are_one_statement(db: sa.Engine) -> None:
    with Session(db) as session:
        hybrid_search(session, Doc.embedding, "solar panel",
                      fusion="rrf", k=3, vector=QUERY, plan="exact")
        with captured_statements(db) as statements:
            hits = hybrid_search(session, Doc.embedding, "solar panel",
                                 fusion="rrf", k=3, vector=QUERY,
                                 plan="exact")
    assert len(hits) == 3 and hits.plan == "exact"
    assert len(statements) == 1
    assert "docs_embedding_postings" in statements[0] and "<=>" in statements[0]


def test_match_all_and_the_template_text(db: sa.Engine) -> None:
    with Session(db) as session:
        every_word = hybrid_search(session, Doc.embedding, "solar guide",
                                   fusion="rrf", k=6, vector=QUERY,
                                   match="all")
        columns = hybrid_search(session, Doc.embedding, "turbine",
                                fusion="rrf", k=1, vector=[0, 0, 0, 1],
                                vector_weight=0.0, fulltext=[Doc.body])
    assert [hit.text_rank for hit in every_word if hit.text_rank] == [1]
    assert every_word[0].row.id == 1
    assert columns[0].row.id == 2 and columns[0].text_rank == 1


def test_index_plan_and_async(db: sa.Engine) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def run() -> Any:
        engine = create_async_engine(sqlalchemy_url(db.url))
        try:
            async with AsyncSession(engine) as session:
                return await ahybrid_search(session, Doc.embedding, "solar panel",
                                            fusion="rrf", k=6,
                                            vector=QUERY, plan="index")
        finally:
            await engine.dispose()

    hits = asyncio.run(run())
    assert hits.plan in ("index", "index+exact") and [hit.row.id for hit in hits][:3] == [1, 3, 5]


def test_async_twin_takes_score_fusion_and_bm25_parameters(db: sa.Engine) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    options: dict[str, Any] = {"k": 6, "vector": QUERY, "fusion": "score",
                               "vector_weight": 0.3, "text_weight": 0.7,
                               "bm25": BM25(k1=2.0, b=0.3), "candidates": 6}

    async def run() -> Any:
        engine = create_async_engine(sqlalchemy_url(db.url))
        try:
            async with AsyncSession(engine) as session:
                return await ahybrid_search(session, Doc.embedding, "solar panel", **options)
        finally:
            await engine.dispose()

    with Session(db) as session:
        expected = hybrid_search(session, Doc.embedding, "solar panel", **options)
        default_bm25 = hybrid_search(session, Doc.embedding, "solar panel",
                                     **{**options, "bm25": BM25()})
    hits = asyncio.run(run())
    assert fused(hits) == fused(expected)
    assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in expected])
    # score fusion: the best text row gets 0.7, the best vector row 0.3 (each leg scaled 0..1)
    assert hits[0].row.id == 3 and hits[0].score == pytest.approx(0.7 + 0.3 * _scaled(3))
    assert [hit.score for hit in default_bm25] != pytest.approx([hit.score for hit in hits])


def _scaled(row: int) -> float:
    """Row ``row``'s min-max scaled similarity to QUERY over the six rows (cosine)."""
    import math

    def similarity(vector: list[float]) -> float:
        return sum(a * b for a, b in zip(vector, QUERY, strict=True)) / math.hypot(*vector)

    similarities = {i: similarity([float(x) for x in v]) for i, _, v in ROWS}
    low, high = min(similarities.values()), max(similarities.values())
    return (similarities[row] - low) / (high - low)


def test_explain_hybrid_shows_both_legs(db: sa.Engine) -> None:
    with Session(db) as session:
        explained = explain_hybrid(session, Doc.embedding, "solar panel", k=3, vector=QUERY,
                                   where=Doc.id != 6, plan="exact", analyze=True)
    text = str(explained)
    assert explained.plan == "hybrid (vector leg: exact)"
    assert "<=>" in explained.sql and "docs_embedding_postings" in explained.sql
    # the text leg's postings and the vector leg's candidates, each in PostgreSQL's plan
    assert "on docs_embedding_postings" in text and "vector_hits" in text
    assert "actual time" in text  # analyze ran it
    assert "docs.id <> 6" in text or "(id <> 6)" in text


def test_the_three_twins_take_one_list_of_options_and_refuse_others(db: sa.Engine) -> None:
    with Session(db) as session, pytest.raises(TypeError, match="vector_wieght"):
        hybrid_search(session, Doc.embedding, "solar panel", vector=QUERY,
                      **{"vector_wieght": 0.5})  # type: ignore[typeddict-unknown-key]
    with Session(db) as session, pytest.raises(TypeError, match="candidate"):
        explain_hybrid(session, Doc.embedding, "solar panel", vector=QUERY,
                       **{"candidate": 5})  # type: ignore[typeddict-unknown-key]
