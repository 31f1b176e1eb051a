"""Alembic environment and versions for embeddb's own schema (``embeddb.*``).

It lives inside the package, not in a top-level ``migrations/``, because embeddb applies it at
run time (``ensure_catalog``, ``embeddb migrate``, ``op.create_embeddb_schema()``), so it must
ship in the wheel as ordinary package files. Run it with :mod:`embeddb.migrate`; the Alembic
CLI works too (``alembic -c embeddb/migrations/alembic.ini upgrade head``), for example to
write a new revision.
"""
