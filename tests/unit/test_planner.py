"""The plan choice and its settings, without a database."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding, calibration, nearest
from embeddb.calibration import Calibration, FilteredPoint, Point
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
    curve = _curve(9.0, (10, 0.80, 0.5), (40, 0.96, 0.8), (100, 0.995, 1.5), (400, 0.9995, 4.0))
    assert planner.calibrated_ef(curve, 0.9, 10) == 40
    assert planner.calibrated_ef(curve, 0.95, 10) == 40
    assert planner.calibrated_ef(curve, 0.99, 10) == 100
    assert planner.calibrated_ef(curve, 0.5, 10) == 10


def test_exact_when_no_point_meets_the_recall_or_exact_is_faster() -> None:
    curve = _curve(1.0, (10, 0.80, 0.5), (40, 0.96, 0.8), (100, 0.995, 1.5))
    assert planner.calibrated_ef(curve, 0.999, 10) is None  # never measured that high
    assert planner.calibrated_ef(curve, 0.99, 10) is None  # 1.5 ms against exact's 1.0
    assert planner.calibrated_ef(curve, 0.95, 10) == 40


def test_ef_search_scales_with_k_within_pgvector_limits() -> None:
    curve = _curve(50.0, (40, 0.96, 0.8), (100, 0.995, 1.5))
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


def _filtered(exact_ms: float, points: list[tuple[Any, ...]],
              filtered: list[tuple[Any, ...]]) -> Calibration:
    return Calibration(10, 100, exact_ms, tuple(Point(*p) for p in points), 117_000,
                       tuple(FilteredPoint(*f) for f in filtered))


# WordNet-like: exact scan 100 ms; the walk at ef 250 takes 8 ms unfiltered, and far longer
# under a filter keeping a cluster of rows away from the query
_WORDNET = _filtered(100.0, [(160, 0.93, 6.0), (250, 0.97, 8.0), (640, 0.995, 18.0)], [
    (0.5, 250, 0.97, 12.0), (0.25, 250, 0.96, 20.0), (0.12, 250, 0.95, 35.0),
    (0.06, 250, 0.93, 60.0),
    (0.5, 640, 0.995, 25.0), (0.25, 640, 0.985, 40.0), (0.12, 640, 0.98, 60.0),
    (0.06, 640, 0.97, 90.0),
])


@pytest.mark.parametrize(("selectivity", "ef"), [
    (0.7, 250),    # most rows kept: the walk costs about what it costs unfiltered
    (0.4, 250),    # ~15 ms interpolated against 40 * 1.5 ms to scan 40% exactly
    (0.15, None),  # the band: ~30 ms walking against 15 * 1.5 ms scanning
    (0.03, None),  # below the lowest measured share the walk only grows
])
def test_under_a_filter_the_measured_walk_is_weighed_against_scanning_its_rows(
        selectivity: float, ef: int | None) -> None:
    assert planner.filtered_ef(_WORDNET, 0.95, 10, selectivity) == ef


def test_under_a_filter_a_recall_the_walk_misses_there_is_the_exact_scan() -> None:
    # unfiltered, ef 640 meets 0.99; at 50% too (0.995), at 25% it does not (0.985)
    assert planner.filtered_ef(_WORDNET, 0.99, 10, 0.8) == 640
    assert planner.filtered_ef(_WORDNET, 0.99, 10, 0.25) is None
    # 0.96 is met unfiltered by ef 250 but not at 12% (0.95) and not cheaply by 640: exact
    assert planner.filtered_ef(_WORDNET, 0.96, 10, 0.12) is None
    assert planner.filtered_ef(_WORDNET, 0.999, 10, 0.9) is None  # no point meets it at all


def test_under_a_filter_a_higher_ef_search_is_tried_when_the_lower_misses() -> None:
    curve = _filtered(1000.0, [(100, 0.95, 4.0), (400, 0.99, 9.0)], [
        (0.5, 100, 0.90, 6.0), (0.25, 100, 0.85, 8.0),
        (0.5, 400, 0.97, 12.0), (0.25, 400, 0.96, 16.0)])
    assert planner.filtered_ef(curve, 0.95, 10, 0.3) == 400  # 100 misses under the filter
    assert planner.filtered_ef(curve, 0.95, 20, 0.3) == 800  # scaled with k, like unfiltered


def test_a_larger_k_makes_the_filtered_walk_dearer_not_the_exact_scan() -> None:
    # 40% of the rows: 15 ms walking against 40 * 1.5 ms scanning at k=10; at k=60 the walk
    # is ~88 ms
    assert planner.filtered_ef(_WORDNET, 0.95, 10, 0.4) == 250
    assert planner.filtered_ef(_WORDNET, 0.95, 60, 0.4) is None


def test_filtered_points_are_read_back_and_described() -> None:
    row = SimpleNamespace(
        k=10, samples=50, exact_ms=100.0, table_rows=117_000.0,
        curve=[{"ef_search": 250, "recall": 0.97, "ms": 8.0}],
        filtered='[{"selectivity": 0.25, "ef_search": 250, "recall": 0.96, "ms": 20.0}]')
    measured = Calibration.from_row(row)
    assert measured.filtered == (FilteredPoint(0.25, 250, 0.96, 20.0),)
    assert "25% of rows, ef_search  250: recall 0.9600, 20.00 ms" in measured.describe()


def test_under_a_filter_the_walk_is_judged_by_its_tail() -> None:
    # at 15% the walk's mean (12 ms) beats scanning 15% (22 ms), its p95 (40 ms) does not
    points = [(250, 0.97, 8.0, 11.0)]
    walk = [(share, 250, 0.97, 12.0, p95) for share, p95 in ((0.5, 14.0), (0.25, 30.0),
                                                            (0.12, 45.0), (0.06, 60.0))]
    assert planner.filtered_ef(_filtered(100.0, points, walk), 0.95, 10, 0.15) is None
    means_only = [(share, ef, recall, ms) for share, ef, recall, ms, _ in walk]
    assert planner.filtered_ef(_filtered(100.0, [(250, 0.97, 8.0)], means_only),
                               0.95, 10, 0.15) == 250  # a calibration without tails: means
    # tail against tail: an exact scan whose own p95 is 300 ms takes 67 ms for 15%
    slow_exact = replace(_filtered(100.0, points, walk), exact_p95_ms=300.0)
    assert planner.filtered_ef(slow_exact, 0.95, 10, 0.15) == 250


def test_a_recall_measured_at_the_target_does_not_meet_it() -> None:
    # 100 queries * k=10: the standard error at 0.99 is 0.003; at exactly 0.99 real queries
    # miss as often as they meet it
    curve = _curve(50.0, (40, 0.990, 0.8), (64, 0.9935, 1.0))
    assert planner.calibrated_ef(curve, 0.99, 10) == 64
    assert calibration.meets(0.9935, 0.99, 1000) and not calibration.meets(0.990, 0.99, 1000)
    assert calibration.meets(1.0, 1.0, 1000)  # a perfect point meets a perfect target
