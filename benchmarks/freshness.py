"""Freshness: how long after a commit is a row's vector stored?

Single-row inserts arrive at a steady rate (default 5/s for 60 s) while one `embeddb worker`
process runs, woken by NOTIFY. The table records, on the server's clock, when each row was
inserted and when its vector was written (a trigger of the benchmark's own), so the lag
excludes client-side timing noise. Prints p50/p95/p99 and writes
benchmarks/results/freshness.json. Target: p99 under 1 second.

    .venv/bin/python benchmarks/freshness.py [--seconds 60] [--rate 5] [--model hash|minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb import Embedding
from embeddb.database import create_engine, libpq_conninfo
from embeddb.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "hash": "embeddb-testing/hash-384"}
DATABASE = "bench_freshness"
STAMP_EMBEDDED_AT = """
CREATE FUNCTION stamp_embedded_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.embedded_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER stamp_embedded_at BEFORE UPDATE OF embedding ON events
    FOR EACH ROW WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION stamp_embedded_at();
"""


def events_model(model: str) -> type[DeclarativeBase]:
    class Base(DeclarativeBase):
        pass

    class Event(Base):
        __tablename__ = "events"
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str]
        embedding = Embedding("{text}", model=model)

    return Base


def fresh_database(server_url: str) -> str:
    with psycopg.connect(libpq_conninfo(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{DATABASE}" + (f"?{query}" if query else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0, help="inserts per second")
    parser.add_argument("--model", choices=sorted(MODELS), default="minilm")
    parser.add_argument("--database-url", help="server to use (default: embedded)")
    args = parser.parse_args()

    server_url = args.database_url or EmbeddedServer(ROOT / ".embeddb-bench").start()
    url = fresh_database(server_url)
    engine = create_engine(url)
    events_model(MODELS[args.model]).metadata.create_all(engine)
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        conn.execute("ALTER TABLE events ADD COLUMN created_at timestamptz"
                     " NOT NULL DEFAULT clock_timestamp(), ADD COLUMN embedded_at timestamptz")
        conn.execute(STAMP_EMBEDDED_AT)
    engine.dispose()

    worker = subprocess.Popen(
        [sys.executable, "-m", "embeddb.cli", "worker", "--database-url", url, "--threads", "1"],
        stderr=subprocess.DEVNULL)
    try:
        lags = run(url, args.seconds, args.rate)
    finally:
        worker.terminate()
        worker.wait(30)
    report(lags, args)


def run(url: str, seconds: float, rate: float) -> list[float]:
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        # warm-up: the worker loads its model on the first row; not measured
        conn.execute("INSERT INTO events (id, text) VALUES (0, 'warm up the model')")
        wait_for_all(conn, 1, 120)
        count = int(seconds * rate)
        started = time.monotonic()
        for i in range(1, count + 1):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            conn.execute("INSERT INTO events (id, text) VALUES (%s, %s)",
                         (i, f"event number {i}: a user reported problem {i % 17}"))
        wait_for_all(conn, count + 1, 60)
        rows = conn.execute("SELECT extract(epoch FROM embedded_at - created_at) FROM events"
                            " WHERE id > 0").fetchall()
    return [float(r[0]) for r in rows]


def wait_for_all(conn: psycopg.Connection[tuple[object, ...]], count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = conn.execute("SELECT count(*) FROM events WHERE embedded_at IS NOT NULL").fetchone()
        if done is not None and done[0] >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out: fewer than {count} rows embedded after {timeout}s")


def report(lags: list[float], args: argparse.Namespace) -> None:
    ms = np.array(lags) * 1000
    figures = {f"p{p}": float(np.percentile(ms, p)) for p in (50, 95, 99)} | {
        "max": float(ms.max()), "rows": len(lags)}
    print(f"freshness, {args.model}, {args.rate}/s for {args.seconds:.0f}s, one worker process:")
    print("  " + "  ".join(f"{k} {v:.0f} ms" if k != "rows" else f"{v} rows"
                           for k, v in figures.items()))
    print(f"  target p99 < 1000 ms: {'met' if figures['p99'] < 1000 else 'MISSED'}")
    out = ROOT / "benchmarks" / "results" / "freshness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "freshness", "settings": vars(args), "lag_ms": figures,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
    }, indent=2))


if __name__ == "__main__":
    main()
