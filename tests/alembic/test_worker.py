"""With the worker running, migrations that change what a column is made of lead to every row
being embedded again, for the new model and the new template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa
from alembic import command

from embeddb.spec import EncodeOptions
from embeddb.testing import HashEmbedder
from tests.integration.models import drain

from .example import example_config, generate_and_run
from .example_models import EXAMPLE_EMBEDDING, example_metadata

MODEL = "embeddb-testing/hash-384"  # the example's MiniLM has 384 dimensions too


def stored(engine: sa.Engine) -> dict[int, tuple[np.ndarray, str]]:
    with engine.connect() as conn:
        return {row.id: (np.array(row.v.strip("[]").split(","), dtype=np.float32), row.h)
                for row in conn.execute(sa.text(
                    "SELECT id, embedding::text AS v, embedding_source_hash::text AS h"
                    " FROM tickets WHERE embedding IS NOT NULL"))}


def expect(engine: sa.Engine, text_of: dict[int, str]) -> None:
    """Every ticket's vector is the test model's embedding of ``text_of[id]``."""
    embedder = HashEmbedder(MODEL, EncodeOptions())
    found = stored(engine)
    assert found.keys() == text_of.keys()
    with engine.connect() as conn:
        for ticket_id, text in text_of.items():
            vector, text_hash = found[ticket_id]
            assert np.allclose(vector, embedder.embed_documents([text])[0], atol=1e-6)
            assert text_hash == conn.execute(sa.text("SELECT md5(:t)::uuid::text"),
                                             {"t": text}).scalar()


def test_a_new_model_then_a_new_template_are_each_re_embedded_by_the_worker(
        example: Path, engine: sa.Engine, database_url: str) -> None:
    with engine.begin() as conn:
        command.upgrade(example_config(example, conn), "head")
        conn.execute(sa.text(
            "INSERT INTO tickets (id, subject, body, status) VALUES"
            " (1, 'Locked out', 'I cannot log in', 'open'),"
            " (2, 'Refund', 'Charged twice for one order', 'open'),"
            " (3, 'Dark mode', 'Please add a dark theme', 'closed')"))

    generate_and_run(example, engine, example_metadata({**EXAMPLE_EMBEDDING, "model": MODEL}),
                     rev_id="0003")
    # the live generation's three rows, then the next one's, which is then swapped in
    assert drain(database_url).embedded == 6
    expect(engine, {1: "Locked out\n\nI cannot log in",
                    2: "Refund\n\nCharged twice for one order",
                    3: "Dark mode\n\nPlease add a dark theme"})

    template = {**EXAMPLE_EMBEDDING, "model": MODEL, "template": "{subject} ({status}): {body}"}
    generate_and_run(example, engine, example_metadata(template), rev_id="0004")
    assert drain(database_url).embedded == 3
    expect(engine, {1: "Locked out (open): I cannot log in",
                    2: "Refund (open): Charged twice for one order",
                    3: "Dark mode (closed): Please add a dark theme"})
