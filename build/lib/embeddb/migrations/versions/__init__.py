"""embeddb's schema revisions, applied in order by :mod:`embeddb.migrate` or Alembic."""
