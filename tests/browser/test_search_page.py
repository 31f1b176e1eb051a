"""The search page of examples/search_service in a real browser: Debian's headless Chromium,
driven by Playwright (never a browser Playwright downloads), against a real uvicorn server,
the real model and the real PostgreSQL.

The index holds the demo's docs of a handful of modules, so the expected top hits are known.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

from embeddb.database import create_engine
from embeddb.demo import Base, load_docs, stdlib_docs
from examples.search_service.app import create_app

from ..integration.models import drain

CHROMIUM = Path("/usr/bin/chromium")
MODULES = {"hashlib", "json", "subprocess", "datetime", "re", "csv", "shutil", "argparse",
           "base64", "zipfile", "gzip", "uuid"}
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def index(module_url: str) -> str:
    engine = create_engine(module_url)
    Base.metadata.create_all(engine)
    load_docs(engine, [doc for doc in stdlib_docs() if doc.module in MODULES])
    engine.dispose()
    drain(module_url)
    return module_url


@pytest.fixture(scope="module")
def service(index: str) -> Iterator[str]:
    """uvicorn serving the app on a free loopback port, in a thread; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(index), log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])))
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=1) as client:
            for _ in range(200):  # wait for the first answer, not for a fixed time
                if server.started:
                    client.get("/api/facets").raise_for_status()
                    break
                thread.join(0.05)
            else:
                pytest.fail("the search service did not start")
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


@pytest.fixture(scope="module")
def browser_page(service: str) -> Iterator[Page]:
    if not CHROMIUM.exists():  # make test installs it; never a silent skip
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(service)
        yield page
        browser.close()


def search(page: Page, text: str, *, kind: str = "", module: str = "",
           mode: str = "search") -> list[str]:
    page.fill("#q", text)
    page.select_option("#kind", kind)
    page.fill("#module", module)
    page.select_option("#mode", mode)
    before = page.inner_text("#status")
    page.click("button[type=submit]")
    expect(page.locator("#status")).not_to_have_text(before or "-", timeout=30_000)
    expect(page.locator("#status")).to_contain_text("results", timeout=30_000)
    return page.locator("li.hit span.name").all_inner_texts()


def test_typing_a_query_shows_the_expected_top_hits(browser_page: Page, tmp_path: Path) -> None:
    names = search(browser_page, "compute a SHA-256 digest of some bytes")
    assert names[0].startswith("hashlib"), names
    status = browser_page.inner_text("#status")
    assert "10 results" in status and "plan " in status and " ms" in status
    scores = [float(s) for s in browser_page.locator("li.hit .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] < scores[0] <= 1
    browser_page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    assert (tmp_path / "search.png").stat().st_size > 10_000


def test_the_filters_narrow_the_results(browser_page: Page) -> None:
    names = search(browser_page, "run a shell command and capture its output", kind="function",
                   module="subprocess")
    assert names and all(name.startswith("subprocess.") for name in names)
    assert {"subprocess.run", "subprocess.check_output", "subprocess.getoutput"} & set(names[:3])
    kinds = browser_page.locator("li.hit .tag").all_inner_texts()
    assert set(kinds) == {"function"}


def test_hybrid_search_and_more_like_this(browser_page: Page, tmp_path: Path) -> None:
    names = search(browser_page, "b64encode", mode="hybrid")
    assert all(name.startswith("base64.") for name in names[:3]), names
    assert "b64encode" in names[0], names
    assert "hybrid" in browser_page.inner_text("#status")
    first = browser_page.locator("li.hit").first
    source = first.locator("span.name").inner_text()
    first.locator("a.more").click()
    expect(browser_page.locator("#source")).to_have_text(f"rows like {source}", timeout=30_000)
    expect(browser_page.locator("#status")).to_contain_text("results", timeout=30_000)
    similar = browser_page.locator("li.hit span.name").all_inner_texts()
    assert similar and source not in similar
    assert sum(name.startswith("base64.") for name in similar[:3]) >= 2, similar
    browser_page.screenshot(path=str(tmp_path / "similar.png"), full_page=True)


def test_the_api_names_a_missing_row(service: str) -> None:
    with httpx.Client(base_url=service) as client:
        response = client.get("/api/similar/999999")
        assert response.status_code == 404
        assert "stdlib_docs has no row with id 999999" in response.json()["detail"]
        assert client.get("/api/search", params={"q": ""}).status_code == 422
