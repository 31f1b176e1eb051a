"""Whether a worker can run against the embeddb schema it finds, which it never migrates.

A worker runs as a role without DDL rights, and a rolling upgrade must not have the first new
worker migrate the schema under the old ones; so the schema is migrated by ``embeddb migrate``
(or ``create_all``, ``install``, Alembic) as its owner, and the worker only checks it:

* at this embeddb's head: fine;
* missing or older: :class:`~embeddb.errors.SchemaNotReady`, saying to run ``embeddb migrate``
  as the owner (a running worker waits for it);
* newer, and the schema says it still serves workers of a revision this embeddb knows
  (``embeddb.worker_compatibility``, revision 0008): fine, with a warning to upgrade;
* newer otherwise: :class:`~embeddb.errors.SchemaTooNew`, saying to upgrade the worker.

Example::

    with engine.connect() as conn:
        warning = schema_version.check_for_worker(conn)   # raises if it cannot run
"""

from __future__ import annotations

import sqlalchemy as sa

from . import migrate
from .errors import SchemaNotReady, SchemaTooNew
from .sql import queries

MIGRATE_HINT = "run `embeddb migrate` as the role that owns embeddb's schema"


def check_for_worker(conn: sa.Connection) -> str | None:
    """None when the schema is this embeddb's; a warning when it is a newer one this worker
    can still serve. Raises :class:`SchemaNotReady` or :class:`SchemaTooNew` otherwise."""
    found = migrate.current(conn)
    head = migrate.head()
    if found == head:
        return None
    if found is None:
        raise SchemaNotReady(f"embeddb's schema is not in this database; {MIGRATE_HINT}"
                             f" (this worker needs revision {head})")
    if _knows(found):
        raise SchemaNotReady(f"embeddb's schema is at revision {found}, older than this"
                             f" worker's {head}; {MIGRATE_HINT}")
    oldest = _oldest_worker_revision(conn)
    if oldest is not None and _knows(oldest):
        return (f"embeddb's schema is at revision {found}, newer than this worker's {head};"
                f" it still serves workers from revision {oldest}: carrying on (upgrade embeddb"
                " on this worker when you can)")
    needs = f"workers of revision {oldest} or later" if oldest else "a newer embeddb"
    raise SchemaTooNew(f"embeddb's schema is at revision {found}, which needs {needs}; this"
                       f" worker knows revisions up to {head}: upgrade embeddb on this worker")


def _knows(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return migrate.script_directory().get_revision(revision) is not None
    except CommandError:
        return False


def _oldest_worker_revision(conn: sa.Connection) -> str | None:
    if not conn.execute(sa.text(queries["worker_compatibility_exists"])).scalar():
        return None
    value = conn.execute(sa.text(queries["oldest_worker_revision"])).scalar()
    return str(value) if value is not None else None
