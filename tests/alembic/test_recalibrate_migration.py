"""Revision 0014 forgets calibrations made before the calibration measured with midpoint
queries; the column is calibrated again by the worker or `embeddb tune`. Revision 0017 adds
the points measured under filters."""

from __future__ import annotations

import sqlalchemy as sa

from embeddb import calibration, catalog, migrate
from embeddb.sql import queries
from tests.integration.models import HASH_MODEL, drain, ticket_model


def calibrations(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddb.calibrations")).scalar_one())


def embedded_tickets(engine: sa.Engine, database_url: str, rows: int) -> catalog.CatalogEntry:
    """``rows`` tickets, embedded by a worker; their column's catalog entry."""
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": f"s{i}", "body": f"body {i}"}
                                         for i in range(1, rows + 1)])
    drain(database_url)
    with engine.connect() as conn:
        entry = catalog.get_entry(conn, "public", "tickets", "embedding")
    assert entry is not None
    return entry


def test_0014_deletes_old_calibrations_and_a_new_one_can_be_made(
        engine: sa.Engine, database_url: str) -> None:
    entry = embedded_tickets(engine, database_url, 40)
    migrate.migrate(engine, downgrade_to="0013")
    with engine.begin() as conn:  # as a worker before 0014 recorded it
        conn.execute(sa.text(
            "INSERT INTO embeddb.calibrations"
            " (column_id, table_rows, index_oid, k, samples, exact_ms, curve)"
            " VALUES (:id, 40, 'tickets_embedding_hnsw'::regclass::oid, 10, 10, 0.5,"
            " '[{\"ef_search\": 10, \"recall\": 0.999, \"ms\": 0.1}]')"), {"id": entry.id})
    assert calibrations(engine) == 1

    assert "0014" in migrate.migrate(engine)
    assert calibrations(engine) == 0
    with engine.begin() as conn:
        assert calibration.needs_calibration(conn, entry)  # the worker's next pass redoes it
        calibration.calibrate(conn, entry, samples=10)
    assert calibrations(engine) == 1


def test_0017_adds_filtered_points_that_a_calibration_before_it_lacks(
        engine: sa.Engine, database_url: str) -> None:
    entry = embedded_tickets(engine, database_url, 200)
    with engine.begin() as conn:
        assert calibration.calibrate(conn, entry, samples=10).filtered
    assert migrate.migrate(engine, downgrade_to="0016") == ["0017"]
    with engine.connect() as conn:
        assert not conn.execute(sa.text(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'embeddb'"
            " AND table_name = 'calibrations' AND column_name LIKE 'filtered%'")).scalar()
        assert calibrations(engine) == 1  # the unfiltered curve is kept
        # this embeddb still reads it in a database not yet migrated (a search before
        # `embeddb migrate`): its curve, no filtered points, due for a calibration later
        row = conn.execute(sa.text(queries["column_calibration"]), {
            "schema": "public", "table": "tickets", "column": "embedding"}).one()
        older = calibration.Calibration.from_row(row)
        assert older.points and older.filtered == () and older.exact_p95_ms is None
        assert not row.filtered_current

    assert migrate.migrate(engine)[0] == "0017"
    with engine.connect() as conn:
        row = conn.execute(sa.text(queries["column_calibration"]), {
            "schema": "public", "table": "tickets", "column": "embedding"}).one()
        assert calibration.Calibration.from_row(row).filtered == ()  # none measured for it
        assert calibration.needs_calibration(conn, entry)  # so the worker's next pass redoes it
    with engine.begin() as conn:
        assert calibration.calibrate(conn, entry, samples=10).filtered
        assert not calibration.needs_calibration(conn, entry)
