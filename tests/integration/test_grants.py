"""`embeddb grants`: the statements it prints are all each role needs, applied to real roles
that then run the worker, the application's writes, search and status, and no more."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import embeddb
from embeddb import grants, hybrid_search, search, search_chunks
from embeddb.cli import main
from embeddb.errors import PrivilegeError

from .chunked import doc_model
from .models import HASH_MODEL, drain, pending, ticket_model
from .roles import Roles, embedded, make_tickets

APP_TABLE_RIGHTS = "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON tickets TO {role}"




def test_grants_prints_each_roles_statements_with_what_they_are_for(
        engine: sa.Engine, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, [])
    assert main(["grants", "--worker", "embed er", "--app", "web", "--owner", "mig",
                 "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    statements = [line for line in out.splitlines() if not line.startswith("--")]
    assert 'GRANT USAGE ON SCHEMA "embeddb" TO "embed er";' in statements
    assert 'GRANT SELECT ON "public"."tickets" TO "embed er";' in statements
    assert ('GRANT UPDATE ("embedding", "embedding_source_hash") ON "public"."tickets"'
            ' TO "embed er";') in statements
    assert 'GRANT SELECT ON "embeddb"."columns" TO "web";' in statements
    assert any(line.startswith('GRANT CREATE ON DATABASE') and line.endswith('TO "mig";')
               for line in statements)
    # the application gets nothing on the queue: the triggers write it as the owner
    assert not any("pending" in line and '"web"' in line for line in statements)
    assert main(["grants", "--database-url", database_url]) == 1
    assert "name at least one role" in capsys.readouterr().err


def test_roles_given_the_printed_grants_run_the_worker_the_app_search_and_status(
        engine: sa.Engine, database_url: str, roles: Roles,
        capsys: pytest.CaptureFixture[str]) -> None:
    Ticket = make_tickets(engine, [{"id": i, "subject": "printer", "body": f"jam {i}"}
                                   for i in range(1, 4)])
    worker = roles.create("worker")
    app = roles.create("app", APP_TABLE_RIGHTS)
    applied = grants(engine, worker=worker, app=app, apply=True)
    assert {grant.role for grant in applied} == {"worker", "app"}

    with roles.engine(app).begin() as conn:  # the app's writes, with only its own rights
        conn.execute(sa.text("INSERT INTO tickets (id, subject, body, status)"
                             " VALUES (4, 'toner', 'empty', 'open')"))
        conn.execute(sa.text("UPDATE tickets SET body = 'jammed again' WHERE id = 2"))
        conn.execute(sa.text("DELETE FROM tickets WHERE id = 3"))

    drain(roles.url(worker))
    assert embedded(engine) == {1: True, 2: True, 4: True}
    with engine.connect() as conn:
        assert pending(conn) == []

    with Session(roles.engine(app)) as session:  # search from Python, as the app
        hits = search(session, Ticket.embedding, "toner empty", k=3)
    assert hits[0].row.id == 4 and len(hits) == 3
    assert main(["search", "tickets.embedding", "toner empty", "-k", "1",
                 "--database-url", roles.url(app)]) == 0
    assert "toner" in capsys.readouterr().out
    assert main(["status", "--database-url", roles.url(worker)]) == 0
    assert "public.tickets.embedding: 0 pending" in capsys.readouterr().out

    # and nothing more: the worker cannot change the text, nor the app the queue
    with roles.engine(worker).begin() as conn, \
            pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(sa.text("UPDATE tickets SET subject = 'x'"))
    with roles.engine(worker).begin() as conn, \
            pytest.raises(sa.exc.ProgrammingError, match="must be owner"):
        conn.execute(sa.text("ALTER TABLE tickets ADD COLUMN y int"))
    with roles.engine(app).begin() as conn, \
            pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(sa.text("DELETE FROM embeddb.pending"))

    with roles.engine(app).begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET subject = 'scanner' WHERE id = 1"))
        conn.execute(sa.text("TRUNCATE tickets"))
    with engine.connect() as conn:
        assert pending(conn) == []


def test_under_forced_row_level_security_the_worker_embeds_all_and_the_app_finds_its_rows(
        engine: sa.Engine, roles: Roles) -> None:
    Ticket = make_tickets(engine, [])
    worker = roles.create("worker", options="BYPASSRLS")  # README: a role that sees every row
    app = roles.create("app", APP_TABLE_RIGHTS)
    grants(engine, worker=worker, app=app, apply=True)
    roles.run("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY",
              "ALTER TABLE tickets FORCE ROW LEVEL SECURITY",
              f"CREATE POLICY app_open ON tickets TO {app} USING (status = 'open')"
              " WITH CHECK (true)")
    with roles.engine(app).begin() as conn:  # the app writes rows it will not see again
        conn.execute(sa.text(
            "INSERT INTO tickets (id, subject, body, status) VALUES"
            " (1, 'printer', 'jam', 'open'), (2, 'printer', 'jam', 'closed'),"
            " (3, 'printer', 'toner', 'open'), (4, 'printer', 'toner', 'closed')"))

    drain(roles.url(worker))

    assert embedded(engine) == dict.fromkeys(range(1, 5), True)
    with engine.connect() as conn:
        assert pending(conn) == []
    with Session(roles.engine(app)) as session:
        hits = search(session, Ticket.embedding, "printer jam", k=10)
    assert sorted(ticket.id for ticket, _ in hits) == [1, 3]


def test_a_search_by_a_role_without_the_app_grants_names_them(
        engine: sa.Engine, roles: Roles) -> None:
    Ticket = make_tickets(engine, [{"id": 1, "subject": "printer", "body": "jam"}])
    app = roles.create("app", APP_TABLE_RIGHTS)  # its table, nothing on embeddb
    with Session(roles.engine(app)) as session, pytest.raises(
            PrivilegeError, match=r"search public\.tickets\.embedding: role cannot read embeddb's"
                                  r" catalog .*USAGE on schema embeddb and SELECT on"
                                  r" embeddb\.columns \(embeddb grants --app ROLE\)"):
        search(session, Ticket.embedding, "printer jam", k=1)


def test_grants_apply_from_the_shell_and_a_role_that_cannot_grant_is_told_who_can(
        engine: sa.Engine, database_url: str, roles: Roles,
        capsys: pytest.CaptureFixture[str]) -> None:
    make_tickets(engine, [])
    worker = roles.create("worker")
    assert main(["grants", "--worker", worker, "--apply", "--database-url", database_url]) == 0
    assert "-- applied" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT has_table_privilege(:role, 'embeddb.pending', 'DELETE')"
            " AND has_column_privilege(:role, 'tickets', 'embedding', 'UPDATE')"
            " AND NOT has_column_privilege(:role, 'tickets', 'body', 'UPDATE')"),
            {"role": worker}).scalar()
    other = roles.create("other")
    assert main(["grants", "--app", other, "--apply", "--database-url", roles.url(worker)]) == 1
    err = capsys.readouterr().err
    assert f"role {worker} may not grant it; run it as the role that owns embeddb's schema" in err
    assert 'GRANT USAGE ON SCHEMA "embeddb"' in err and "no privileges were granted" in err
    with engine.connect() as conn:  # and nothing was granted
        assert not conn.execute(sa.text("SELECT has_schema_privilege(:role, 'embeddb', 'USAGE')"),
                                {"role": other}).scalar()


def test_the_printed_grants_cover_full_text_and_chunked_columns(
        engine: sa.Engine, database_url: str, roles: Roles) -> None:
    TicketBase, Ticket = ticket_model(model=HASH_MODEL, fulltext=True)
    DocBase, Doc = doc_model()
    TicketBase.metadata.create_all(engine)
    DocBase.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "printer", "body": f"jam {i}"}
                                         for i in range(1, 4)])
        conn.execute(sa.insert(Doc), [{"id": i, "title": "manual", "body": "toner " * 40 * i}
                                      for i in range(1, 4)])
    worker = roles.create("worker")
    app = roles.create("app")
    grants(engine, worker=worker, app=app, apply=True)
    roles.run(f"GRANT SELECT ON tickets, docs TO {app}")

    drain(roles.url(worker))  # stores vectors, tsvectors and chunks with only its grants
    with engine.connect() as conn:
        assert pending(conn) == []
        assert conn.execute(sa.text("SELECT count(*) FROM tickets WHERE embedding IS NOT NULL"
                                    " AND embedding_fulltext IS NOT NULL")).scalar() == 3
    with Session(roles.engine(app)) as session:  # the text leg and the chunks, as the app
        hybrid = hybrid_search(session, Ticket.embedding, "printer jam", k=3)
        assert len(hybrid) == 3
        documents = search(session, Doc.embedding, "toner", k=3)
        chunks = search_chunks(session, Doc.embedding, "toner", k=2)
    assert sorted(doc.id for doc, _ in documents) == [1, 2, 3]
    assert len(chunks) == 2


def test_a_model_change_is_filled_by_a_worker_with_the_printed_grants(
        engine: sa.Engine, database_url: str, roles: Roles) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": "s", "body": f"row {i}"}
                                         for i in range(1, 6)])
    worker = roles.create("worker")
    grants(engine, worker=worker, apply=True)
    drain(roles.url(worker))
    _, Changed = ticket_model(model="embeddb-testing/hash-16")
    embeddb.install(engine, Changed)  # the next generation's columns carry the worker's grants

    # the worker fills the next generation; building its index and the swap are DDL, the
    # owner's (README: 'Roles: embeddb grants'), and the error says so, not that a grant
    # it has is missing
    with pytest.raises(PrivilegeError, match=f"role {worker} is not the owner .*must be owner"
                                             r".*run `embeddb worker --once` as the owner"
                       ) as refused:
        drain(roles.url(worker))
    assert "lacks" not in str(refused.value)
    with engine.connect() as conn:
        assert pending(conn) == []
        assert conn.execute(sa.text("SELECT count(*) FROM tickets"
                                    " WHERE embedding__next IS NOT NULL")).scalar() == 5
    drain(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT DISTINCT vector_dims(embedding) FROM tickets")
                            ).scalars().all() == [16]


def test_a_worker_without_its_column_grant_is_told_which_columns_it_cannot_write(
        engine: sa.Engine, roles: Roles) -> None:
    make_tickets(engine, [{"id": 1, "subject": "a", "body": "b"}])
    worker = roles.create("worker")
    grants(engine, worker=worker, apply=True)
    roles.run(f"REVOKE UPDATE (embedding_source_hash) ON tickets FROM {worker}")
    with pytest.raises(PrivilegeError, match=f"public.tickets.embedding: role {worker} lacks"
                                             r" UPDATE \(embedding_source_hash\) on"
                                             r" public.tickets; grant it"):
        drain(roles.url(worker))
