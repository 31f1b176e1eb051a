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
    embedding = Embedding("{qualname}\n\n{doc}")


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


def run_demo(database_url: str, *, threads: int | None = None, fresh: bool = False) -> None:
    from tqdm import tqdm

    engine = create_engine(database_url)
    connect_check(engine)  # an unreachable server is one clear line, its URL without secrets
    if fresh:
        Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    started = time.perf_counter()
    records = list(stdlib_docs())
    total = load_docs(engine, records)
    print(f"{total} docstrings from Python {sys.version.split()[0]}'s standard library"
          f" ({time.perf_counter() - started:.1f}s to collect and store)")

    worker = Worker(database_url, WorkerConfig(threads=threads), engine=engine)
    pending = _pending_count(engine)
    started = time.perf_counter()
    with tqdm(total=pending, unit="row", desc="embedding", disable=pending == 0) as bar:
        worker.run_once(on_batch=lambda batch: bar.update(batch.claimed))
    elapsed = time.perf_counter() - started
    embedded = worker.stats.embedded
    if embedded:
        print(f"embedded {embedded} rows in {elapsed:.1f}s: {embedded / elapsed:.1f} rows/s")
        _print_encode_ratio(engine, embedded / elapsed)
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


def _pending_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddb.pending")).scalar_one())


def _print_encode_ratio(engine: sa.Engine, worker_rate: float, sample: int = 512) -> None:
    """Raw model.encode on the same texts, the same batch size: the physical limit."""
    with engine.connect() as conn:
        entry = column_entry(conn, StdlibDoc.embedding)
        texts = [row.text for row in conn.exec_driver_sql(
            column_sql.sample_texts(entry.spec, entry.id), {"limit": sample})]
    embedder = load_embedder(entry.spec.model, entry.spec.encode, entry.spec.dimensions)
    started = time.perf_counter()
    embedder.embed_documents(texts)
    raw = len(texts) / (time.perf_counter() - started)
    print(f"raw model.encode on {len(texts)} of the same texts: {raw:.1f} rows/s;"
          f" worker/raw = {worker_rate / raw:.2f}")
