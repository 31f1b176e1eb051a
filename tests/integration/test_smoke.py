import sqlalchemy as sa


def test_fresh_database_has_pgvector_and_catalog(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname='vector'"))
        assert version.scalar() >= "0.8"
        assert conn.execute(sa.text("SELECT count(*) FROM embeddb.columns")).scalar() == 0
