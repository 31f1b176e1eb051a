"""The plan choice and its settings, without a database."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding, nearest
from embeddb.calibration import Calibration, Point
from embeddb.errors import QueryError
from embeddb.query import _planner as planner
from embeddb.query._neighbours import DuplicatePair, duplicate_groups
from embeddb.query._planner import Choice
from embeddb.query._target import distance_bound, resolve


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
    embedding = Embedding("{body}", model="embeddb-testing/hash-4")
    short = Embedding("{body}", model="embeddb-testing/hash-4", vector_type="halfvec",
                      distance="l2")


@pytest.mark.parametrize(("rows", "table_rows", "k", "exact"), [
    (40, 117_000, 10, True),           # 0.04%: a handful of rows, scanned exactly
    (1_200, 117_000, 10, True),        # 1%: ~1,200 row visits beat ~1,000 index visits
    (11_500, 117_000, 10, True),       # 10%: ~200 index visits at 50x the cost of a row
    (20_000, 117_000, 10, False),      # 17%: the index finds 10 within ~60 visits
    (80_000, 117_000, 10, False),
    (30_000, 10_000_000, 10, True),    # 0.3% of a big table: still cheaper exactly
    (300_000, 10_000_000, 10, False),
    (5_000, 117_000, 100, True),       # a larger k makes the index walk longer
])
def test_exact_for_few_matching_rows_the_index_otherwise(
        rows: float, table_rows: float, k: int, exact: bool) -> None:
    assert planner.prefers_exact(rows, table_rows, k) is exact


def test_index_settings_come_from_k_and_the_pgvector_version() -> None:
    index = Choice("index", 50_000, 100_000)
    assert planner.settings(Choice("exact"), 10, (0, 8, 1)) == {}
    assert planner.settings(index, 10, (0, 8, 1)) == {
        "enable_sort": "off", "hnsw.iterative_scan": "relaxed_order", "hnsw.ef_search": "64"}
    assert planner.settings(index, 60, (0, 8, 1))["hnsw.ef_search"] == "240"
    assert planner.settings(index, 500, (0, 8, 1))["hnsw.ef_search"] == "1000"
    older = planner.settings(index, 10, (0, 7, 4))
    assert "hnsw.iterative_scan" not in older and older["hnsw.ef_search"] == "128"


def test_the_two_plans_differ_only_in_what_the_index_can_serve() -> None:
    def sql(exact: bool) -> str:
        stmt = nearest(Note.embedding, [1, 0, 0, 0], k=3, exact=exact)
        return str(stmt.compile(dialect=postgresql.dialect()))

    assert "ORDER BY notes.embedding <=> %(query_vector)s " in sql(False)
    assert "+ 0" not in sql(False)
    assert "ORDER BY (notes.embedding <=> %(query_vector)s) + 0" in sql(True)
    halfvec = str(nearest(Note.short, [1, 0, 0, 0]).compile(dialect=postgresql.dialect()))
    assert "ORDER BY notes.short <-> %(query_vector)s" in halfvec
    assert isinstance(Note.__table__.c.short.type, type(resolve(Note.short).column.type))
    assert resolve(Note.short).vector_type == "halfvec"


def test_a_forced_index_plan_needs_an_index() -> None:
    class Plain(Base):
        __tablename__ = "plain"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model="embeddb-testing/hash-4", index=False)

    rows = planner.Filter(resolve(Plain.embedding), Plain.id > 5)
    assert planner.choose(None, rows, 10, "auto").plan == "exact"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has no HNSW index"):
        planner.choose(None, rows, 10, "index")  # type: ignore[arg-type]


def test_filters_key_the_estimate_cache_by_structure_and_values() -> None:
    target = resolve(Note.embedding)
    first = planner.Filter(target, Note.body == "a").key()
    assert first == planner.Filter(target, Note.body == "a").key()
    assert first != planner.Filter(target, Note.body == "b").key()
    assert first != planner.Filter(target, Note.id == "a").key()
    assert planner.Filter(target, Note.body.in_(["a", "b"])).key() is not None


def test_thresholds_become_distance_bounds() -> None:
    assert distance_bound(resolve(Note.embedding), 0.8) == pytest.approx(0.2)
    assert distance_bound(resolve(Note.short), 0.5) == pytest.approx(1.0)  # 1 / (1 + d) >= 0.5
    assert distance_bound(resolve(Note.short), 0.0) is None


def test_duplicate_groups_are_connected_components() -> None:
    pairs = [DuplicatePair("b", "c", 0.9), DuplicatePair("a", "b", 0.95),
             DuplicatePair("x", "y", 0.99)]
    assert duplicate_groups(pairs) == [["a", "b", "c"], ["x", "y"]]
    assert duplicate_groups([]) == []


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        nearest(Note.embedding, [1, 0, 0, 0], k=0)


def _curve(exact_ms: float, *points: tuple[int, float, float], k: int = 10) -> Calibration:
    return Calibration(k, 100, exact_ms, tuple(Point(*p) for p in points), 10_000)


def test_the_smallest_ef_search_meeting_the_recall_is_chosen() -> None:
    curve = _curve(9.0, (10, 0.80, 0.5), (40, 0.95, 0.8), (100, 0.99, 1.5), (400, 0.999, 4.0))
    assert planner.calibrated_ef(curve, 0.9, 10) == 40
    assert planner.calibrated_ef(curve, 0.95, 10) == 40
    assert planner.calibrated_ef(curve, 0.99, 10) == 100
    assert planner.calibrated_ef(curve, 0.5, 10) == 10


def test_exact_when_no_point_meets_the_recall_or_exact_is_faster() -> None:
    curve = _curve(1.0, (10, 0.80, 0.5), (40, 0.95, 0.8), (100, 0.99, 1.5))
    assert planner.calibrated_ef(curve, 0.999, 10) is None  # never measured that high
    assert planner.calibrated_ef(curve, 0.99, 10) is None  # 1.5 ms against exact's 1.0
    assert planner.calibrated_ef(curve, 0.95, 10) == 40


def test_ef_search_scales_with_k_within_pgvector_limits() -> None:
    curve = _curve(50.0, (40, 0.95, 0.8), (100, 0.99, 1.5))
    assert planner.calibrated_ef(curve, 0.95, 20) == 80
    assert planner.calibrated_ef(curve, 0.99, 500) == 1000
    assert planner.calibrated_ef(curve, 0.95, 1) == 4


def test_recall_is_checked() -> None:
    assert planner.check_recall(None) == planner.DEFAULT_RECALL
    assert planner.check_recall(1) == 1.0
    for bad in (0, -1, 1.01, float("nan"), "0.9", True, None.__class__):
        with pytest.raises(QueryError, match="recall must be"):
            planner.check_recall(bad)  # type: ignore[arg-type]


def test_the_index_plan_runs_with_the_calibrated_ef_search() -> None:
    values = planner.settings(Choice("index", ef_search=24), 10, (0, 8, 0))
    assert values["hnsw.ef_search"] == "24"
    assert planner.settings(Choice("index"), 10, (0, 8, 0))["hnsw.ef_search"] == "64"
