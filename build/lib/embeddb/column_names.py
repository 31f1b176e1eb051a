"""Naming an embedded column on the command line: ``TABLE.COLUMN`` or ``SCHEMA.TABLE.COLUMN``.

A part that contains a dot (or a double quote) is written in double quotes, as in SQL, with a
quote inside doubled: ``'"dot.ted".embedding'``, ``'app."my ""quoted"" table".embedding'``.
Unlike SQL, a part is not folded to lower case: ``Tickets.embedding`` names the table
``Tickets``, the way :attr:`embeddb.spec.EmbeddingSpec.qualified_column` writes it.
"""

from __future__ import annotations

import re

from .errors import EmbeddbError

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def split_column_name(text: str) -> tuple[str | None, str, str]:
    """``(schema or None, table, column)`` from ``TABLE.COLUMN`` or ``SCHEMA.TABLE.COLUMN``.

    Example::

        split_column_name('"dot.ted".embedding')  # (None, 'dot.ted', 'embedding')
    """
    parts = _parts(text)
    if len(parts) == 2:
        return None, parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise EmbeddbError(
        f"{text!r}: name a column as TABLE.COLUMN or SCHEMA.TABLE.COLUMN, with a name that"
        """ contains a dot in double quotes ('"dot.ted".embedding')"""
    )


def quoted_column_name(*parts: str) -> str:
    """The parts joined with dots, each quoted if it has to be: what :func:`split_column_name`
    reads back.

    Example::

        quoted_column_name("public", "dot.ted", "embedding")  # 'public."dot.ted".embedding'
    """
    return ".".join(part if _PLAIN.fullmatch(part) else '"' + part.replace('"', '""') + '"'
                    for part in parts)


def _parts(text: str) -> list[str]:
    parts: list[str] = []
    position = 0
    while True:
        if text.startswith('"', position):
            end = position + 1
            while True:
                end = text.find('"', end)
                if end < 0:
                    raise EmbeddbError(f"{text!r}: a double quote is not closed")
                if not text.startswith('""', end):
                    break
                end += 2
            part = text[position + 1:end].replace('""', '"')
            position = end + 1
            if position < len(text) and text[position] != ".":
                raise EmbeddbError(f"{text!r}: expected a dot after the quoted name {part!r}")
        else:
            end = text.find(".", position)
            end = len(text) if end < 0 else end
            part = text[position:end]
            if '"' in part:
                raise EmbeddbError(f"{text!r}: a double quote may only enclose a whole name")
            position = end
        if not part:
            raise EmbeddbError(f"{text!r}: a name is empty")
        parts.append(part)
        if position >= len(text):
            return parts
        position += 1  # the dot
        if position >= len(text):
            raise EmbeddbError(f"{text!r}: a name is empty")
