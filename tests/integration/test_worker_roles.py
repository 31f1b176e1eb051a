"""The worker, reconcile and the application under real roles: row-level security, the least
privileges that work, and clear errors naming the privilege that is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from embeddb import column_sql
from embeddb.cli import main
from embeddb.errors import PrivilegeError
from embeddb.worker import Worker, WorkerConfig

from .models import drain, pending, stored
from .roles import WORKER_GRANTS, Roles, embedded, make_tickets
from .workers import WorkerProcess, wait_until

TABLE_GRANTS = ["GRANT SELECT, UPDATE ON tickets TO {role}"]




def test_rows_row_level_security_hides_from_the_worker_are_parked_with_the_reason(
        engine: sa.Engine, database_url: str, roles: Roles,
        capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, [{"id": i, "subject": "printer", "body": f"jam {i}",
                           "status": "open" if i <= 3 else "closed"} for i in range(1, 6)])
    worker = roles.create("rls_worker", *WORKER_GRANTS, *TABLE_GRANTS)
    roles.run("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY",
              f"CREATE POLICY open_only ON tickets TO {worker} USING (status = 'open')")

    drain(roles.url(worker))

    assert embedded(engine) == {1: True, 2: True, 3: True, 4: False, 5: False}
    with engine.connect() as conn:
        hidden = pending(conn)
    assert [entry.row_key for entry in hidden] == [{"id": 4}, {"id": 5}]
    for entry in hidden:  # not forgotten: parked, saying why and what to do
        assert entry.parked_at is not None
        assert f"row-level security on public.tickets hides this row from role {worker}" \
            in entry.last_error and "BYPASSRLS" in entry.last_error
    assert main(["status", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "2 parked" in out and f"hides this row from role {worker}" in out

    # run as a role the policy does not restrict (here the superuser), retry: all embedded
    assert main(["retry", "--database-url", database_url]) == 0
    drain(database_url)
    assert embedded(engine) == dict.fromkeys(range(1, 6), True)
    with engine.connect() as conn:
        assert pending(conn) == []


@pytest.mark.parametrize(("stride", "inbox"), [(1, "embeddb.inbox_ranges"), (3, "embeddb.inbox")])
def test_rows_of_a_bulk_insert_hidden_from_the_worker_are_parked_not_forgotten(
        engine: sa.Engine, database_url: str, roles: Roles, stride: int, inbox: str) -> None:
    # one key range (ids without gaps) or one inbox entry of keys, which the worker expands
    ids = list(range(1, 2 * column_sql.INBOX_MIN_ROWS * stride + 1, stride))
    make_tickets(engine, [])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tickets (id, subject, body, status) SELECT i, 's', i::text,"
            " CASE WHEN i % 2 = 1 THEN 'open' ELSE 'closed' END FROM unnest(:ids) i"),
            {"ids": ids})
        assert conn.execute(sa.text(f"SELECT sum(rows) FROM {inbox}")).scalar() == len(ids)
    worker = roles.create("rls_bulk", *WORKER_GRANTS, *TABLE_GRANTS)
    roles.run("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY",
              f"CREATE POLICY open_only ON tickets TO {worker} USING (status = 'open')")
    drain(roles.url(worker))
    assert embedded(engine) == {i: bool(i % 2) for i in ids}
    with engine.connect() as conn:
        hidden = pending(conn)
    assert [entry.row_key["id"] for entry in hidden] == [i for i in ids if i % 2 == 0]
    assert all(e.parked_at is not None and worker in e.last_error for e in hidden)


def test_the_owner_under_forced_row_level_security_parks_what_it_cannot_see(
        engine: sa.Engine, database_url: str, roles: Roles) -> None:
    make_tickets(engine, [{"id": i, "subject": "s", "body": str(i),
                           "status": "open" if i % 2 else "closed"} for i in range(1, 5)])
    owner = roles.create("rls_owner", *WORKER_GRANTS)
    roles.run(f"ALTER TABLE tickets OWNER TO {owner}",
              "ALTER TABLE tickets ENABLE ROW LEVEL SECURITY",
              "ALTER TABLE tickets FORCE ROW LEVEL SECURITY",
              "CREATE POLICY open_only ON tickets USING (status = 'open')")
    drain(roles.url(owner))
    assert embedded(engine) == {1: True, 2: False, 3: True, 4: False}
    with engine.connect() as conn:
        hidden = pending(conn)
    assert [entry.row_key for entry in hidden] == [{"id": 2}, {"id": 4}]
    assert all(e.parked_at is not None and owner in e.last_error for e in hidden)


def test_reconcile_without_rights_names_them_instead_of_a_traceback(
        engine: sa.Engine, database_url: str, roles: Roles,
        capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, [{"id": 1, "subject": "a", "body": "b"}])
    reader = roles.create("catalog_reader", "GRANT USAGE ON SCHEMA embeddb TO {role}",
                          "GRANT SELECT ON embeddb.columns TO {role}")
    assert main(["reconcile", "--database-url", roles.url(reader)]) == 1
    err = capsys.readouterr().err
    assert f"reconcile public.tickets.embedding: role {reader} lacks SELECT on public.tickets," \
           " SELECT on embeddb.pending, INSERT on embeddb.pending" in err
    assert "Traceback" not in err

    stranger = roles.create("stranger")
    assert main(["reconcile", "--database-url", roles.url(stranger)]) == 1
    err = capsys.readouterr().err
    assert "reconcile: cannot read embeddb's catalog: permission denied for schema embeddb" in err


def test_a_worker_with_the_documented_grants_embeds_and_missing_ones_are_named(
        engine: sa.Engine, database_url: str, roles: Roles) -> None:
    make_tickets(engine, [{"id": i, "subject": "s", "body": f"row {i}"} for i in range(1, 4)])
    worker = roles.create("least_worker", *WORKER_GRANTS, *TABLE_GRANTS)
    drain(roles.url(worker))
    assert embedded(engine) == dict.fromkeys(range(1, 4), True)

    # without its rights on workers and throughput the rows are still embedded, and --once
    # ends with an error that names exactly what is missing
    roles.run(f"REVOKE INSERT ON embeddb.workers FROM {worker}",
              f"REVOKE ALL ON embeddb.throughput FROM {worker}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET body = 'changed ' || id"))
    with Worker(roles.url(worker), WorkerConfig()) as running, \
            pytest.raises(PrivilegeError) as refused:
        running.run_once()
    assert str(refused.value) == (
        f"embeddb worker: role {worker} lacks SELECT on embeddb.throughput, INSERT on"
        " embeddb.throughput, UPDATE on embeddb.throughput, DELETE on embeddb.throughput,"
        " INSERT on embeddb.workers; grant them (README: 'Roles and privileges')")
    with engine.connect() as conn:
        assert pending(conn) == [] and all(stored(conn, i)[0] is not None for i in (1, 2, 3))

    # without DELETE on pending nothing can be completed: the column's error says so
    roles.run(f"GRANT ALL ON embeddb.throughput TO {worker}",
              f"GRANT INSERT ON embeddb.workers TO {worker}",
              f"REVOKE DELETE ON embeddb.pending FROM {worker}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET body = 'again ' || id"))
    with Worker(roles.url(worker), WorkerConfig()) as running, \
            pytest.raises(PrivilegeError, match=f"role {worker} lacks DELETE on embeddb.pending"):
        running.run_once()
    with engine.connect() as conn:  # nothing lost, nothing left claimed
        entries = pending(conn)
        assert len(entries) == 3 and all(e.attempts == 0 for e in entries)
        assert conn.execute(sa.text(
            "SELECT count(*) FROM embeddb.pending WHERE claim_token IS NOT NULL")).scalar() == 0


def test_a_long_running_worker_without_its_bookkeeping_rights_keeps_embedding(
        engine: sa.Engine, database_url: str, roles: Roles, tmp_path: Path) -> None:
    make_tickets(engine, [{"id": 1, "subject": "s", "body": "first"}])
    worker = roles.create("no_books", "GRANT USAGE ON SCHEMA embeddb TO {role}",
                          "GRANT SELECT ON embeddb.alembic_version TO {role}",
                          "GRANT SELECT, UPDATE ON embeddb.columns TO {role}",
                          "GRANT SELECT, UPDATE, DELETE ON embeddb.pending TO {role}",
                          *TABLE_GRANTS)
    process = WorkerProcess(roles.url(worker), tmp_path)
    try:
        wait_until(lambda: embedded(engine) == {1: True}, what="the first row embedded")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO tickets (id, subject, body, status)"
                                 " VALUES (2, 's', 'second', 'open')"))
        wait_until(lambda: embedded(engine) == {1: True, 2: True}, what="a later row embedded")
        wait_until(lambda: "throughput is not recorded" in process.log, what="the warning")
        assert process.process.poll() is None, process.log
        assert process.log.count(f"role {worker} lacks") == 1, process.log  # said once
        assert "SELECT on embeddb.workers, INSERT on embeddb.workers" in process.log
        assert "Traceback" not in process.log
        assert process.stop() == 0
    finally:
        process.kill()


def test_an_application_role_needs_no_rights_on_embeddb_to_write_its_table(
        engine: sa.Engine, database_url: str, roles: Roles) -> None:
    make_tickets(engine, [])
    app = roles.create("app", "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON tickets"
                              " TO {role}")
    with roles.engine(app).begin() as conn:
        conn.execute(sa.text("INSERT INTO tickets (id, subject, body, status)"
                             " VALUES (1, 'a', 'b', 'open'), (2, 'c', 'd', 'open')"))
        conn.execute(sa.text("UPDATE tickets SET body = 'e' WHERE id = 2"))
        conn.execute(sa.text("DELETE FROM tickets WHERE id = 1"))
        # and it cannot read, or park, anyone's queue entries
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema"), \
                conn.begin_nested():
            conn.execute(sa.text("SELECT * FROM embeddb.pending"))
    with engine.connect() as conn:
        assert [e.row_key for e in pending(conn)] == [{"id": 2}]
    with roles.engine(app).begin() as conn:
        conn.execute(sa.text("TRUNCATE tickets"))
    with engine.connect() as conn:
        assert pending(conn) == []
