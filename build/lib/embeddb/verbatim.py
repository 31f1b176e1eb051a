"""Sending a statement without parameters to PostgreSQL exactly as written.

``Connection.exec_driver_sql(statement)`` hands psycopg an empty parameter list, and psycopg
then reads every ``%`` in the statement as a placeholder: a template's literal ``100% cotton``
fails with ``incomplete placeholder`` and ``%s`` silently becomes ``$1``. Every statement that
embeddb composes from a user's names or text, and runs without parameters, goes through here.

Example::

    from embeddb import verbatim
    verbatim.execute(conn, column_sql.create_render_function(spec, column_id))
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, CursorResult

_NO_PARAMETERS = {"no_parameters": True}


def execute(conn: Connection, statement: str) -> CursorResult[Any]:
    """Run ``statement`` with no parameter parsing at all: ``%`` reaches the server as is."""
    return conn.exec_driver_sql(statement, execution_options=_NO_PARAMETERS)
