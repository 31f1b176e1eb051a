"""A picture of an embedded column: its vectors projected to 2-D, coloured, outliers marked.

``embeddb map TABLE.COLUMN`` reads a sample of the column's rows, projects their vectors to two
dimensions (PCA through numpy's SVD; UMAP when ``umap-learn`` is installed), colours the points
by a column of the table or else by :func:`embeddb.clusters`, rings near-duplicate groups,
crosses out :func:`embeddb.outliers`, and writes an interactive HTML page (plotly, hover shows
each row's text) or a PNG (matplotlib). Both libraries come with ``pip install 'embeddb[map]'``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from .errors import EmbeddbError
from .query._clusters import _nearest, _prepared, clusters, outliers
from .query._neighbours import duplicate_groups, near_duplicates
from .query._target import resolve, template_text

__all__ = ["ColumnMap", "draw", "read_map"]

_LABEL_CHARS = 90
_SIZE = (1200, 900)  # pixels of a PNG


@dataclass(frozen=True)
class ColumnMap:
    """What a map shows: per sampled row its key, 2-D point, colour group and hover text, and
    which rows are outliers or members of a near-duplicate group."""

    title: str
    method: str
    keys: list[Any]
    points: np.ndarray[Any, Any]
    groups: list[str]
    texts: list[str]
    outliers: set[Any]
    duplicates: set[Any]


def read_map(conn: sa.Connection, column: Any, *, sample: int = 3000, color: str | None = None,
             clusters_n: int = 8, method: str = "auto", duplicate_similarity: float = 0.95,
             outliers_k: int = 15) -> ColumnMap:
    """Sample the column, project it to 2-D and find its colour groups, duplicates, outliers.

    Example::

        with engine.connect() as conn:
            picture = read_map(conn, Doc.embedding, color="kind")
        draw(picture, Path("map.png"))
    """
    target = resolve(column)
    table = target.table
    if color is not None and color not in table.c:
        raise EmbeddbError(f"--color: {table.name} has no column {color!r}"
                           f" (columns: {', '.join(table.c.keys())})")
    keys_sql = target.key_columns
    order = sa.func.md5(sa.func.concat(*(sa.cast(key, sa.Text) for key in keys_sql)))
    chosen = [*keys_sql, target.column, template_text(target).label("text")]
    if color is not None:
        chosen.append(table.c[color].label("colour"))
    rows = conn.execute(sa.select(*chosen).where(target.column.is_not(None))
                        .order_by(order).limit(sample)).all()
    if len(rows) < 3:
        raise EmbeddbError(f"{table.name}.{target.column.name}: {len(rows)} embedded rows;"
                           " a map needs at least 3 (has the worker run?)")
    width = len(keys_sql)
    keys = [row[0] if width == 1 else tuple(row[:width]) for row in rows]
    vectors = np.asarray([_values(row[width]) for row in rows], dtype=np.float64)
    points, used = project(_prepared(target, vectors), method)
    in_sample = _in_sample(target, rows, width)
    if color is not None:
        groups = [str(row.colour) for row in rows]
    else:
        found = clusters(conn, column, min(clusters_n, len(rows)), where=in_sample,
                         sample=len(rows))
        labels = {cluster.number: f"{cluster.number}: {cluster.label}" for cluster in found}
        nearest = _nearest(_prepared(target, vectors),
                           np.asarray([found_c.centroid for found_c in
                                       sorted(found, key=lambda c: c.number)]))
        groups = [labels[int(number)] for number in nearest]
    pairs = near_duplicates(conn, column, min_similarity=duplicate_similarity, where=in_sample)
    duplicates = {key for group in duplicate_groups(pairs) for key in group}
    lonely = {key for key, _ in outliers(conn, column, min(outliers_k, len(rows)),
                                          where=in_sample)}
    texts = [_short(row.text) for row in rows]
    title = f"{table.name}.{target.column.name}: {len(rows)} rows, {used}, coloured by " + (
        color or "cluster")
    return ColumnMap(title, used, keys, points, groups, texts, lonely, duplicates)


def project(vectors: np.ndarray[Any, Any], method: str = "auto"
            ) -> tuple[np.ndarray[Any, Any], str]:
    """``vectors`` in two dimensions, and the method used: ``"pca"``, ``"umap"`` or ``"auto"``
    (UMAP when installed, else PCA).

    Example::

        points, used = project(np.random.default_rng(0).normal(size=(100, 384)))  # (100, 2)
    """
    if method not in ("auto", "pca", "umap"):
        raise EmbeddbError(f"--method must be auto, pca or umap, got {method!r}")
    has_umap = importlib.util.find_spec("umap") is not None
    if method == "umap" and not has_umap:
        raise EmbeddbError("--method umap needs umap-learn: pip install umap-learn")
    if method != "pca" and has_umap:
        import umap

        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=0)
        return np.asarray(reducer.fit_transform(vectors)), "UMAP"
    centred = vectors - vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    result: np.ndarray[Any, Any] = centred @ axes[:2].T
    return result, "PCA"


def draw(picture: ColumnMap, out: Path) -> Path:
    """Write ``picture`` to ``out``: ``.html`` (plotly, interactive) or ``.png`` (matplotlib)."""
    suffix = out.suffix.lower()
    if suffix == ".html":
        _need("plotly", out)
        _draw_html(picture, out)
    elif suffix == ".png":
        _need("matplotlib", out)
        _draw_png(picture, out)
    else:
        raise EmbeddbError(f"--out {out}: write a .html (interactive) or a .png file")
    return out


def _need(library: str, out: Path) -> None:
    if importlib.util.find_spec(library) is None:
        raise EmbeddbError(f"writing {out.name} needs {library}, which is not installed:"
                           " pip install 'embeddb[map]'")


def _draw_png(picture: ColumnMap, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    dpi = 100
    figure, axes = plt.subplots(figsize=(_SIZE[0] / dpi, _SIZE[1] / dpi), dpi=dpi)
    names = _group_order(picture.groups)
    palette = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for number, name in enumerate(names):
        mask = np.array([group == name for group in picture.groups])
        axes.scatter(picture.points[mask, 0], picture.points[mask, 1], s=9, alpha=0.7,
                     color=palette(number % palette.N), label=_legend(name))
    _overlay_png(axes, picture)
    axes.set_title(picture.title, fontsize=11)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", fontsize=8, markerscale=2, framealpha=0.8)
    figure.tight_layout()
    figure.savefig(out, dpi=dpi)
    plt.close(figure)


def _overlay_png(axes: Any, picture: ColumnMap) -> None:
    for keys, style in ((picture.duplicates, {"marker": "o", "facecolors": "none",
                                              "edgecolors": "black", "s": 40,
                                              "label": "near-duplicate"}),
                        (picture.outliers, {"marker": "x", "color": "red", "s": 60,
                                            "label": "outlier"})):
        mask = np.array([key in keys for key in picture.keys])
        if mask.any():
            axes.scatter(picture.points[mask, 0], picture.points[mask, 1], linewidths=1.2,
                         **style)


def _draw_html(picture: ColumnMap, out: Path) -> None:
    import plotly.graph_objects as go

    figure = go.Figure()
    for name in _group_order(picture.groups):
        index = [i for i, group in enumerate(picture.groups) if group == name]
        figure.add_trace(go.Scattergl(
            x=picture.points[index, 0], y=picture.points[index, 1], mode="markers",
            name=_legend(name), marker={"size": 5, "opacity": 0.75},
            text=[picture.texts[i] for i in index], hoverinfo="text"))
    for keys, name, marker in (
            (picture.duplicates, "near-duplicate",
             {"size": 11, "symbol": "circle-open", "color": "black"}),
            (picture.outliers, "outlier", {"size": 12, "symbol": "x", "color": "red"})):
        index = [i for i, key in enumerate(picture.keys) if key in keys]
        if index:
            figure.add_trace(go.Scattergl(
                x=picture.points[index, 0], y=picture.points[index, 1], mode="markers",
                name=name, marker=marker, text=[picture.texts[i] for i in index],
                hoverinfo="text"))
    figure.update_layout(title=picture.title, template="plotly_white",
                         xaxis={"visible": False}, yaxis={"visible": False})
    figure.write_html(out, include_plotlyjs=True)


def _group_order(groups: list[str]) -> list[str]:
    """Largest group first, so the legend reads like the clusters' sizes."""
    counts: dict[str, int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    return sorted(counts, key=lambda name: (-counts[name], name))


def _legend(name: str, width: int = 40) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _in_sample(target: Any, rows: Sequence[Any], width: int) -> Any:
    keys = target.key_columns
    if width == 1:
        return keys[0].in_([row[0] for row in rows])
    return sa.tuple_(*keys).in_([tuple(row[:width]) for row in rows])


def _values(value: Any) -> Any:
    return value.to_list() if hasattr(value, "to_list") else value


def _short(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _LABEL_CHARS else flat[: _LABEL_CHARS - 1] + "…"
