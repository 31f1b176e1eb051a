"""`embeddb doctor` finds each thing broken on purpose, names it, and its fix makes it healthy."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest
import sqlalchemy as sa

import embeddb
from embeddb import Finding, doctor
from embeddb.cli import main
from embeddb.doctor import Limits
from embeddb.migrate import migrate
from embeddb.testing import POISON
from embeddb.worker import FAILPOINT_VARIABLE

from .conftest import SpawnWorker
from .models import HASH_MODEL, drain, run_worker, ticket_model
from .workers import scalar, wait_until


def make_tickets(engine: sa.Engine, count: int = 10, **options: Any) -> Any:
    Base, Ticket = ticket_model(model=HASH_MODEL, **options)
    Base.metadata.create_all(engine)
    rows = [{"id": i, "subject": f"ticket {i}", "body": f"body of ticket {i}"}
            for i in range(1, count + 1)]
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(Ticket), rows)
    return Ticket


def execute(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def checks(findings: list[Finding]) -> list[str]:
    return [finding.check for finding in findings]


def only(findings: list[Finding], check: str) -> Finding:
    found = [finding for finding in findings if finding.check == check]
    assert len(found) == 1, f"expected one {check} finding in {findings}"
    return found[0]


def apply_fix(engine: sa.Engine, finding: Finding) -> None:
    """Run a finding's fix, which is SQL for these checks (CONCURRENTLY needs autocommit)."""
    fix = finding.fix.split("by hand: ")[-1]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in fix.split("; "):
            conn.exec_driver_sql(statement)


@pytest.fixture
def healthy(engine: sa.Engine, database_url: str) -> Any:
    """Ten tickets, all embedded by a worker that has exited (`--once`)."""
    Ticket = make_tickets(engine)
    drain(database_url)
    assert doctor(engine) == []
    return Ticket


def doctor_cli(database_url: str, capsys: pytest.CaptureFixture[str],
               *args: str) -> tuple[int, str]:
    code = main(["doctor", "--database-url", database_url, *args])
    return code, capsys.readouterr().out


def test_a_healthy_database_exits_0(healthy: Any, engine: sa.Engine, database_url: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with engine.connect() as conn:
        fingerprint = conn.execute(sa.text(
            "SELECT model_fingerprint FROM embeddb.columns")).scalar_one()
    code, out = doctor_cli(database_url, capsys)
    # the columns checked, with their model (a test model served by no backend), then the verdict
    assert (code, out) == (0, f"column  public.tickets.embedding: model {HASH_MODEL}"
                              f" ({fingerprint}, 32 dims)\nhealthy\n")
    code, out = doctor_cli(database_url, capsys, "--json")
    assert code == 0
    assert json.loads(out) == {"status": "healthy", "exit_code": 0, "findings": [], "columns": [
        {"column": "public.tickets.embedding", "generation": "live", "model": HASH_MODEL,
         "fingerprint": fingerprint, "dimensions": 32, "backend": None}]}


def test_missing_index_is_an_error_and_its_fix_rebuilds_it(
        healthy: Any, engine: sa.Engine, database_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    execute(engine, "DROP INDEX tickets_embedding_hnsw")
    finding = only(doctor(engine), "index_missing")
    assert finding.severity == "error"
    assert finding.subject == "public.tickets.embedding"
    assert "CREATE INDEX CONCURRENTLY" in finding.fix
    code, out = doctor_cli(database_url, capsys)
    assert code == 2
    assert "index_missing" in out and "fix: CREATE INDEX" in out
    apply_fix(engine, finding)
    assert doctor(engine) == []


def test_invalid_index_is_an_error_and_its_fix_rebuilds_it(healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "UPDATE pg_index SET indisvalid = false"
                    " WHERE indexrelid = 'tickets_embedding_hnsw'::regclass")
    finding = only(doctor(engine), "index_invalid")
    assert finding.fix.startswith("DROP INDEX CONCURRENTLY")
    apply_fix(engine, finding)
    assert doctor(engine) == []


def test_index_set_aside_with_no_worker_to_build_it(healthy: Any, engine: sa.Engine) -> None:
    # what a worker killed in the middle of a large backfill leaves
    execute(engine, "DROP INDEX tickets_embedding_hnsw",
            "UPDATE embeddb.columns SET index_deferred = true")
    finding = only(doctor(engine), "index_deferred")
    assert finding.severity == "error"
    assert checks(doctor(engine)) == ["index_deferred"]  # not also reported as missing
    apply_fix(engine, finding)
    assert doctor(engine) == []


def test_a_worker_builds_an_index_left_aside(healthy: Any, engine: sa.Engine,
                                              database_url: str) -> None:
    execute(engine, "DROP INDEX tickets_embedding_hnsw",
            "UPDATE embeddb.columns SET index_deferred = true")
    assert only(doctor(engine), "index_deferred").fix.startswith("embeddb worker --once")
    assert run_worker(database_url).returncode == 0
    assert doctor(engine) == []


def test_index_set_aside_while_a_worker_drains_the_backlog_is_fine(
        healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "DROP INDEX tickets_embedding_hnsw",
            "UPDATE embeddb.columns SET index_deferred = true",
            "UPDATE tickets SET body = body || ' changed'")  # a backlog, queued by the trigger
    assert "index_deferred" in checks(doctor(engine))  # nobody to embed it
    execute(engine, "INSERT INTO embeddb.workers (worker_id, hostname, pid)"
                    " VALUES ('alive', 'here', 1)")
    # a live worker with a backlog to embed builds the index when it is done
    assert "index_deferred" not in checks(doctor(engine))


def test_functions_and_triggers_without_a_catalog_row(healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "DELETE FROM embeddb.columns")
    findings = doctor(engine)
    assert sorted(checks(findings)) == ["orphan_function"] * 2 + ["orphan_trigger"] * 4
    triggers = sorted(f.subject for f in findings if f.check == "orphan_trigger")
    assert triggers == [f"tickets.embeddb_embedding_{event}"
                        for event in ("del", "ins", "trunc", "upd")]
    for finding in findings:  # triggers come first: the functions cannot go while they exist
        apply_fix(engine, finding)
    assert doctor(engine) == []


def test_catalog_row_without_its_table(healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "DROP TABLE tickets CASCADE")
    finding = only(doctor(engine), "table_missing")
    assert "public.tickets" in finding.problem
    apply_fix(engine, finding)
    assert doctor(engine) == []


def test_vector_column_of_another_dimension(healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "ALTER TABLE tickets ALTER COLUMN embedding TYPE vector(16) USING NULL")
    finding = only(doctor(engine), "vector_type_mismatch")
    assert "vector(16)" in finding.problem and "vector(32)" in finding.problem
    assert "TYPE vector(32) USING NULL" in finding.fix


def test_a_model_other_than_the_catalogs(healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "UPDATE embeddb.columns SET model_fingerprint = 'other-weights'")
    finding = only(doctor(engine), "model_mismatch")
    assert finding.severity == "warning"
    assert "other-weights" in finding.problem and "hash-v1" in finding.problem


def test_a_dropped_source_column_and_the_trigger_it_took(healthy: Any, engine: sa.Engine) -> None:
    execute(engine, "ALTER TABLE tickets DROP COLUMN body CASCADE")
    findings = doctor(engine)
    assert "'body'" not in only(findings, "source_column_missing").problem
    assert "body" in only(findings, "source_column_missing").problem
    assert "embeddb_embedding_upd" in only(findings, "objects_missing").problem


def test_stale_rows_nobody_queued_are_counted_up_to_a_limit(
        healthy: Any, engine: sa.Engine, database_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    execute(engine, "ALTER TABLE tickets DISABLE TRIGGER USER",
            "UPDATE tickets SET body = 'changed behind the trigger' WHERE id <= 3",
            "ALTER TABLE tickets ENABLE TRIGGER USER")
    finding = only(doctor(engine), "stale_rows")
    assert (finding.severity, finding.fix) == ("warning", "embeddb reconcile")
    assert finding.problem.startswith("3 rows")
    limited = only(doctor(engine, Limits(stale_row_limit=2)), "stale_rows")
    assert limited.problem.startswith("at least 2 rows")
    code, _ = doctor_cli(database_url, capsys)
    assert code == 1
    assert main(["reconcile", "--database-url", database_url]) == 0
    assert doctor(engine) == []  # queued now: the worker's job, no longer a finding


def test_counting_stale_rows_keeps_to_its_time_budget(engine: sa.Engine) -> None:
    make_tickets(engine, 0)
    execute(engine, "ALTER TABLE tickets DISABLE TRIGGER USER",
            "INSERT INTO tickets (id, subject, body, status) SELECT i, 'subject ' || i,"
            " repeat('body ', 50) || i, 'open' FROM generate_series(1, 50000) AS i",
            "ALTER TABLE tickets ENABLE TRIGGER USER")
    findings = doctor(engine, Limits(stale_seconds=0.001))
    finding = only(findings, "stale_rows")
    assert finding.severity == "info" and "longer than" in finding.problem
    # the other checks still ran: the table is otherwise fine, nothing else is reported
    assert checks(findings) == ["stale_rows"]


def test_claims_of_a_killed_worker_past_their_lease(
        engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    make_tickets(engine)
    doomed = spawn_worker("--lease-seconds", "1", env={FAILPOINT_VARIABLE: "claimed"})
    assert doomed.wait() == -signal.SIGKILL
    limits = Limits(lease_grace_seconds=0)

    def reported() -> bool:
        return "expired_claims" in checks(doctor(engine, limits))

    wait_until(reported, 30, "the lease to run out")
    finding = only(doctor(engine, limits), "expired_claims")
    assert finding.problem.startswith("10 rows are still claimed by ")
    assert "embeddb worker" in finding.fix


def test_a_worker_whose_heartbeat_stopped(healthy: Any, engine: sa.Engine,
                                          spawn_worker: SpawnWorker) -> None:
    worker = spawn_worker()
    limits = Limits(heartbeat_seconds=1)

    def running_worker() -> Any:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT worker_id FROM embeddb.workers WHERE state = 'running'")).scalar()

    wait_until(lambda: running_worker() is not None, 30, "the worker's first heartbeat")
    worker_id = running_worker()
    worker.kill()
    wait_until(lambda: "worker_silent" in checks(doctor(engine, limits)), 30, "silence")
    finding = only(doctor(engine, limits), "worker_silent")
    assert finding.subject == f"worker {worker_id}"
    apply_fix(engine, Finding(finding.check, finding.severity, finding.subject, "",
                              finding.fix.split(": ", 1)[1].split(" (")[0]))
    assert doctor(engine, limits) == []


def test_a_worker_that_stopped_cleanly_is_not_reported(
        healthy: Any, engine: sa.Engine, spawn_worker: SpawnWorker) -> None:
    worker = spawn_worker()
    wait_until(lambda: scalar(engine, "SELECT count(*) FROM embeddb.workers"
                                      " WHERE state = 'running'") > 0, 30, "a heartbeat")
    assert worker.stop() == 0
    assert doctor(engine, Limits(heartbeat_seconds=0)) == []


def test_parked_rows(engine: sa.Engine, database_url: str,
                     capsys: pytest.CaptureFixture[str]) -> None:
    Ticket = make_tickets(engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.update(Ticket).where(Ticket.id == 2).values(body=f"bad {POISON}"))
    drain(database_url, max_attempts=1)
    finding = only(doctor(engine), "parked_rows")
    assert finding.problem.startswith("1 rows are parked")
    assert finding.fix.endswith("embeddb retry tickets.embedding")
    assert POISON not in finding.problem + finding.fix  # no row text
    code, out = doctor_cli(database_url, capsys, "--json")
    report = json.loads(out)
    assert (code, report["status"]) == (1, "warning")
    assert [f["check"] for f in report["findings"]] == ["parked_rows"]


def test_a_schema_older_than_this_embeddb(healthy: Any, engine: sa.Engine) -> None:
    migrate(engine, downgrade_to="0002")
    finding = only(doctor(engine), "schema_version")
    assert "0002" in finding.problem and finding.fix == "embeddb migrate"


def test_an_unreachable_database_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--database-url", "postgresql://nobody:s3cret@127.0.0.1:1/none"])
    assert code == 3
    err = capsys.readouterr().err
    assert "cannot connect" in err and "s3cret" not in err


def test_a_schema_newer_than_this_embeddb_that_its_workers_cannot_serve(
        healthy: Any, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE embeddb.alembic_version SET version_num = '0099'"))
        conn.execute(sa.text("UPDATE embeddb.worker_compatibility"
                             " SET oldest_worker_revision = '0099'"))
    finding = only(doctor(engine), "schema_version")
    assert finding.severity == "error" and "upgrade embeddb on this worker" in finding.problem
    with engine.begin() as conn:  # one that still serves them: a warning
        conn.execute(sa.text("UPDATE embeddb.worker_compatibility"
                             " SET oldest_worker_revision = '0008'"))
    finding = only(doctor(engine), "schema_version")
    assert finding.severity == "warning" and "carrying on" in finding.problem


def test_a_model_change_waiting_for_a_worker_is_a_warning_not_a_table_scan(
        healthy: Any, engine: sa.Engine, database_url: str) -> None:
    _, Wider = ticket_model(model="embeddb-testing/hash-64")
    embeddb.install(engine, Wider)  # the next generation: queued, its index not built yet
    finding = only(doctor(engine), "next_generation_stalled")
    assert finding.severity == "warning"
    assert "searches keep using the live vectors of embedding" in finding.problem
    assert "scan" not in finding.problem
    assert "embeddb model rollback tickets.embedding" in finding.fix
    assert run_worker(database_url).returncode == 0  # embeds the generation, swaps it in
    assert doctor(engine) == []
