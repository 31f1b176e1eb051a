"""The example application's migrations build what its models build, and undo all of it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import command

from embeddb import migrate
from embeddb.database import create_engine

from .example import EXAMPLE, example_config
from .inspect_db import embeddb_traces, snapshot


def example_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alembic_app_models", EXAMPLE / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # SQLAlchemy resolves the Mapped[...] annotations there
    spec.loader.exec_module(module)
    return module


def test_upgrade_head_builds_what_create_all_builds_and_downgrade_removes_it(
        example: Path, bare_database: Callable[[], str]) -> None:
    migrated = create_engine(bare_database(), poolclass=sa.pool.NullPool)
    created = create_engine(bare_database(), poolclass=sa.pool.NullPool)
    with migrated.begin() as conn:
        command.upgrade(example_config(example, conn), "head")
    example_models().Base.metadata.create_all(created)

    with migrated.connect() as a, created.connect() as b:
        by_migrations, by_models = snapshot(a), snapshot(b)
        assert by_migrations["catalog"] and by_migrations["triggers"]
        assert by_migrations == by_models
        # the application's version table and embeddb's are two different tables
        assert a.execute(sa.text("SELECT version_num FROM public.alembic_version")).scalar() \
            == "0002"
        assert migrate.current(a) == migrate.head()

    with migrated.connect() as conn:
        command.check(example_config(example, conn))  # raises if anything differs

    with migrated.begin() as conn:
        command.downgrade(example_config(example, conn), "base")
    with migrated.connect() as conn:
        assert embeddb_traces(conn) == {key: [] for key in embeddb_traces(conn)}
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]
    migrated.dispose()
    created.dispose()
