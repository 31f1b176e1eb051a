"""Revision 0014 forgets calibrations made before the calibration measured with midpoint
queries; the column is calibrated again by the worker or `embeddb tune`."""

from __future__ import annotations

import sqlalchemy as sa

from embeddb import calibration, catalog, migrate
from tests.integration.models import HASH_MODEL, drain, ticket_model


def calibrations(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddb.calibrations")).scalar_one())


def test_0014_deletes_old_calibrations_and_a_new_one_can_be_made(
        engine: sa.Engine, database_url: str) -> None:
    Base, Ticket = ticket_model(model=HASH_MODEL)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Ticket), [{"id": i, "subject": f"s{i}", "body": f"body {i}"}
                                         for i in range(1, 41)])
    drain(database_url)
    migrate.migrate(engine, downgrade_to="0013")
    with engine.begin() as conn:  # as a worker before 0014 recorded it
        entry = catalog.get_entry(conn, "public", "tickets", "embedding")
        assert entry is not None
        calibration.calibrate(conn, entry, samples=10)
    assert calibrations(engine) == 1

    assert "0014" in migrate.migrate(engine)
    assert calibrations(engine) == 0
    with engine.begin() as conn:
        assert calibration.needs_calibration(conn, entry)  # the worker's next pass redoes it
        calibration.calibrate(conn, entry, samples=10)
    assert calibrations(engine) == 1
