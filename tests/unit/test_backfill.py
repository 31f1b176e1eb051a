"""When a backlog is embedded with the HNSW index set aside (embeddb.backfill)."""

import pytest

from embeddb.backfill import worth_setting_aside


@pytest.mark.parametrize(("backlog", "table_rows", "expected"), [
    (5_000, 5_000, True),      # a first backfill: the whole table
    (1_000, 2_000, True),      # half the table, at the minimum size
    (999, 999, False),         # too small to be worth a rebuild
    (2_000, 1_000_000, False),  # a small share of a big table keeps its index
    (600_000, 1_000_000, True),
    (400_000, 1_000_000, False),
])
def test_a_backlog_is_set_aside_when_large_and_most_of_its_table(
        backlog: int, table_rows: float, expected: bool) -> None:
    assert worth_setting_aside(backlog, table_rows, min_backlog=1_000, min_share=0.5) is expected


def test_min_backlog_zero_never_sets_the_index_aside() -> None:
    assert not worth_setting_aside(10_000, 10_000, min_backlog=0, min_share=0.0)
