"""The proof of "never empty": searches run without pause through a real model change
(all-MiniLM-L6-v2 at 384 dimensions to the same model cut to 256), done by a real `embeddb
worker` that is killed with SIGKILL midway and restarted. Every search returns k rows, each
scored entirely in one generation's space: its similarities are the cosines of that
generation's query vector with that generation's stored vectors."""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import search
from embeddb.embedders import load_embedder
from embeddb.spec import EncodeOptions

from .conftest import SpawnWorker
from .models import MINILM, drain, ticket_model
from .searching import SearchesWithoutPause
from .workers import wait_until

ROWS, K = 300, 10
WORDS = [
    "invoice", "refund", "password", "login", "account", "billing", "shipping", "delivery",
    "order", "payment", "card", "crash", "error", "timeout", "upload", "download", "export",
    "report", "printer", "screen", "battery", "laptop", "phone", "email", "calendar",
    "meeting", "backup", "restore", "network", "wifi", "router", "server", "database", "slow",
    "broken", "missing", "duplicate", "charge", "cancel", "subscription", "upgrade",
    "license", "key"
]
QUERIES = ["I was charged twice for my subscription", "cannot log in after password reset",
           "the printer shows an error", "my order has not been delivered",
           "restore a backup of the database", "wifi keeps dropping on my laptop"]


@dataclass
class Answer:
    query: str
    hits: list[tuple[int, float]]
    finished_at: float


def texts(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": seed * 100_000 + i, "subject": " ".join(rng.choices(WORDS, k=3)),
             "body": " ".join(rng.choices(WORDS, k=12))} for i in range(count)]


def vectors(engine: sa.Engine, column: str) -> dict[int, np.ndarray[Any, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, {column}::text AS v FROM tickets"))
        return {row.id: np.array(row.v.strip("[]").split(","), dtype=np.float64) for row in rows}


def count(engine: sa.Engine, statement: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(statement)).scalar_one())


def live_dimensions(engine: sa.Engine) -> int:
    return count(engine, "SELECT dimensions FROM embeddb.columns WHERE generation = 'live'")


def cosines(query: np.ndarray[Any, Any], stored: dict[int, np.ndarray[Any, Any]],
            ids: list[int]) -> np.ndarray[Any, Any]:
    rows = np.stack([stored[i] for i in ids])
    return np.asarray(rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query)))


def test_searches_never_empty_nor_mixed_through_a_model_change_with_a_killed_worker(
        engine: sa.Engine, database_url: str, spawn_worker: SpawnWorker) -> None:
    Base, Ticket = ticket_model(model=MINILM)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), texts(ROWS, seed=1))
    drain(database_url)
    _, Cut = ticket_model(model=MINILM, dimensions=256)
    embeddb.install(engine, Cut)  # the change begins: 384 stays live while 256 is built

    def search_once(turn: int) -> Answer:
        text = QUERIES[(turn - 1) % len(QUERIES)]
        with Session(engine) as session:
            declared = (Ticket, Cut)[turn % 2]  # either declaration reads what is live
            hits = search(session, declared.embedding, text, k=K)
            return Answer(text, [(t.id, s) for t, s in hits], time.monotonic())

    searches = SearchesWithoutPause(search_once)
    answers, errors = searches.answers, searches.errors

    with searches:
        built = "SELECT count(embedding__next) FROM tickets"
        first = spawn_worker("--lease-seconds", "5", "--batch-size", "25")
        wait_until(lambda: count(engine, built) >= 75, 180, "the first worker to get going")
        first.signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
        assert 75 <= count(engine, built) < ROWS  # killed midway
        with engine.begin() as conn:  # written during the change: embedded for both
            conn.execute(sa.insert(Ticket), texts(20, seed=2))
        second = spawn_worker("--lease-seconds", "5", "--batch-size", "25")
        wait_until(lambda: live_dimensions(engine) == 256, 300, "the swap")
        swapped_at = time.monotonic()
        wait_until(lambda: sum(a.finished_at > swapped_at for a in answers) >= 12 or bool(errors),
                   60, "searches after the swap")
        assert second.stop() == 0
    assert not errors, errors[0]

    # Both generations hold every row's current vector, the rows written meanwhile included.
    with engine.connect() as conn:
        for entry in conn.execute(sa.text("SELECT id, hash_column FROM embeddb.columns")):
            assert conn.execute(sa.text(
                f"SELECT count(*) FROM tickets t WHERE {entry.hash_column}"
                f" IS DISTINCT FROM md5(embeddb.render_{entry.id}(t))::uuid")).scalar() == 0
    stored = {384: vectors(engine, "embedding__previous"), 256: vectors(engine, "embedding")}
    assert len(stored[384]) == len(stored[256]) == ROWS + 20
    query_vectors = {
        (dims, text): np.asarray(load_embedder(MINILM, EncodeOptions(), dims).embed_query(text),
                                 dtype=np.float64)
        for dims in (384, 256) for text in QUERIES}
    spaces = []
    for answer in answers:
        assert len(answer.hits) == K, answer
        ids = [i for i, _ in answer.hits]
        found = np.array([s for _, s in answer.hits])
        matching = {dims for dims in (384, 256) if np.allclose(
            found, cosines(query_vectors[dims, answer.query], stored[dims], ids), atol=1e-4)}
        assert matching, f"{answer.query!r} was scored in neither model's space: {answer.hits}"
        if len(matching) == 1:
            spaces.append(matching.pop())
    # the searches spanned the change: the old space before the swap, the new one after, and
    # never back
    assert spaces[0] == 384 and spaces[-1] == 256
    assert spaces == sorted(spaces, reverse=True)
    assert len(answers) > 50
