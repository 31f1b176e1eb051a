"""The numpy parts of clusters() and the map: k-means and the 2-D projection, on known blobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddb.column_map import project
from embeddb.errors import EmbeddbError
from embeddb.query._clusters import _nearest, kmeans


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 64)) * 5
    truth = np.repeat(np.arange(4), 50)
    return centres[truth] + rng.normal(size=(200, 64)), truth


def test_kmeans_recovers_well_separated_blobs() -> None:
    points, truth = blobs()
    found = _nearest(points, kmeans(points, 4, seed=1))
    # the same partition up to renumbering: each blob maps to one cluster, each cluster to one blob
    assert {(t, f) for t, f in zip(truth, found, strict=True)} == set(
        zip(range(4), [found[truth == t][0] for t in range(4)], strict=True))
    assert len(set(found)) == 4


def test_kmeans_is_deterministic_for_a_seed() -> None:
    points, _ = blobs()
    assert np.array_equal(kmeans(points, 3, seed=5), kmeans(points, 3, seed=5))


def test_pca_keeps_the_blobs_apart_in_two_dimensions() -> None:
    points, truth = blobs()
    flat, used = project(points, "pca")
    assert used == "PCA" and flat.shape == (200, 2)
    means = np.array([flat[truth == t].mean(axis=0) for t in range(4)])
    spread = max(np.linalg.norm(flat[truth == t] - means[t], axis=1).mean() for t in range(4))
    gaps = [np.linalg.norm(means[a] - means[b]) for a in range(4) for b in range(a + 1, 4)]
    assert sorted(gaps)[-3] > spread  # most blobs stand apart from one another


def test_an_unknown_projection_is_refused() -> None:
    with pytest.raises(EmbeddbError, match="auto, pca or umap"):
        project(np.zeros((3, 4)), "tsne")


@pytest.mark.parametrize(("name", "library"), [("map.png", "matplotlib"), ("map.html", "plotly")])
def test_a_missing_drawing_library_names_the_extra_to_install(
        name: str, library: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from embeddb import column_map

    real = importlib.util.find_spec
    monkeypatch.setattr(column_map.importlib.util, "find_spec",
                        lambda module, *a: None if module == library else real(module, *a))
    picture = column_map.ColumnMap("t", "PCA", [1], np.zeros((1, 2)), ["a"], ["text"], set(),
                                   set())
    with pytest.raises(EmbeddbError, match=rf"needs {library}.*pip install 'embeddb\[map\]'"):
        column_map.draw(picture, tmp_path / name)
    assert not (tmp_path / name).exists()
