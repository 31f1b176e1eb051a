"""Driving the example application's Alembic setup from a test, in-process."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "alembic_app"


def example_config(example: Path, conn: sa.Connection,
                   metadata: sa.MetaData | None = None) -> Config:
    """The example's Alembic config, running on ``conn`` (and comparing ``metadata``)."""
    config = Config(str(example / "alembic.ini"))
    config.attributes["connection"] = conn
    if metadata is not None:
        config.attributes["target_metadata"] = metadata
    return config


def generate_and_run(example: Path, engine: sa.Engine, metadata: sa.MetaData,
                     rev_id: str = "0003") -> str:
    """``alembic revision --autogenerate``, then ``upgrade head`` and ``check``; the script."""
    with engine.connect() as conn:
        script = command.revision(example_config(example, conn, metadata), "change",
                                  autogenerate=True, rev_id=rev_id)
    assert script is not None and not isinstance(script, list)
    with engine.begin() as conn:
        command.upgrade(example_config(example, conn, metadata), "head")
    with engine.connect() as conn:
        command.check(example_config(example, conn, metadata))
    return Path(script.path).read_text()
