"""Inference backends with the real all-MiniLM-L6-v2, really exported (once per test module, into
its own cache): a float32 backend is the same model (probe-checked, identity unchanged, a switch
re-embeds nothing, seen in the database); onnx-int8 is another model (a switch goes through a
model change); a backend that disagrees is refused, by the library and by `embeddb worker`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import embeddb
from embeddb import backends
from embeddb.embedders import (
    ExportedEmbedder,
    SentenceTransformerEmbedder,
    expected_identity,
    load_embedder,
    resolve_model_path,
    weights_fingerprint,
)
from embeddb.errors import SpecError
from embeddb.spec import EncodeOptions

from .models import HASH_MODEL, MINILM, drain, run_worker, stored, ticket_model

TEXTS = ["Locked out\n\nI can't log in since this morning",
         "Refund\n\nI was charged twice for one order",
         "Printer\n\nit prints blank pages after the update"]
ONNX = EncodeOptions(backend="onnx")
INT8 = EncodeOptions(backend="onnx-int8")


@pytest.fixture(scope="module", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One export (and one quantisation) for the whole module, in a cache of its own."""
    cache = tmp_path_factory.mktemp("backend-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDDB_BACKEND_CACHE", str(cache))
        yield cache


def model_files() -> tuple[Path, str]:
    path = resolve_model_path(MINILM)
    assert path is not None
    return path, weights_fingerprint(path)


def insert_tickets(engine: sa.Engine, start: int = 1) -> None:
    with engine.begin() as conn:
        for number, text in enumerate(TEXTS, start):
            subject, body = text.split("\n\n")
            conn.execute(sa.text("INSERT INTO tickets (id, subject, body, status)"
                                 " VALUES (:i, :s, :b, 'open')"),
                         {"i": number, "s": subject, "b": body})


def catalog_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT generation, backend, model_fingerprint FROM embeddb.columns ORDER BY id")))


def count(engine: sa.Engine, statement: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(statement)).scalar_one())


def test_onnx_backend_makes_pytorchs_vectors_under_pytorchs_identity() -> None:
    torch_model = load_embedder(MINILM)
    onnx_model = load_embedder(MINILM, ONNX)
    assert isinstance(onnx_model, ExportedEmbedder)
    assert onnx_model.identity == torch_model.identity == expected_identity(MINILM, ONNX)
    reference, vectors = torch_model.embed_documents(TEXTS), onnx_model.embed_documents(TEXTS)
    assert backends.row_cosines(reference, vectors).min() >= backends.PROBE_MIN_COSINE
    assert onnx_model.count_tokens(TEXTS) == torch_model.count_tokens(TEXTS)  # type: ignore[attr-defined]
    # max_seq_length 256: a text far longer is truncated as sentence-transformers does
    long_text = " ".join(["mitochondria"] * 600)
    assert backends.row_cosines(torch_model.embed_documents([long_text]),
                                onnx_model.embed_documents([long_text]))[0] >= 0.9999


def test_the_export_is_cached_and_written_whole(export_cache: Path) -> None:
    path, fingerprint = model_files()
    first = backends.ensure_export(path, fingerprint, "onnx")
    written = first.stat().st_mtime_ns
    assert backends.ensure_export(path, fingerprint, "onnx") == first
    assert first.stat().st_mtime_ns == written  # not exported again
    assert first.is_relative_to(export_cache)
    assert not [p for p in export_cache.rglob("*") if p.name.endswith(".tmp")]


def test_a_backend_that_disagrees_with_pytorch_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, fingerprint = model_files()
    int8_file = backends.ensure_export(path, fingerprint, "onnx-int8")
    # a cache whose float32 export is in fact the int8 network: another model's vectors
    monkeypatch.setenv("EMBEDDB_BACKEND_CACHE", str(tmp_path))
    wrong = backends.exported_path(path, fingerprint, "onnx")
    wrong.parent.mkdir(parents=True)
    shutil.copyfile(int8_file, wrong)
    with pytest.raises(backends.BackendMismatch, match="disagrees with PyTorch: cosine 0"):
        ExportedEmbedder(MINILM, ONNX)


def test_int8_is_another_model_and_close_to_pytorch() -> None:
    torch_identity, int8_identity = expected_identity(MINILM, EncodeOptions()), expected_identity(
        MINILM, INT8)
    assert int8_identity.fingerprint != torch_identity.fingerprint
    assert int8_identity.fingerprint.startswith(torch_identity.fingerprint)
    assert "int8" in int8_identity.fingerprint
    int8 = load_embedder(MINILM, INT8)
    assert int8.identity == int8_identity
    cosines = backends.row_cosines(load_embedder(MINILM).embed_documents(TEXTS),
                                   int8.embed_documents(TEXTS))
    assert 0.95 < cosines.min() < 0.9999  # close, but not the same vectors


def test_switching_a_column_to_onnx_reembeds_nothing(engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model()
    Base.metadata.create_all(engine)
    insert_tickets(engine)
    assert drain(database_url).embedded == 3
    with engine.connect() as conn:
        before = {i: stored(conn, i) for i in (1, 2, 3)}

    _, Onnx = ticket_model(backend="onnx")
    embeddb.install(engine, Onnx)
    assert [tuple(row)[:2] for row in catalog_rows(engine)] == [("live", "onnx")]
    assert count(engine, "SELECT count(*) FROM embeddb.pending") == 0
    assert drain(database_url).embedded == 0
    with engine.connect() as conn:
        after = {i: stored(conn, i) for i in (1, 2, 3)}
    for i in (1, 2, 3):
        assert after[i][1] == before[i][1]
        np.testing.assert_array_equal(after[i][0], before[i][0])  # the same stored vector

    # new rows are embedded by the onnx backend, into the same space
    insert_tickets(engine, start=4)
    assert drain(database_url).embedded == 3
    with engine.connect() as conn:
        for i in (1, 2, 3):
            assert backends.row_cosines(stored(conn, i)[0][np.newaxis],
                                        stored(conn, i + 3)[0][np.newaxis])[0] >= 0.9999


def test_switching_a_column_to_int8_is_a_model_change(engine: sa.Engine, database_url: str) -> None:
    Base, _ = ticket_model()
    Base.metadata.create_all(engine)
    insert_tickets(engine)
    drain(database_url)
    with engine.connect() as conn:
        before = stored(conn, 1)[0]

    _, Int8 = ticket_model(backend="onnx-int8")
    embeddb.install(engine, Int8)
    rows = catalog_rows(engine)
    assert [(row.generation, row.backend) for row in rows] == [("live", "torch"),
                                                                ("next", "onnx-int8")]
    assert drain(database_url).embedded >= 3  # the next generation, then the swap
    rows = catalog_rows(engine)
    live = next(row for row in rows if row.generation == "live")
    assert live.backend == "onnx-int8" and "int8" in live.model_fingerprint
    with engine.connect() as conn:
        after = stored(conn, 1)[0]
    assert 0.95 < backends.row_cosines(before[np.newaxis], after[np.newaxis])[0] < 0.9999


def test_worker_backend_flag_embeds_and_refuses_a_disagreeing_backend(
        engine: sa.Engine, database_url: str, tmp_path: Path) -> None:
    Base, _ = ticket_model()
    Base.metadata.create_all(engine)
    insert_tickets(engine)
    result = run_worker(database_url, "--backend", "onnx", "--threads", "2")
    assert result.returncode == 0, result.stderr
    assert "backend onnx of sentence-transformers/all-MiniLM-L6-v2 agrees" in result.stderr
    assert count(engine, "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL") == 3
    assert [tuple(row)[:2] for row in catalog_rows(engine)] == [("live", "torch")]  # declared

    # a worker whose export disagrees stops at start, before it claims a row
    path, fingerprint = model_files()
    int8_file = backends.ensure_export(path, fingerprint, "onnx-int8")
    corrupt = tmp_path / "cache"
    insert_tickets(engine, start=4)
    wrong = Path(str(backends.exported_path(path, fingerprint, "onnx")).replace(
        str(backends.cache_dir()), str(corrupt)))
    wrong.parent.mkdir(parents=True)
    shutil.copyfile(int8_file, wrong)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDDB_BACKEND_CACHE", str(corrupt))
        refused = run_worker(database_url, "--backend", "openvino")
    assert refused.returncode == 1
    assert "disagrees with PyTorch" in refused.stderr
    assert count(engine, "SELECT count(*) FROM tickets WHERE embedding IS NULL") == 3
    assert count(engine, "SELECT count(*) FROM embeddb.pending WHERE attempts > 0") == 0

    quantised = run_worker(database_url, "--backend", "onnx-int8")
    assert quantised.returncode == 2 and "invalid choice" in quantised.stderr


def test_backend_declarations_are_checked() -> None:
    with pytest.raises(SpecError, match="unknown backend 'cuda'"):
        ticket_model(backend="cuda")
    with pytest.raises(SpecError, match="local sentence-transformers models"):
        ticket_model(model=HASH_MODEL, backend="onnx")


def test_exported_model_matches_sentence_transformers_batching() -> None:
    path, fingerprint = model_files()
    model = backends.ExportedModel(path, fingerprint, "openvino", threads=1)
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(70)]  # three batches, unsorted
    reference = SentenceTransformerEmbedder(MINILM, EncodeOptions()).embed_documents(texts)
    assert backends.row_cosines(reference, model.encode(texts)).min() >= 0.9999


def test_status_and_doctor_show_the_backend_each_column_runs_on(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from embeddb.cli import main

    Base, _ = ticket_model(backend="onnx")
    Base.metadata.create_all(engine)
    fingerprint = catalog_rows(engine)[0].model_fingerprint
    line = f"model {MINILM} ({fingerprint}, 384 dims), backend onnx"

    assert main(["status", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.startswith(
        f"public.tickets.embedding: 0 pending, 0 in flight, 0 parked, lag -, 0.0 rows/s (5 min);"
        f" {line}\n")
    assert main(["status", "--json", "--database-url", database_url]) == 0
    assert [c["backend"] for c in json.loads(capsys.readouterr().out)["columns"]] == ["onnx"]

    assert main(["doctor", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == f"column  public.tickets.embedding: {line}\nhealthy\n"
    assert main(["doctor", "--json", "--database-url", database_url]) == 0
    assert json.loads(capsys.readouterr().out)["columns"] == [{
        "column": "public.tickets.embedding", "generation": "live", "model": MINILM,
        "fingerprint": fingerprint, "dimensions": 384, "backend": "onnx"}]

    # where the backend's package is missing, a worker could not embed the column: doctor says so
    monkeypatch.setitem(backends.RUNTIMES, "onnx", "onnxruntime_not_installed_here")
    assert main(["doctor", "--database-url", database_url]) == 0  # info: doctor may run elsewhere
    assert ("INFO    public.tickets.embedding: the column runs on backend onnx, whose package"
            " onnxruntime_not_installed_here is not installed here, so a worker here cannot embed"
            " it [backend_missing]") in capsys.readouterr().out
