"""A password in the database URL is never printed, logged, or put on a command line.

Every command that shows a URL is run with the password written each way libpq accepts it
(``user:password@``, ``?password=``, a keyword string), against an unreachable server (the
"cannot connect to <url>" error) and against the real test server (the worker's "on <url>" log
line; the embedded server trusts its socket, so the password is sent and ignored).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg.conninfo
import pytest
import sqlalchemy as sa

from embeddb.cli import main
from embeddb.database import URL_VARIABLE, libpq_conninfo

from .models import HASH_MODEL, run_worker, ticket_model
from .workers import children_of, wait_until

SECRET = "hunter2secret"
UNREACHABLE = [
    f"postgresql://nobody:{SECRET}@127.0.0.1:1/nothing",
    f"postgresql://nobody@127.0.0.1:1/nothing?password={SECRET}",
    f"postgresql://nobody@127.0.0.1:1/nothing?sslpassword={SECRET}&sslmode=disable",
    f"host=127.0.0.1 port=1 dbname=nothing user=nobody password={SECRET}",
]
COMMANDS = [
    ["status"],
    ["search", "tickets.embedding", "printer"],
    ["retry"],
    ["reconcile"],
    ["migrate"],
    ["worker", "--once"],
    ["demo"],
]


@pytest.mark.parametrize("url", UNREACHABLE)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
def test_cannot_connect_shows_the_url_without_its_password(
        command: list[str], url: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    code = main([*command, "--database-url", url])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.startswith("embeddb: error: cannot connect to postgresql://") and "127.0.0.1" in err
    assert SECRET not in out + err + caplog.text
    assert "***" in err  # the password is there, hidden


def with_password(url: str, how: str) -> str:
    """The test database's URL with a password added as ``?password=`` or as keywords."""
    if how == "query":
        return f"{url}&password={SECRET}" if "?" in url else f"{url}?password={SECRET}"
    keywords = {**psycopg.conninfo.conninfo_to_dict(libpq_conninfo(url)), "password": SECRET}
    return psycopg.conninfo.make_conninfo(**keywords)


@pytest.mark.parametrize("how", ["query", "keywords"])
def test_the_worker_logs_the_url_it_works_on_without_the_password(
        database_url: str, engine: sa.Engine, how: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": 1, "subject": "printer", "body": "jam"}])

    done = run_worker(with_password(database_url, how))

    assert done.returncode == 0, done.stderr
    assert " on postgresql://" in done.stderr and "password=***" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    with engine.connect() as conn:  # the URL worked: the row was embedded
        assert conn.execute(sa.text("SELECT embedding IS NOT NULL FROM tickets")).scalar()


def test_worker_processes_get_the_url_in_their_environment_not_their_command_line(
        database_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    url = with_password(database_url, "query")
    log = (tmp_path / "workers.log").open("w")
    parent = subprocess.Popen(
        [sys.executable, "-m", "embeddb.cli", "worker", "--processes", "2", "--poll-seconds", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, URL_VARIABLE: url})
    children: list[int] = []
    try:
        wait_until(lambda: len(children_of(parent.pid)) == 2, what="two worker processes")
        children = children_of(parent.pid)
        for child in children:
            command_line = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            assert b"worker" in command_line
            assert not any(SECRET.encode() in part for part in command_line), command_line
            assert b"--database-url" not in command_line
            child_environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            assert f"{URL_VARIABLE}={url}".encode() in child_environment

        with engine.begin() as conn:  # and the children work with it
            conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"b {i}"}
                                             for i in range(1, 21)])

        def embedded() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT count(*) FROM tickets WHERE embedding IS NOT NULL")).scalar() == 20

        wait_until(embedded, timeout=60, what="the children to embed 20 rows")
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for child in children:
            if Path(f"/proc/{child}").exists():
                os.kill(child, signal.SIGKILL)
        log.close()
    assert SECRET not in (tmp_path / "workers.log").read_text()
