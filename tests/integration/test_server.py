"""The embedded PostgreSQL: started on demand, reused, stopped cleanly, driven by `embeddb db`."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from embeddb.cli import main
from embeddb.database import libpq_conninfo
from embeddb.server import EmbeddedServer


def test_db_start_reuse_status_url_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EMBEDDB_HOME", str(tmp_path / "home"))
    assert main(["db", "status"]) == 3
    assert "stopped" in capsys.readouterr().out
    assert main(["db", "start"]) == 0
    try:
        url = capsys.readouterr().out.strip().splitlines()[-1]
        assert str(tmp_path / "home" / "pgdata") in url
        with psycopg.connect(libpq_conninfo(url)) as conn:
            version = conn.execute("SELECT default_version FROM pg_available_extensions"
                                   " WHERE name = 'vector'").fetchone()
            assert version is not None and version[0] >= "0.8"
        server = EmbeddedServer(tmp_path / "home")
        first = server.status()
        assert first.running and first.url == url
        assert server.start() == url and server.status().pid == first.pid  # reused
        assert main(["db", "url"]) == 0 and capsys.readouterr().out.strip() == url
    finally:
        assert main(["db", "stop"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert not EmbeddedServer(tmp_path / "home").status().running
    assert main(["db", "url"]) == 3
