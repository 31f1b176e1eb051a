"""`embeddb demo` and `embeddb map` run as a user runs them: separate processes, real model.

The demo indexes the first few hundred stdlib docstrings (``--limit``) so the test stays quick;
its output at the default level must carry no log lines from other libraries (Alembic's set-up,
the model loader), the progress bar must not be torn by log lines, and the summary must be a
table. The map of the demo's column must be a real PNG of the promised size, in colour.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

LIMIT = "200"
# "2026-12-01 10:00:00,123 INFO alembic.runtime.plugins: ..." from basicConfig's format
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) (\S+):")


def embeddb(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "embeddb.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=env)


@pytest.fixture(scope="module")
def demo_run(module_url: str) -> subprocess.CompletedProcess[str]:
    """The demo run once per module; the other tests read the index it leaves."""
    run = embeddb("demo", "--database-url", module_url, "--limit", LIMIT)
    assert run.returncode == 0, run.stderr
    return run


def test_the_demo_is_quiet_and_ends_with_a_table_and_what_to_try(
        demo_run: subprocess.CompletedProcess[str]) -> None:
    output = demo_run.stdout + demo_run.stderr
    loggers = {match.group(2) for match in LOG_LINE.finditer(output)}
    assert not {name for name in loggers if not name.startswith("embeddb")}, output
    assert "embeddb.worker" not in loggers  # the bar says it: no line per batch
    # the bar's redraws (carriage returns) never share a line with a log line
    for line in output.splitlines():
        assert not (LOG_LINE.search(line) and "embedding:" in line), line
    assert f"{LIMIT} docstrings" in demo_run.stdout
    table = re.search(r"worker \(embed \+ store\)\s+(\d+)\s+[\d.]+\s+[\d.]+\n"
                      r"raw model\.encode\s+(\d+)\s+[\d.]+\s+[\d.]+\n"
                      r"worker / raw = [\d.]+", demo_run.stdout)
    assert table, demo_run.stdout
    assert table.group(1) == table.group(2) == LIMIT  # the model measured on all the texts
    assert "Try next:" in demo_run.stdout and "make serve" in demo_run.stdout
    assert demo_run.stdout.count("\n? ") == 6  # the example questions were answered


def test_quiet_prints_results_only_and_verbose_shows_the_worker(
        demo_run: subprocess.CompletedProcess[str], module_url: str) -> None:
    # each run adds 20 docstrings to the index, so each has something to embed
    quiet = embeddb("demo", "-q", "--database-url", module_url, "--limit", "220")
    assert quiet.returncode == 0, quiet.stderr
    assert not LOG_LINE.search(quiet.stderr) and "embedding:" not in quiet.stderr
    assert re.search(r"worker \(embed \+ store\)\s+20\s.*\nraw model.encode\s+20\s",
                     quiet.stdout), quiet.stdout
    verbose = embeddb("-v", "demo", "--database-url", module_url, "--limit", "240")
    assert verbose.returncode == 0, verbose.stderr
    assert "embeddb.worker" in {m.group(2) for m in LOG_LINE.finditer(verbose.stderr)}


def test_a_png_map_of_the_demo_column_is_a_real_coloured_image(
        demo_run: subprocess.CompletedProcess[str], module_url: str, tmp_path: Path) -> None:
    out = tmp_path / "map.png"
    run = embeddb("map", "stdlib_docs.embedding", "--database-url", module_url,
                  "--out", str(out), "--clusters", "5")
    assert run.returncode == 0, run.stderr
    assert "coloured by cluster" in run.stdout and "outliers" in run.stdout
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None
    # white background, black text, and points in several hues
    saturated = {rgb for _, rgb in colours if max(rgb) - min(rgb) > 80}
    assert len(saturated) > 5


def test_an_html_map_coloured_by_a_column_has_hover_labels(
        demo_run: subprocess.CompletedProcess[str], module_url: str, tmp_path: Path) -> None:
    out = tmp_path / "map.html"
    run = embeddb("map", "stdlib_docs.embedding", "--database-url", module_url,
                  "--out", str(out), "--color", "kind")
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "plotly" in page.lower()
    assert all(f'"name":"{kind}"' in page for kind in ("module", "class", "function"))
    assert '"hoverinfo":"text"' in page


def test_map_refuses_an_unknown_colour_column_and_file_type(
        demo_run: subprocess.CompletedProcess[str], module_url: str, tmp_path: Path) -> None:
    run = embeddb("map", "stdlib_docs.embedding", "--database-url", module_url,
                  "--color", "nope", "--out", str(tmp_path / "m.png"))
    assert run.returncode == 1
    assert "stdlib_docs has no column 'nope'" in run.stderr
    run = embeddb("map", "stdlib_docs.embedding", "--database-url", module_url,
                  "--out", str(tmp_path / "m.svg"))
    assert run.returncode == 1 and ".html (interactive) or a .png" in run.stderr
