"""The wheel ships embeddb's migrations: built, installed apart from the source tree, migrating."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import sqlalchemy as sa


def test_a_built_wheel_migrates_a_database_from_its_own_files(
        tmp_path: Path, project_root: Path, database_url: str, engine: sa.Engine) -> None:
    # built from a copy of what the wheel is made of, so the build leaves nothing in the tree
    source = tmp_path / "source"
    for name in ("embeddb", "migrations"):
        shutil.copytree(project_root / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(project_root / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("embeddb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "embeddb/migrations/env.py" in names and "embeddb/migrations/alembic.ini" in names
    assert any(n.startswith("embeddb/migrations/versions/v0001") for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    with engine.begin() as conn:  # a database without embeddb's schema
        conn.execute(sa.text("DROP SCHEMA embeddb CASCADE"))
    # run from elsewhere, the wheel first on the path: the source tree is nowhere in sight
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import embeddb, embeddb.migrate as m;"
         " print(embeddb.__file__); print(m.script_location())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=120)
    package, migrations = where.stdout.split()
    assert package.startswith(str(site)) and migrations.startswith(str(site))
    migrated = subprocess.run(
        [sys.executable, "-m", "embeddb.cli", "migrate", "--database-url", database_url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM embeddb.alembic_version")).scalar()
    from embeddb import migrate

    assert version == migrate.head()
