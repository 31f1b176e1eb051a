"""Alembic environment and versions for embeddb's own schema (``embeddb.*``).

This folder is the package ``embeddb.migrations`` in the wheel (a setuptools ``package-dir``
mapping), because embeddb applies it at run time (``ensure_catalog``, ``embeddb migrate``,
``op.create_embeddb_schema()``). :func:`embeddb.migrate.script_location` finds it in a wheel,
an editable install and a plain source tree alike. Run it with :mod:`embeddb.migrate`; the
Alembic CLI works too (``alembic -c migrations/alembic.ini upgrade head``), for example to
write a new revision.
"""
