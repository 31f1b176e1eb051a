"""How close does embeddb's worker get to the physical limit, the model itself?

Run: ``.venv/bin/python benchmarks/worker_throughput.py [--corpus scifact|wordnet|all]
[--limit N] [--scaling] [--database-url URL]``. Prints a table and writes every figure, with
the machine's facts, to ``benchmarks/results/worker_throughput.json``.

For each corpus (SciFact: ~200-word abstracts; WordNet: ~13-word glosses), on the same texts:

raw model
    ``embed_documents`` alone, after a warm-up, over the texts cut as the worker cuts its
    claims (``WorkerConfig().batch_size`` rows, and about ``max_batch_tokens`` tokens, per call;
    the model encodes each call in sub-batches of 32). Nothing that stores vectors can be faster
    on this machine: it is the limit. It runs before and after the worker runs of the same
    model; the faster of the two is the limit, and the gap between them shows how much other
    work on the machine disturbed the figures.
insert backlog (MiniLM)
    End to end in a fresh database: from the start of one bulk COPY of every row (one
    transaction, committed) until every row has its vector stored, the worker running
    ``Worker.run_once()`` in this process with the model already loaded (load time is not
    counted). This adds the triggers that queue each row, claiming, rendering the text in SQL
    and the guarded store (which the worker overlaps with the next batch's model run).
    The HNSW index costs database CPU per stored row on the same cores as the model, so each
    run names what happened to it: "HNSW kept" (maintained row by row: the default for a
    backlog under ``WorkerConfig().defer_index_rows``, forced otherwise with
    ``defer_index_rows=0``), "HNSW rebuilt" (the default for a larger backlog into an empty
    table, as here: set aside, then rebuilt once at the end, inside the timed run) and
    "no index" (``Embedding(index=False)``).
MiniLM in worker processes (``--scaling``)
    The insert backlog drained by 1 ``embeddb worker --once`` process with torch's own thread
    count, then by 2 and by 4 single-thread processes started together; each process loads
    the model inside the timed run.
pipeline (hash-384)
    The same with ``embeddb-testing/hash-384``, a model that takes microseconds per text, so the
    time is almost all embeddb's own: an insert backlog in each index setting, an update
    backlog (every row's text changed, after the insert backlog was drained), and 1, 2 and 4
    ``embeddb worker --once`` processes started together right after the insert commits and
    timed until all have exited (process start-up included).

"ratio" is a run's rows/s over the raw rows/s of the same model on the same texts: 1.0 would be
a free pipeline. Each run ends by checking in SQL that every row has a vector made from its
current text, that ``embeddb.pending`` is empty and that the HNSW index is there and valid
(when declared). Figures from a busy or small machine are
noisy: the JSON records the load average at the start of each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from common import (
    CORPORA,
    REPO_ROOT,
    RESULTS_DIR,
    Databases,
    load_corpus,
    machine_facts,
    print_table,
    server_versions,
    source_digest,
    write_json,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb.backfill import worth_setting_aside
from embeddb.database import create_engine, libpq_conninfo
from embeddb.embedders import MINILM, load_embedder
from embeddb.orm import Embedding
from embeddb.worker import Worker, WorkerConfig

HASH_MODEL = "embeddb-testing/hash-384"
TABLE = "embeddb_bench_documents"  # distinctive: with --database-url it is dropped
DEFAULTS = WorkerConfig()
CHARS_PER_TOKEN = 4  # how the worker estimates a text's tokens when it cuts a claim
WARMUP_TEXTS = 64
RAW_FIRST, RAW_AGAIN = "raw model, before", "raw model, after"
PROCESS_COUNTS = (1, 2, 4)
DEFAULT_LIMIT = 20_000
OUTPUT = RESULTS_DIR / "worker_throughput.json"


class BenchmarkError(Exception):
    """A run did not end in the state it must end in."""


@dataclass(frozen=True)
class Measurement:
    """One timed run. ``backlog_seconds`` is the part of ``seconds`` spent inserting/updating."""

    corpus: str
    model: str
    mode: str
    rows: int
    seconds: float
    backlog_seconds: float | None
    load_average: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


Drain = Callable[[str], None]


@dataclass(frozen=True)
class Setup:
    """Whether the table has an HNSW index, and whether the worker may set it aside."""

    index: bool = True
    keep_index: bool = False

    @property
    def config(self) -> WorkerConfig:
        return WorkerConfig(defer_index_rows=0) if self.keep_index else DEFAULTS

    def label(self, backlog: int) -> str:
        """What happens to the index while a backlog of ``backlog`` rows is drained."""
        if not self.index:
            return "no index"
        config = self.config  # every backlog here is every row of its table
        aside = worth_setting_aside(backlog, backlog, config.defer_index_rows,
                                    config.defer_index_share)
        return "HNSW rebuilt" if aside else "HNSW kept"


DEFAULT, KEPT, NO_INDEX = Setup(), Setup(keep_index=True), Setup(index=False)


def setups_for(rows: int) -> list[Setup]:
    """The default; the index kept row by row, if the default sets it aside; no index."""
    kept_too = DEFAULT.label(rows) != KEPT.label(rows)
    return [DEFAULT, *([KEPT] if kept_too else []), NO_INDEX]


# --- the table -----------------------------------------------------------------------------


def documents_metadata(model: str, *, index: bool, backend: str = "torch") -> sa.MetaData:
    """The table ``TABLE(id, text, embedding)`` on metadata of its own, embedded by ``model``
    (run on ``backend``)."""

    class Base(DeclarativeBase):
        pass

    class Document(Base):
        __tablename__ = TABLE

        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str]
        embedding = Embedding("{text}", model=model, index=index, backend=backend)

    return Base.metadata


@contextmanager
def documents_database(
    databases: Databases, name: str, model: str, *, index: bool = True, backend: str = "torch"
) -> Iterator[str]:
    """A database holding an empty, embedded ``TABLE``; yields its URL."""
    metadata = documents_metadata(model, index=index, backend=backend)
    with databases.fresh(name) as url:
        engine = create_engine(url, poolclass=sa.pool.NullPool)
        metadata.drop_all(engine)  # a leftover, in a database given by --database-url
        metadata.create_all(engine)
        try:
            yield url
        finally:
            metadata.drop_all(engine)
            engine.dispose()


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_conninfo(url))


def copy_rows(url: str, texts: Sequence[str]) -> None:
    """Every text as a row, in one COPY, committed."""
    with (
        connect(url) as conn,
        conn.cursor() as cursor,
        cursor.copy(f"COPY {TABLE} (id, text) FROM STDIN") as copy,
    ):
        for row_id, text in enumerate(texts):
            copy.write_row((row_id, text))


def update_every_row(url: str) -> None:
    """A new text for every row, in one UPDATE, committed."""
    with connect(url) as conn:
        conn.execute(f"UPDATE {TABLE} SET text = text || ' (revised)'")


def verify_all_embedded(url: str, rows: int, *, index: bool) -> None:
    """Every row has a vector made from its current text, nothing is pending, and the HNSW
    index is there and valid if the column declares one."""
    # The template is "{text}", so a row's source hash is md5 of its text when it is current.
    with connect(url) as conn:
        counts = conn.execute(
            f"SELECT count(*), count(embedding),"
            f" count(*) FILTER (WHERE embedding_source_hash = md5(text)::uuid) FROM {TABLE}"
        ).fetchone()
        pending = conn.execute("SELECT count(*) FROM embeddb.pending").fetchone()
        indexes = conn.execute(
            "SELECT count(*) FILTER (WHERE i.indisvalid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
            " WHERE i.indrelid = %s::regclass AND a.amname = 'hnsw'", (TABLE,)
        ).fetchone()
    found = (*(counts or ()), *(pending or ()), *(indexes or ()))
    expected = (rows, rows, rows, 0, 1 if index else 0)
    if found != expected:
        raise BenchmarkError(
            "(rows, vectors, vectors of the current text, pending, valid HNSW indexes):"
            f" expected {expected}, found {found}"
        )


# --- draining ------------------------------------------------------------------------------


def drain_in_process(config: WorkerConfig) -> Drain:
    """``Worker.run_once()`` here, with whatever model this process has loaded already."""

    def drain(url: str) -> None:
        with Worker(url, config) as worker:
            worker.run_once()

    return drain


def drain_with_processes(count: int, config: WorkerConfig, threads: int | None = None) -> Drain:
    """Drain with ``count`` ``embeddb worker --once`` processes started together, each with
    ``threads`` torch threads (default: torch's choice)."""
    command = [
        sys.executable, "-m", "embeddb.cli", "worker", "--once",
        "--batch-size", str(config.batch_size),
        "--max-batch-tokens", str(config.max_batch_tokens),
        "--defer-index-rows", str(config.defer_index_rows),
        "--defer-index-share", str(config.defer_index_share),
        *(["--threads", str(threads)] if threads is not None else []),
    ]

    def drain(url: str) -> None:
        workers = [
            subprocess.Popen([*command, "--database-url", url], cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        errors = [(worker.communicate()[1], worker.returncode) for worker in workers]
        failed = [f"exit {code}: {stderr.strip()}" for stderr, code in errors if code != 0]
        if failed:
            raise BenchmarkError("worker process failed: " + "\n".join(failed))

    return drain


# --- runs ----------------------------------------------------------------------------------


def claim_chunks(texts: Sequence[str], config: WorkerConfig = DEFAULTS) -> Iterator[Sequence[str]]:
    """``texts`` cut as the worker cuts its claims: at most ``batch_size`` rows and about
    ``max_batch_tokens`` tokens (at ``CHARS_PER_TOKEN``), at least one row."""
    start = 0
    while start < len(texts):
        end, budget = start, config.max_batch_tokens * CHARS_PER_TOKEN
        while end < len(texts) and end - start < config.batch_size:
            budget -= len(texts[end])
            if budget < 0 and end > start:
                break
            end += 1
        yield texts[start:end]
        start = end


def measure_raw(corpus: str, model: str, texts: Sequence[str], mode: str) -> Measurement:
    """The model alone, in the worker's claim-sized chunks, after a warm-up."""
    embedder = load_embedder(model)
    embedder.embed_documents(texts[:WARMUP_TEXTS])
    load = os.getloadavg()[0]
    started = time.perf_counter()
    for chunk in claim_chunks(texts):
        embedder.embed_documents(chunk)
    return Measurement(corpus, model, mode, len(texts), time.perf_counter() - started, None, load)


def measure_backlog(
    corpus: str, model: str, mode: str, url: str, rows: int,
    make_backlog: Callable[[], None], drain: Drain, *, index: bool,
) -> Measurement:
    """Time from the start of ``make_backlog`` until ``drain`` has stored every vector."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    make_backlog()
    backlog_done = time.perf_counter()
    drain(url)
    finished = time.perf_counter()
    verify_all_embedded(url, rows, index=index)
    return Measurement(corpus, model, mode, rows, finished - started, backlog_done - started,
                       load)


def measure_inserts(
    databases: Databases, corpus: str, model: str, texts: Sequence[str], setup: Setup, *,
    processes: int | None = None, threads: int | None = None,
) -> Measurement:
    """A fresh table, one COPY of ``texts``, drained in this process or by ``processes`` with
    ``threads`` torch threads each."""
    index = setup.label(len(texts))
    mode = f"insert backlog, {index}"
    drain = drain_in_process(setup.config)
    if processes is not None:
        each = f" x {threads} thread{'s' if threads != 1 else ''}" if threads else ""
        mode = f"{processes} worker process{'es' if processes > 1 else ''}{each}, {index}"
        drain = drain_with_processes(processes, setup.config, threads)
    name = _database_name(corpus, model, mode)
    with documents_database(databases, name, model, index=setup.index) as url:
        load_embedder(model)  # loaded before the clock starts
        return measure_backlog(corpus, model, mode, url, len(texts),
                               lambda: copy_rows(url, texts), drain, index=setup.index)


def measure_insert_then_update(
    databases: Databases, corpus: str, model: str, texts: Sequence[str]
) -> list[Measurement]:
    """An insert backlog drained, then an update of every row's text drained, in one table
    (default setup)."""
    label = DEFAULT.label(len(texts))
    name = _database_name(corpus, model, "insert then update")
    drain = drain_in_process(DEFAULT.config)
    with documents_database(databases, name, model) as url:
        load_embedder(model)
        inserted = measure_backlog(corpus, model, f"insert backlog, {label}", url, len(texts),
                                   lambda: copy_rows(url, texts), drain, index=True)
        updated = measure_backlog(corpus, model, f"update backlog, {label}", url, len(texts),
                                  lambda: update_every_row(url), drain, index=True)
    return [inserted, updated]


def measure_corpus(databases: Databases, corpus: str, texts: Sequence[str],
                   scaling: bool = False) -> list[Measurement]:
    """Every run for one corpus: the worker with MiniLM (and, with ``scaling``, MiniLM in 1
    process with torch's threads, then in 2 and 4 single-thread processes, model loading
    included), then the pipeline's own cost with the hash model, each model's runs between two
    raw-model runs (the faster one is the limit; the gap between them shows how noisy the
    machine was meanwhile)."""
    setups = setups_for(len(texts))
    done: list[Measurement] = []
    record(done, measure_raw(corpus, MINILM, texts, RAW_FIRST))
    for setup in setups:
        record(done, measure_inserts(databases, corpus, MINILM, texts, setup))
    for count in PROCESS_COUNTS if scaling else ():
        record(done, measure_inserts(databases, corpus, MINILM, texts, DEFAULT, processes=count,
                                     threads=1 if count > 1 else None))
    record(done, measure_raw(corpus, MINILM, texts, RAW_AGAIN))
    record(done, measure_raw(corpus, HASH_MODEL, texts, RAW_FIRST))
    record(done, *measure_insert_then_update(databases, corpus, HASH_MODEL, texts))
    for setup in setups[1:]:
        record(done, measure_inserts(databases, corpus, HASH_MODEL, texts, setup))
    for count in PROCESS_COUNTS:
        record(done, measure_inserts(databases, corpus, HASH_MODEL, texts, DEFAULT,
                                     processes=count))
    record(done, measure_raw(corpus, HASH_MODEL, texts, RAW_AGAIN))
    return done


def record(done: list[Measurement], *measurements: Measurement) -> None:
    """Keep ``measurements`` and say so on stderr, since a full run takes a while."""
    for m in measurements:
        done.append(m)
        print(f"  {m.corpus} {_short_model(m.model)} {m.mode}: {m.rows} rows in"
              f" {m.seconds:.1f}s ({m.rows_per_second:.1f} rows/s)", file=sys.stderr, flush=True)


def _database_name(corpus: str, model: str, mode: str) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in f"{_short_model(model)}_{mode}")
    return f"bench_{corpus}_{slug}".lower()[:63]


# --- report --------------------------------------------------------------------------------


def raw_limit(corpus: str, model: str, measurements: Sequence[Measurement]) -> float | None:
    """The best raw rows/s of ``model`` on ``corpus``: the least disturbed by other work."""
    rates = [m.rows_per_second for m in measurements
             if (m.corpus, m.model) == (corpus, model) and m.mode in (RAW_FIRST, RAW_AGAIN)]
    return max(rates, default=None)


def ratio_to_raw(measurement: Measurement, measurements: Sequence[Measurement]) -> float | None:
    """rows/s over the raw limit of the same model on the same corpus."""
    limit = raw_limit(measurement.corpus, measurement.model, measurements)
    return measurement.rows_per_second / limit if limit else None


def result_records(measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    return [
        {**asdict(m), "rows_per_second": m.rows_per_second,
         "ratio_to_raw": ratio_to_raw(m, measurements)}
        for m in measurements
    ]


def print_results(measurements: Sequence[Measurement]) -> None:
    headers = ["corpus", "model", "mode", "rows", "backlog s", "seconds", "rows/s",
               "ratio to raw"]
    rows = [
        [m.corpus, _short_model(m.model), m.mode, str(m.rows),
         f"{m.backlog_seconds:.2f}" if m.backlog_seconds is not None else "-",
         f"{m.seconds:.2f}", f"{m.rows_per_second:.1f}",
         _format_ratio(ratio_to_raw(m, measurements))]
        for m in measurements
    ]
    print_table(headers, rows, left=3)


def _format_ratio(ratio: float | None) -> str:
    return f"{ratio:.3f}" if ratio is not None else "-"


def _short_model(model: str) -> str:
    return model.rsplit("/", 1)[-1]


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"rows per corpus (default {DEFAULT_LIMIT}; SciFact has 5,183)")
    parser.add_argument("--database-url",
                        help="run every measurement in this database, which must have no other"
                             f" embedded columns (its table {TABLE} is dropped and recreated);"
                             " default: a fresh database per run on an embedded PostgreSQL in"
                             " .embeddb-bench")
    parser.add_argument("--scaling", action="store_true",
                        help="also drain with MiniLM in 1, 2 and 4 worker processes")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default {OUTPUT}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    corpora = list(CORPORA) if args.corpus == "all" else [args.corpus]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_facts()
    code_before = source_digest()
    databases = Databases.choose(args.database_url)
    measurements: list[Measurement] = []
    for corpus in corpora:
        texts = load_corpus(corpus, args.limit)
        print(f"{corpus}: {len(texts)} texts", file=sys.stderr, flush=True)
        measurements += measure_corpus(databases, corpus, texts, args.scaling)
    code_changed = source_digest() != code_before
    if code_changed:
        print("warning: embeddb's source changed during the run; the worker processes and"
              " this process may have run different code", file=sys.stderr)
    print_results(measurements)
    path = write_json(args.output, {
        "benchmark": "worker_throughput",
        "started_at": started_at,
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "settings": {"corpora": corpora, "limit": args.limit, "warmup_texts": WARMUP_TEXTS,
                     "minilm": MINILM, "hash_model": HASH_MODEL,
                     "worker_defaults": asdict(DEFAULTS)},
        "embeddb": {"source_digest": code_before, "changed_during_run": code_changed},
        "machine": {**machine, **server_versions(databases.url),
                    "load_average_at_end": list(os.getloadavg())},
        "results": result_records(measurements),
    })
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
