"""The Docker Compose setup a user starts with: PostgreSQL + pgvector, and an embeddb worker.

No Docker engine is needed: these tests read docker-compose.yml and the Dockerfile and check
them against embeddb itself (its CLI parser and the URL variable it reads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from embeddb.cli import _parser
from embeddb.database import URL_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def db(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["db"]
    return service


@pytest.fixture(scope="module")
def worker(compose: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"]["worker"]
    return service


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list of NAME=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    assert isinstance(value, list), "use the exec form (a list) so signals reach embeddb"
    return [str(part) for part in value]


# -- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_has_db_migrate_and_worker(compose: dict[str, Any]) -> None:
    assert {"db", "migrate", "worker"} <= set(compose["services"])


def test_db_is_pgvector(db: dict[str, Any]) -> None:
    assert db["image"].startswith("pgvector/pgvector:")


def test_db_has_pg_isready_healthcheck(db: dict[str, Any]) -> None:
    check = db["healthcheck"]
    test = check["test"]
    text = " ".join(test) if isinstance(test, list) else str(test)
    assert "pg_isready" in text
    env = environment(db)
    assert f"-U {env['POSTGRES_USER']}" in text
    assert f"-d {env['POSTGRES_DB']}" in text
    assert {"interval", "timeout", "retries"} <= set(check)


def test_db_data_on_named_volume(compose: dict[str, Any], db: dict[str, Any]) -> None:
    sources = {}
    for volume in db["volumes"]:
        if isinstance(volume, dict):
            sources[volume["target"]] = volume.get("source")
        else:
            source, target = str(volume).split(":")[:2]
            sources[target] = source
    source = sources.get("/var/lib/postgresql/data")
    assert source, "the database's data directory must be on a volume"
    assert not source.startswith((".", "/", "~")), f"{source!r} is a bind mount, not a named volume"
    assert source in (compose.get("volumes") or {}), f"volume {source!r} not declared at top level"


def test_db_publishes_postgres_port(db: dict[str, Any]) -> None:
    assert any(str(port).endswith("5432") for port in db.get("ports", []))


def test_worker_waits_for_healthy_db(worker: dict[str, Any]) -> None:
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"


def test_worker_starts_after_the_one_shot_migration(compose: dict[str, Any],
                                                  worker: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate.get("restart") == "no"  # one shot: a failure must stop the worker's start
    argv = command(migrate)
    assert argv[0] == "embeddb"
    assert _parser().parse_args(argv[1:]).handler.__name__ == "_migrate"
    assert environment(migrate)[URL_VARIABLE] == environment(worker)[URL_VARIABLE]


def test_worker_restarts_and_gets_time_to_finish_its_batch(worker: dict[str, Any]) -> None:
    assert worker["restart"] == "unless-stopped"
    assert worker["stop_grace_period"] == "30s"


def test_worker_is_built_from_the_dockerfile(worker: dict[str, Any]) -> None:
    build = worker["build"]
    context = build if isinstance(build, str) else build["context"]
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_worker_command_parses_with_embeddb_cli(worker: dict[str, Any]) -> None:
    argv = command(worker)
    assert argv[0] == "embeddb"
    args = _parser().parse_args(argv[1:])
    assert args.handler.__name__ == "_worker"


def test_worker_url_points_at_the_db_service(worker: dict[str, Any], db: dict[str, Any]) -> None:
    env = environment(worker)
    assert URL_VARIABLE in env, f"the worker must set {URL_VARIABLE}"
    url = urlsplit(env[URL_VARIABLE])
    assert url.scheme in ("postgresql", "postgres", "postgresql+psycopg")
    assert url.hostname == "db"
    assert url.port in (None, 5432)
    db_env = environment(db)
    assert unquote(url.username or "") == db_env["POSTGRES_USER"]
    assert unquote(url.password or "") == db_env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == db_env["POSTGRES_DB"]


# -- Dockerfile -----------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"{arguments!r}: use the exec form so signals reach embeddb"
    return [str(part) for part in value]


def test_dockerfile_base_image() -> None:
    assert instructions()[0] == ("FROM", "python:3.11-slim")


def test_dockerfile_installs_cpu_torch_before_the_project() -> None:
    steps = instructions()
    runs = [(i, args) for i, (keyword, args) in enumerate(steps) if keyword == "RUN"]
    torch = [i for i, args in runs if "torch" in args and "download.pytorch.org/whl/cpu" in args]
    project = [i for i, args in runs if re.search(r"\[[a-z,]*\bminilm\b[a-z,]*\]", args)]
    copy = [i for i, (keyword, _) in enumerate(steps) if keyword == "COPY"]
    assert torch, "torch must be installed from the CPU index"
    assert project, "the project must be installed with the minilm extra"
    assert copy
    assert torch[0] < min(copy) and torch[0] < project[0]


def test_dockerfile_runs_the_worker_offline_as_non_root() -> None:
    steps = instructions()
    entrypoint = [exec_form(args) for keyword, args in steps if keyword == "ENTRYPOINT"]
    cmd = [exec_form(args) for keyword, args in steps if keyword == "CMD"]
    argv = (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])
    assert argv[:2] == ["embeddb", "worker"]
    args = _parser().parse_args(argv[1:])
    assert args.handler.__name__ == "_worker"

    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env)
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the worker must not run as root"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {line.strip().strip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git", ".embeddb", "benchmarks/results"} <= ignored
