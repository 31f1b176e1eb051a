"""Bad query input is refused before anything is sent, with a clear error, leaving the caller's
transaction usable: k, the query text, the query vector, and a filter on another table.

Each helper (search, explain, nearest, hybrid_search, more_like_this, near_duplicates) is run
inside a session that has an uncommitted row; after the error the session must still see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from embeddb import hybrid_search, more_like_this, near_duplicates, nearest, search
from embeddb.embedders import load_embedder
from embeddb.errors import EmbeddbError, QueryError
from embeddb.query._checks import MAX_K
from embeddb.query._search import explain

from .models import HASH_MODEL, drain, ticket_model

TICKETS = 40
LABELS = ("vip", "urgent", "billing")  # three label rows for each of the first 10 tickets


@pytest.fixture(scope="module")
def model(db: sa.Engine, module_url: str) -> tuple[Any, sa.Table]:
    """Tickets embedded by the worker, and a ``labels`` table with 3 rows for tickets 1-10."""
    Base, Ticket = ticket_model(model=HASH_MODEL, fulltext=True)
    labels = sa.Table("labels", Base.metadata,
                      sa.Column("ticket_id", sa.ForeignKey("tickets.id"), primary_key=True),
                      sa.Column("label", sa.Text, primary_key=True))
    Base.metadata.create_all(db)
    with db.begin() as conn:
        conn.execute(sa.insert(Ticket), [
            {"id": i, "subject": ["printer", "login", "refund"][i % 3], "body": f"issue {i}"}
            for i in range(1, TICKETS + 1)])
        conn.execute(sa.insert(labels), [{"ticket_id": i, "label": label}
                                         for i in range(1, 11) for label in LABELS])
    drain(module_url)
    return Ticket, labels


@pytest.fixture
def session(db: sa.Engine, model: tuple[Any, sa.Table]) -> Any:
    """A session in a transaction holding an uncommitted ticket 999 (rolled back after)."""
    Ticket, _ = model
    with Session(db) as session:
        session.add(Ticket(id=999, subject="draft", body="not committed"))
        session.flush()
        yield session
        session.rollback()


def still_usable(session: Session) -> bool:
    """The transaction goes on: it still sees its own uncommitted row."""
    found = session.execute(sa.text("SELECT count(*) FROM tickets WHERE id = 999")).scalar()
    return bool(found == 1)


def a_vector(text: str = "printer") -> list[float]:
    return [float(x) for x in load_embedder(HASH_MODEL).embed_query(text)]


Helper = Callable[..., Any]
VECTOR_HELPERS: dict[str, Helper] = {
    "search": lambda s, column, vector, **kw: search(s, column, vector, **kw),
    "explain": lambda s, column, vector, **kw: explain(s, column, vector, **kw),
    "nearest": lambda s, column, vector, **kw: s.execute(nearest(column, vector, **kw)).all(),
    "hybrid_search": lambda s, column, vector, **kw: hybrid_search(
        s, column, "printer", vector=vector, **kw),
}


# --- the query vector ---------------------------------------------------------------------


@pytest.mark.parametrize("helper", VECTOR_HELPERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 1e39])
def test_a_query_vector_pgvector_would_refuse_is_refused_first(
        session: Session, model: Any, helper: str, bad: float) -> None:
    vector = a_vector()
    vector[3] = bad
    with pytest.raises(QueryError, match=r"tickets\.embedding has 1 value.* at index 3"):
        VECTOR_HELPERS[helper](session, model[0].embedding, vector)
    assert still_usable(session)


@pytest.mark.parametrize("helper", VECTOR_HELPERS)
def test_an_all_zero_query_vector_has_no_cosine_similarity_and_is_refused(
        session: Session, model: Any, helper: str) -> None:
    with pytest.raises(QueryError, match="all zeros"):
        VECTOR_HELPERS[helper](session, model[0].embedding, np.zeros(32, dtype=np.float32))
    assert still_usable(session)


def test_a_query_vector_of_the_wrong_size_names_the_column(session: Session, model: Any) -> None:
    with pytest.raises(QueryError, match=r"33 dimensions, the column 32 \(tickets\.embedding\)"):
        search(session, model[0].embedding, [0.5] * 33)
    assert still_usable(session)


def test_an_ordinary_vector_still_searches(session: Session, model: Any) -> None:
    hits = search(session, model[0].embedding, np.asarray(a_vector(), dtype=np.float32), k=3)
    assert len(hits) == 3 and all(np.isfinite(hit.similarity) for hit in hits)


# --- k ------------------------------------------------------------------------------------


def run_with_k(name: str, session: Session, model: Any, k: Any) -> Any:
    Ticket, _ = model
    match name:
        case "search":
            return search(session, Ticket.embedding, "printer", k=k)
        case "explain":
            return explain(session, Ticket.embedding, "printer", k=k)
        case "nearest":
            return session.execute(nearest(Ticket.embedding, a_vector(), k=k)).all()
        case "hybrid_search":
            return hybrid_search(session, Ticket.embedding, "printer", k=k)
        case "more_like_this":
            return more_like_this(session, Ticket.embedding, 1, k=k)
        case "near_duplicates":
            return near_duplicates(session, Ticket.embedding, min_similarity=0.99, k=k)
    raise AssertionError(name)


K_HELPERS = ["search", "explain", "nearest", "hybrid_search", "more_like_this",
             "near_duplicates"]


@pytest.mark.parametrize("helper", K_HELPERS)
@pytest.mark.parametrize(("k", "error"), [
    (0, "k must be at least 1, got 0"),
    (-3, "k must be at least 1, got -3"),
    (2**31, f"k must be at most {MAX_K}, got 2147483648"),
    (MAX_K + 1, f"k must be at most {MAX_K}"),
    (2.5, r"k must be an int, got 2.5 \(float\)"),
    (3.0, r"k must be an int, got 3.0 \(float\)"),
    ("3", r"k must be an int, got '3' \(str\)"),
    (True, r"k must be an int, got True \(bool\)"),
    (None, r"k must be an int, got None \(NoneType\)"),
])
def test_k_is_an_int_from_1_to_the_maximum_in_every_helper(
        session: Session, model: Any, helper: str, k: Any, error: str) -> None:
    with pytest.raises(QueryError, match=error):
        run_with_k(helper, session, model, k)
    assert still_usable(session)


@pytest.mark.parametrize("helper", K_HELPERS)
def test_k_at_the_maximum_and_numpy_integers_are_accepted(
        session: Session, model: Any, helper: str) -> None:
    assert run_with_k(helper, session, model, MAX_K) is not None
    assert run_with_k(helper, session, model, np.int64(2)) is not None


# --- the query text -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_an_empty_query_text_is_refused(session: Session, model: Any, text: str) -> None:
    Ticket, _ = model
    for run in (lambda: search(session, Ticket.embedding, text),
                lambda: explain(session, Ticket.embedding, text),
                lambda: hybrid_search(session, Ticket.embedding, text),
                lambda: hybrid_search(session, Ticket.embedding, text, vector=a_vector())):
        with pytest.raises(QueryError, match=r"query text.* is empty"):
            run()
    assert still_usable(session)


# --- a filter on another table ------------------------------------------------------------


def test_a_filter_on_a_table_the_search_does_not_read_is_refused(
        session: Session, model: Any) -> None:
    Ticket, labels = model
    vip = labels.c.label == "vip"
    runs = {
        "search": lambda: search(session, Ticket.embedding, "printer", k=12, where=vip),
        "explain": lambda: explain(session, Ticket.embedding, "printer", where=vip),
        "nearest": lambda: nearest(Ticket.embedding, a_vector(), where=vip),
        "hybrid_search": lambda: hybrid_search(session, Ticket.embedding, "printer", where=vip),
        "more_like_this": lambda: more_like_this(session, Ticket.embedding, 1, where=vip),
        "near_duplicates": lambda: near_duplicates(session, Ticket.embedding,
                                                   min_similarity=0.5, where=vip),
    }
    for name, run in runs.items():
        with pytest.raises(QueryError) as raised:
            run()
        message = str(raised.value)
        assert "reads labels (labels.label)" in message, name
        assert "the searched table tickets" in message and "within=" in message, name
    assert still_usable(session)


def test_the_same_filter_is_refused_every_time(session: Session, model: Any) -> None:
    Ticket, labels = model
    for label in ("vip", "urgent"):  # the second is remembered by shape: refused as well
        with pytest.raises(QueryError, match="reads labels"):
            search(session, Ticket.embedding, "printer", where=labels.c.label == label)


def test_an_alias_of_the_searched_table_is_another_table(session: Session, model: Any) -> None:
    Ticket, _ = model
    other = aliased(Ticket)
    with pytest.raises(QueryError, match="an alias of tickets"):
        search(session, Ticket.embedding, "printer", where=other.status == "open")


def test_filters_through_a_join_or_a_subquery_return_each_row_once(
        session: Session, model: Any) -> None:
    Ticket, labels = model
    in_labels = Ticket.id.in_(sa.select(labels.c.ticket_id).where(labels.c.label == "vip"))
    exists = sa.exists().where(labels.c.ticket_id == Ticket.id, labels.c.label == "vip")
    joined = sa.select(Ticket).join(labels, labels.c.ticket_id == Ticket.id)
    for hits in (search(session, Ticket.embedding, "printer", k=20, where=in_labels),
                 search(session, Ticket.embedding, "printer", k=20, where=exists),
                 search(session, Ticket.embedding, "printer", k=20, within=joined,
                        where=labels.c.label == "vip"),
                 hybrid_search(session, Ticket.embedding, "printer", k=20, where=exists)):
        found = [hit.row.id for hit in hits]
        assert sorted(found) == list(range(1, 11))  # once each, the ten labelled tickets


def test_query_errors_are_embeddb_errors_and_value_errors() -> None:
    assert issubclass(QueryError, EmbeddbError) and issubclass(QueryError, ValueError)
