"""The openai/ provider against a real OpenAI-compatible server (infinity-emb serving the
packaged all-MiniLM-L6-v2), directly and through a proxy that injects faults.

After every fault the worker's invariant holds: every vector current and equal to the local
model's, nothing lost, nothing parked that should not be, no attempt spent on an outage.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embeddb import Embedding, search
from embeddb.embedders import MINILM, load_embedder
from embeddb.errors import ModelError, ModelUnavailable
from embeddb.spec import EncodeOptions
from embeddb.worker import Worker, WorkerConfig

from .conftest import Infinity, http_model
from .fault_proxy import FaultProxy

TEXTS = [f"ticket {i}: the {w} stopped working after the update" for i, w in
         enumerate(["printer", "laptop", "router", "phone", "monitor", "keyboard", "scanner",
                    "badge reader", "projector", "vpn client"] * 3)]


def make_docs(engine: sa.Engine, model: str, **options: Any) -> Any:
    class Base(DeclarativeBase):
        pass

    class Doc(Base):
        __tablename__ = "docs"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str]
        embedding = Embedding("{body}", model=model, **options)

    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Doc), [{"id": i, "body": t} for i, t in enumerate(TEXTS)])
    return Doc


def drain(database_url: str, **config: Any) -> Worker:
    with Worker(database_url, WorkerConfig(**{"batch_size": 8, **config})) as worker:
        worker.run_once()
        return worker


def stored_vectors(engine: sa.Engine) -> dict[int, np.ndarray]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, embedding::text FROM docs ORDER BY id")).all()
    return {row.id: np.array(eval(row.embedding), dtype=np.float32) if row.embedding else None
            for row in rows}


def pending_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT row_key, attempts, last_error, parked_at FROM embeddb.pending")))


def assert_all_current(engine: sa.Engine, dimensions: int = 384) -> None:
    """Every row has the local model's vector (cosine >= 0.9999), and nothing is queued."""
    assert pending_rows(engine) == []
    vectors = stored_vectors(engine)
    local = load_embedder(MINILM, EncodeOptions(), dimensions).embed_documents(TEXTS)
    assert all(v is not None for v in vectors.values())
    cosines = [float(vectors[i] @ local[i]) for i in range(len(TEXTS))]
    assert min(cosines) >= 0.9999, min(cosines)
    with engine.connect() as conn:
        stale = conn.execute(sa.text(
            "SELECT count(*) FROM docs WHERE embedding_source_hash IS DISTINCT FROM md5(body)::uuid"
        )).scalar_one()
    assert stale == 0


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("EMBEDDB_HTTP_BATCH_INPUTS", "4")
    monkeypatch.setenv("EMBEDDB_HTTP_GIVE_UP_AFTER", "20")


def test_vectors_from_the_server_match_the_local_model_and_search_uses_it(
        engine: sa.Engine, database_url: str, infinity: Infinity, infinity_key: str) -> None:
    model = http_model(infinity.base_url)
    Doc = make_docs(engine, model, dimensions=384)
    drain(database_url)
    assert_all_current(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT model_name, model_fingerprint, dimensions FROM embeddb.columns")).one()
    assert row.model_name == model and "127.0.0.1" in row.model_name
    assert row.model_fingerprint.startswith("http-") and row.dimensions == 384
    with Session(engine) as session:
        hits = search(session, Doc.embedding, "the vpn client is broken", k=3)
    assert "vpn client" in hits[0][0].body


@pytest.mark.parametrize("faults", [["429", "429"], ["500", "500", "500"], ["slow"],
                                    ["drop", "drop"]])
def test_after_a_fault_every_vector_is_current_and_no_attempt_was_spent(
        engine: sa.Engine, database_url: str, proxy: FaultProxy, infinity_key: str,
        fast_retries: None, faults: list[str]) -> None:
    make_docs(engine, http_model(proxy.base_url), dimensions=384)
    proxy.faults = list(faults)
    proxy.slow_seconds = 2.5  # beyond the 1 s timeout
    drain(database_url)
    assert_all_current(engine)
    hit = [seen for seen in proxy.seen if seen.fault]
    assert [seen.fault for seen in hit] == faults
    with engine.connect() as conn:
        failed = conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar_one()
    assert failed == 0


def test_retry_after_is_honoured(engine: sa.Engine, database_url: str, proxy: FaultProxy,
                                 infinity_key: str, fast_retries: None,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_HTTP_MAX_IN_FLIGHT", "1")  # one request at a time
    make_docs(engine, http_model(proxy.base_url), dimensions=384)
    proxy.faults, proxy.retry_after = ["429"], 1.5
    drain(database_url)
    assert_all_current(engine)
    limited = next(i for i, seen in enumerate(proxy.seen) if seen.fault == "429")
    # the next request waited out the Retry-After
    after = [seen.at - proxy.seen[limited].at for seen in proxy.seen[limited + 1:]]
    assert after and min(after) >= 1.5


def test_an_outage_releases_the_batch_without_spending_attempts_then_heals(
        engine: sa.Engine, database_url: str, proxy: FaultProxy, infinity_key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_HTTP_GIVE_UP_AFTER", "1")
    make_docs(engine, http_model(proxy.base_url), dimensions=384)
    proxy.down = True
    with pytest.raises(ModelUnavailable, match=r"did not answer within 1s.*503"):
        drain(database_url)
    rows = pending_rows(engine)
    assert len(rows) == len(TEXTS)
    assert all(r.attempts == 0 and r.parked_at is None and r.last_error is None for r in rows)
    proxy.down = False
    drain(database_url)
    assert_all_current(engine)


def test_a_400_for_one_input_isolates_that_row(
        engine: sa.Engine, database_url: str, proxy: FaultProxy, infinity_key: str,
        fast_retries: None) -> None:
    make_docs(engine, http_model(proxy.base_url), dimensions=384)
    proxy.reject_marker = "badge reader"
    drain(database_url, max_attempts=1)
    vectors = stored_vectors(engine)
    bad = {i for i, text in enumerate(TEXTS) if "badge reader" in text}
    assert bad and all(vectors[i] is None for i in bad)
    assert all(vectors[i] is not None for i in vectors if i not in bad)
    rows = pending_rows(engine)
    assert sorted(r.row_key["id"] for r in rows) == sorted(bad)
    assert all(r.parked_at is not None and "HTTP 400" in r.last_error for r in rows)
    assert all("badge" not in r.last_error for r in rows)  # no row text in the error


def test_requests_in_flight_stay_within_the_limit(
        engine: sa.Engine, database_url: str, proxy: FaultProxy, infinity_key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_HTTP_MAX_IN_FLIGHT", "2")
    monkeypatch.setenv("EMBEDDB_HTTP_BATCH_INPUTS", "2")
    proxy.hold_seconds = 0.3  # so that requests overlap
    make_docs(engine, http_model(proxy.base_url), dimensions=384)
    drain(database_url, batch_size=16)
    assert_all_current(engine)
    assert proxy.max_in_flight == 2
    assert max(seen.inputs for seen in proxy.seen) == 2


def test_a_server_answering_another_dimension_is_refused_and_nothing_changes(
        engine: sa.Engine, database_url: str, proxy: FaultProxy, infinity_key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_HTTP_GIVE_UP_AFTER", "1")
    make_docs(engine, http_model(proxy.base_url), dimensions=256)
    proxy.faults = ["strip_dimensions"] * 200  # the server then answers its full 384
    with pytest.raises(ModelUnavailable, match="answered 384-dimensional vectors, but the"
                       " column is declared with 256"):
        drain(database_url)
    assert all(v is None for v in stored_vectors(engine).values())
    assert all(r.attempts == 0 for r in pending_rows(engine))


def test_matryoshka_dimensions_from_the_api_match_the_local_cut(
        engine: sa.Engine, database_url: str, infinity: Infinity, infinity_key: str) -> None:
    make_docs(engine, http_model(infinity.base_url), dimensions=128)
    drain(database_url)
    assert_all_current(engine, dimensions=128)
    assert all(len(v) == 128 for v in stored_vectors(engine).values())


def test_a_missing_key_is_an_error_naming_the_variable(
        engine: sa.Engine, database_url: str, infinity: Infinity,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("EMBEDDB_TEST_NO_SUCH_KEY", raising=False)
    make_docs(engine, http_model(infinity.base_url, "EMBEDDB_TEST_NO_SUCH_KEY"), dimensions=384)
    with pytest.raises(ModelError, match="environment variable EMBEDDB_TEST_NO_SUCH_KEY, which"
                       " is not set"):
        drain(database_url)
    assert len(pending_rows(engine)) == len(TEXTS)


def test_a_wrong_key_is_unavailable_and_the_key_is_never_logged(
        engine: sa.Engine, database_url: str, infinity: Infinity,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("EMBEDDB_TEST_WRONG_KEY", "wrong-key-0123456789")
    make_docs(engine, http_model(infinity.base_url, "EMBEDDB_TEST_WRONG_KEY"), dimensions=384)
    with caplog.at_level(logging.DEBUG), pytest.raises(
            ModelUnavailable, match=r"HTTP 401.*check the key in EMBEDDB_TEST_WRONG_KEY"):
        drain(database_url)
    assert "wrong-key-0123456789" not in caplog.text
    assert all(r.attempts == 0 for r in pending_rows(engine))
