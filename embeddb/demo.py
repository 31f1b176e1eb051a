"""The main job: a semantic index of the Python standard library's documentation.

Collects the docstrings of the public modules, classes and functions of the running
interpreter, stores them in a table with ``module`` and ``kind`` as filterable columns, lets the
worker embed them (with a progress bar), then answers example questions with and without a
module filter. A second run only embeds what changed.
"""

from __future__ import annotations

import importlib
import inspect
import io
import pkgutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from . import column_sql
from .database import connect_check, create_engine
from .embedders import load_embedder
from .orm import Embedding
from .query._search import column_entry, search
from .worker import Worker, WorkerConfig

# Modules that open windows, play sounds, print on import, or only exist for tests.
_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
         "ensurepip", "venv", "pydoc_data", "xxlimited", "xxsubtype", "msilib", "winreg",
         "winsound", "msvcrt", "_winapi", "nt"}
_MAX_DOC_CHARS = 4000

EXAMPLES: list[tuple[str, str | None]] = [
    ("read a text file line by line", None),
    ("parse command-line options and arguments", None),
    ("compute a SHA-256 digest of some bytes", None),
    ("run a shell command and capture its output", "subprocess"),
    ("the current date and time in UTC", "datetime"),
    ("match a pattern at the start of a string", "re"),
]


class Base(DeclarativeBase):
    pass


class StdlibDoc(Base):
    __tablename__ = "stdlib_docs"

    id: Mapped[int] = mapped_column(primary_key=True)
    qualname: Mapped[str] = mapped_column(unique=True)
    module: Mapped[str] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(index=True)
    doc: Mapped[str]
    embedding = Embedding("{qualname}\n\n{doc}", fulltext=True)


@dataclass(frozen=True)
class DocRecord:
    qualname: str
    module: str
    kind: str
    doc: str


def stdlib_docs() -> Iterator[DocRecord]:
    """Docstrings of the public stdlib modules, and of the classes and functions they define."""
    for module_name in sorted(_public_stdlib_modules()):
        module = _quiet_import(module_name)
        if module is None:
            continue
        yield from _module_docs(module_name, module)


def _public_stdlib_modules() -> Iterator[str]:
    for name in sys.stdlib_module_names:
        if name.startswith("_") or name in _SKIP:
            continue
        yield name
        module = _quiet_import(name)
        if module is not None and hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__, prefix=f"{name}."):
                leaf = info.name.rsplit(".", 1)[-1]
                if not leaf.startswith("_") and leaf not in _SKIP and "test" not in leaf:
                    yield info.name


def _quiet_import(name: str) -> object | None:
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), \
                redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:  # a module that cannot be imported here simply is not indexed
        return None


def _module_docs(module_name: str, module: object) -> Iterator[DocRecord]:
    doc = inspect.getdoc(module)
    if doc:
        yield DocRecord(module_name, module_name, "module", doc[:_MAX_DOC_CHARS])
    public = getattr(module, "__all__", None)
    for name, member in sorted(vars(module).items()):
        if name.startswith("_") or (public is not None and name not in public):
            continue
        if not (inspect.isclass(member) or inspect.isfunction(member)):
            continue
        if getattr(member, "__module__", None) != module_name:
            continue  # re-exported from elsewhere: indexed where it is defined
        doc = inspect.getdoc(member)
        if doc:
            kind = "class" if inspect.isclass(member) else "function"
            yield DocRecord(f"{module_name}.{name}", module_name, kind, doc[:_MAX_DOC_CHARS])


def load_docs(engine: sa.Engine, records: list[DocRecord]) -> int:
    """Upsert the records; unchanged rows are left alone, so their vectors stay valid."""
    table = StdlibDoc.__table__
    assert isinstance(table, sa.Table)
    insert = sa.dialects.postgresql.insert(table)
    stmt = insert.on_conflict_do_update(
        index_elements=[table.c.qualname],
        set_={"doc": insert.excluded.doc, "module": insert.excluded.module,
              "kind": insert.excluded.kind},
        where=table.c.doc.is_distinct_from(insert.excluded.doc),
    )
    with engine.begin() as conn:
        conn.execute(stmt, [record.__dict__ for record in records])
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def run_demo(database_url: str, *, threads: int | None = None, fresh: bool = False,
             limit: int | None = None, progress: bool = True) -> None:
    """Build (or bring up to date) the stdlib index, then print example searches.

    ``limit`` indexes only the first that many docstrings (a quick look, or a test);
    ``progress=False`` hides the progress bar. Log lines go above the bar, never through it.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    engine = create_engine(database_url)
    connect_check(engine)  # an unreachable server is one clear line, its URL without secrets
    if fresh:
        Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    started = time.perf_counter()
    records = list(stdlib_docs())[:limit]
    total = load_docs(engine, records)
    print(f"{total} docstrings from Python {sys.version.split()[0]}'s standard library"
          f" ({time.perf_counter() - started:.1f}s to collect and store)")

    worker = Worker(database_url, WorkerConfig(threads=threads), engine=engine)
    pending = _pending_count(engine)
    started = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=pending, unit="row", desc="embedding",
                                       disable=pending == 0 or not progress) as bar:
        worker.run_once(on_batch=lambda batch: bar.update(batch.claimed))
    elapsed = time.perf_counter() - started
    embedded = worker.stats.embedded
    if embedded:
        print()
        print(throughput_table(embedded, elapsed, _raw_model_run(engine, embedded)))
    else:
        print("nothing to embed: every row already has its vector")

    with Session(engine) as session:
        entry = column_entry(session.connection(), StdlibDoc.embedding)
        # query times exclude model loading
        load_embedder(entry.spec.model, entry.spec.encode, entry.spec.dimensions)
        for question, module in EXAMPLES:
            where = StdlibDoc.module == module if module else None
            hits = search(session, StdlibDoc.embedding, question, k=3, where=where)
            scope = f" [module = {module}]" if module else ""
            print(f"\n? {question}{scope}   ({hits.elapsed_ms:.1f} ms, plan {hits.plan})")
            for doc, similarity in hits:
                summary = doc.doc.splitlines()[0][:70]
                print(f"  {similarity:.3f}  {doc.qualname:<40} {summary}")
    print(NEXT_STEPS)


NEXT_STEPS = """
Try next:
  embeddb search stdlib_docs.embedding "parse a date" -k 5 --where "kind = 'function'"
  embeddb search stdlib_docs.embedding "strptime" --hybrid
  embeddb map stdlib_docs.embedding --color kind --out map.html
  make serve     # the search page of examples/search_service on http://127.0.0.1:8000"""


@dataclass(frozen=True)
class RawRun:
    """The column's model alone on the same texts, the same batch size: the physical limit."""

    rows: int
    seconds: float


def throughput_table(embedded: int, seconds: float, raw: RawRun) -> str:
    """The worker against the bare model as a small table, and their ratio.

    Example::

        print(throughput_table(2973, 61.0, RawRun(2973, 55.2)))
    """
    worker_rate, raw_rate = embedded / seconds, raw.rows / raw.seconds
    lines = [
        f"{'':<24}{'rows':>8}{'seconds':>10}{'rows/s':>10}",
        f"{'worker (embed + store)':<24}{embedded:>8}{seconds:>10.1f}{worker_rate:>10.1f}",
        f"{'raw model.encode':<24}{raw.rows:>8}{raw.seconds:>10.1f}{raw_rate:>10.1f}",
        f"worker / raw = {worker_rate / raw_rate:.2f}",
    ]
    return "\n".join(lines)


def _pending_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(  # bulk INSERTs' keys wait in the inbox
            "SELECT (SELECT count(*) FROM embeddb.pending)"
            " + (SELECT coalesce(sum(rows), 0) FROM embeddb.inbox)"
            " + (SELECT coalesce(sum(rows), 0) FROM embeddb.inbox_ranges)")).scalar_one())


def _raw_model_run(engine: sa.Engine, count: int) -> RawRun:
    """As many of the column's texts as the worker embedded (on a fresh index: every one)
    through the bare model, as the worker's batches would be."""
    with engine.connect() as conn:
        entry = column_entry(conn, StdlibDoc.embedding)
        texts = [row.text for row in conn.exec_driver_sql(
            column_sql.sample_texts(entry.spec, entry.id), {"limit": count})]
    embedder = load_embedder(entry.spec.model, entry.spec.encode, entry.spec.dimensions)
    started = time.perf_counter()
    embedder.embed_documents(texts)
    return RawRun(len(texts), time.perf_counter() - started)
