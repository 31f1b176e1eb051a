"""Helpers shared by the benchmarks: where things are, the real corpora, databases, results.

The corpora live outside the repository, in ``../shared/data/`` relative to the repo root
(see its README); they are read in place and never copied. Benchmarks run against an embedded
PostgreSQL kept in ``<repo>/.embeddb-bench`` (not the ``.embeddb`` a developer uses), or against
a server given by URL, and get a fresh database per measured run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from embeddb.database import libpq_conninfo
from embeddb.embedders import MINILM
from embeddb.orm import Embedding
from embeddb.server import EmbeddedServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BENCH_HOME = REPO_ROOT / ".embeddb-bench"


# --- data ----------------------------------------------------------------------------------


def read_jsonl(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The first ``limit`` objects of a JSON-lines file (all of them when limit is None)."""
    with path.open(encoding="utf-8") as lines:
        for count, line in enumerate(lines):
            if limit is not None and count >= limit:
                return
            yield json.loads(line)


def scifact_texts(limit: int | None = None) -> list[str]:
    """SciFact abstracts as BEIR embeds them: ``title + " " + text``."""
    path = DATA_DIR / "scifact" / "corpus.jsonl"
    return [f"{doc['title']} {doc['text']}" for doc in read_jsonl(path, limit)]


def wordnet_texts(limit: int | None = None) -> list[str]:
    """WordNet synsets as ``"lemma, lemma: gloss"``."""
    path = DATA_DIR / "wordnet" / "synsets.jsonl"
    return [f"{', '.join(s['lemmas'])}: {s['gloss']}" for s in read_jsonl(path, limit)]


CORPORA: dict[str, Callable[[int | None], list[str]]] = {
    "scifact": scifact_texts,
    "wordnet": wordnet_texts,
}


def load_corpus(name: str, limit: int | None = None) -> list[str]:
    """The texts of corpus ``name`` (a key of :data:`CORPORA`), at most ``limit`` of them."""
    if not DATA_DIR.is_dir():
        raise SystemExit(f"benchmark data not found in {DATA_DIR} (see its README)")
    return CORPORA[name](limit)


# --- databases -----------------------------------------------------------------------------


def embedded_server_url(home: Path = BENCH_HOME) -> str:
    """The URL of the benchmarks' embedded PostgreSQL, started if needed.

    Like ``embeddb db start``, the server outlives this process: other benchmarks may be
    using it, so nothing here stops it (``EMBEDDB_HOME=.embeddb-bench embeddb db stop`` does).
    """
    return EmbeddedServer(home).start()


def with_database(url: str, database: str) -> str:
    """``url`` naming another database on the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def fresh_database(server_url: str, name: str) -> Iterator[str]:
    """A new, empty database ``name`` on the server of ``server_url``, dropped first if it
    exists and again on exit; yields its URL."""
    _drop_database(server_url, name)
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        _drop_database(server_url, name)


@dataclass(frozen=True)
class Databases:
    """Where a benchmark's runs happen: a fresh database per run on ``server_url``, or, when
    the user named one, always ``database_url`` (the run then cleans up its own tables)."""

    server_url: str | None = None
    database_url: str | None = None

    @classmethod
    def choose(cls, database_url: str | None = None) -> Databases:
        """``database_url`` if given, else fresh databases on the benchmarks' embedded server."""
        if database_url:
            return cls(database_url=database_url)
        return cls(server_url=embedded_server_url())

    @property
    def url(self) -> str:
        """A URL on the server (for questions about the server itself)."""
        url = self.database_url or self.server_url
        assert url is not None
        return url

    @contextmanager
    def fresh(self, name: str) -> Iterator[str]:
        """The URL of the database for the run called ``name``."""
        if self.database_url is not None:
            yield self.database_url
            return
        assert self.server_url is not None
        with fresh_database(self.server_url, name) as url:
            yield url


def _drop_database(server_url: str, name: str) -> None:
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_conninfo(url), autocommit=True)


def server_versions(url: str) -> dict[str, str | None]:
    """PostgreSQL's version, and pgvector's: installed in the database of ``url``, else the
    version the server would install."""
    with psycopg.connect(libpq_conninfo(url)) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()
        pgvector = conn.execute(
            "SELECT coalesce("
            " (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
            " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'))"
        ).fetchone()
    return {
        "postgresql": str(postgres[0]) if postgres else None,
        "pgvector": str(pgvector[0]) if pgvector and pgvector[0] else None,
    }


# --- machine and results -------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """What the figures depend on: cores, platform, Python, torch and its thread count."""
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "load_average_1_5_15": list(os.getloadavg()),
    }
    try:
        import torch
    except ImportError:
        return facts
    return {**facts, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def source_digest(package: Path = REPO_ROOT / "embeddb") -> str:
    """A short sha256 of a package's .py and .sql files: tells which code produced a result."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".sql")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, creating the directory; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def print_table(headers: list[str], rows: list[list[str]], *, left: int = 1) -> None:
    """A plain text table: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


# --- BEIR test sets: documents, judgements, nDCG -------------------------------------------

#: query id -> {document id: grade}, as a BEIR qrels file gives them
Qrels = dict[str, dict[str, int]]


def relevance(path: Path) -> Qrels:
    """query id -> {document id: grade} from a BEIR qrels file."""
    judged: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as lines:
        next(lines)  # header
        for line in lines:
            query_id, doc_id, grade = line.rstrip("\n").split("\t")
            judged.setdefault(query_id, {})[doc_id] = int(grade)
    return judged


def beir_test_set(folder: Path, limit: int | None = None
                  ) -> tuple[list[dict[str, Any]], Qrels, dict[str, str]]:
    """A BEIR corpus's documents (the first ``limit``), its test judgements, and the text of
    each test query that has judgements."""
    corpus = list(read_jsonl(folder / "corpus.jsonl", limit))
    qrels = relevance(folder / "qrels" / "test.tsv")
    queries = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl")
               if q["_id"] in qrels}
    return corpus, qrels, queries


def ndcg(rankings: dict[str, list[str]], qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k (linear gains, as BEIR's pytrec_eval computes it)."""
    total = 0.0
    for query_id, judged in qrels.items():
        ranked = rankings.get(query_id, [])[:k]
        dcg = sum(judged.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked))
        ideal = sorted(judged.values(), reverse=True)[:k]
        norm = sum(grade / math.log2(i + 2) for i, grade in enumerate(ideal))
        total += dcg / norm if norm else 0.0
    return total / len(qrels)


def beir_documents(table: str = "documents", **options: Any) -> tuple[Any, Any]:
    """A fresh ``(Base, mapped class)`` for a BEIR corpus: ``id``, ``title``, ``body`` and
    ``embedding = Embedding("{title} {body}", model=MINILM, **options)``."""

    class Base(DeclarativeBase):
        pass

    class Document(Base):
        __tablename__ = table
        id: Mapped[str] = mapped_column(primary_key=True)
        title: Mapped[str]
        body: Mapped[str]
        embedding = Embedding("{title} {body}", model=MINILM, **options)

    return Base, Document


@dataclass
class SearchPasses:
    """What :func:`search_passes` measured, by pass name (``"index"``: the default plan,
    ``"exact"``): each query's ranked row ids, milliseconds per query, the plans that ran."""

    rankings: dict[str, dict[str, list[str]]]
    latencies: dict[str, list[float]]
    plans: dict[str, set[str]]


def search_passes(session: Any, column: Any, queries: dict[str, str], k: int,
                  passes: tuple[str, ...] = ("index", "exact")) -> SearchPasses:
    """Every query through ``embeddb.search`` once per pass, timed one by one: ``"exact"``
    with ``plan="exact"``, any other with the default plan. Query vectors should be cached
    first (``embed_query``), so the times are the database's work."""
    from embeddb import search

    measured = SearchPasses({name: {} for name in passes}, {name: [] for name in passes},
                            {name: set() for name in passes})
    for name in passes:
        for query_id, text in queries.items():
            started = time.perf_counter()
            hits = search(session, column, text, k=k, plan="exact" if name == "exact" else "auto")
            measured.latencies[name].append((time.perf_counter() - started) * 1000)
            measured.rankings[name][query_id] = [hit.row.id for hit in hits]
            measured.plans[name].add(hits.plan)
            session.commit()
    return measured
