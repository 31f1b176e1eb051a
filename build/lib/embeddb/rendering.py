"""Rendering a column's text the same way in every session.

``embeddb.render_N(row)`` casts each source column to text, and for some types that cast reads
the session's settings: a ``timestamptz`` comes out in the session's ``TimeZone``, a ``date``
in its ``DateStyle``, an ``interval`` in its ``IntervalStyle``, a float with its
``extra_float_digits``, ``bytea`` in its ``bytea_output``, ``money`` in its ``lc_monetary``, a
``regclass`` qualified by its ``search_path``. A worker in Tokyo and a ``reconcile`` in UTC would
then see different text for one unchanged row and re-queue it for each other forever.

So when a template reads a column whose text can depend on the session, the render function
pins those settings (``SET TimeZone = 'UTC'`` and the others in :data:`PINNED_SETTINGS`, as
function options). A function with SET clauses is not inlined, and each call saves and restores
the settings (measured on a two-column template: a 256-row worker fetch 2.5 -> 4.3 ms, the
trigger 14 -> 20 us per inserted row, reconcile 2.5 -> 6 us per row). So templates over
strings, integers, numeric, booleans, enums, uuid and json only (and domains and arrays of
those), whose text never depends on the session, keep the plain function, which is inlined.
PostgreSQL refuses to change a source column's type while the trigger watches it, so the
choice made at install stays right until the column is installed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from .sql import queries
from .template import ASCII_BLANKS, UNICODE_BLANKS

PINNED_SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TimeZone", ("UTC",)),
    ("DateStyle", ("ISO", "MDY")),
    ("IntervalStyle", ("postgres",)),
    ("extra_float_digits", ("1",)),
    ("bytea_output", ("hex",)),
    ("lc_monetary", ("C",)),
    ("search_path", ("pg_catalog", "pg_temp")),
)
"""The settings a render function runs under when its text could depend on them: the
defaults of a fresh cluster, with UTC for the time zone."""


@dataclass(frozen=True)
class RenderContext:
    """What the render function of one column needs to know about its table and database."""

    pin_settings: bool
    blanks: str

    def function_options(self) -> sql.Composable:
        """The ``SET ...`` clauses of the render function, or nothing."""
        if not self.pin_settings:
            return sql.SQL("")
        return sql.SQL("").join(
            sql.SQL(" SET {} = {}").format(
                sql.Identifier(name), sql.SQL(", ").join(map(sql.Literal, values)))
            for name, values in PINNED_SETTINGS
        )


def render_context(conn: Connection, qualified_table: str, columns: Sequence[str]) -> RenderContext:
    """How to render ``columns`` of ``qualified_table`` (quoted, as ``column_sql`` writes it)."""
    row = conn.execute(sa.text(queries["render_context"]),
                       {"qualified_table": qualified_table, "columns": list(columns)}).one()
    # Outside UTF-8 the Unicode spaces may not exist, and in SQL_ASCII btrim would cut bytes.
    blanks = UNICODE_BLANKS if row.encoding == "UTF8" else ASCII_BLANKS
    return RenderContext(pin_settings=not row.session_independent, blanks=blanks)
