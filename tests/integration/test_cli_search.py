"""``embeddb search`` from the shell: --explain (--analyze), --hybrid (--fulltext), bad input.

The rows are embedded by the worker with the hashing test model, except ticket 5, written
after the worker ran: only the full-text leg of a hybrid search can find it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from embeddb.cli import main
from embeddb.database import create_engine

from .models import HASH_MODEL, drain, ticket_model
from .searching import module_database

TICKETS = [
    {"id": 1, "subject": "printer", "body": "paper jam", "status": "open"},
    {"id": 2, "subject": "printer", "body": "no toner", "status": "closed"},
    {"id": 3, "subject": "login", "body": "locked out", "status": "open"},
    {"id": 4, "subject": "network", "body": "wifi drops", "status": "open"},
]
NOT_EMBEDDED = {"id": 5, "subject": "billing", "body": "duplicate invoice", "status": "open"}


@pytest.fixture(scope="module")
def url(server_url: str, template_url: str) -> Iterator[str]:
    with module_database(server_url) as url:
        Base, Ticket = ticket_model(model=HASH_MODEL, fulltext=True)
        engine = create_engine(url, poolclass=sa.pool.NullPool)
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), TICKETS)
        drain(url)
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), [NOT_EMBEDDED])
        engine.dispose()
        yield url


def run(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["search", *args, "--database-url", url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_prints_the_plan_settings_sql_and_postgres_plan_instead_of_rows(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(url, capsys, "tickets.embedding", "printer paper", "-k", "2",
                       "--plan", "index", "--explain")
    assert code == 0
    assert out.startswith("-- embeddb plan: index\n")
    assert "SET LOCAL hnsw.ef_search" in out
    assert "FROM public.tickets" in out and "ORDER BY public.tickets.embedding <=>" in out
    assert "Index Scan using" in out and "hnsw" in out  # PostgreSQL's plan, on the index
    assert "rows in" not in out  # nothing was searched
    assert "actual" not in out


def test_explain_analyze_runs_the_query(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(url, capsys, "tickets.embedding", "printer paper", "--plan", "exact",
                       "--where", "status = 'open'", "--explain", "--analyze")
    assert code == 0
    assert out.startswith("-- embeddb plan: exact\n")
    assert "status = 'open'" in out
    assert "actual" in out and "Execution Time" in out


def test_hybrid_sees_a_row_once_the_worker_has_embedded_it(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # the worker writes a row's tsvector with its vector: a row not embedded yet is in neither leg
    code, out, _ = run(url, capsys, "tickets.embedding", "duplicate invoice", "-k", "3")
    assert code == 0 and "id=5" not in out

    code, out, _ = run(url, capsys, "tickets.embedding", "duplicate invoice", "-k", "3",
                       "--hybrid")
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.startswith("3 rows in") and "hybrid" in header
    assert all("id=5" not in line for line in lines)
    assert all("embedding" not in line for line in lines)


def test_hybrid_text_leg_reads_the_fulltext_columns_and_obeys_where(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(url, capsys, "tickets.embedding", "jam", "--hybrid")
    assert code == 0
    assert any("text #1" in line and "id=1" in line for line in out.splitlines())

    code, out, _ = run(url, capsys, "tickets.embedding", "jam", "--hybrid",
                       "--fulltext", "subject")  # 'jam' is only in the body
    assert code == 0
    assert "text #" not in out

    code, out, _ = run(url, capsys, "tickets.embedding", "printer", "--hybrid",
                       "--fulltext", "subject", "--fulltext", "body",
                       "--where", "status = 'closed'")
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.startswith("1 rows in")
    assert "text #1" in lines[0] and "id=2" in lines[0]


@pytest.mark.parametrize(("args", "error"), [
    (["tickets.nothing", "x"], "public.tickets.nothing is not an embedded column (known:"),
    (["nothing.embedding", "x", "--hybrid"], "public.nothing.embedding is not an embedded"),
    (["tickets.embedding", "x", "--analyze"], "--analyze goes with --explain"),
    (["tickets.embedding", "x", "--fulltext", "body"], "--fulltext goes with --hybrid"),
    (["tickets.embedding", "x", "--hybrid", "--fulltext", "nope"],
     "--fulltext: tickets has no column nope (columns: id, subject, body, status,"),
    (["tickets.embedding", "x", "-k", "0"], "-k must be at least 1"),
    (["tickets.embedding", "x", "--hybrid", "--where", "nope = 1"],
     'the search failed: column "nope" does not exist'),
])
def test_bad_input_is_a_one_line_error(
        url: str, capsys: pytest.CaptureFixture[str], args: list[str], error: str) -> None:
    code, out, err = run(url, capsys, *args)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("embeddb: error: ")
    assert error in err


def test_explain_hybrid_prints_both_legs(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(url, capsys, "tickets.embedding", "printer jam", "--hybrid", "--explain",
                       "--analyze", "--where", "status = 'open'")
    assert code == 0
    assert out.startswith("-- embeddb plan: hybrid (vector leg: ")
    assert "tickets_embedding_postings" in out and "vector_hits" in out and "actual time" in out
