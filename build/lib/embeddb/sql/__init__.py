"""Static SQL, loaded once from ``queries.sql``.

Each query in ``queries.sql`` is a block that starts with a ``-- name --`` line; call sites
use ``queries["name"]``. SQL that names a user's table or column is composed in
:mod:`embeddb.column_sql` instead; embeddb's own schema is in its migrations
(``migrations/versions``).
"""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def _load_queries(text: str) -> dict[str, str]:
    blocks = _HEADER.split(text)[1:]
    return {name: body.strip() for name, body in zip(blocks[::2], blocks[1::2], strict=True)}


queries = _load_queries(files(__package__).joinpath("queries.sql").read_text())

__all__ = ["queries"]
