"""Model kinds by prefix, Matryoshka dimensions, the HTTP provider's parsing, batching and
rate limits (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from embeddb import Embedding
from embeddb.embedders import MINILM, expected_identity, load_embedder, model_kind
from embeddb.errors import SpecError
from embeddb.providers.limits import HttpLimits, parse_retry_after
from embeddb.providers.openai import HttpEmbedder, HttpModel, model_name
from embeddb.spec import EncodeOptions
from embeddb.testing import MODEL_KIND as TESTING_KIND


def test_prefixes_pick_the_kind() -> None:
    assert model_kind("embeddb-testing/hash-8") is TESTING_KIND
    assert type(model_kind("openai/text-embedding-3-small")).__name__ == "_HttpKind"
    assert type(model_kind(MINILM)).__name__ == "_LocalKind"


def test_local_matryoshka_cuts_and_renormalises_and_is_in_the_identity() -> None:
    full = load_embedder(MINILM).embed_documents(["reset my password"])[0]
    cut = load_embedder(MINILM, EncodeOptions(), 128)
    vector = cut.embed_documents(["reset my password"])[0]
    assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert np.allclose(vector, full[:128] / np.linalg.norm(full[:128]), atol=1e-6)
    assert cut.identity.dimensions == 128
    assert expected_identity(MINILM, EncodeOptions(), 128).differences(
        expected_identity(MINILM, EncodeOptions())) == ["dimensions 128 vs 384"]


def test_dimensions_larger_than_the_model_are_a_clear_error() -> None:
    with pytest.raises(SpecError, match=r"declared with 512 dimensions but model .* makes 384"):
        expected_identity(MINILM, EncodeOptions(), 512)
    with pytest.raises(SpecError, match="makes 1536-dimensional"):
        expected_identity("openai/text-embedding-3-small", EncodeOptions(), 4000)


def test_an_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="unknown provider 'cohere'"):
        Embedding("{body}", model="cohere/embed-v3", base_url="http://127.0.0.1:1", dimensions=8)
    with pytest.raises(SpecError, match="unknown option region"):
        HttpModel.parse("openai/x?region=eu")
    with pytest.raises(SpecError, match="pass dimensions=N"):
        Embedding("{body}", model="openai/some-local-model", base_url="http://127.0.0.1:1")


def test_http_model_names_are_canonical() -> None:
    assert model_name("openai/text-embedding-3-small") == "openai/text-embedding-3-small"
    name = model_name("openai/m", base_url="http://127.0.0.1:7997/v1/", api_key_env="K")
    assert name == "openai/m?base_url=http://127.0.0.1:7997/v1&api_key_env=K"
    assert HttpModel.parse(name) == HttpModel("m", "http://127.0.0.1:7997/v1", "K")


def test_requests_stay_within_input_and_token_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_TEST_UNIT_KEY", "k")
    embedder = HttpEmbedder("openai/m?base_url=http://127.0.0.1:1&api_key_env=EMBEDDB_TEST_UNIT_KEY",
                            EncodeOptions(), 8, HttpLimits(batch_inputs=3, batch_tokens=10))
    texts = ["x" * 8] * 7 + ["y" * 40] + ["z"]  # 2 tokens each, then 10, then 1
    spans = embedder.batches(texts)
    assert spans == [(0, 3, 6), (3, 6, 6), (6, 7, 2), (7, 8, 10), (8, 9, 1)]
    embedder.close()


def test_a_call_is_spread_over_the_requests_in_flight_unless_requests_are_rate_limited(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDB_TEST_UNIT_KEY", "k")
    name = "openai/m?base_url=http://127.0.0.1:1&api_key_env=EMBEDDB_TEST_UNIT_KEY"
    texts = ["a few words"] * 256  # one worker claim
    spread = HttpEmbedder(name, EncodeOptions(), 8, HttpLimits())  # 256 inputs, 4 in flight
    assert [(a, b) for a, b, _ in spread.batches(texts)] == [(0, 64), (64, 128), (128, 192),
                                                             (192, 256)]
    assert [(a, b) for a, b, _ in spread.batches(texts[:40])] == [(0, 20), (20, 40)]
    assert len(spread.batches(texts[:20])) == 1  # too few to be worth cutting
    spread.close()
    counted = HttpEmbedder(name, EncodeOptions(), 8, HttpLimits(rpm=100))
    assert len(counted.batches(texts)) == 1  # under rpm a request is kept whole
    counted.close()


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_limits_come_from_the_environment() -> None:
    limits = HttpLimits.from_environment({"EMBEDDB_HTTP_RPM": "3000",
                                          "EMBEDDB_HTTP_TIMEOUT": "2.5"})
    assert limits.rpm == 3000 and limits.timeout == 2.5 and limits.max_in_flight == 4
    with pytest.raises(SpecError, match="EMBEDDB_HTTP_TPM='lots' is not a number"):
        HttpLimits.from_environment({"EMBEDDB_HTTP_TPM": "lots"})


def test_a_model_served_over_http_shows_no_backend() -> None:
    from embeddb.embedders import shown_backend

    assert shown_backend("openai/text-embedding-3-small", "torch") is None
    assert shown_backend("sentence-transformers/all-MiniLM-L6-v2", "openvino") == "openvino"
